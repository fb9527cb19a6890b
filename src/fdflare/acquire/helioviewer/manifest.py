"""The download manifest: one CSV row per requested time, plus an append-only journal.

``OUT/manifest.csv`` (columns :data:`MANIFEST_COLUMNS`) records what happened to every
requested time: ``ok`` (the file, its size and SHA-256), ``gap`` (no observation within the
tolerance) or ``failed`` (with a reason). During a run each result is appended to
``manifest.csv.journal`` (one JSON line, flushed and synced) as soon as it is known; the
journal is folded into ``manifest.csv`` (written atomically) at the start and end of every
run, so a killed run loses at most the items in flight. The journal also carries the lock
that keeps two runs off one manifest (:class:`ManifestStore`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from fdflare.core.errors import BusyError, InputError
from fdflare.core.io import atomic_open
from fdflare.core.locks import lock_file

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "STATUSES",
    "TIME_FORMAT",
    "ManifestStore",
    "journal_path",
    "read_manifest",
]

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "requested_time",
    "observation_time",
    "source_id",
    "image_id",
    "path",
    "bytes",
    "sha256",
    "status",
    "reason",
)
"""Columns of the manifest, in order (see ``docs/download.md``)."""
STATUSES = ("ok", "gap", "failed")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def _empty_manifest() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "requested_time": pd.Series([], dtype="datetime64[ns]"),
            "observation_time": pd.Series([], dtype="datetime64[ns]"),
            "source_id": pd.Series([], dtype="Int64"),
            "image_id": pd.Series([], dtype="Int64"),
            "path": pd.Series([], dtype=object),
            "bytes": pd.Series([], dtype="Int64"),
            "sha256": pd.Series([], dtype=object),
            "status": pd.Series([], dtype=object),
            "reason": pd.Series([], dtype=object),
        }
    )


def _typed(raw: pd.DataFrame, path: Path, lines: np.ndarray) -> pd.DataFrame:
    """Validate a table of manifest strings and convert it to typed columns.

    ``lines`` holds the file line number of each row, for error messages.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(
            f"not a download manifest: missing column(s) {', '.join(missing)}",
            path=path,
            line=int(lines[0]) if len(lines) else 1,
        )
    raw = raw.loc[:, list(MANIFEST_COLUMNS)].astype(object).fillna("").astype(str)
    raw = raw.apply(lambda col: col.str.strip())
    out: dict[str, Any] = {}

    def fail(mask: np.ndarray, column: str, what: str) -> None:
        i = int(np.flatnonzero(mask)[0])
        raise InputError(
            f"{what}: {raw[column].iloc[i]!r} ({int(mask.sum())} such row(s) in all)",
            path=path,
            line=int(lines[i]),
            field=column,
        )

    for column in ("requested_time", "observation_time"):
        text = raw[column]
        parsed = pd.to_datetime(text.where(text != ""), format="ISO8601", errors="coerce")
        bad = (parsed.isna() & (text != "")).to_numpy()
        if column == "requested_time":
            bad = bad | (text == "").to_numpy()
        if bad.any():
            fail(bad, column, "not a time (expected YYYY-MM-DDTHH:MM:SS)")
        out[column] = pd.DatetimeIndex(parsed).as_unit("ns")
    for column in ("source_id", "image_id", "bytes"):
        text = raw[column]
        number = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = (number.isna() & (text != "")).to_numpy() | (number.fillna(0) % 1 != 0).to_numpy()
        bad = bad | (number.fillna(0) < 0).to_numpy()
        if bad.any():
            fail(bad, column, "not a non-negative integer")
        out[column] = number.astype("Int64")
    status = raw["status"]
    bad = (~status.isin(STATUSES)).to_numpy()
    if bad.any():
        fail(bad, "status", f"unknown status (expected one of {', '.join(STATUSES)})")
    ok = (status == "ok").to_numpy()
    incomplete = (
        ok & ((raw["path"] == "") | (raw["sha256"] == "") | (raw["bytes"] == "")).to_numpy()
    )
    if incomplete.any():
        fail(incomplete, "path", "row with status ok lacks path, bytes or sha256")
    for column in ("path", "sha256", "status", "reason"):
        out[column] = raw[column].to_numpy(dtype=object)
    return pd.DataFrame(out, columns=list(MANIFEST_COLUMNS)).reset_index(drop=True)


def _as_strings(table: pd.DataFrame) -> pd.DataFrame:
    """Format a typed manifest as the strings written to disk."""
    out = {}
    for column in MANIFEST_COLUMNS:
        col = table[column]
        if column in ("requested_time", "observation_time"):
            text = pd.Series(pd.DatetimeIndex(col).strftime(TIME_FORMAT), index=table.index)
            out[column] = text.astype(object).where(col.notna().to_numpy(), "")
        elif column in ("source_id", "image_id", "bytes"):
            out[column] = col.astype("Int64").astype(object).where(col.notna(), "").astype(str)
        else:
            out[column] = col.astype(object).fillna("").astype(str)
    return pd.DataFrame(out, columns=list(MANIFEST_COLUMNS), dtype=object)


def _merge(*tables: pd.DataFrame) -> pd.DataFrame:
    """Combine manifest tables; a later row for the same requested time wins."""
    frames = [t for t in tables if len(t)]
    if not frames:
        return _empty_manifest()
    merged = pd.concat(frames, ignore_index=True)
    merged = merged.drop_duplicates("requested_time", keep="last")
    return merged.sort_values("requested_time", kind="stable").reset_index(drop=True)


def _read_manifest_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        return _empty_manifest()
    from fdflare.core.io import check_field_counts

    check_field_counts(path)  # a row of another length would shift every column after it
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        return _empty_manifest()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", path=path) from None
    return _typed(raw, path, np.arange(2, len(raw) + 2))


def _parse_journal(text: str, path: Path) -> tuple[pd.DataFrame, int]:
    """Parse journal text; return the table and the number of torn (unfinished) lines.

    The last line is torn when it lacks its newline: the writer was killed mid-line. Such a
    line is left out (its item is fetched again); any other malformed line is an error.
    """
    lines = text.split("\n")
    torn = 0
    if lines and lines[-1] != "":
        torn = 1
    lines = lines[:-1]
    records = []
    numbers = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"journal line is not JSON ({exc})", path=path, line=number) from None
        if not isinstance(record, dict):
            raise InputError("journal line is not a JSON object", path=path, line=number)
        records.append(record)
        numbers.append(number)
    if not records:
        return _empty_manifest(), torn
    raw = pd.DataFrame.from_records(records)
    return _typed(raw, path, np.asarray(numbers)), torn


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a download manifest, including results still in its journal.

    Args:
        path: ``manifest.csv`` (or the download directory holding it).

    Returns:
        One row per requested time, sorted, with columns :data:`MANIFEST_COLUMNS`:
        times as ``datetime64[ns]`` (UTC, ``NaT`` when unknown), ``source_id``, ``image_id``
        and ``bytes`` as ``Int64``, the rest as strings (empty when not applicable).

    Raises:
        InputError: a malformed row, naming the file, line and column.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    journal = journal_path(path)
    table = _read_manifest_csv(path)
    if journal.exists():
        extra, _torn = _parse_journal(journal.read_text(encoding="utf-8"), journal)
        table = _merge(table, extra)
    return table


def journal_path(manifest: Path) -> Path:
    """The journal beside a manifest file (``manifest.csv.journal``)."""
    return manifest.with_name(manifest.name + ".journal")


def refuse_other_source(
    table: pd.DataFrame, source_id: int, path: Path, *, name: str = "", advice: str = ""
) -> None:
    """Refuse a manifest that holds images of another source than ``source_id``.

    One manifest holds one source (a Helioviewer source id, a JSOC series), so a rerun never
    mixes two archives' images under one name.

    Args:
        table: the manifest's rows.
        source_id: the source of this run.
        path: the manifest, for the message.
        name: the source's name, shown after its id (``hmi.M_720s``).
        advice: what to do instead, ending the message.

    Raises:
        InputError: naming the other source, the file and the field.
    """
    from fdflare.core.errors import InputError

    other = table["source_id"].dropna()
    other = other[other != source_id]
    if len(other):
        shown = f"{source_id} ({name})" if name else f"{source_id}"
        raise InputError(
            f"the manifest holds images of source {int(other.iloc[0])}, not {shown}; {advice}",
            path=path,
            field="source_id",
        )


class ManifestStore:
    """The manifest of one download directory, locked for the duration of a run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal_path = journal_path(path)
        self.table = _empty_manifest()
        self.torn_lines = 0
        self._journal: IO[str] | None = None
        self._pending: list[dict[str, str]] = []

    def __enter__(self) -> ManifestStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._journal = open(self.journal_path, "a+", encoding="utf-8", newline="")
        try:
            if not lock_file(self._journal):
                raise BusyError(
                    f"another download is using {self.path} (its journal "
                    f"{self.journal_path} is locked); wait for it or use another --manifest"
                )
            self._journal.seek(0)
            journal, self.torn_lines = _parse_journal(self._journal.read(), self.journal_path)
            self.table = _merge(_read_manifest_csv(self.path), journal)
            if len(journal) or self.torn_lines:
                self.compact()
        except BaseException:
            self._journal.close()
            raise
        return self

    def append(self, record: dict[str, str]) -> None:
        """Journal one result durably (flushed and synced before returning)."""
        assert self._journal is not None
        self._journal.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._pending.append(record)

    def compact(self) -> None:
        """Fold the journal into ``manifest.csv`` (atomically), then empty the journal."""
        assert self._journal is not None
        if self._pending:
            new = _typed(
                pd.DataFrame.from_records(self._pending),
                self.journal_path,
                np.arange(1, len(self._pending) + 1),
            )
            self.table = _merge(self.table, new)
            self._pending = []
        with atomic_open(self.path, "w") as fh:
            _as_strings(self.table).to_csv(fh, index=False, lineterminator="\n")
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the journal it replaces is emptied
        # The journal is emptied, never deleted: the lock lives on it.
        self._journal.truncate(0)
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def __exit__(self, *exc: object) -> None:
        assert self._journal is not None
        try:
            self.compact()
        finally:
            self._journal.close()  # releases the lock
