"""A JSOC look-alike on 127.0.0.1: the DRMS CGIs that ``drms`` calls, and export files.

Written from drms's client (``drms/json.py``, ``drms/client.py``) and JSOC's documented
replies:

* ``GET /cgi-bin/ajax/checkAddress.sh?address=...&checkonly=1``: ``{"status": 2}`` for a
  registered address, ``{"status": 4, "msg": ...}`` otherwise;
* ``GET /cgi-bin/ajax/jsoc_info?op=rs_list&ds=hmi.M_720s[T0_TAI-T1_TAI]&key=T_REC,QUALITY,*recnum*``:
  ``{"keywords": [{"name": "T_REC", "values": [...]}, ...], "count": n, "status": 0}``;
* ``GET /cgi-bin/ajax/jsoc_fetch?op=exp_request&ds=hmi.M_720s[:#1,#2]{magnetogram}&notify=...``:
  ``{"status": 2, "requestid": "JSOC_...", "wait": 1, ...}`` (pending), or the per-user
  limit ``{"status": 7, "error": "User x has 1 pending export requests ..."}``;
* ``GET /cgi-bin/ajax/jsoc_fetch?op=exp_status&requestid=...``: status 6 ("not found",
  once, as for a request just made), then 1 (processing) ``pending_polls`` times, then
  ``{"status": 0, "dir": "/SUM1/D123/S00000", "data": [{"record": ..., "filename": ...}],
  "tarfile": "", ...}``, or a failure (status 4 and an error);
* ``GET /SUM1/D<id>/S00000/<filename>``: a real RICE-compressed FITS magnetogram made with
  astropy (``hmi_fits.write_hmi_fits``);
* an export with ``process=n=0|rebin,method=boxcar,scale=S`` (drms's ``process``) is
  processed as JSOC's ``jsoc_rebin`` does (``hmi_fits.jsoc_rebin``: north up, centred,
  ``1/S`` x ``1/S`` blocks averaged), its records named ``SERIES_mod[...]``.

Records lie every 720 s of TAI; ``gaps`` remove some, ``bad_quality`` marks some with
``QUALITY`` 0x80000000 (JSOC's "no data" bit pattern for missing images). Faults, consumed
one per request of an endpoint: ``"503"`` (an HTML outage page), ``"429"`` (with
``Retry-After: 1``), ``"limit"`` (the per-user limit), ``"export-fail"`` (the export fails
with status 4), ``"html"`` (an HTML page with status 200 where JSON or FITS was expected),
``"unprocessed"`` (on ``exp_request``: the processing is silently not applied, as JSOC does
with arguments it cannot use).
"""

from __future__ import annotations

import collections
import functools
import json
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from hmi_fits import hmi_field, hmi_header, jsoc_rebin, write_hmi_fits

REGISTERED = "someone@example.org"
#: TAI - UTC from 2017 on (37 s); the tests' times lie after 2017.
TAI_MINUS_UTC = pd.Timedelta(seconds=37)
_RANGE = re.compile(r"^([\w.]+)\[(\S+?)_TAI-(\S+?)_TAI\]$")
_RECNUMS = re.compile(r"^([\w.]+)\[:(#\d+(?:,#\d+)*)\]\{(\w+)\}$")


def _tai(t: pd.Timestamp) -> str:
    return t.strftime("%Y.%m.%d_%H:%M:%S_TAI")


def _parse_tai(text: str) -> pd.Timestamp:
    return pd.Timestamp(text.replace(".", "-", 2).replace("_", "T", 1))


class FakeJsoc:
    """The stand-in (see the module doc); ``hits`` counts requests per endpoint."""

    def __init__(
        self,
        start: str = "2020-01-01T00:00:00",
        end: str = "2020-01-02T00:00:00",
        *,
        series: tuple[str, ...] = ("hmi.M_720s", "hmi.M_720s_nrt"),
        gaps: tuple[tuple[str, str], ...] = (),
        bad_quality: tuple[str, ...] = (),
        pending_polls: int = 2,
        size: int = 64,
        wait: float = 1.0,
        not_found_first: bool = True,
    ) -> None:
        grid = pd.date_range(start, end, freq="720s")  # T_REC, TAI
        keep = [not any(pd.Timestamp(a) <= t <= pd.Timestamp(b) for a, b in gaps) for t in grid]
        self.records = grid[keep]
        self.bad = {pd.Timestamp(b) for b in bad_quality}
        self.recnum = {t: 5_000_000 + i for i, t in enumerate(grid)}
        self.by_recnum = {v: k for k, v in self.recnum.items()}
        self.series = series
        self.pending_polls = pending_polls
        self.size = size
        self.wait = wait
        self.not_found_first = not_found_first
        self.faults: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self.hits: collections.Counter[str] = collections.Counter()
        self.exports: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="fakejsoc-")
        self.files: dict[str, Path] = {}
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> FakeJsoc:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self._dir.cleanup()

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT/``)."""
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def fault(self, endpoint: str, *kinds: str) -> None:
        """Queue faults for the next requests of an endpoint (``jsoc_info``, ``exp_request``,
        ``exp_status``, ``file``, ``checkAddress``)."""
        self.faults[endpoint].extend(kinds)

    def _take(self, endpoint: str) -> str | None:
        with self.lock:
            self.hits[endpoint] += 1
            queue = self.faults[endpoint]
            return queue.popleft() if queue else None

    # -- answers ---------------------------------------------------------------------

    def rs_list(self, ds: str) -> dict[str, Any]:
        m = _RANGE.match(ds)
        if m is None or m.group(1) not in self.series:
            return {"status": 1, "error": f"bad record set {ds}"}
        lo, hi = _parse_tai(m.group(2)), _parse_tai(m.group(3))
        chosen = [t for t in self.records if lo <= t <= hi]
        return {
            "keywords": [
                {"name": "T_REC", "values": [_tai(t) for t in chosen]},
                {
                    "name": "QUALITY",
                    "values": ["0x80000000" if t in self.bad else "0x00000000" for t in chosen],
                },
                {"name": "*recnum*", "values": [str(self.recnum[t]) for t in chosen]},
            ],
            "count": len(chosen),
            "runtime": 0.01,
            "status": 0,
        }

    def exp_request(self, ds: str, notify: str, process: str, apply: bool) -> dict[str, Any]:
        m = _RECNUMS.match(ds)
        if m is None or m.group(1) not in self.series or m.group(3) != "magnetogram":
            return {"status": 4, "error": f"cannot parse {ds}"}
        if notify != REGISTERED:
            return {"status": 4, "error": f"{notify} is not registered"}
        recnums = [int(x[1:]) for x in m.group(2).split(",")]
        rebin = 1
        for step in process.split("|")[1:]:  # "0|rebin,method=boxcar,scale=0.125"
            name, *args = step.split(",")
            opts = dict(a.split("=", 1) for a in args)
            if name != "rebin" or opts.get("method") != "boxcar" or "scale" not in opts:
                return {"status": 4, "error": f"cannot process {step}"}
            rebin = round(1 / float(opts["scale"])) if apply else 1
        with self.lock:
            rid = f"JSOC_20200101_{len(self.exports) + 1:03d}"
            self.exports[rid] = {
                "series": m.group(1), "recnums": recnums, "polls": 0, "rebin": rebin,
            }  # fmt: skip
        return {"status": 2, "requestid": rid, "method": "url", "protocol": "FITS",
                "wait": self.wait, "size": 0, "rcount": len(recnums)}  # fmt: skip

    def exp_status(self, rid: str, fail: bool) -> dict[str, Any]:
        with self.lock:
            export = self.exports.get(rid)
            if export is None:
                return {"status": 6, "error": "Bad requestid"}
            export["polls"] += 1
            polls = export["polls"]
        if fail:
            return {"status": 4, "requestid": rid, "error": "Cant save new export-request hash"}
        if self.not_found_first:
            polls -= 1
            if polls == 0:
                return {"status": 6, "requestid": rid, "wait": self.wait}
        if polls <= self.pending_polls:
            return {"status": 1, "requestid": rid, "wait": self.wait}
        number = int(rid.rsplit("_", 1)[1])
        data = []
        rebin = export["rebin"]
        series = export["series"] + ("_mod" if rebin > 1 else "")
        for recnum in export["recnums"]:
            t = self.by_recnum[recnum]
            name = f"{series}.{t.strftime('%Y%m%d_%H%M%S')}_TAI.3.magnetogram.fits"
            data.append({"record": f"{series}[{_tai(t)}][3]{{magnetogram}}", "filename": name})
            self._make_file(f"SUM1/D{number}/S00000/{name}", t, rebin)
        return {"status": 0, "requestid": rid, "method": "url", "protocol": "FITS",
                "dir": f"/SUM1/D{number}/S00000", "data": data, "count": len(data),
                "tarfile": "", "keywords": "", "wait": 0, "size": 1}  # fmt: skip

    def _make_file(self, rel: str, t_rec: pd.Timestamp, rebin: int = 1) -> None:
        with self.lock:
            if rel in self.files:
                return
        path = Path(self._dir.name) / rel.replace("/", "_")
        header = hmi_header(self.size, _tai(t_rec))
        field = _record_field(self.size, _tai(t_rec), self.recnum[t_rec])
        if rebin > 1:
            field, header = jsoc_rebin(field, header, rebin)
        write_hmi_fits(path, field, header)
        with self.lock:
            self.files[rel] = path


@functools.lru_cache(maxsize=4)
def _record_field(size: int, t_rec: str, seed: int) -> np.ndarray:
    """A record's field, made once per process (a 4096 x 4096 one takes a second or two)."""
    field = hmi_field(size, hmi_header(size, t_rec), seed=seed)
    field.flags.writeable = False  # shared between exports: nothing may change it
    return field


class _Handler(BaseHTTPRequestHandler):
    fake: FakeJsoc
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: dict[str, Any]) -> None:
        self._send(200, json.dumps(data).encode(), "application/json")

    def _fault(self, kind: str | None) -> bool:
        page = b"<html><body>JSOC is down for maintenance</body></html>"
        if kind == "503":
            self._send(503, page, "text/html")
        elif kind == "429":
            self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
        elif kind == "html":
            self._send(200, page, "text/html")
        else:
            return False
        return True

    def do_GET(self) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        name = parts.path.rsplit("/", 1)[-1]
        if parts.path.startswith("/cgi-bin/ajax/"):
            op = q.get("op", name)
            endpoint = {"rs_list": "jsoc_info"}.get(op, op)
            kind = fake._take(endpoint if name != "checkAddress.sh" else "checkAddress")
            if self._fault(kind):
                return
            if name == "checkAddress.sh":
                ok = q.get("address") in (REGISTERED, REGISTERED.replace("@", "%40"))
                self._json({"status": 2 if ok else 4, "msg": "ok" if ok else "not registered"})
            elif name == "jsoc_info" and op == "rs_list":
                self._json(fake.rs_list(q.get("ds", "")))
            elif name == "jsoc_fetch" and op == "exp_request":
                if kind == "limit":
                    user = q.get("notify", "")
                    self._json({"status": 7, "error": f"User {user} has 1 pending export requests, please wait"})  # fmt: skip
                else:
                    self._json(
                        fake.exp_request(
                            q.get("ds", ""),
                            q.get("notify", ""),
                            q.get("process=n", "0"),
                            apply=kind != "unprocessed",
                        )
                    )
            elif name == "jsoc_fetch" and op == "exp_status":
                self._json(fake.exp_status(q.get("requestid", ""), kind == "export-fail"))
            else:
                self._send(404, b"no such CGI", "text/plain")
            return
        kind = fake._take("file")
        if self._fault(kind):
            return
        with fake.lock:
            path = fake.files.get(parts.path.lstrip("/"))
        if path is None:
            self._send(404, b"not found", "text/plain")
            return
        self._send(200, path.read_bytes(), "application/fits")
