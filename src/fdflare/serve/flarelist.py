"""Where the service learns which flares happened: SWPC's live list, or a catalog file.

A flare source answers :meth:`fetch` with the flares it knows and the time span its answer
covers (a window is verified only inside a covered span, see :mod:`fdflare.serve.state`):

* :class:`SwpcSource`: SWPC's GOES X-ray flare list of the last 7 days
  (:mod:`fdflare.acquire.swpc`), through the one HTTP policy; it covers
  ``[now - 7 d, now - 30 min]`` (a flare enters the list minutes after it begins:
  :data:`LIST_DELAY`);
* :class:`HekSource`: the same GOES flares as HEK serves them (with positions), the 7 days
  before the clock, through the HEK client of :mod:`fdflare.acquire.hek` (the one HTTP
  policy); it covers what :class:`SwpcSource` does;
* :class:`CatalogSource`: a catalog file (any format of
  :func:`~fdflare.acquire.catalog.read_catalog`), for ``serve --replay``: at the clock's
  ``now`` it shows the flares that started by then and covers ``[its first flare's day,
  now]``, as the live list would have.

Failures are :class:`~fdflare.core.errors.FdflareError` with the reason in words.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class FlareList:
    """One answer of a flare source."""

    catalog: pd.DataFrame
    covered: tuple[pd.Timestamp, pd.Timestamp]
    source: str
    notes: list[str] = field(default_factory=list)


#: how long after a flare begins it may take to appear in SWPC's list
LIST_DELAY = pd.Timedelta(minutes=30)


class SwpcSource:
    """SWPC's 7-day GOES X-ray flare list (see module doc)."""

    def __init__(self, url: str, *, policy: Any = None) -> None:
        from fdflare.acquire.swpc import SWPC_SPAN

        self.url = url
        self.policy = policy
        self.span = SWPC_SPAN

    def fetch(self, now: pd.Timestamp, *, stop: Any = None) -> FlareList:
        """The list now (raises :class:`~fdflare.core.errors.DownloadError` after retries)."""
        from fdflare.acquire.swpc import fetch_swpc_flares

        cat = fetch_swpc_flares(self.url, policy=self.policy, stop=stop)
        notes = []
        bad = int(cat.attrs.get("bad_records", 0))
        if bad:
            notes.append(f"{bad} record(s) of the list without a start time or class left out")
        late = cat["start_time"] > now + pd.Timedelta(minutes=1)
        if late.any():
            notes.append(f"{int(late.sum())} flare(s) dated after the clock left out")
            cat = cat[~late].reset_index(drop=True)
        return FlareList(cat, (now - self.span, now - LIST_DELAY), self.url, notes)


class HekSource:
    """HEK's GOES flares of the 7 days before the clock (see module doc)."""

    def __init__(self, url: str, *, policy: Any = None) -> None:
        from fdflare.acquire.hek import HEKFlareClient

        self.url = url
        self.client = HEKFlareClient(url=url)
        self.policy = policy or self.client.policy()
        self.span = pd.Timedelta(days=7)

    def fetch(self, now: pd.Timestamp, *, stop: Any = None) -> FlareList:
        """The flares HEK lists as starting in the 7 days up to ``now``."""
        from fdflare import __version__
        from fdflare.acquire.catalog import COLUMNS
        from fdflare.acquire.hek import records_to_catalog

        with self.policy.client(headers={"User-Agent": f"fdflare/{__version__}"}) as http:
            records = self.client.search(http, now - self.span, now, None, policy=self.policy)
        if records:
            cat = records_to_catalog(pd.DataFrame(records))
        else:
            cat = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
            cat["start_time"] = pd.Series(dtype="datetime64[ns]")
            cat["goes_class"] = pd.Series(dtype="string")
        inside = (cat["start_time"] >= now - self.span) & (cat["start_time"] <= now)
        cat = cat[inside].reset_index(drop=True)
        counts = getattr(cat, "attrs", {}).get("counts", {})
        notes = [f"{counts[k]} HEK record(s) {k.replace('_', ' ')} left out"
                 for k in ("bad_time", "unclassified", "bad_class") if counts.get(k)]  # fmt: skip
        return FlareList(cat, (now - self.span, now - LIST_DELAY), self.url, notes)


class CatalogSource:
    """A catalog file shown as the live list would have shown it at each time."""

    def __init__(
        self, path: str | os.PathLike[str], fmt: str = "auto", *, start: pd.Timestamp | None = None
    ) -> None:
        from fdflare.acquire.catalog import read_catalog

        self.path = str(path)
        self.catalog = read_catalog(path, fmt=fmt)
        first = self.catalog["start_time"].min() if len(self.catalog) else None
        self.start = None if first is None else pd.Timestamp(first).floor("D")
        if start is not None:  # the replay's start: the catalog is taken to cover its span
            self.start = start if self.start is None else min(self.start, pd.Timestamp(start))

    def fetch(self, now: pd.Timestamp, *, stop: Any = None) -> FlareList:
        """The flares that started by ``now``."""
        cat = self.catalog[self.catalog["start_time"] <= now].reset_index(drop=True)
        start = self.start if self.start is not None else now
        return FlareList(cat, (min(start, now), now), f"catalog:{self.path}")


#: an answer of the flare list (or its failure) less than this old on the clock is used again
#: for the history, not asked again
REUSE = pd.Timedelta(minutes=1)


class HistoryReader:
    """The flares up to an observation, for a ``history`` calibration map, from the flare list.

    Called with an observation time while a cycle runs: asks ``source`` for its list now,
    keeps the answer in ``state`` (:class:`~fdflare.serve.state.ServiceState`, as the
    verification does) and returns the kept flares with notes. The history reads the 72 h
    before the observation, so those must lie inside what the lists have covered, up to the
    observation or to the end of the newest list where that is earlier (a flare enters the
    list minutes after it begins: said in a note). Otherwise the cycle fails with the
    reason: a forecast from an unknown history would read as quiet.

    :meth:`fetch` asks the list before the cycle fetches its magnetogram, so a cycle whose
    list is down fails without downloading an image. An answer (or a failure) less than
    :data:`REUSE` old on the clock is used again, so the cycles of a catch-up, run one after
    the other, ask the list once.
    """

    def __init__(self, source: Any, state: Any, clock: Any) -> None:
        from fdflare.analysis.history import WINDOWS_H

        self.source, self.state, self.clock = source, state, clock
        self.window = pd.Timedelta(hours=max(WINDOWS_H))
        self._last: tuple[pd.Timestamp, Any] | None = None  # fetched at, answer or failure

    def fetch(self) -> FlareList:
        """The list's answer now (asked, or one less than :data:`REUSE` old).

        Raises:
            DownloadError: the list cannot be fetched.
        """
        from fdflare.core.errors import DownloadError, FdflareError

        now = self.clock()
        if self._last is None or now - self._last[0] >= REUSE:
            answer: Any
            try:
                answer = self.source.fetch(now, stop=None)
            except FdflareError as exc:
                answer = DownloadError(f"the flare history needs the flare list: {exc}")
            else:
                self.state.add_flares(answer.catalog, covered=answer.covered, source=answer.source)
            self._last = (now, answer)
        answer = self._last[1]
        if isinstance(answer, DownloadError):
            raise DownloadError(str(answer))
        return answer

    def __call__(self, obs_time: pd.Timestamp) -> tuple[pd.DataFrame, list[str]]:
        """The flares kept up to ``obs_time`` (one row per flare) and notes on them.

        Raises:
            DownloadError: the list cannot be fetched, or its spans leave part of the 72 h
                before ``obs_time`` uncovered.
        """
        from fdflare.core.errors import DownloadError

        answer = self.fetch()
        start, end = obs_time - self.window, min(obs_time, pd.Timestamp(answer.covered[1]))
        spans = self.state.coverage()
        if not any(a <= start and end <= b for a, b in spans):
            covered = ", ".join(f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M}" for a, b in spans)
            raise DownloadError(
                f"the flare history needs the flare list of {start:%Y-%m-%d %H:%M} to "
                f"{end:%Y-%m-%d %H:%M}, which the lists kept so far do not cover (covered: "
                f"{covered or 'nothing'})"
            )
        notes = [f"flare list: {n}" for n in answer.notes]
        gap = int((obs_time - end).total_seconds() // 60)
        if gap >= 1:  # the lists are in whole minutes: seconds are no gap
            notes.append(
                f"the flare list covers up to {end:%Y-%m-%d %H:%M}, {gap} min before the "
                "observation: a flare that began since may not be listed yet"
            )
        return one_row_per_flare(self.state.flares(start=start - pd.Timedelta(hours=1))), notes


def one_row_per_flare(flares: pd.DataFrame) -> pd.DataFrame:
    """One row per flare of the kept lists, at its largest class.

    A list fetched while a flare is in progress gives the class reached so far, and the state
    keeps each answer's row (start, peak flux and place are its key), so a flare that grew
    between two fetches is there twice. The flare history counts flares: one row per start
    time and place (a list without places, such as SWPC's, by start time), the largest flux.
    """
    largest_first = flares.sort_values("flux", ascending=False, kind="stable")
    one = largest_first.drop_duplicates(["start_time", "fl_lon", "fl_lat"], keep="first")
    return one.sort_values("start_time", kind="stable").reset_index(drop=True)
