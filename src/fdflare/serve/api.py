"""The read-only HTTP API of ``fdflare serve`` (FastAPI; its OpenAPI at ``/openapi.json``).

==================================  =====================================================
``GET /``                           the dashboard (:mod:`fdflare.serve.dashboard`)
``GET /api/latest``                 the newest issued forecast (404 before the first)
``GET /api/forecasts``              forecasts with ``start <= requested time < end``
                                    (``?start=&end=&limit=&format=json|csv``)
``GET /api/forecasts/{id}``         one forecast with its members
``GET /api/scoreboard/latest``      the newest forecast as a CCMC Flare Scoreboard
                                    full-disk JSON submission
``GET /api/verification``           the rolling verification beside persistence and
                                    climatology, with the pending and uncovered counts
``GET /api/failures``               the failed cycles with their reasons
``GET /api/health``                 the age of the last good cycle; HTTP 503 when stale
==================================  =====================================================

A bad query parameter is HTTP 400 with ``{"error": "one line"}``. The API opens the store
with its own connections and never writes; the dashboard and ``latest`` are rendered once
per change of the store (SQLite's ``data_version``) and per minute of the clock, and
served from memory in between, so many clients cost little.
"""

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fdflare.serve.scheduler import iso

#: a forecast range query returns at most this many rows
MAX_ROWS = 100_000


@dataclass
class ApiContext:
    """What the API reads: the store, the service's tables, the clock, the cycle length."""

    store: Any
    state: Any
    clock: Callable[[], pd.Timestamp]
    every: pd.Timedelta
    method_name: str = "fdflare"
    refresh_s: int = 60
    lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def cached(self, name: str, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per ``key`` (the store's version and the clock's minute)."""
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = make()
        self._cache[name] = (key, value)
        return value

    def key(self, *, minute: bool = False) -> Any:
        """The store's version (and the clock's minute)."""
        with self.lock:
            version = self.state.version()
        return (version, self.clock().floor("min")) if minute else version

    # -- the reads --------------------------------------------------------------------------

    def latest(self) -> dict[str, Any] | None:
        """The newest forecast."""
        with self.lock:
            return self.store.latest()

    def health(self) -> dict[str, Any]:
        """The age of the last good cycle, the last failure, the flare list's state."""
        now = self.clock()
        with self.lock:
            good = self.state.get("last_good")
            failure = self.state.get("last_failure")
            flares = self.state.get("flare_list")
            replay = self.state.get("replay")
            latest = self.store.latest()
        age = None
        status = "starting"
        last_good = good["cycle"] if good else None
        if latest is not None:
            newest = latest.get("cycle") or latest.get("requested_time")
            if last_good is None or (newest and newest > last_good):
                last_good = newest
        if last_good:
            age = (now - pd.Timestamp(last_good.rstrip("Z"))).total_seconds()
            status = "ok" if age <= 2 * self.every.total_seconds() else "stale"
            if replay and replay.get("done"):
                status = "replay done"
        return {
            "status": status,
            "now": iso(now),
            "last_good_cycle": last_good,
            "last_good_age_s": None if age is None else round(age),
            "every_s": self.every.total_seconds(),
            "last_failure": failure,
            "flare_list": flares,
        }

    def dashboard(self) -> str:
        """The dashboard page."""
        from fdflare.serve.dashboard import SPAN, render

        now = self.clock()
        with self.lock:
            latest = self.store.latest()
            full = self.store.get(int(latest["id"])) if latest else None
            rows = self.store.forecasts(now - SPAN, now + pd.Timedelta(seconds=1))
            flares = self.state.flares(start=now - SPAN)
            verification = self.state.get("verification")
            image = self.state.image(int(latest["id"])) if latest else None
        if full is not None and latest is not None:
            latest = {**latest, "members": full.get("members") or []}
        points = [
            (pd.Timestamp(r["window_start"].rstrip("Z")), float(r["probability"])) for r in rows
        ]
        threshold = None
        if latest is not None and latest.get("recipe"):
            threshold = latest["recipe"].get("threshold")
        if threshold:
            from fdflare.acquire.goes import class_flux

            flares = flares[flares["flux"].to_numpy() >= class_flux([threshold])[0]]
        return render(
            latest=latest,
            points=points,
            flares=flares,
            verification=verification,
            image=image,
            now=now,
            health=self.health(),
            refresh_s=self.refresh_s,
        )


def scoreboard_json(fc: dict[str, Any], method: str) -> dict[str, Any]:
    """A forecast as a CCMC Flare Scoreboard full-disk JSON submission (``docs/serve.md``)."""
    recipe = fc.get("recipe") or {}
    n = len(fc.get("members") or [])
    return {
        "forecast_submission": {
            "model": {"short_name": method, "spase_id": None},
            "issue_time": fc.get("cycle") or fc["requested_time"],
            "mode": "forecast",
            "full_disk_forecasts": [
                {
                    "prediction_window": {
                        "start_time": fc["window_start"],
                        "end_time": fc["window_end"],
                    },
                    "probabilities": [
                        {
                            "flare_class": f">={recipe.get('threshold', fc.get('threshold'))}",
                            "probability_value": fc["probability"],
                            "uncertainty": fc.get("spread") if n > 1 else None,
                        }
                    ],
                    "input_data": ["SDO/HMI LOS_Magnetogram"],
                    "observation_time": fc.get("observation_time"),
                }
            ],
        }
    }


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if not isinstance(v2, (dict, list)):
                    out[f"{k}.{k2}"] = v2
        elif not isinstance(v, list):
            out[k] = v
    return out


def create_app(ctx: ApiContext) -> Any:
    """The FastAPI application over ``ctx`` (see module doc)."""
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from fdflare import __version__

    app = FastAPI(
        title="fdflare forecast service",
        version=__version__,
        description="Read-only forecasts, their verification and the service's health.",
        docs_url=None,  # the interactive pages load scripts from a CDN; the schema is served
        redoc_url=None,
    )

    def error(status: int, text: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(text.split())}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
        return error(400, f"{where}: {first.get('msg', 'bad parameter')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    def parse_time(value: str | None, name: str) -> pd.Timestamp | None:
        from fdflare.core.errors import InputError
        from fdflare.core.timeparse import parse_time as parse

        if value is None:
            return None
        try:
            return parse(value, name=name)
        except InputError as exc:
            raise _Bad(f"{name}: {exc.message}") from None

    class _Bad(Exception):
        pass

    @app.exception_handler(_Bad)
    async def bad(_request: Request, exc: _Bad) -> JSONResponse:
        return error(400, str(exc))

    fast = {"/": "dashboard", "/api/latest": "latest"}

    async def front(scope: Any, receive: Any, send: Any) -> None:
        """The dashboard and ``latest`` straight from memory while the store is unchanged."""
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in fast:
            name = fast[scope["path"]]
            key = ctx.key(minute=name == "dashboard")
            hit = ctx._cache.get(name)
            if hit is not None and hit[0] == key and hit[1] is not None:
                body, ctype = hit[1]
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-cache")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    @app.get("/", response_class=HTMLResponse, summary="the dashboard")
    async def dashboard() -> Response:
        key = ctx.key(minute=True)

        def make() -> tuple[bytes, bytes]:
            return ctx.dashboard().encode("utf-8"), b"text/html; charset=utf-8"

        body, _ = await run_in_threadpool(ctx.cached, "dashboard", key, make)
        return HTMLResponse(body, headers={"Cache-Control": "no-cache"})

    @app.get("/api/latest", summary="the newest issued forecast")
    async def latest() -> Response:
        def make() -> tuple[bytes, bytes] | None:
            fc = ctx.latest()
            return None if fc is None else (json.dumps(fc).encode("utf-8"), b"application/json")

        hit = ctx.cached("latest", ctx.key(), make)
        if hit is None:
            return error(404, "no forecast issued yet")
        return Response(hit[0], media_type="application/json")

    @app.get("/api/forecasts", summary="forecasts over a time range, as JSON or CSV")
    def forecasts(
        start: str | None = Query(None, description="first requested time (ISO 8601, UTC)"),
        end: str | None = Query(None, description="end of the range, excluded"),
        limit: int = Query(10_000, ge=1, le=MAX_ROWS, description="most rows"),
        format: str = Query("json", pattern="^(json|csv)$", description="json or csv"),
    ) -> Response:
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
        if t0 is not None and t1 is not None and t1 <= t0:
            raise _Bad(f"end {iso(t1)} is not after start {iso(t0)}")
        with ctx.lock:
            rows = ctx.store.forecasts(t0, t1, limit=limit)
        if format == "csv":
            frame = pd.DataFrame([_flat(r) for r in rows])
            buf = io.StringIO()
            frame.to_csv(buf, index=False, lineterminator="\n")
            return Response(buf.getvalue(), media_type="text/csv; charset=utf-8")
        return JSONResponse({"count": len(rows), "forecasts": rows})

    @app.get("/api/forecasts/{forecast_id}", summary="one forecast with its members")
    def one(forecast_id: int) -> JSONResponse:
        with ctx.lock:
            fc = ctx.store.get(forecast_id)
        if fc is None:
            return error(404, f"no forecast {forecast_id}")
        return JSONResponse(fc)

    @app.get("/api/scoreboard/latest", summary="the newest forecast as a Flare Scoreboard JSON")
    def scoreboard() -> JSONResponse:
        with ctx.lock:
            fc = ctx.store.latest()
            full = ctx.store.get(int(fc["id"])) if fc else None
        if full is None:
            return error(404, "no forecast issued yet")
        return JSONResponse(scoreboard_json(full, ctx.method_name))

    @app.get("/api/verification", summary="the rolling verification beside the baselines")
    async def verification() -> Response:
        def make() -> bytes:
            with ctx.lock:
                v = ctx.state.get("verification")
            if v is None:
                v = {"verified": 0, "pending": None, "scores": {}, "at": None}
            return json.dumps(v).encode("utf-8")

        body = await run_in_threadpool(ctx.cached, "verification", ctx.key(), make)
        return Response(body, media_type="application/json")

    @app.get("/api/failures", summary="failed cycles with their reasons")
    def failures(start: str | None = None, end: str | None = None) -> JSONResponse:
        t0, t1 = parse_time(start, "start"), parse_time(end, "end")
        with ctx.lock:
            rows = ctx.store.failures(t0, t1)
        return JSONResponse({"count": len(rows), "failures": rows})

    @app.get("/api/health", summary="the age of the last good cycle (HTTP 503 when stale)")
    async def health() -> Response:
        key = (ctx.key(), ctx.clock().floor("s"))
        h = await run_in_threadpool(ctx.cached, "health", key, ctx.health)
        return JSONResponse(h, status_code=503 if h["status"] == "stale" else 200)

    front.app = app  # type: ignore[attr-defined]  # the FastAPI app (its routes, its schema)
    return front
