"""A loopback stand-in for SWPC's GOES X-ray flare list, with faults, for tests and benchmarks.

``GET /json/goes/primary/xray-flares-7-day.json`` answers a JSON array shaped like SWPC's
(``time_tag, begin_time, begin_class, max_time, max_class, max_xrlong, end_time,
end_class, satellite``) holding the flares of ``catalog`` (a catalog frame) that began in
the 7 days before the server's ``now()`` (a callable, the test's clock).

Faults are queued with :meth:`FakeSwpc.inject` and used one per request: ``"500"``,
``"garbage"`` (HTML with status 200), ``"truncated"`` (half of a JSON body), ``"hold"``
(answer only once ``release`` is set or the server stops: a request in flight the test can
see, ``arrived`` is set when it is held). ``down()`` closes the listening socket (an
outage: connections are refused) and ``up()`` opens it again on the same port.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd

PATH = "/json/goes/primary/xray-flares-7-day.json"


class FakeSwpc:
    """SWPC's 7-day flare list on 127.0.0.1 (see module doc)."""

    def __init__(self, catalog: pd.DataFrame, now: Callable[[], pd.Timestamp]) -> None:
        self.catalog = catalog
        self.now = now
        self.faults: collections.deque[str] = collections.deque()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.arrived = threading.Event()
        self.closing = threading.Event()
        self.requests = 0
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def records(self) -> list[dict[str, Any]]:
        """The list as SWPC would answer it now (duplicates as SWPC repeats them, once each)."""
        now = self.now()
        cat = self.catalog[
            (self.catalog["start_time"] > now - pd.Timedelta(days=7))
            & (self.catalog["start_time"] <= now)
        ]
        out = []
        for _, f in cat.iterrows():
            t = pd.Timestamp(f["start_time"])
            out.append(
                {
                    "time_tag": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "begin_time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "begin_class": "B1.0",
                    "max_time": (t + pd.Timedelta(minutes=12)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "max_class": str(f["goes_class"]),
                    "max_xrlong": float(f["flux"]),
                    "end_time": (t + pd.Timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
                    if t + pd.Timedelta(minutes=30) <= now
                    else "Unk",
                    "end_class": "C1.0",
                    "satellite": 16,
                }
            )
        return out

    def inject(self, *faults: str) -> None:
        """Queue faults for the next requests."""
        with self.lock:
            self.faults.extend(faults)

    @property
    def url(self) -> str:
        """The list's URL."""
        return f"http://127.0.0.1:{self.port}{PATH}"

    def start(self) -> FakeSwpc:
        """Serve on 127.0.0.1 (a free port the first time, the same port after :meth:`down`)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with fake.lock:
                    fake.requests += 1
                    fault = fake.faults.popleft() if fake.faults else None
                if self.path.split("?")[0] != PATH:
                    self._send(404, b'{"error": "not found"}', "application/json")
                    return
                if fault == "hold":
                    fake.arrived.set()
                    while not (fake.release.wait(0.05) or fake.closing.is_set()):
                        pass
                if fault == "500":
                    self._send(500, b"Internal Server Error", "text/plain")
                    return
                if fault == "garbage":
                    self._send(200, b"<html><body>maintenance</body></html>", "text/html")
                    return
                body = json.dumps(fake.records()).encode()
                if fault == "truncated":
                    body = body[: max(1, len(body) // 2)]
                self._send(200, body, "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (ConnectionError, TimeoutError):
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.closing.clear()
        self._httpd = Server(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (held requests are released)."""
        self.closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    down = stop

    def up(self) -> None:
        """Serve again on the same port."""
        self.start()

    def __enter__(self) -> FakeSwpc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
