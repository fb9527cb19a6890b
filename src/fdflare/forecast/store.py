"""The forecast store: every issued forecast, and every failed cycle, one row each, for good.

An SQLite file through the standard library (``sqlite3``): write-ahead logging, so readers
never wait for a writer, and a busy timeout instead of file locks, so two writers take
turns. Rows are only ever inserted: triggers refuse every ``UPDATE`` and ``DELETE``, so a
forecast re-issued after the event can never replace the one made before it.

Tables (schema version :data:`SCHEMA_VERSION`, in ``meta``):

``forecasts``
    one row per issued forecast: the cycle (the scheduled time a service issued it for,
    else null), requested, issue and observation times, window start and end, source and
    image id, probability, whether calibrated, the members' spread, the recipe (threshold,
    window and the whole ``Recipe.to_dict()`` as JSON, and whether it was assumed), the
    notes, fdflare's version, and ``imported_from`` (the CSV history a row was imported
    from, else null).
``members``
    one row per member of a forecast: model, fold, checkpoint, its SHA-256, raw and
    calibrated probability.
``failures``
    one row per failed cycle: cycle, requested and issue time, kind, reason, version.

Times are written ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), so text order is time order. Other
stages may add their own tables to the file (``CREATE TABLE IF NOT EXISTS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import FdflareError, InputError, OutputError

__all__ = ["SCHEMA_VERSION", "AlreadyIssued", "ForecastStore"]

#: the layout of the tables; a store of a higher version is refused
SCHEMA_VERSION = 1
#: how long a writer waits for another (milliseconds)
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS forecasts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cycle TEXT,
    requested_time TEXT NOT NULL,
    issue_time TEXT NOT NULL,
    observation_time TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    source TEXT NOT NULL,
    image_id TEXT NOT NULL,
    probability REAL NOT NULL,
    calibrated INTEGER NOT NULL,
    spread REAL NOT NULL,
    threshold TEXT NOT NULL,
    window TEXT NOT NULL,
    recipe TEXT NOT NULL,
    recipe_assumed INTEGER NOT NULL,
    notes TEXT NOT NULL,
    version TEXT NOT NULL,
    imported_from TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS forecasts_cycle ON forecasts(cycle) WHERE cycle IS NOT NULL;
CREATE INDEX IF NOT EXISTS forecasts_window ON forecasts(window_start);
CREATE TABLE IF NOT EXISTS members (
    forecast_id INTEGER NOT NULL REFERENCES forecasts(id),
    position INTEGER NOT NULL,
    model TEXT,
    fold INTEGER,
    checkpoint TEXT NOT NULL,
    checkpoint_sha256 TEXT,
    raw_probability REAL,
    probability REAL,
    calibrated INTEGER NOT NULL,
    PRIMARY KEY (forecast_id, position)
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cycle TEXT,
    requested_time TEXT,
    issue_time TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    version TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_cycle ON failures(cycle);
"""
_APPEND_ONLY = [
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'the forecast store is append-only'); END;"
    for table in ("forecasts", "members", "failures")
    for verb in ("UPDATE", "DELETE")
]
_OURS = {"meta", "forecasts", "members", "failures"}


class AlreadyIssued(FdflareError):
    """The cycle already has an issued forecast (a store holds one per cycle)."""


def _iso(t: Any) -> str | None:
    if t is None or (not isinstance(t, str) and pd.isna(t)):
        return None
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


class ForecastStore:
    """An open forecast store (see the module doc); use :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self._sha: dict[str, str | None] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> ForecastStore:
        """Open (and with ``create`` make) the store at ``path``.

        Raises:
            InputError: a folder, a missing file (without ``create``), a file that is not a
                forecast store, or a store of a newer fdflare.
            OutputError: the file or its folder cannot be written.
        """
        p = Path(path)
        if p.is_dir():
            raise InputError("is a folder; expected a forecast store (an SQLite file)", path=p)
        if not p.exists() and not create:
            raise InputError("no such forecast store", path=p)
        if p.exists():
            with open(p, "rb") as fh:
                head = fh.read(16)
            if head and head != b"SQLite format 3\x00":
                raise InputError("not a forecast store (not an SQLite database)", path=p)
            if head:
                cls._inspect(p)  # read-only: a file refused is left byte for byte
        elif not p.parent.is_dir():
            raise OutputError(f"{p}: cannot create the forecast store: no folder {p.parent}")
        try:
            conn = sqlite3.connect(
                p, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise OutputError(f"{p}: cannot open the forecast store ({exc})") from None
        store = cls(p, conn)
        try:
            store._prepare(create)
        except sqlite3.DatabaseError as exc:
            conn.close()
            text = str(exc)
            if "readonly" in text or "unable to open" in text or "disk" in text:
                raise OutputError(f"{p}: cannot write the forecast store ({text})") from None
            raise InputError(f"not a usable forecast store ({text})", path=p) from None
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def _inspect(cls, p: Path) -> None:
        """Refuse, through a read-only connection, a database that is not a usable store."""
        from urllib.parse import quote

        try:
            ro = sqlite3.connect(f"file:{quote(str(p.resolve()))}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise InputError(f"cannot read the forecast store ({exc})", path=p) from None
        try:
            tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                raise InputError(
                    "an SQLite database, but not a forecast store (no fdflare tables); "
                    "refusing to write into it",
                    path=p,
                )
            if "meta" in tables:
                cls(p, ro)._check_version()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"not a usable forecast store ({exc})", path=p) from None
        finally:
            ro.close()

    def _prepare(self, create: bool) -> None:
        c = self._conn
        c.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise InputError(
                "an SQLite database, but not a forecast store (no fdflare tables); refusing "
                "to write into it",
                path=self.path,
            )
        if "meta" in tables:
            self._check_version()
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA foreign_keys = ON")
        if "meta" in tables and _OURS <= tables:
            return
        if not create:
            raise InputError("not a forecast store (its tables are missing)", path=self.path)
        with self._write():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            for trigger in _APPEND_ONLY:
                c.execute(trigger)
            from fdflare import __version__

            c.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            c.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('created_by', ?)",
                (f"fdflare {__version__}",),
            )
        self._check_version()

    def _check_version(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            return
        try:
            version = int(row[0])
        except ValueError:
            raise InputError(
                f"not a forecast store (schema version {row[0]!r})", path=self.path
            ) from None
        if version > SCHEMA_VERSION:
            from fdflare import __version__

            raise InputError(
                f"written by a newer fdflare (store schema {version}; fdflare {__version__} "
                f"reads up to {SCHEMA_VERSION}): upgrade fdflare to use it",
                path=self.path,
            )

    @property
    def schema_version(self) -> int:
        """The store's schema version."""
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ForecastStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: a second writer waits its turn)."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise OutputError(f"{self.path}: cannot write the forecast store ({exc})") from None
            try:
                yield c
                c.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise OutputError(
                        f"{self.path}: cannot write the forecast store ({exc})"
                    ) from None
                raise

    # ------------------------------------------------------------------ writing
    def _checkpoint_sha(self, checkpoint: str) -> str | None:
        if checkpoint not in self._sha:
            from fdflare.core.recipe import file_sha256

            try:
                self._sha[checkpoint] = file_sha256(checkpoint)
            except OSError:
                self._sha[checkpoint] = None
        return self._sha[checkpoint]

    def issue(self, fc: Any, *, cycle: pd.Timestamp | None = None) -> int:
        """Insert one issued forecast (and its members); return its id.

        Raises:
            AlreadyIssued: ``cycle`` already has an issued forecast.
        """
        from fdflare import __version__

        members = [
            (
                i,
                getattr(m.loaded, "model", None),
                getattr(m, "fold", None),
                str(m.checkpoint),
                getattr(m, "sha256", None) or self._checkpoint_sha(str(m.checkpoint)),
                m.raw_probability,
                m.probability,
                int(m.calibration is not None),
            )
            for i, m in enumerate(fc.members)
        ]
        row = {
            "cycle": _iso(cycle),
            "requested_time": _iso(fc.requested_time),
            "issue_time": _iso(fc.issue_time),
            "observation_time": _iso(fc.observation.time),
            "window_start": _iso(fc.window_start),
            "window_end": _iso(fc.window_end),
            "source": fc.observation.source,
            "image_id": str(fc.observation.image_id),
            "probability": float(fc.probability),
            "calibrated": int(bool(fc.calibrated)),
            "spread": float(fc.spread),
            "threshold": fc.recipe.threshold,
            "window": fc.recipe.window,
            "recipe": json.dumps(fc.recipe.to_dict(), sort_keys=True),
            "recipe_assumed": int(bool(fc.recipe.assumed)),
            "notes": json.dumps(list(fc.observation.notes)),
            "version": __version__,
            "imported_from": None,
        }
        return self._insert(row, members)

    def _insert(
        self, row: dict[str, Any], members: list[tuple[Any, ...]], *, transaction: bool = True
    ) -> int:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._write() if transaction else contextlib.nullcontext(self._conn) as c:
            if row["cycle"] is not None:
                hit = c.execute(
                    "SELECT id FROM forecasts WHERE cycle = ?", (row["cycle"],)
                ).fetchone()
                if hit is not None:
                    raise AlreadyIssued(
                        f"{self.path}: cycle {row['cycle']} already has forecast {hit[0]}"
                    )
            cur = c.execute(f"INSERT INTO forecasts ({cols}) VALUES ({marks})", list(row.values()))
            fid = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT INTO members (forecast_id, position, model, fold, checkpoint, "
                "checkpoint_sha256, raw_probability, probability, calibrated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(fid, *m) for m in members],
            )
        return fid

    def record_failure(
        self,
        *,
        cycle: pd.Timestamp | None,
        requested: pd.Timestamp | None,
        issue_time: pd.Timestamp,
        reason: str,
        kind: str,
    ) -> int:
        """Insert one failed cycle with its reason; return its id."""
        from fdflare import __version__

        with self._write() as c:
            cur = c.execute(
                "INSERT INTO failures (cycle, requested_time, issue_time, kind, reason, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (_iso(cycle), _iso(requested), _iso(issue_time), kind, reason, __version__),
            )
            return int(cur.lastrowid or 0)

    def import_history(self, table: pd.DataFrame, *, source: str) -> tuple[int, int]:
        """Insert the rows of a CSV history (:func:`~fdflare.forecast.verify.history_frame`).

        A row already in the store (same requested, issue and window start time and
        probability) is skipped, so importing a history twice adds nothing.

        Returns:
            ``(added, skipped)``.
        """
        from fdflare import __version__

        fresh = self.missing(table)
        skipped = len(table) - len(fresh)
        rows = []
        for _, r in fresh.iterrows():
            key = self._key(r)
            recipe = r["recipe"]
            probs = [p for p in str(r.get("member_probs", "")).split(";") if p.strip()]
            ckpts = [p for p in str(r.get("checkpoints", "")).split(";") if p.strip()]
            members = [
                (i, None, None, ck, None, None, float(p) if p else None, 0)
                for i, (ck, p) in enumerate(
                    zip(ckpts, probs + [""] * (len(ckpts) - len(probs)), strict=False)
                )
            ]
            row = {
                "cycle": None,
                "requested_time": key[0],
                "issue_time": key[1],
                "observation_time": _iso(r["observation_time"]),
                "window_start": key[2],
                "window_end": _iso(r["window_end"]),
                "source": str(r.get("base_url", "")),
                "image_id": str(r.get("image_id", "")),
                "probability": float(r["_prob"]),
                "calibrated": int(str(r.get("calibrated", "0")).strip() == "1"),
                "spread": float(r.get("spread") or 0.0),
                "threshold": recipe.threshold,
                "window": recipe.window,
                "recipe": json.dumps(recipe.to_dict(), sort_keys=True),
                "recipe_assumed": int(bool(recipe.assumed)),
                "notes": "[]",
                "version": __version__,
                "imported_from": source,
            }
            rows.append((row, members))
        with self._write():  # one transaction: the whole history, or nothing
            for row, members in rows:
                self._insert(row, members, transaction=False)
        return len(rows), skipped

    @staticmethod
    def _key(r: Any) -> tuple[Any, ...]:
        return (
            _iso(r["requested_time"]),
            _iso(r["issue_time"]),
            _iso(r["window_start"]),
            round(float(r["flare_prob"]), 6),
        )

    def missing(self, table: pd.DataFrame) -> pd.DataFrame:
        """The rows of a history table not yet in the store (nor twice in the table).

        A row is the same forecast as one in the store when its requested, issue and window
        start times (compared parsed) and its probability (to 6 decimals) are the same.
        """
        with self._lock:
            seen = {
                (r[0], r[1], r[2], round(float(r[3]), 6))
                for r in self._conn.execute(
                    "SELECT requested_time, issue_time, window_start, probability FROM forecasts"
                )
            }
        keep = []
        for _, r in table.iterrows():
            key = self._key(r)
            keep.append(key not in seen)
            seen.add(key)
        return table[np.asarray(keep, dtype=bool)] if len(table) else table

    # ------------------------------------------------------------------ reading
    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same state of the file."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def cycle_status(self, cycle: pd.Timestamp) -> str | None:
        """``"issued"``, ``"failed"`` or None (nothing recorded for the cycle)."""
        key = _iso(cycle)
        if self._rows("SELECT 1 FROM forecasts WHERE cycle = ?", (key,)):
            return "issued"
        if self._rows("SELECT 1 FROM failures WHERE cycle = ?", (key,)):
            return "failed"
        return None

    def _as_json(self, row: dict[str, Any], *, members: bool) -> dict[str, Any]:
        from fdflare.core.recipe import Recipe

        recipe = json.loads(row["recipe"])
        try:
            event = Recipe.from_dict(recipe).event
        except InputError:  # a recipe of a newer fdflare: its threshold and window still tell
            event = f"flare >= {row['threshold']} in the next {row['window']}"
        out: dict[str, Any] = {
            "id": row["id"],
            "cycle": row["cycle"],
            "probability": round(float(row["probability"]), 6),
            "threshold": row["threshold"],
            "event": event,
            "window_hours": pd.Timedelta(row["window"]).total_seconds() / 3600.0,
            "requested_time": row["requested_time"],
            "issue_time": row["issue_time"],
            "observation_time": row["observation_time"],
            "observation_age_s": round(
                (
                    pd.Timestamp(row["requested_time"]) - pd.Timestamp(row["observation_time"])
                ).total_seconds()
            ),
            "window_start": row["window_start"],
            "window_end": row["window_end"],
            "source": {
                "name": row["source"],
                "base_url": None if row["source"].startswith("archive:") else row["source"],
                "image_id": row["image_id"],
                "instrument": "SDO/HMI line-of-sight magnetogram",
            },
            "calibrated": bool(row["calibrated"]),
            "spread": round(float(row["spread"]), 6),
            "notes": json.loads(row["notes"]),
            "recipe": recipe,
            "recipe_assumed": bool(row["recipe_assumed"]),
            "version": row["version"],
            "imported_from": row["imported_from"],
        }
        if members:
            out["members"] = [
                {
                    "checkpoint": m["checkpoint"],
                    "model": m["model"],
                    "fold": m["fold"],
                    "checkpoint_sha256": m["checkpoint_sha256"],
                    "probability": m["probability"],
                    "raw_probability": m["raw_probability"],
                    "calibrated": bool(m["calibrated"]),
                }
                for m in self._rows(
                    "SELECT * FROM members WHERE forecast_id = ? ORDER BY position", (row["id"],)
                )
            ]
        return out

    def latest(self) -> dict[str, Any] | None:
        """The newest issued forecast (by issue time, then id), with its members."""
        with self._snapshot():
            rows = self._rows("SELECT * FROM forecasts ORDER BY issue_time DESC, id DESC LIMIT 1")
            return self._as_json(rows[0], members=True) if rows else None

    def get(self, forecast_id: int) -> dict[str, Any] | None:
        """One forecast by id, with its members."""
        with self._snapshot():
            rows = self._rows("SELECT * FROM forecasts WHERE id = ?", (int(forecast_id),))
            return self._as_json(rows[0], members=True) if rows else None

    def forecasts(
        self,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        *,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Issued forecasts whose requested time lies in ``[start, end)``, oldest first."""
        sql, args = "SELECT * FROM forecasts WHERE 1=1", []
        if start is not None:
            sql += " AND requested_time >= ?"
            args.append(_iso(start))
        if end is not None:
            sql += " AND requested_time < ?"
            args.append(_iso(end))
        sql += " ORDER BY requested_time, issue_time, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._as_json(r, members=False) for r in self._rows(sql, tuple(args))]

    def failures(
        self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
    ) -> list[dict[str, Any]]:
        """Failed cycles whose issue time lies in ``[start, end)``, oldest first."""
        sql, args = "SELECT * FROM failures WHERE 1=1", []
        if start is not None:
            sql += " AND issue_time >= ?"
            args.append(_iso(start))
        if end is not None:
            sql += " AND issue_time < ?"
            args.append(_iso(end))
        return self._rows(sql + " ORDER BY issue_time, id", tuple(args))

    def frame(self) -> pd.DataFrame:
        """One row per issued forecast, the columns of a history table (times as text).

        The columns are :data:`~fdflare.forecast.formats.HISTORY_COLUMNS` plus ``id``,
        ``cycle``, ``threshold``, ``window``, ``recipe`` (JSON) and ``recipe_assumed``, in
        issue order.
        """
        from fdflare.core.paths import image_relpaths

        with self._snapshot():
            rows = self._rows("SELECT * FROM forecasts ORDER BY id")
            members = self._rows(
                "SELECT forecast_id, probability, checkpoint FROM members "
                "ORDER BY forecast_id, position"
            )
        probs: dict[int, list[str]] = {}
        ckpts: dict[int, list[str]] = {}
        for m in members:
            p = m["probability"]
            probs.setdefault(m["forecast_id"], []).append("" if p is None else f"{p:.6f}")
            ckpts.setdefault(m["forecast_id"], []).append(m["checkpoint"])
        obs = pd.to_datetime([r["observation_time"] for r in rows], utc=True).tz_localize(None)
        names: list[str] = list(image_relpaths(obs, ext="jp2")) if rows else []
        out = pd.DataFrame(
            {
                "timestamp": list(names),
                "flare_prob": [f"{r['probability']:.6f}" for r in rows],
                "target": [""] * len(rows),
                "requested_time": [r["requested_time"] for r in rows],
                "issue_time": [r["issue_time"] for r in rows],
                "observation_time": [r["observation_time"] for r in rows],
                "window_start": [r["window_start"] for r in rows],
                "window_end": [r["window_end"] for r in rows],
                "image_id": [r["image_id"] for r in rows],
                "base_url": [r["source"] for r in rows],
                "calibrated": [str(r["calibrated"]) for r in rows],
                "spread": [f"{r['spread']:.6f}" for r in rows],
                "member_probs": [";".join(probs.get(r["id"], [])) for r in rows],
                "checkpoints": [";".join(ckpts.get(r["id"], [])) for r in rows],
                "threshold": [r["threshold"] for r in rows],
                "window": [r["window"] for r in rows],
                "recipe": [r["recipe"] for r in rows],
                "recipe_assumed": [str(r["recipe_assumed"]) for r in rows],
                "id": [str(r["id"]) for r in rows],
                "cycle": [r["cycle"] or "" for r in rows],
            },
            dtype=object,
        )
        return out
