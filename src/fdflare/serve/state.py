"""The service's own tables beside the forecast store, in the same SQLite file.

:class:`ServiceState` adds (``CREATE TABLE IF NOT EXISTS``) to the store's file:

``serve_flares``
    every flare the flare list has shown, once (the duplicate rule of
    :data:`fdflare.acquire.catalog.DUPLICATE_KEY`: start time, peak flux, location);
``serve_coverage``
    the time spans the fetched lists covered (a 7-day list fetched at ``t`` covers
    ``[t - 7 d, t]``); overlapping spans are merged. A window is verified only when one span
    covers it and the window before it (persistence), else it is pending (its end lies after
    the last span) or uncovered (it fell in a gap of the lists);
``serve_state``
    key -> JSON: the last verification, the last good cycle, the last failure;
``serve_images``
    per forecast id, the magnetogram the cycle saw as a PNG with its disk geometry, and the
    attribution map when the cycle made one.

Every write is one transaction; the connection waits on a busy store (another process
writing) up to its timeout.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_flares (
    start_time TEXT NOT NULL, goes_class TEXT NOT NULL, flux REAL NOT NULL,
    fl_lon REAL, fl_lat REAL, loc TEXT NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (start_time, flux, loc));
CREATE TABLE IF NOT EXISTS serve_coverage (start TEXT NOT NULL, end TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS serve_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS serve_images (
    forecast_id INTEGER PRIMARY KEY, png BLOB NOT NULL, geometry TEXT,
    attribution BLOB);
"""
FMT = "%Y-%m-%dT%H:%M:%S"


def _t(t: Any) -> str:
    return pd.Timestamp(t).strftime(FMT)


class ServiceState:
    """The service's tables in the store's SQLite file (see module doc)."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(
            self.path, timeout=timeout, check_same_thread=False, isolation_level=None
        )
        self.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        # the store's file is in WAL mode: NORMAL syncs at checkpoints, not at each commit;
        # a crash of the process loses nothing, a power cut at most the last state (which
        # the next cycle writes again: the forecasts themselves are the store's)
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self.db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.db.close()

    # -- the flare list ------------------------------------------------------------------

    def add_flares(self, catalog: pd.DataFrame, *, covered: tuple[Any, Any], source: str) -> int:
        """Keep the flares of one fetched list and the span it covered; return the new ones."""
        rows = []
        for t, cls, flux, lon, lat in zip(
            catalog["start_time"],
            catalog["goes_class"],
            catalog["flux"],
            catalog["fl_lon"],
            catalog["fl_lat"],
            strict=True,
        ):
            lon_v = None if pd.isna(lon) else float(lon)
            lat_v = None if pd.isna(lat) else float(lat)
            loc = "" if lon_v is None else f"{lon_v:.3f},{lat_v if lat_v is not None else ''}"
            rows.append((_t(t), str(cls), float(flux), lon_v, lat_v, loc, source))
        lo, hi = _t(covered[0]), _t(covered[1])
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                before = self.db.total_changes
                self.db.executemany(
                    "INSERT OR IGNORE INTO serve_flares VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
                added = self.db.total_changes - before
                spans = self.db.execute("SELECT start, end FROM serve_coverage").fetchall()
                merged = _merge([*spans, (lo, hi)])
                self.db.execute("DELETE FROM serve_coverage")
                self.db.executemany("INSERT INTO serve_coverage VALUES (?, ?)", merged)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return added

    def flares(self, start: Any = None) -> pd.DataFrame:
        """The kept flares as a catalog frame (``start_time, goes_class, flux, fl_lon, fl_lat``)."""
        sql = "SELECT start_time, goes_class, flux, fl_lon, fl_lat FROM serve_flares"
        args: tuple[Any, ...] = ()
        if start is not None:
            sql += " WHERE start_time >= ?"
            args = (_t(start),)
        with self._lock:
            rows = self.db.execute(sql + " ORDER BY start_time", args).fetchall()
        frame = pd.DataFrame(rows, columns=["start_time", "goes_class", "flux", "fl_lon", "fl_lat"])
        frame["start_time"] = pd.to_datetime(frame["start_time"]).astype("datetime64[ns]")
        frame["goes_class"] = frame["goes_class"].astype("string")
        for c in ("flux", "fl_lon", "fl_lat"):
            frame[c] = frame[c].astype(float)
        return frame

    def coverage(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The spans the flare lists covered, in order."""
        with self._lock:
            rows = self.db.execute(
                "SELECT start, end FROM serve_coverage ORDER BY start"
            ).fetchall()
        return [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in rows]

    # -- key -> JSON ----------------------------------------------------------------------

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` to the JSON of ``value``."""
        text = json.dumps(value, default=_json_default)
        with self._lock:
            self.db.execute(
                "INSERT INTO serve_state VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, text),
            )

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (``default`` when unset)."""
        with self._lock:
            row = self.db.execute("SELECT value FROM serve_state WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- images ---------------------------------------------------------------------------

    def put_image(
        self,
        forecast_id: int,
        png: bytes,
        geometry: dict[str, Any] | None,
        attribution: bytes | None = None,
    ) -> None:
        """Keep the magnetogram (and attribution map) of a forecast."""
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO serve_images VALUES (?, ?, ?, ?)",
                (forecast_id, png, json.dumps(geometry, default=_json_default), attribution),
            )

    def image(self, forecast_id: int) -> tuple[bytes, dict[str, Any] | None, bytes | None] | None:
        """``(png, geometry, attribution)`` of a forecast, or None."""
        with self._lock:
            row = self.db.execute(
                "SELECT png, geometry, attribution FROM serve_images WHERE forecast_id=?",
                (forecast_id,),
            ).fetchone()
        if row is None:
            return None
        return bytes(row[0]), json.loads(row[1]) if row[1] else None, row[2]

    def version(self) -> tuple[int, ...]:
        """A cheap fingerprint that changes whenever anything in the file changes."""
        with self._lock:
            return (
                int(self.db.execute("PRAGMA data_version").fetchone()[0]),
                int(self.db.total_changes),
            )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        f = float(value)
        return None if math.isnan(f) else f
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _merge(spans: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[list[str]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def covered_mask(
    starts: pd.DatetimeIndex,
    ends: pd.DatetimeIndex,
    window: pd.Timedelta,
    spans: list[tuple[pd.Timestamp, pd.Timestamp]],
) -> np.ndarray:
    """Whether one span covers ``[start - window, end]`` of each forecast (persistence's day too)."""
    ok = np.zeros(len(starts), dtype=bool)
    lo = (starts - window).as_unit("ns").asi8
    hi = ends.as_unit("ns").asi8
    for a, b in spans:
        ok |= (lo >= pd.Timestamp(a).value) & (hi <= pd.Timestamp(b).value)
    return ok
