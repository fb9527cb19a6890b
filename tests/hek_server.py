"""A loopback stand-in for HEK's JSON search API, for tests.

It answers ``GET /hek/her?cosec=2&cmd=search&type=column&event_type=fl&...`` as the real
service does: records whose time range overlaps ``[event_starttime, event_endtime]``,
filtered by ``paramN/opN/valueN`` (string comparison, as HEK compares ``FL_GOESCLS``),
paged by ``result_limit`` and ``page`` with ``overmax`` telling whether more pages follow.
Failures can be planned per month (first by status code, then by delay) to exercise the
client's retries. It listens on 127.0.0.1 only and handles a bounded number of requests.

The records are SWPC flares of January to March 2011 as HEK lists them (times, classes,
active regions and Stonyhurst positions of the real events), plus the awkward cases a
catalog must survive: a flare with no position (HEK's ``(0, 0)`` placeholder), one with
only a helioprojective position, one off the disk, one crossing a month boundary, one
without a class, a B-class flare, and a record from another feature recognition method.
Helioprojective positions are computed from the Stonyhurst ones with sunpy.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import defaultdict
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

# (start, peak, end, class, NOAA AR, Stonyhurst lon, lat, how the position is given)
#   how: "hgs" (hgs_* and hpc_*), "hpc" (hpc_* only), "zero" (the (0, 0) placeholder),
#        "none" (null positions), "offdisk" (hpc only, beyond the limb)
FLARES: list[tuple[str, str, str, str, int | None, float, float, str]] = [
    (
        "2010-12-31T23:40:00",
        "2010-12-31T23:50:00",
        "2011-01-01T00:05:00",
        "C1.0",
        11138,
        -30.0,
        16.0,
        "hgs",
    ),
    (
        "2011-01-20T04:10:00",
        "2011-01-20T04:16:00",
        "2011-01-20T04:20:00",
        "B5.6",
        11147,
        22.0,
        21.0,
        "hgs",
    ),
    (
        "2011-01-27T19:50:00",
        "2011-01-27T20:03:00",
        "2011-01-27T20:12:00",
        "C1.2",
        None,
        0.0,
        0.0,
        "zero",
    ),
    (
        "2011-01-28T00:44:00",
        "2011-01-28T01:03:00",
        "2011-01-28T01:10:00",
        "M1.3",
        11149,
        88.0,
        16.0,
        "hgs",
    ),
    (
        "2011-01-31T23:52:00",
        "2011-02-01T00:05:00",
        "2011-02-01T00:25:00",
        "C3.0",
        11150,
        -12.0,
        -25.0,
        "hgs",
    ),
    (
        "2011-02-13T17:28:00",
        "2011-02-13T17:38:00",
        "2011-02-13T17:47:00",
        "M6.6",
        11158,
        -5.0,
        -20.0,
        "hgs",
    ),
    (
        "2011-02-15T01:44:00",
        "2011-02-15T01:56:00",
        "2011-02-15T02:06:00",
        "X2.2",
        11158,
        12.0,
        -20.0,
        "hpc",
    ),
    (
        "2011-02-18T14:00:00",
        "2011-02-18T14:08:00",
        "2011-02-18T14:15:00",
        "M1.0",
        11162,
        0.0,
        19.0,
        "hgs",
    ),
    (
        "2011-02-24T07:23:00",
        "2011-02-24T07:35:00",
        "2011-02-24T07:42:00",
        "M3.5",
        11163,
        -87.0,
        14.0,
        "hgs",
    ),
    (
        "2011-02-26T04:02:00",
        "2011-02-26T04:10:00",
        "2011-02-26T04:20:00",
        "C4.8",
        None,
        0.0,
        0.0,
        "offdisk",
    ),
    (
        "2011-03-08T19:46:00",
        "2011-03-08T20:16:00",
        "2011-03-08T21:19:00",
        "M1.4",
        11165,
        0.0,
        0.0,
        "none",
    ),
    (
        "2011-03-09T23:13:00",
        "2011-03-09T23:23:00",
        "2011-03-09T23:29:00",
        "X1.5",
        11166,
        11.0,
        8.0,
        "hgs",
    ),
    (
        "2011-03-10T02:02:00",
        "2011-03-10T02:10:00",
        "2011-03-10T02:14:00",
        "",
        11166,
        20.0,
        9.0,
        "hgs",
    ),
]


def _hpc(lon: np.ndarray, lat: np.ndarray, times: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.time import Time
    from sunpy.coordinates import frames

    obstime = Time(times, format="isot", scale="utc")
    hgs = SkyCoord(lon * u.deg, lat * u.deg, frame=frames.HeliographicStonyhurst(obstime=obstime))
    hpc = hgs.transform_to(frames.Helioprojective(observer="earth", obstime=obstime))
    return hpc.Tx.to_value(u.arcsec), hpc.Ty.to_value(u.arcsec)


def make_records() -> list[dict[str, Any]]:
    """Return the HEK records served by default (see the module docstring)."""
    lon = np.array([f[5] for f in FLARES])
    lat = np.array([f[6] for f in FLARES])
    hpc_x, hpc_y = _hpc(lon, lat, [f[0] for f in FLARES])
    records = []
    for i, (t0, tp, t1, cls, ar, lo, la, how) in enumerate(FLARES):
        x, y = float(hpc_x[i]), float(hpc_y[i])
        hgs: tuple[float | None, float | None] = (lo, la)
        hpc: tuple[float | None, float | None] = (x, y)
        if how == "hpc":
            hgs = (None, None)
        elif how == "zero":
            hgs, hpc = (0.0, 0.0), (0.0, 0.0)
        elif how == "none":
            hgs, hpc = (None, None), (None, None)
        elif how == "offdisk":
            hgs, hpc = (None, None), (1012.4, -85.0)
        stamp = t0.replace("-", "").replace(":", "").replace("T", "_")
        records.append(
            {
                "event_type": "FL",
                "concept": "Flare",
                "frm_name": "SWPC",
                "frm_institute": "NOAA SWPC",
                "frm_humanflag": "false",
                "obs_observatory": "GOES",
                "obs_instrument": "GOES",
                "obs_channelid": "1-8 Angstrom",
                "event_starttime": t0,
                "event_peaktime": tp,
                "event_endtime": t1,
                "fl_goescls": cls,
                "ar_noaanum": ar,
                "hgs_x": hgs[0],
                "hgs_y": hgs[1],
                "hpc_x": hpc[0],
                "hpc_y": hpc[1],
                "hpc_coord": None if hpc[0] is None else f"POINT({hpc[0]} {hpc[1]})",
                "event_coordsys": "UTC-HGS-TOPO",
                "event_coord1": hgs[0],
                "event_coord2": hgs[1],
                "event_coord3": None,
                "event_coordunit": "degrees",
                "kb_archivid": f"ivo://helio-informatics.org/FL_SWPC_{stamp}_{i:04d}",
                "search_frm_name": "SWPC",
            }
        )
    # The same flare as recognised by another method: the FRM_NAME filter must drop it.
    other = dict(records[3])
    other.update(
        {
            "frm_name": "SSW Latest Events",
            "search_frm_name": "SSW Latest Events",
            "kb_archivid": "ivo://helio-informatics.org/FL_SSWLatestEvents_20110128_004500_0001",
        }
    )
    records.append(other)
    return records


def expected_rows(min_flux: float = 0.0) -> list[tuple[str, str]]:
    """(start ``YYYY-MM-DD HH:MM:SS``, class) of the SWPC flares of 2011-01..03 kept."""
    letters = {"A": 1e-8, "B": 1e-7, "C": 1e-6, "M": 1e-5, "X": 1e-4}
    rows = []
    for t0, _tp, _t1, cls, *_ in FLARES:
        if not cls or not t0.startswith("2011"):
            continue
        if letters[cls[0]] * float(cls[1:]) >= min_flux * (1 - 1e-9):
            rows.append((t0.replace("T", " "), cls))
    return rows


def _compare(a: str, op: str, b: str) -> bool:
    a, b = a.upper(), b.upper()
    return {
        "=": a == b,
        "!=": a != b,
        ">": a > b,
        ">=": a >= b,
        "<": a < b,
        "<=": a <= b,
    }[op]


class _BoundedServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that accepts at most ``max_requests`` connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, max_requests: int) -> None:
        super().__init__(address, handler)
        self.max_requests = max_requests
        self.accepted = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.accepted += 1
        return self.accepted <= self.max_requests


class FakeHEK:
    """Serve HEK-style JSON on ``http://127.0.0.1:<port>/hek/her`` from a thread.

    Args:
        records: the records to serve (default :func:`make_records`).
        fail: month (``YYYY-MM`` of ``event_starttime``) -> HTTP statuses to answer the next
            requests for it with, or ``"garbage"`` (a non-JSON 200 reply), ``"hold"`` (no
            answer until the server stops, so the client's timeout always fires first) or
            ``"429:N"`` (HTTP 429 with ``Retry-After: N``).
        delay: month -> seconds to sleep before answering the next requests for it.
        max_requests: the server stops after this many requests.

    Attributes:
        requests: the query of every request received, in order.
    """

    def __init__(
        self,
        records: list[dict[str, Any]] | None = None,
        *,
        fail: dict[str, list[int | str]] | None = None,
        delay: dict[str, list[float]] | None = None,
        max_requests: int = 500,
    ) -> None:
        self.records = make_records() if records is None else records
        self.fail: dict[str, list[int | str]] = defaultdict(list, fail or {})
        self.delay: dict[str, list[float]] = defaultdict(list, delay or {})
        self.max_requests = max_requests
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the service."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hek/her"

    def months_requested(self) -> list[str]:
        """``YYYY-MM`` of ``event_starttime`` of each request, in order."""
        return [q.get("event_starttime", "")[:7] for q in self.requests]

    # -- the service ----------------------------------------------------------------------
    def answer(self, query: dict[str, str]) -> tuple[int, str, dict[str, str]]:
        """Return (status, body, extra headers) for one search query."""
        month = query.get("event_starttime", "")[:7]
        with self._lock:
            self.requests.append(query)
            plan = self.fail[month].pop(0) if self.fail[month] else None
            wait = self.delay[month].pop(0) if self.delay[month] else 0.0
        if wait:
            time.sleep(wait)
        if plan == "hold":
            self._stop.wait()
            return 503, "<html><body>stopped</body></html>", {}
        if plan == "garbage":
            return 200, "<html><body>Proxy error</body></html>", {}
        if isinstance(plan, str) and plan.startswith("429:"):
            return 429, "<html><body>Too many requests</body></html>", {"Retry-After": plan[4:]}
        if plan is not None:
            return int(plan), f"<html><body>Error {plan}</body></html>", {}
        for key, want in (("cosec", "2"), ("cmd", "search"), ("type", "column")):
            if query.get(key) != want:
                return 400, f"bad or missing {key}", {}
        try:
            q0 = datetime.fromisoformat(query["event_starttime"])
            q1 = datetime.fromisoformat(query["event_endtime"])
            limit = int(query.get("result_limit", "100"))
            page = int(query.get("page", "1"))
        except (KeyError, ValueError) as exc:
            return 400, f"bad query: {exc}", {}
        event_type = query.get("event_type", "**").lower()
        hits = []
        for r in self.records:
            if event_type not in ("**", r["event_type"].lower()):
                continue
            if not (
                datetime.fromisoformat(r["event_starttime"]) <= q1
                and datetime.fromisoformat(r["event_endtime"]) >= q0
            ):
                continue
            ok = True
            for i in range(10):
                name = query.get(f"param{i}")
                if name is None:
                    break
                value = r.get(name.lower())
                if value is None or not _compare(
                    str(value), query.get(f"op{i}", "="), query.get(f"value{i}", "")
                ):
                    ok = False
                    break
            if ok:
                hits.append(r)
        hits.sort(key=lambda r: r["event_starttime"])
        chunk = hits[(page - 1) * limit : page * limit]
        return 200, json.dumps({"result": chunk, "overmax": len(hits) > page * limit}), {}

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> FakeHEK:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                extra: dict[str, str] = {}
                if parts.path != "/hek/her":
                    status, body = 404, "not found"
                else:
                    q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                    status, body, extra = owner.answer(q)
                data = body.encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "application/json" if status == 200 else "text/html"
                )
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _BoundedServer(("127.0.0.1", 0), Handler, self.max_requests)
        self._server.timeout = 0.05

        def loop() -> None:
            server = self._server
            assert server is not None
            while not self._stop.is_set() and server.accepted < server.max_requests:
                server.handle_request()

        self._thread = threading.Thread(target=loop, name="fake-hek", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.server_close()
