"""Clocks for the service: the wall clock, a clock file (tests), and the replay clock.

``serve --replay START..END`` runs past cycles from a local archive on a clock of its own:
:class:`ReplayClock` starts at the first cycle not yet run, and when the scheduler waits for
the next cycle it moves there at once (after ``pace`` real seconds, so a person can watch
the dashboard fill up), so a year of hourly cycles runs as fast as the forecasts do.

``--demo OUT`` reads what ``fdflare demo`` wrote (:func:`demo_layout`).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fdflare.core.errors import InputError


class ReplayClock:
    """A clock that jumps to the time the scheduler waits for (see module doc)."""

    def __init__(self, start: pd.Timestamp, *, pace: float = 0.0, stop: threading.Event) -> None:
        self.t = pd.Timestamp(start)
        self.pace = pace
        self.stop = stop
        self._lock = threading.Lock()

    def __call__(self) -> pd.Timestamp:
        """The replayed time."""
        with self._lock:
            return self.t

    def set(self, t: pd.Timestamp) -> None:
        """Move the clock to ``t``."""
        with self._lock:
            self.t = pd.Timestamp(t)

    def sleep_until(self, t: pd.Timestamp) -> None:
        """Wait ``pace`` real seconds (or until stopped), then move to ``t``."""
        if self.pace > 0 and self.stop.wait(self.pace):
            return
        self.set(t)


class FileClock:
    """The time written in a file (one ISO time): how a test steers a server it started.

    The test writes the file, then sends ``SIGUSR1``, which wakes the scheduler.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self()  # a file that is not a time is an error before anything starts

    def __call__(self) -> pd.Timestamp:
        """The time in the file."""
        text = self.path.read_text(encoding="utf-8").strip()
        try:
            t = pd.Timestamp(text)
        except ValueError:
            t = pd.NaT
        if t is pd.NaT:
            raise InputError(f"not a time: {text!r} (write the file atomically)", path=self.path)
        return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def parse_range(text: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``START..END`` (ISO times as users write them, UTC).

    Raises:
        InputError: not two times, or END not after START.
    """
    from fdflare.core.timeparse import parse_time

    if ".." not in text:
        raise InputError(
            f"--replay {text!r}: give START..END, e.g. 2011-01-01..2011-12-31", field="--replay"
        )
    a, b = text.split("..", 1)
    start, end = parse_time(a, name="--replay START"), parse_time(b, name="--replay END")
    if end <= start:
        raise InputError(f"--replay: END {end} is not after START {start}", field="--replay")
    return start, end


@dataclass
class DemoLayout:
    """What ``serve --demo OUT`` runs on (the folder of ``fdflare demo``)."""

    ensemble: Path
    archive: Path
    catalog: Path
    start: pd.Timestamp
    end: pd.Timestamp
    cadence: pd.Timedelta
    store: Path


def demo_layout(folder: str | os.PathLike[str]) -> DemoLayout:
    """The ensemble, archive, catalog and time span of a demo folder.

    Raises:
        InputError: a file the demo writes is missing (the demo did not finish, or an older
            fdflare wrote it without the JPEG 2000 files).
    """
    out = Path(folder)
    need = {
        "ensemble": out / "ensemble.json",
        "archive": out / "synth" / "jp2",
        "catalog": out / "synth" / "catalog.csv",
        "settings": out / "synth" / "synth.json",
    }
    for what, path in need.items():
        if not path.exists():
            raise InputError(
                f"no {path.relative_to(out)} ({what}): run `fdflare demo --out {out}` to the end "
                "first (this fdflare's demo writes it)",
                path=out,
            )
    try:
        settings = json.loads(need["settings"].read_text(encoding="utf-8"))
        start = pd.Timestamp(settings["start"])
        end = pd.Timestamp(settings["end"])
        cadence = pd.Timedelta(settings["cadence"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable synth settings ({exc})", path=need["settings"]) from None
    return DemoLayout(
        need["ensemble"], need["archive"], need["catalog"], start, end, cadence,
        out / "serve" / "forecasts.sqlite",
    )  # fmt: skip
