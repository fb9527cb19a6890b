"""TEMPORARY stand-in for forecast/store.py, archive.py and verify_forecasts (removed at merge)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from fdflare.core.errors import InputError


class AlreadyIssued(Exception):
    pass


class ForecastStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS forecasts (id INTEGER PRIMARY KEY, cycle TEXT UNIQUE,"
            " requested TEXT, data TEXT)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS failures (id INTEGER PRIMARY KEY, cycle TEXT,"
            " requested TEXT, issue_time TEXT, reason TEXT, kind TEXT)"
        )
        self.lock = threading.Lock()

    @classmethod
    def open(cls, path: Any, *, create: bool = True) -> ForecastStore:
        p = Path(path)
        if not p.parent.is_dir() or (p.exists() and not os.access(p, os.W_OK)):
            raise InputError("cannot write the store", path=p)
        try:
            return cls(p)
        except sqlite3.Error as exc:
            raise InputError(f"not a forecast store ({exc})", path=p) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ForecastStore:
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()

    def issue(self, fc: Any, *, cycle: pd.Timestamp | None = None) -> int:
        from fdflare.forecast.service import iso

        c = iso(cycle if cycle is not None else fc.requested_time)
        d = fc.to_dict()
        d["recipe"] = fc.recipe.to_dict()
        d["cycle"] = c
        with self.lock:
            try:
                cur = self.db.execute(
                    "INSERT INTO forecasts (cycle, requested, data) VALUES (?,?,?)",
                    (c, iso(fc.requested_time), json.dumps(d)),
                )
            except sqlite3.IntegrityError:
                raise AlreadyIssued(c) from None
            return int(cur.lastrowid or 0)

    def record_failure(
        self, *, cycle: Any, requested: Any, issue_time: Any, reason: str, kind: str
    ) -> int:
        from fdflare.forecast.service import iso

        with self.lock:
            cur = self.db.execute(
                "INSERT INTO failures (cycle, requested, issue_time, reason, kind) VALUES (?,?,?,?,?)",
                (iso(cycle), iso(requested), iso(issue_time), reason, kind),
            )
            return int(cur.lastrowid or 0)

    def cycle_status(self, cycle: pd.Timestamp) -> str | None:
        from fdflare.forecast.service import iso

        with self.lock:
            if self.db.execute("SELECT 1 FROM forecasts WHERE cycle=?", (iso(cycle),)).fetchone():
                return "issued"
            if self.db.execute("SELECT 1 FROM failures WHERE cycle=?", (iso(cycle),)).fetchone():
                return "failed"
        return None

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
        out = []
        for i, data in rows:
            d = json.loads(data)
            d["id"] = i
            out.append(d)
        return out

    def latest(self) -> dict[str, Any] | None:
        r = self._rows("SELECT id, data FROM forecasts ORDER BY requested DESC, id DESC LIMIT 1")
        if not r:
            return None
        r[0].pop("members", None)
        return r[0]

    def get(self, forecast_id: int) -> dict[str, Any] | None:
        r = self._rows("SELECT id, data FROM forecasts WHERE id=?", (forecast_id,))
        return r[0] if r else None

    def forecasts(
        self, start: Any = None, end: Any = None, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        from fdflare.forecast.service import iso

        sql = "SELECT id, data FROM forecasts WHERE 1=1"
        args: list[Any] = []
        if start is not None:
            sql += " AND requested >= ?"
            args.append(iso(start))
        if end is not None:
            sql += " AND requested < ?"
            args.append(iso(end))
        sql += " ORDER BY requested"
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = self._rows(sql, tuple(args))
        for r in rows:
            r.pop("members", None)
        return rows

    def failures(self, start: Any = None, end: Any = None) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT id, cycle, requested, issue_time, reason, kind FROM failures ORDER BY cycle"
            ).fetchall()
        keys = ("id", "cycle", "requested_time", "issue_time", "reason", "kind")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def frame(self) -> pd.DataFrame:
        rows = self.forecasts()
        return pd.DataFrame(
            {
                "id": [r["id"] for r in rows],
                "requested_time": [r["requested_time"] for r in rows],
                "window_start": [r["window_start"] for r in rows],
                "window_end": [r["window_end"] for r in rows],
                "flare_prob": [r["probability"] for r in rows],
            }
        )


class LocalArchive:
    def __init__(self, root: Any) -> None:
        from fdflare.core.paths import parse_image_times

        self.root = Path(root).resolve()
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*.jp2"))
        self.files = files
        self.times = pd.DatetimeIndex(parse_image_times(files)[0])

    def closest(self, t: pd.Timestamp) -> tuple[str, pd.Timestamp] | None:
        if not len(self.files):
            return None
        i = int(abs(self.times - t).argmin())
        return self.files[i], self.times[i]

    def path(self, image_id: str) -> Path:
        p = (self.root / image_id).resolve()
        if self.root not in p.parents:
            raise InputError(f"{image_id} is outside the archive")
        return p


def run_forecast_archive(
    members: Any,
    *,
    requested: pd.Timestamp,
    archive: LocalArchive,
    tolerance: pd.Timedelta,
    recipe: Any,
    now: Any,
) -> Any:
    from fdflare.forecast.service import (
        Forecast,
        NoObservationError,
        Observation,
        format_age,
        iso,
        predict_members,
    )
    from fdflare.prepare.decode import decode_with_geometry

    found = archive.closest(requested)
    if found is None or abs(found[1] - requested) > tolerance:
        raise NoObservationError(
            f"no magnetogram within {format_age(tolerance)} of {iso(requested)}"
        )
    rel, t = found
    obs = Observation(f"archive:{archive.root}", rel, t)  # type: ignore[arg-type]
    for m in members:
        s = m.loaded.image_size
        obs.images[s], obs.geometry[s] = decode_with_geometry(archive.path(rel), s)
    p, cal = predict_members(members, obs, accelerator="cpu")
    return Forecast(p, requested, obs, list(members), cal, now().floor("s"), recipe)


def verify_forecasts(
    table: pd.DataFrame,
    catalog: pd.DataFrame,
    *,
    until: pd.Timestamp,
    recipe: Any,
    climatology: float | None = None,
    since: Any = None,
) -> Any:
    import numpy as np

    from fdflare.acquire.goes import threshold_flux
    from fdflare.analysis.baselines import persistence
    from fdflare.analysis.metrics import score_frame
    from fdflare.forecast.verify import Verification, prior_climatology
    from fdflare.label import label_windows

    w = recipe.window_delta
    starts = pd.DatetimeIndex(pd.to_datetime(table["window_start"], utc=True).dt.tz_localize(None))
    covered = np.ones(len(table), bool) if since is None else np.asarray(starts >= since)
    ready = np.asarray(starts + w <= until) & covered
    v = Verification(
        "store",
        "flare list",
        until,
        len(table),
        int(ready.sum()),
        int((covered & ~ready).sum()),
        0,
        None,
        "",
    )
    v.n_before = int((~covered).sum())
    if not ready.any():
        return v
    times = starts[ready]
    flux = threshold_flux(recipe.threshold)
    labels = label_windows(catalog, times, threshold=flux, rest=False)
    target = labels["target"].to_numpy(dtype=np.int64)
    v.events = int(target.sum())
    rate, why = (
        prior_climatology(catalog, times.min(), flux)
        if climatology is None
        else (climatology, "given")
    )
    if rate is None:
        rate, why = float(target.mean()), f"own rate ({why})"
    v.climatology, v.climatology_source = rate, why
    frames = {
        "model": table["flare_prob"].to_numpy(float)[ready],
        "persistence": persistence(times, catalog, threshold=flux),
        "climatology": np.full(len(times), rate),
    }
    for k, p in frames.items():
        v.scores[k] = score_frame(
            pd.DataFrame({"flare_prob": p, "target": target}), path=k, threshold=0.5
        )
    ref = v.scores["climatology"].brier
    for s in v.scores.values():
        s.bss = None if not ref or s.brier is None else 1.0 - s.brier / ref
    t = table[ready].copy()
    t["target"] = target
    v.table = t
    return v
