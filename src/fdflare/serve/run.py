"""``fdflare serve``: the scheduler in a thread, the API in uvicorn, one clean shutdown.

:func:`prepare` does everything that can fail before anything is served (the members
load, the store opens for writing, the port binds), so a bad ensemble, an unwritable store
or a port in use is one line and a non-zero exit. :class:`Service` then runs the scheduler
(:mod:`fdflare.serve.scheduler`) in a thread and uvicorn in the calling thread. SIGTERM or
SIGINT stop uvicorn from accepting requests, let the cycle in flight finish, close the
store and return 0; SIGUSR1 wakes the scheduler (a test that moved the clock file).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import BusyError, FdflareError, InputError, OutputError, RunError
from fdflare.core.locks import lock_file
from fdflare.core.recipe import Recipe


def bind(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A listening socket on ``host:port`` (bound now, so a port in use fails before work).

    With ``listen=False`` it is bound only: nothing can connect until the server, which
    calls ``listen`` when it starts, runs.

    Raises:
        RunError: the address cannot be bound (in use, not an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RunError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if listen:
        sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def service_lock(store: Path) -> Iterator[None]:
    """Hold ``STORE.serve.lock``: one service per store (``forecast --store`` may run beside)."""
    lock = store.with_name(store.name + ".serve.lock")
    while True:
        try:
            created = False
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue  # removed by the service that held it, between the two opens
        except OSError as exc:
            raise OutputError(
                f"cannot write {lock} beside the store ({exc.strerror or exc}): the store's "
                "folder must be writable"
            ) from None
        if not lock_file(fd):
            os.close(fd)
            raise BusyError(f"another `fdflare serve` runs on {store} (it holds {lock})")
        if _same_file(fd, lock):
            break
        os.close(fd)  # locked a lock file that a failed start removed meanwhile: again
    try:
        yield
    finally:
        if created and not store.exists():
            # a start that failed before the store was made leaves nothing behind; removed
            # while held, and every taker checks that its lock is still the file's
            with contextlib.suppress(OSError):
                os.unlink(lock)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def image_png(fc: Any) -> tuple[bytes, dict[str, Any] | None]:
    """The largest decoded image of a forecast's observation as PNG, with its geometry."""
    from PIL import Image

    size = max(fc.observation.images)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(fc.observation.images[size], dtype=np.uint8)).save(buf, "PNG")
    geo = fc.observation.geometry.get(size)
    keep = None
    if geo:
        keep = {k: float(geo[k]) for k in ("center_x", "center_y", "radius_px") if k in geo}
    return buf.getvalue(), keep


def attribution_png(fc: Any, method: str) -> bytes:
    """The first member's attribution map of the forecast's magnetogram, as PNG bytes."""
    import tempfile

    from fdflare.analysis.explain import explain_image
    from fdflare.forecast.service import iso

    first = fc.members[0]
    size = first.loaded.image_size
    with tempfile.TemporaryDirectory(prefix="fdflare-serve-") as tmp:
        out = Path(tmp) / "attribution.png"
        explain_image(
            first.loaded,
            fc.observation.images[size],
            fc.observation.geometry.get(size),
            method=method,
            out_png=out,
            title=f"{iso(fc.observation.time)}: forecast {fc.probability:.3f}; member 1 of "
            f"{len(fc.members)}",
        )
        return out.read_bytes()


def make_forecaster(
    members: Sequence[Any],
    *,
    recipe: Recipe,
    tolerance: pd.Timedelta,
    clock: Callable[[], pd.Timestamp],
    base_urls: Sequence[str] = (),
    archive: Any = None,
    policy: Any = None,
    calibration: Any = None,
    accelerator: str = "cpu",
    fallback: Any = None,
    flares_up_to: Any = None,
) -> Callable[[pd.Timestamp], Any]:
    """The forecast of a cycle's time, from Helioviewer or a local archive.

    ``fallback`` (a source such as :class:`~fdflare.forecast.jsoc_source.JsocSource`) is
    asked when every Helioviewer URL failed or held no observation within the tolerance;
    the forecast names the source it came from. When the fallback fails too, the cycle
    fails with both reasons. ``flares_up_to``: for a history map, the flares up to the
    observation (:class:`fdflare.serve.flarelist.HistoryReader`, whose list is asked first).
    """
    from fdflare.core.errors import FdflareError
    from fdflare.forecast.service import NoObservationError, ServiceError, run_forecast

    def attempt(cycle: pd.Timestamp, urls: Sequence[str], source: Any) -> Any:
        return run_forecast(
            members,
            requested=cycle,
            base_urls=urls,
            tolerance=tolerance,
            calibration=calibration,
            accelerator=accelerator,
            policy=policy,
            now=clock,
            archive=source,
            recipe=recipe,
            flare_catalog=flares_up_to,
        )

    def forecast(cycle: pd.Timestamp) -> Any:
        fetch = getattr(flares_up_to, "fetch", None)
        if fetch is not None:  # the flare list first: no image is downloaded for nothing
            fetch()
        try:
            return attempt(cycle, base_urls, archive)
        except (ServiceError, NoObservationError) as exc:
            if fallback is None:
                raise
            try:
                return attempt(cycle, (), fallback)
            except FdflareError as second:
                # the kind is the fallback's where it failed otherwise (the flare list)
                kind = (
                    type(exc)
                    if isinstance(second, (ServiceError, NoObservationError))
                    else type(second)
                )
                raise kind(f"{exc}; then {fallback.source}: {second}") from None

    return forecast


@dataclass
class Service:
    """A prepared service: run it with :meth:`serve` (or :meth:`start` in a thread)."""

    scheduler: Any
    app: Any
    sock: socket.socket
    stores: list[Any]
    log: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr, flush=True))
    server: Any = None
    thread: threading.Thread | None = None
    #: why the scheduler stopped on its own (the service then exits with status 3)
    failure: str | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``."""
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}/"

    def _config(self) -> Any:
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # signals are ours (see serve)
                yield

        self.server = Server(config)
        return self.server

    def _scheduler_main(self) -> None:
        try:
            self.scheduler.run()
        except Exception as exc:  # e.g. the store became unwritable: stop the whole service
            text = str(exc) if isinstance(exc, FdflareError) else f"{type(exc).__name__}: {exc}"
            self.failure = " ".join(text.split())
            self.log(f"fdflare serve: error: the scheduler stopped: {self.failure}")
            if self.server is not None:
                self.server.should_exit = True

    def start_scheduler(self) -> None:
        """Start the cycle loop in a thread."""
        self.thread = threading.Thread(target=self._scheduler_main, name="scheduler", daemon=True)
        self.thread.start()

    def serve(self) -> int:
        """Serve until SIGTERM/SIGINT; finish the cycle in flight; close the store."""
        server = self._config()

        def stop(signum: int, _frame: Any) -> None:
            self.scheduler.stop.set()
            self.scheduler.wake.set()
            server.should_exit = True

        def wake(_signum: int, _frame: Any) -> None:
            self.scheduler.wake.set()

        old = {
            s: signal.signal(s, h)
            for s, h in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGUSR1, wake))
        }
        try:
            self.sock.listen(128)  # bound before the models loaded; connections from now on
            self.log(
                f"fdflare serve: listening on {self.url} (dashboard), API under {self.url}api/"
            )
            self.start_scheduler()
            server.run(sockets=[self.sock])
        finally:
            self.shutdown()
            for s, h in old.items():
                signal.signal(s, h)
        if self.failure is not None:
            raise RunError(f"the scheduler stopped: {self.failure}")
        return 0

    def shutdown(self) -> None:
        """Stop the loop after the cycle in flight, then close everything."""
        self.scheduler.stop.set()
        self.scheduler.wake.set()
        if self.thread is not None:
            self.thread.join()
        for s in self.stores:
            s.close()
        self.sock.close()
        self.log("fdflare serve: stopped; the store is closed")

    def start(self) -> None:
        """Serve in background threads (tests): uvicorn and the scheduler."""
        server = self._config()
        self.sock.listen(128)
        self.start_scheduler()
        self._uvicorn = threading.Thread(
            target=server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self._uvicorn.start()

    def stop(self) -> None:
        """Stop what :meth:`start` started."""
        if self.server is not None:
            self.server.should_exit = True
        self._uvicorn.join(timeout=30)
        self.shutdown()


def prepare(
    *,
    members: Sequence[Any],
    recipe: Recipe,
    store_path: str | os.PathLike[str],
    flares: Any,
    clock: Callable[[], pd.Timestamp],
    every: pd.Timedelta,
    tolerance: pd.Timedelta,
    host: str = "127.0.0.1",
    port: int = 8080,
    sock: socket.socket | None = None,
    base_urls: Sequence[str] = (),
    archive: Any = None,
    policy: Any = None,
    calibration: Any = None,
    catch_up: int = 24,
    replay: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    pace: float = 0.0,
    verify_every: pd.Timedelta | None = None,
    climatology: float | None = None,
    method_name: str = "fdflare",
    accelerator: str = "cpu",
    explain: str | None = None,
    fallback: Any = None,
    log: Callable[[str], None] | None = None,
) -> Service:
    """Open the store, bind the port, build the scheduler and the API (see module doc).

    ``sock``, a socket from :func:`bind`, is used instead of binding ``host:port`` (the CLI
    binds before the models load); it is closed if preparing fails.

    Raises:
        InputError: the store cannot be opened for writing or is not a store.
        RunError: the port cannot be bound.
    """
    from fdflare.forecast.store import ForecastStore
    from fdflare.serve.api import ApiContext, create_app
    from fdflare.serve.replay import ReplayClock
    from fdflare.serve.scheduler import Scheduler, align
    from fdflare.serve.state import ServiceState

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    path = Path(store_path)
    stores: list[Any] = []
    try:
        store = ForecastStore.open(path, create=True)
        stores.append(store)
        import sqlite3

        try:
            state = ServiceState(path)
        except sqlite3.Error as exc:
            raise InputError(f"cannot add the service's tables ({exc})", path=path) from None
        stores.append(state)
        last = None
        stop = threading.Event()
        if replay is not None:
            first, last = align(replay[0], every), replay[1]
            resume = _resume_point(store, first, last, every)
            clock = ReplayClock(resume, pace=pace, stop=stop)
        else:
            first = None
        flares_up_to = None
        if getattr(calibration, "method", None) == "history":
            from fdflare.serve.flarelist import HistoryReader

            flares_up_to = HistoryReader(flares, state, clock)
        forecaster = make_forecaster(
            members, recipe=recipe, tolerance=tolerance, clock=clock, base_urls=base_urls,
            archive=archive, policy=policy, calibration=calibration, accelerator=accelerator,
            fallback=fallback, flares_up_to=flares_up_to,
        )  # fmt: skip

        def keep_image(fid: int, fc: Any) -> None:
            png, geo = image_png(fc)
            state.put_image(fid, png, geo, attribution_png(fc, explain) if explain else None)

        scheduler = Scheduler(
            store=store, state=state, forecaster=forecaster, flares=flares, recipe=recipe,
            every=every, clock=clock, catch_up=catch_up if replay is None else 1,
            verify_every=verify_every, first=first, last=last, climatology=climatology,
            log=log, on_image=keep_image, stop=stop,
        )  # fmt: skip
        if isinstance(clock, ReplayClock):
            scheduler.sleep_until = clock.sleep_until  # type: ignore[method-assign]
        read_store = ForecastStore.open(path, create=False)
        stores.append(read_store)
        read_state = ServiceState(path)
        stores.append(read_state)
        ctx = ApiContext(
            store=read_store, state=read_state, clock=clock, every=every,
            method_name=method_name, refresh_s=60 if replay is None else 5,
        )  # fmt: skip
        if sock is None:
            sock = bind(host, port)
    except BaseException:
        for s in stores:
            s.close()
        if sock is not None:
            sock.close()
        raise
    if replay is not None:
        end = replay[1] + recipe.window_delta
        assert isinstance(clock, ReplayClock)
        scheduler.on_finish = lambda: clock.set(end)  # the catalog covers the last windows

    return Service(scheduler, create_app(ctx), sock, stores, log=log)


def _resume_point(
    store: Any, first: pd.Timestamp, last: pd.Timestamp, every: pd.Timedelta
) -> pd.Timestamp:
    """The first cycle of a replay not yet run (cycles run in order, so all before it are)."""
    cycles = pd.date_range(first, last, freq=every)
    lo, hi = 0, len(cycles)
    while lo < hi:  # cycles run in order: binary search for the first not run
        mid = (lo + hi) // 2
        if store.cycle_status(cycles[mid]) is None:
            hi = mid
        else:
            lo = mid + 1
    return cycles[min(lo, len(cycles) - 1)] if len(cycles) else first
