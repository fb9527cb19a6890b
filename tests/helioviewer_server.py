"""A Helioviewer API v2 look-alike on 127.0.0.1, for tests and benchmarks.

It answers the two calls the downloader makes, with the shapes of the real API:

* ``GET /v2/getClosestImage/?date=2011-01-01T00:00:00Z&sourceId=19``: JSON metadata of the
  observation closest to ``date`` (``{"id": 1000, "date": "2011-01-01 00:00:42", ...}``), or
  ``{"error": "No images of the requested type ...", "errno": 10}`` when there are none;
* ``GET /v2/getJP2Image/?id=1000`` (or ``?date=...&sourceId=...``): real JPEG 2000 bytes,
  small images made with Pillow (distinct per image) or a given file such as sunpy's
  Helioviewer JP2.

Observations lie on a regular grid (``cadence`` from ``start + offset``) minus the ``gaps``.
Faults are injected per request key (the requested date of ``getClosestImage``, the image id
of ``getJP2Image``) and consumed one per request: HTTP 500/503, 429 with ``Retry-After`` in
seconds or as an HTTP-date, a held answer (sent only when the test sets ``release`` or the
server stops, so the client's read timeout always fires first), a truncated body
(``Content-Length`` larger than what is sent, then the connection closes) and an HTML error
page with status 200. The server counts requests per key and the largest number of requests
in flight at once, and can prove that ``rendezvous`` requests were in flight together: the
first ``rendezvous`` requests wait at a barrier until all of them have arrived.

The server binds 127.0.0.1 only and refuses requests beyond ``max_requests``, so a runaway
client loop ends.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import io
import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

CLOSEST = "getClosestImage"
JP2 = "getJP2Image"


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, used for one request.

    Kinds: ``"500"``, ``"503"``, ``"429"`` (``retry_after`` header value, or ``seconds``
    from now as an HTTP-date when ``http_date``), ``"stall"`` (wait ``seconds`` before
    answering), ``"hold"`` (answer only once the server's ``release`` event is set or the
    server stops), ``"truncate"`` (send half the body under the full ``Content-Length``,
    then close), ``"html"`` (an HTML error page with status 200).
    """

    kind: str
    seconds: float = 0.0
    retry_after: str | None = None
    http_date: bool = False


def too_many_requests(retry_after: float, *, http_date: bool = False) -> Fault:
    """A 429 answer asking to wait ``retry_after`` seconds (as seconds or as an HTTP-date)."""
    if http_date:
        return Fault("429", seconds=retry_after, http_date=True)
    return Fault("429", retry_after=str(int(retry_after)))


def small_jp2(seed: int, *, codestream: bool = False, size: int = 24) -> bytes:
    """A real, small JPEG 2000 image (JP2 file, or a raw J2K codestream), distinct per seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG2000", no_jp2=codestream)
    return buf.getvalue()


class FakeHelioviewer:
    """A threaded HTTP server that behaves like the Helioviewer API v2 (see module doc).

    Args:
        start: first observation grid time (UTC).
        end: last observation grid time.
        cadence: spacing of observations.
        offset: observation time minus grid time (real HMI images are a few seconds off).
        gaps: ``(from, to)`` intervals with no observations.
        jp2_file: serve this file's bytes for every image instead of generated ones.
        jp2_for: a function of the observation time giving the bytes served for that image
            (e.g. the synthetic Sun's JP2 of that hour).
        codestream: generated images are raw J2K codestreams instead of JP2 files.
        delay: seconds every request waits before answering (settable while running).
        drip: seconds between the four pieces of each JP2 body (settable while running).
            Clearing the ``gate`` event holds every image body after its first half until
            the gate is set again.
        hold_bodies_after: serve this many image bodies in full, then hold every further
            one after its first half while the ``gate`` is cleared; the gate is cleared at
            once (set it to let them through).
        disposition: ``Content-Disposition`` file name sent with images (default the real
            Helioviewer style ``YYYY_MM_DD__HH_MM_SS_000__SDO_HMI_HMI_magnetogram.jp2``).
        max_requests: requests answered before the server refuses with 410.
        rendezvous: the first this many requests wait until all of them are in flight at
            once (``rendezvous_met`` is set then); if they never are, the barrier breaks
            after ``rendezvous_timeout`` seconds and those requests get HTTP 410.
    """

    def __init__(
        self,
        start: str = "2011-01-01T00:00:00",
        end: str = "2011-01-03T00:00:00",
        *,
        cadence: timedelta = timedelta(minutes=12),
        offset: timedelta = timedelta(seconds=42),
        gaps: Iterable[tuple[str, str]] = (),
        jp2_file: str | Path | None = None,
        jp2_for: Callable[[pd.Timestamp], bytes] | None = None,
        codestream: bool = False,
        delay: float = 0.0,
        drip: float = 0.0,
        disposition: str | None = None,
        max_requests: int = 5000,
        rendezvous: int = 0,
        rendezvous_timeout: float = 60.0,
        hold_bodies_after: int | None = None,
    ) -> None:
        grid = pd.date_range(start, end, freq=pd.Timedelta(cadence)) + pd.Timedelta(offset)
        keep = np.ones(len(grid), dtype=bool)
        for lo, hi in gaps:
            keep &= ~((grid >= pd.Timestamp(lo)) & (grid <= pd.Timestamp(hi)))
        self.observations = grid[keep].as_unit("ns")
        self._ns = self.observations.asi8
        self.first_id = 1000
        self.jp2_file = None if jp2_file is None else Path(jp2_file).read_bytes()
        self.jp2_for = jp2_for
        self.codestream = codestream
        self.delay = delay
        self.drip = drip
        self.disposition = disposition
        self.max_requests = max_requests

        self.lock = threading.Lock()
        self.closing = threading.Event()
        # Cleared, image bodies stop after their first half until it is set again.
        self.gate = threading.Event()
        self.hold_bodies_after = hold_bodies_after
        self._bodies = 0
        if hold_bodies_after is None:
            self.gate.set()
        # "hold" faults answer once this is set (or the server stops).
        self.release = threading.Event()
        self.rendezvous = rendezvous
        self.rendezvous_timeout = rendezvous_timeout
        self._barrier = threading.Barrier(rendezvous) if rendezvous else None
        self._arrived = 0
        self.rendezvous_met = threading.Event()
        self.faults: dict[tuple[str, Any], collections.deque[Fault]] = {}
        self.hits: collections.Counter[tuple[str, Any]] = collections.Counter()
        self.log: list[tuple[float, str, Any, int]] = []  # (time, endpoint, key, status)
        self.in_flight = 0
        self.max_in_flight = 0
        self._cache: dict[int, bytes] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeHelioviewer:
        """Start serving on 127.0.0.1 at a free port."""
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled and held handlers are released."""
        self.closing.set()
        self.release.set()
        if self._barrier is not None:
            self._barrier.abort()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHelioviewer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v2/``."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v2/"

    # -- the data --------------------------------------------------------------------

    def closest_index(self, when: str | pd.Timestamp) -> int | None:
        """Index of the observation closest to ``when`` (ties go to the earlier one)."""
        if len(self._ns) == 0:
            return None
        t = pd.Timestamp(when)
        if t.tzinfo is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        i = int(np.searchsorted(self._ns, t.value))
        cands = [j for j in (i - 1, i) if 0 <= j < len(self._ns)]
        return min(cands, key=lambda j: (abs(self._ns[j] - t.value), j))

    def image_id(self, when: str | pd.Timestamp) -> int:
        """Id of the image closest to ``when``."""
        index = self.closest_index(when)
        assert index is not None, "no observations"
        return self.first_id + index

    def observation(self, image_id: int) -> pd.Timestamp:
        """Observation time of an image."""
        return self.observations[image_id - self.first_id]

    def jp2_bytes(self, image_id: int) -> bytes:
        """The bytes served for an image."""
        if self.jp2_file is not None:
            return self.jp2_file
        if self.jp2_for is not None:
            return self.jp2_for(self.observation(image_id))
        with self.lock:
            if image_id not in self._cache:
                self._cache[image_id] = small_jp2(image_id, codestream=self.codestream)
            return self._cache[image_id]

    # -- faults and counters ---------------------------------------------------------

    def inject(self, endpoint: str, key: Any, *faults: Fault) -> None:
        """Queue faults for the next requests of ``endpoint`` with ``key``.

        ``key`` is the requested time (anything :class:`pandas.Timestamp` accepts) for
        ``getClosestImage`` and the image id for ``getJP2Image``.
        """
        key = self._key(endpoint, key)
        with self.lock:
            self.faults.setdefault((endpoint, key), collections.deque()).extend(faults)

    def count(self, endpoint: str | None = None, key: Any = None) -> int:
        """Requests received, for one endpoint (and key), or in all."""
        with self.lock:
            if endpoint is None:
                return sum(self.hits.values())
            if key is None:
                return sum(n for (e, _k), n in self.hits.items() if e == endpoint)
            return self.hits[(endpoint, self._key(endpoint, key))]

    def times_of(self, endpoint: str, key: Any) -> list[float]:
        """Arrival times (``time.monotonic``) of the requests for one key."""
        key = self._key(endpoint, key)
        with self.lock:
            return [t for t, e, k, _s in self.log if e == endpoint and k == key]

    @staticmethod
    def _key(endpoint: str, key: Any) -> Any:
        if endpoint == CLOSEST:
            t = pd.Timestamp(key)
            return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t
        return int(key)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that hung up is part of the tests
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    fake: FakeHelioviewer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def do_GET(self) -> None:
        fake = self.fake
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            meet = fake._barrier is not None and fake._arrived < fake.rendezvous
            fake._arrived += 1
        try:
            if meet and fake._barrier is not None:
                try:
                    fake._barrier.wait(timeout=fake.rendezvous_timeout)
                    fake.rendezvous_met.set()
                except threading.BrokenBarrierError:
                    self._json(410, {"error": "rendezvous not met"})
                    return
            self._serve(fake)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away (e.g. after its timeout)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _serve(self, fake: FakeHelioviewer) -> None:
        self._truncate = False
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        endpoint = url.path.rstrip("/").rsplit("/", 1)[-1]
        if url.path.rstrip("/") not in (f"/v2/{CLOSEST}", f"/v2/{JP2}"):
            self._json(404, {"error": f"Invalid action: {url.path}"})
            return
        try:
            if endpoint == CLOSEST:
                key = FakeHelioviewer._key(CLOSEST, params["date"])
                int(params["sourceId"])
            elif "id" in params:
                key = int(params["id"])
            else:
                index = fake.closest_index(params["date"])
                int(params["sourceId"])
                key = None if index is None else fake.first_id + index
        except (KeyError, ValueError) as exc:
            self._json(400, {"error": f"Invalid or missing parameter: {exc}"})
            return
        with fake.lock:
            fake.hits[(endpoint, key)] += 1
            total = sum(fake.hits.values())
            queue = fake.faults.get((endpoint, key))
            fault = queue.popleft() if queue else None
        if total > fake.max_requests:
            self._json(410, {"error": "request limit of the test server reached"})
            return
        if fake.delay:
            fake.closing.wait(fake.delay)
        status = self._answer(fake, endpoint, key, fault)
        with fake.lock:
            fake.log.append((time.monotonic(), endpoint, key, status))

    def _answer(self, fake: FakeHelioviewer, endpoint: str, key: Any, fault: Fault | None) -> int:
        self._truncate = fault is not None and fault.kind == "truncate"
        if fault is not None:
            if fault.kind in ("500", "503"):
                self._json(int(fault.kind), {"error": "Internal server error"})
                return int(fault.kind)
            if fault.kind == "429":
                value = fault.retry_after
                if fault.http_date:
                    value = email.utils.formatdate(time.time() + fault.seconds, usegmt=True)
                self._json(429, {"error": "Too many requests"}, {"Retry-After": value or "0"})
                return 429
            if fault.kind == "stall":
                fake.closing.wait(fault.seconds)
            elif fault.kind == "hold":
                while not (fake.release.wait(0.05) or fake.closing.is_set()):
                    pass
            elif fault.kind == "html":
                page = b"<!DOCTYPE html><html><head><title>Error</title></head><body>Server busy</body></html>"
                self._send(200, page, "text/html; charset=utf-8")
                return 200
        if endpoint == CLOSEST:
            index = fake.closest_index(key)
            if index is None:
                self._json(
                    200,
                    {
                        "error": "No images of the requested type (HMI magnetogram) are currently available.",
                        "errno": 10,
                    },
                )
                return 200
            observed = fake.observations[index]
            self._json(
                200,
                {
                    "id": fake.first_id + index,
                    "date": observed.strftime("%Y-%m-%d %H:%M:%S"),
                    "scale": 0.504,
                    "scaleCorrection": 1.0,
                    "width": 4096,
                    "height": 4096,
                    "refPixelX": 2048.5,
                    "refPixelY": 2048.5,
                    "rsun": 1900,
                    "sunCenterOffsetParams": [],
                    "layeringOrder": 1,
                },
            )
            return 200
        if key is None or not 0 <= key - fake.first_id < len(fake.observations):
            self._json(200, {"error": f"Image {key} not found", "errno": 20})
            return 200
        body = fake.jp2_bytes(key)
        observed = fake.observation(key)
        name = fake.disposition or observed.strftime(
            "%Y_%m_%d__%H_%M_%S_000__SDO_HMI_HMI_magnetogram.jp2"
        )
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        self._send(200, body, "image/jp2", headers, drip=fake.drip, gated=True)
        return 200

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        drip: float = 0.0,
        gated: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if getattr(self, "_truncate", False):
            # Content-Length promises the whole body; send half of it and hang up.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        fake = self.fake
        free = False
        if gated:
            with fake.lock:
                fake._bodies += 1
                free = fake.hold_bodies_after is not None and fake._bodies <= fake.hold_bodies_after
        if gated and not free and not fake.gate.is_set():
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            while not (fake.gate.wait(0.05) or fake.closing.is_set()):
                pass
            body = body[half:]
        if drip and len(body) >= 4:
            step = -(-len(body) // 4)
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                if i + step < len(body):
                    fake.closing.wait(drip)
        else:
            self.wfile.write(body)
