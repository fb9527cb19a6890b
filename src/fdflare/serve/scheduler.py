"""The cycle loop of ``fdflare serve``: one forecast per cycle, then the verification.

Cycles are aligned to the clock: with ``every = 1h`` they are the whole hours (multiples of
``every`` since the Unix epoch). A cycle is *due* once the clock has reached it. Each cycle:

1. issues the forecast of the cycle's time (the observation closest to it) into the store,
   or records the failure with its reason (Helioviewer down, no observation near the time);
   a cycle that already has an issued forecast or a failure is never run again, so nothing
   is issued twice (the store also refuses a second forecast for a cycle);
2. fetches the flare list and verifies every forecast whose window has closed (inside the
   spans the lists covered) beside persistence and climatology; an outage of the list is
   recorded for the cycle with its reason, and the windows stay pending.

After downtime the scheduler catches up the missed cycles, oldest first, but at most
``catch_up`` of them (the newest ones); cycles before the service first started are never
run. The first start of a store records its first cycle.

The clock is injected (a callable returning a naive-UTC :class:`pandas.Timestamp`); the
loop waits on :attr:`Scheduler.wake` (a :class:`threading.Event`) with a timeout until
the next cycle, so a test or a replay moves the clock and sets the event, and
:attr:`Scheduler.stop` ends the loop between cycles: the cycle in flight always finishes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import FdflareError
from fdflare.core.recipe import Recipe

#: a wait never lasts longer than this many real seconds (the clock is looked at again)
MAX_WAIT_S = 30.0


def align(t: pd.Timestamp, every: pd.Timedelta) -> pd.Timestamp:
    """The cycle at or before ``t``: the last multiple of ``every`` since the epoch."""
    ns = pd.Timestamp(t).value
    step = every.value
    return pd.Timestamp(ns - ns % step)


def iso(t: Any) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``."""
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure_kind(exc: BaseException) -> str:
    """A short name of why a cycle failed: ``service``, ``no_observation``, ``input``, ..."""
    name = type(exc).__name__
    return {
        "ServiceError": "service",
        "NoObservationError": "no_observation",
        "DownloadError": "flare_list",
        "InputError": "input",
    }.get(name, name)


@dataclass
class CycleRecord:
    """What one cycle did."""

    cycle: pd.Timestamp
    status: str  # issued | failed | skipped
    forecast_id: int | None = None
    reason: str | None = None
    flares: str | None = None  # ok | failed | None (not fetched)
    flares_reason: str | None = None


@dataclass
class Scheduler:
    """The cycle loop (see module doc).

    Args:
        store: the :class:`~fdflare.forecast.store.ForecastStore`.
        state: the service's tables (:class:`~fdflare.serve.state.ServiceState`).
        forecaster: makes the forecast of a cycle's time (raises an ``FdflareError``).
        flares: the flare source (:mod:`fdflare.serve.flarelist`).
        recipe: the event forecast (threshold and window) for the verification.
        every: the cycle length.
        clock: the current time, naive UTC.
        catch_up: the most missed cycles run after downtime.
        rate: clock seconds per real second (for the waits; a replay runs faster).
        verify_every: verify at most this often (clock time); None: after every cycle.
        first: the first cycle (default: the one due at the first start of the store).
        last: the last cycle; the loop ends after it (a replay).
        climatology: the climatology rate of the verification (None: from the flare list).
    """

    store: Any
    state: Any
    forecaster: Callable[[pd.Timestamp], Any]
    flares: Any
    recipe: Recipe
    every: pd.Timedelta
    clock: Callable[[], pd.Timestamp]
    catch_up: int = 24
    rate: float = 1.0
    verify_every: pd.Timedelta | None = None
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    climatology: float | None = None
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    on_image: Callable[[int, Any], None] | None = None
    #: called after the last cycle, before the final verification (a replay moves its clock)
    on_finish: Callable[[], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    #: set once the loop has run every cycle up to ``last`` (replay done)
    done: threading.Event = field(default_factory=threading.Event)
    #: set while the loop waits for the next cycle (nothing in flight)
    idle: threading.Event = field(default_factory=threading.Event)
    #: the clock time of the last verification
    _verified_at: pd.Timestamp | None = None
    cycles_run: int = 0

    def __post_init__(self) -> None:
        if self.first is None:
            stored = self.state.get("first_cycle")
            if stored is None:
                self.first = align(self.clock(), self.every)
                self.state.put("first_cycle", iso(self.first))
            else:
                self.first = pd.Timestamp(stored.rstrip("Z"))
        self.state.put("every_s", self.every.total_seconds())
        if self.last is None:
            self.state.put("replay", None)

    # -- which cycles ---------------------------------------------------------------------

    def due(self, now: pd.Timestamp) -> list[pd.Timestamp]:
        """The cycles to run now, oldest first (none twice, at most ``catch_up``)."""
        newest = align(now, self.every)
        if self.last is not None:
            newest = min(newest, align(self.last, self.every))
        assert self.first is not None
        oldest = max(self.first, newest - (self.catch_up - 1) * self.every)
        if newest < oldest:
            return []
        cycles = pd.date_range(oldest, newest, freq=self.every)
        return [c for c in cycles if self.store.cycle_status(c) is None]

    # -- one cycle ------------------------------------------------------------------------

    def run_cycle(self, cycle: pd.Timestamp) -> CycleRecord:
        """Issue (or record the failure of) one cycle's forecast, then verify."""
        from fdflare.forecast.store import AlreadyIssued

        cycle = pd.Timestamp(cycle)
        if self.store.cycle_status(cycle) is not None:
            return CycleRecord(cycle, "skipped")
        t0 = time.perf_counter()
        try:
            fc = self.forecaster(cycle)
        except FdflareError as exc:
            reason = " ".join(str(exc).split())
            self.store.record_failure(
                cycle=cycle,
                requested=cycle,
                issue_time=self.clock().floor("s"),
                reason=reason,
                kind=failure_kind(exc),
            )
            record = CycleRecord(cycle, "failed", reason=reason)
            self.state.put(
                "last_failure", {"cycle": iso(cycle), "reason": reason, "at": iso(self.clock())}
            )
            self.log(f"cycle {iso(cycle)}: failed: {reason}")
        else:
            try:
                fid = self.store.issue(fc, cycle=cycle)
            except AlreadyIssued:
                return CycleRecord(cycle, "skipped")
            record = CycleRecord(cycle, "issued", forecast_id=fid)
            self.state.put(
                "last_good",
                {"cycle": iso(cycle), "at": iso(self.clock()), "forecast_id": fid},
            )
            if self.on_image is not None:
                try:
                    self.on_image(fid, fc)
                except Exception as exc:  # the picture is a convenience: say so, go on
                    self.log(f"cycle {iso(cycle)}: no dashboard image ({exc})")
            self.log(
                f"cycle {iso(cycle)}: P({fc.recipe.event}) = {fc.probability:.3f} "
                f"({time.perf_counter() - t0:.2f} s)"
            )
        self.cycles_run += 1
        self.state.put("cycle", {"cycle": iso(cycle), "status": record.status})
        self.verify_now(record)
        return record

    def verify_now(self, record: CycleRecord | None = None, *, force: bool = False) -> None:
        """Fetch the flare list and verify every closed window (when due)."""
        now = self.clock()
        if (
            not force
            and self.verify_every is not None
            and self._verified_at is not None
            and now - self._verified_at < self.verify_every
        ):
            return
        self._verified_at = now
        try:
            answer = self.flares.fetch(now, stop=None)
        except FdflareError as exc:
            reason = " ".join(str(exc).split())
            self.state.put("flare_list", {"ok": False, "reason": reason, "at": iso(now)})
            self.log(f"flare list: failed: {reason}")
            if record is not None:
                record.flares, record.flares_reason = "failed", reason
            return
        self.state.add_flares(answer.catalog, covered=answer.covered, source=answer.source)
        self.state.put(
            "flare_list",
            {"ok": True, "at": iso(now), "source": answer.source, "notes": answer.notes},
        )
        if record is not None:
            record.flares = "ok"
        self.state.put(
            "verification", verification(self.store, self.state, self.recipe, self.climatology, now)
        )

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Run due cycles, wait for the next, until :attr:`stop` (or after ``last``)."""
        if self.state.get("cycle") is not None:  # a restart: the verification of the
            self.verify_now(force=True)  # last cycle may not have run before it stopped
        while not self.stop.is_set():
            now = self.clock()
            due = self.due(now)
            for cycle in due:
                if self.stop.is_set():
                    return
                self.run_cycle(cycle)
            if due:
                continue  # the clock moved while they ran: look again before waiting
            if self.last is not None and align(now, self.every) >= align(self.last, self.every):
                self.finish()
                return
            self.sleep_until(align(now, self.every) + self.every)

    def finish(self) -> None:
        """The last cycle is done (a replay): verify what can be, and say so."""
        if self.on_finish is not None:
            self.on_finish()
        self.verify_now(force=True)
        self.state.put("replay", {"done": True, "last": iso(self.last)})
        self.done.set()
        self.idle.set()
        self.log("replay done: every cycle run")

    def sleep_until(self, t: pd.Timestamp) -> None:
        """Wait on :attr:`wake` until the clock reaches ``t`` (or :attr:`stop`)."""
        while not self.stop.is_set():
            left = (t - self.clock()).total_seconds() / self.rate
            if left <= 0:
                return
            self.idle.set()
            self.wake.wait(min(left, MAX_WAIT_S))
            self.wake.clear()


def verification(
    store: Any, state: Any, recipe: Recipe, climatology: float | None, now: pd.Timestamp
) -> dict[str, Any]:
    """Verify the store's forecasts against the kept flares (see :mod:`fdflare.serve.state`)."""
    from fdflare.forecast.verify import verify_forecasts
    from fdflare.serve.state import covered_mask

    table = store.frame()
    spans = state.coverage()
    window = recipe.window_delta
    out: dict[str, Any] = {
        "at": iso(now),
        "event": recipe.event,
        "threshold": recipe.threshold,
        "window": recipe.window,
        "forecasts": len(table),
    }
    if not len(table) or not spans:
        out.update(verified=0, pending=len(table), uncovered=0, scores={}, reliability=[])
        return out
    starts = pd.DatetimeIndex(pd.to_datetime(table["window_start"], utc=True).dt.tz_localize(None))
    ends = starts + window
    until = max(b for _a, b in spans)
    ok = covered_mask(starts, ends, window, spans)
    pending = ~ok & np.asarray(ends > until)
    uncovered = ~ok & ~pending
    table = table[ok | pending].reset_index(drop=True)
    catalog = state.flares()
    v = verify_forecasts(
        table, catalog, until=until, recipe=recipe, climatology=climatology,
        since=min(a for a, _b in spans), history_name="the store", catalog_name="the flare list",
    )  # fmt: skip
    out.update(v.to_dict())
    out.update(
        at=iso(now),
        forecasts=len(starts),
        uncovered=int(uncovered.sum()),
        covered=[[iso(a), iso(b)] for a, b in spans],
    )
    rel: list[dict[str, Any]] = []
    if v.table is not None and len(v.table):
        p = pd.to_numeric(v.table["flare_prob"]).to_numpy(dtype=float)
        y = pd.to_numeric(v.table["target"]).to_numpy(dtype=float)
        bins = np.clip((p * 10).astype(int), 0, 9)
        for b in range(10):
            m = bins == b
            if m.any():
                rel.append(
                    {
                        "bin": b,
                        "n": int(m.sum()),
                        "mean_prob": float(p[m].mean()),
                        "observed": float(y[m].mean()),
                    }
                )
    out["reliability"] = rel
    return out
