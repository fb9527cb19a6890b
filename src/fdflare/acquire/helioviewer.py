"""Download full-disk HMI magnetograms (JPEG 2000) from the Helioviewer API v2.

For each requested time (``start`` .. ``end`` inclusive, every ``cadence``) the downloader
asks ``getClosestImage`` for the observation closest in time and fetches its JPEG 2000 file
with ``getJP2Image`` only when the observation lies within ``tolerance`` of the requested
time; otherwise it records a *gap* (Helioviewer always answers with the closest image, which
can be hours away inside a data gap). Files are stored in the study's layout, named after the
*requested* time::

    OUT/YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.jp2

and every outcome is recorded in a manifest table (``OUT/manifest.csv``, see
:data:`MANIFEST_COLUMNS`).

Guarantees:

* at most ``concurrency`` requests are in flight (a thread pool of that size sharing one
  :class:`httpx.Client`);
* timeouts, HTTP 429 and 5xx answers and broken connections are retried with exponential
  back-off and jitter, honouring ``Retry-After`` (seconds or HTTP-date);
* a file appears under its final name only when it is complete and is a JPEG 2000 file
  (JP2 signature box or J2K codestream); anything else is a failure with a reason;
* each result is appended to a journal (``manifest.csv.journal``, one JSON line, flushed and
  synced) as soon as it is known, and the journal is folded into ``manifest.csv`` (written
  atomically) at the start and end of every run, so a killed run loses at most the items in
  flight and a rerun finishes the job, skipping files that are already complete (size and
  SHA-256 checked against the manifest).

Example:
    >>> from fdflare.acquire.helioviewer import download_range
    >>> summary = download_range(  # doctest: +SKIP
    ...     "2011-01-01T00:00", "2011-01-01T23:00", "data/hmi_jp2", cadence="1h"
    ... )
    >>> print(summary.format())  # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import numpy as np
import pandas as pd

from fdflare import __version__
from fdflare.core.io import atomic_open, atomic_path
from fdflare.core.errors import DownloadError, InputError
from fdflare.core.paths import image_relpaths

try:  # POSIX advisory locks; elsewhere two runs on one manifest are not detected
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "HMI_MAGNETOGRAM_SOURCE_ID",
    "MANIFEST_COLUMNS",
    "DownloadSummary",
    "download_range",
    "is_jpeg2000",
    "parse_duration",
    "parse_retry_after",
    "parse_time",
    "read_manifest",
    "requested_times",
]

DEFAULT_BASE_URL = "https://api.helioviewer.org/v2/"
"""The public Helioviewer API; mirrors such as ``https://helioviewer-api.ias.u-psud.fr/v2/``
work the same way."""
BASE_URL_ENV = "FDFLARE_HELIOVIEWER_URL"
"""Environment variable naming the API base URL when none is given."""
HMI_MAGNETOGRAM_SOURCE_ID = 19
"""Helioviewer ``sourceId`` of SDO/HMI line-of-sight magnetograms."""

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

JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_CODESTREAM = b"\xff\x4f\xff\x51"
MAX_RETRY_AFTER = 600.0
"""Longest wait (seconds) granted to a server's ``Retry-After``."""

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------
# Parsing of user input
# --------------------------------------------------------------------------------------

_DURATION_UNITS = {
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 0.001,
}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)"
_DURATION_RE = re.compile(rf"\s*(?:{_DURATION_PART}\s*)+")


def parse_duration(text: str | timedelta | pd.Timedelta, *, name: str = "duration") -> timedelta:
    """Parse a duration such as ``1h``, ``12min``, ``30s`` or ``1h30min``.

    Units: ``d``, ``h``, ``min`` (or ``m``), ``s``, ``ms`` and their spelled-out forms. A
    number needs a unit (``12`` alone is ambiguous). :class:`datetime.timedelta` and
    :class:`pandas.Timedelta` values pass through.

    Args:
        text: the duration.
        name: the option it came from, for the error message.

    Raises:
        InputError: the text is not a duration.
    """
    if isinstance(text, pd.Timedelta):
        return text.to_pytimedelta()
    if isinstance(text, timedelta):
        return text
    hint = (
        "expected a number and a unit such as 1h, 12min, 30s or 1h30min (units: d, h, min, s, ms)"
    )
    if not isinstance(text, str) or not _DURATION_RE.fullmatch(text):
        raise InputError(f"invalid duration {text!r}: {hint}", field=name)
    seconds = 0.0
    for number, unit in re.findall(_DURATION_PART, text):
        factor = _DURATION_UNITS.get(unit.lower())
        if factor is None:
            raise InputError(
                f"invalid duration {text!r}: unknown unit {unit!r}; {hint}", field=name
            )
        seconds += float(number) * factor
    return timedelta(seconds=seconds)


def parse_time(value: str | pd.Timestamp | Any, *, name: str = "time") -> pd.Timestamp:
    """Parse a time (ISO 8601, e.g. ``2011-01-01T00:00``) as a naive UTC timestamp.

    Times with a zone are converted to UTC; times without one are taken as UTC.

    Raises:
        InputError: the value is not a time, or has sub-second precision (image names hold
            whole seconds).
    """
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            f"invalid time {value!r} ({exc}); expected ISO 8601 such as 2011-01-01T00:00",
            field=name,
        ) from None
    if ts is pd.NaT or pd.isna(ts):
        raise InputError(
            f"invalid time {value!r}: expected ISO 8601 such as 2011-01-01T00:00", field=name
        )
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts != ts.floor("s"):
        raise InputError(
            f"time {value!r} has sub-second precision; image names hold whole seconds", field=name
        )
    return ts


def requested_times(
    start: str | pd.Timestamp, end: str | pd.Timestamp, cadence: str | timedelta = "1h"
) -> pd.DatetimeIndex:
    """Return the requested times ``start, start + cadence, ...`` up to ``end`` inclusive.

    Raises:
        InputError: ``end`` before ``start``, or a cadence that is not a whole number of
            seconds of at least one second.
    """
    t0 = parse_time(start, name="start")
    t1 = parse_time(end, name="end")
    step = parse_duration(cadence, name="cadence")
    if t1 < t0:
        raise InputError(f"end {t1.isoformat()} is before start {t0.isoformat()}", field="end")
    if step.total_seconds() < 1 or step != timedelta(seconds=round(step.total_seconds())):
        raise InputError(
            f"cadence must be a whole number of seconds, at least 1 s (got {step})", field="cadence"
        )
    return pd.date_range(t0, t1, freq=pd.Timedelta(step)).as_unit("ns")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the wait in seconds that a ``Retry-After`` header asks for, or None.

    Both forms of RFC 9110 are understood: delay-seconds (``120``) and an HTTP-date
    (``Wed, 21 Oct 2015 07:28:00 GMT``, counted from ``now``, default the current time).
    Dates in the past give 0; unparseable values give None.
    """
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_jpeg2000(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a JP2 file or a J2K codestream."""
    return head.startswith(JP2_SIGNATURE) or head.startswith(J2K_CODESTREAM)


def _resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"invalid base URL {url!r}: {exc}", field="base_url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InputError(
            f"invalid base URL {url!r}: expected http(s)://host/..., e.g. {DEFAULT_BASE_URL}",
            field="base_url",
        )
    return url.rstrip("/") + "/"


# --------------------------------------------------------------------------------------
# Manifest: a CSV table plus an append-only journal
# --------------------------------------------------------------------------------------


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
    journal = _journal_path(path)
    table = _read_manifest_csv(path)
    if journal.exists():
        extra, _torn = _parse_journal(journal.read_text(encoding="utf-8"), journal)
        table = _merge(table, extra)
    return table


def _journal_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".journal")


class _ManifestStore:
    """The manifest of one download directory, locked for the duration of a run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal_path = _journal_path(path)
        self.table = _empty_manifest()
        self.torn_lines = 0
        self._journal: IO[str] | None = None
        self._pending: list[dict[str, str]] = []

    def __enter__(self) -> _ManifestStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._journal = open(self.journal_path, "a+", encoding="utf-8", newline="")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._journal.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise DownloadError(
                        f"another download is using {self.path} (its journal "
                        f"{self.journal_path} is locked); wait for it or use another --manifest"
                    ) from None
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


# --------------------------------------------------------------------------------------
# Fetching one item
# --------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A transient failure: retry after a back-off (or the server's Retry-After)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _ItemFailed(Exception):
    """A failure that retrying will not mend; the item is recorded as failed."""


class _Stopped(Exception):
    """The run is being interrupted."""


@dataclasses.dataclass(frozen=True)
class _Item:
    time: pd.Timestamp
    relpath: str
    expected_bytes: int | None = None  # set when the manifest says the file is complete
    expected_sha256: str | None = None


@dataclasses.dataclass
class _Result:
    item: _Item
    status: str  # ok, gap, failed, or skipped (already complete on disk)
    observation_time: pd.Timestamp | None = None
    image_id: int | None = None
    nbytes: int | None = None
    sha256: str | None = None
    reason: str = ""

    def record(self, source_id: int) -> dict[str, str]:
        return {
            "requested_time": self.item.time.strftime(TIME_FORMAT),
            "observation_time": ""
            if self.observation_time is None
            else self.observation_time.strftime(TIME_FORMAT),
            "source_id": str(source_id),
            "image_id": "" if self.image_id is None else str(self.image_id),
            "path": self.item.relpath if self.status == "ok" else "",
            "bytes": "" if self.nbytes is None else str(self.nbytes),
            "sha256": self.sha256 or "",
            "status": self.status,
            "reason": self.reason,
        }


def _write_all(fh: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[fh.write(view) :]


def _snippet(data: bytes, limit: int = 80) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    return repr(" ".join(text.split()))


def _format_delta(delta: pd.Timedelta) -> str:
    seconds = int(abs(delta).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


class _Fetcher:
    """Fetches single items; shared by the worker threads (holds no per-item state)."""

    def __init__(
        self,
        *,
        client: httpx.Client,
        base_url: str,
        out: Path,
        source_id: int,
        tolerance: timedelta,
        timeout: httpx.Timeout,
        retries: int,
        backoff: float,
        backoff_max: float,
        verify: str,
        stop: threading.Event,
    ) -> None:
        self.client = client
        self.closest_url = base_url + "getClosestImage/"
        self.jp2_url = base_url + "getJP2Image/"
        self.out = out
        self.source_id = source_id
        self.tolerance = pd.Timedelta(tolerance)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.verify = verify
        self.stop = stop

    # -- retry machinery -------------------------------------------------------------

    def _retrying(self, what: str, attempt: Callable[[], _T]) -> _T:
        for number in range(self.retries + 1):
            if self.stop.is_set():
                raise _Stopped
            try:
                return attempt()
            except _Retryable as exc:
                if number == self.retries:
                    raise _ItemFailed(
                        f"{what}: {exc.reason} (gave up after {number + 1} attempt(s))"
                    ) from None
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, MAX_RETRY_AFTER)
                else:
                    cap = min(self.backoff_max, self.backoff * 2.0**number)
                    delay = cap * random.uniform(0.5, 1.0)
                if self.stop.wait(delay):
                    raise _Stopped from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _check_status(response: httpx.Response, what: str) -> None:
        code = response.status_code
        if code == 429 or code >= 500:
            raise _Retryable(
                f"HTTP {code} {response.reason_phrase}".rstrip(),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if code >= 400:
            response.read()
            raise _ItemFailed(
                f"{what}: HTTP {code} {response.reason_phrase}: {_snippet(response.content)}"
            )

    @staticmethod
    def _transport_error(exc: httpx.HTTPError, *, in_body: bool = False) -> Exception:
        if isinstance(exc, httpx.TimeoutException):
            return _Retryable(f"timed out ({type(exc).__name__})")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return _ItemFailed(str(exc))
        if isinstance(exc, httpx.TransportError):
            if in_body:
                return _Retryable(f"incomplete body, the connection broke ({exc})")
            return _Retryable(f"connection error ({type(exc).__name__}: {exc})")
        return _ItemFailed(f"{type(exc).__name__}: {exc}")

    # -- the two API calls -----------------------------------------------------------

    def closest(self, t: pd.Timestamp) -> tuple[int, pd.Timestamp] | str:
        """Return ``(image id, observation time)``, or a gap reason."""
        what = "getClosestImage"
        params = {"date": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "sourceId": str(self.source_id)}

        def attempt() -> httpx.Response:
            try:
                response = self.client.get(self.closest_url, params=params, timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            self._check_status(response, what)
            return response

        response = self._retrying(what, attempt)
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            kind = response.headers.get("Content-Type", "no Content-Type")
            raise _ItemFailed(
                f"{what} answered {kind}, not JSON: {_snippet(response.content)}"
            ) from None
        if not isinstance(data, dict):
            raise _ItemFailed(
                f"{what} answered JSON that is not an object: {_snippet(response.content)}"
            )
        if "error" in data:
            message = str(data["error"])
            if "no images" in message.lower():
                return f"no image: {message}"
            raise _ItemFailed(f"{what} error: {message}")
        image_id = data.get("id")
        date = data.get("date")
        try:
            image_id = int(str(image_id))
            observed = pd.Timestamp(str(date))
            if pd.isna(observed):
                raise ValueError(date)
        except (TypeError, ValueError):
            raise _ItemFailed(
                f"{what} answered without a valid 'id' and 'date': {_snippet(response.content, 160)}"
            ) from None
        if observed.tzinfo is not None:
            observed = observed.tz_convert("UTC").tz_localize(None)
        return image_id, observed.floor("s")

    def jp2(self, image_id: int, dest: Path) -> tuple[int, str]:
        """Fetch one JPEG 2000 file to ``dest`` atomically; return ``(bytes, sha256)``."""
        what = f"getJP2Image id={image_id}"

        def attempt() -> tuple[int, str]:
            with atomic_path(dest) as tmp:
                in_body = False
                try:
                    with self.client.stream(
                        "GET", self.jp2_url, params={"id": str(image_id)}, timeout=self.timeout
                    ) as response:
                        self._check_status(response, what)
                        in_body = True
                        nbytes, digest = self._save_body(response, tmp, what)
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc, in_body=in_body) from None
            return nbytes, digest

        return self._retrying(what, attempt)

    def _save_body(self, response: httpx.Response, tmp: Path, what: str) -> tuple[int, str]:
        expected = response.headers.get("Content-Length")
        digest = hashlib.sha256()
        head = b""
        checked = False
        nbytes = 0
        # Unbuffered: what has arrived is on disk (under the temporary name) at once.
        with open(tmp, "wb", buffering=0) as fh:
            for chunk in response.iter_bytes():
                if self.stop.is_set():
                    raise _Stopped
                if not checked:
                    head += chunk
                    if len(head) < len(JP2_SIGNATURE):
                        continue
                    self._check_signature(head, response, what)
                    checked = True
                    chunk, head = head, b""
                _write_all(fh, chunk)
                digest.update(chunk)
                nbytes += len(chunk)
            if not checked:
                self._check_signature(head, response, what)
                _write_all(fh, head)
                digest.update(head)
                nbytes += len(head)
            os.fsync(fh.fileno())
        if (
            expected is not None
            and expected.isdigit()
            and response.num_bytes_downloaded < int(expected)
        ):
            raise _Retryable(
                f"incomplete body: got {response.num_bytes_downloaded} of {expected} bytes"
            )
        return nbytes, digest.hexdigest()

    @staticmethod
    def _check_signature(head: bytes, response: httpx.Response, what: str) -> None:
        if is_jpeg2000(head):
            return
        kind = response.headers.get("Content-Type", "no Content-Type")
        shown = "an empty body" if not head else f"a body starting {_snippet(head)}"
        raise _ItemFailed(f"{what} answered {kind} with {shown}: not a JPEG 2000 file")

    # -- one item --------------------------------------------------------------------

    def _verify(self, item: _Item) -> str | None:
        """None when the file on disk matches the manifest; otherwise why it does not."""
        path = self.out / item.relpath
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "file missing"
        if size != item.expected_bytes:
            return f"size {size} differs from the manifest's {item.expected_bytes}"
        if self.verify == "size":
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != item.expected_sha256:
            return "SHA-256 differs from the manifest"
        return None

    def process(self, item: _Item) -> _Result | None:
        """Fetch one item; None when the run is being stopped."""
        try:
            refetch = ""
            if item.expected_bytes is not None:
                problem = self._verify(item)
                if problem is None:
                    return _Result(item, "skipped")
                refetch = f"re-fetched: {problem}"
                with contextlib.suppress(FileNotFoundError):
                    (self.out / item.relpath).unlink()  # never leave a corrupt file behind
            found = self.closest(item.time)
            if isinstance(found, str):
                return _Result(item, "gap", reason=found)
            image_id, observed = found
            delta = observed - item.time
            if abs(delta) > self.tolerance:
                return _Result(
                    item,
                    "gap",
                    observation_time=observed,
                    image_id=image_id,
                    reason=(
                        f"closest image is {_format_delta(delta)} "
                        f"{'after' if delta > pd.Timedelta(0) else 'before'} the requested time "
                        f"(tolerance {_format_delta(self.tolerance)})"
                    ),
                )
            nbytes, digest = self.jp2(image_id, self.out / item.relpath)
            return _Result(item, "ok", observed, image_id, nbytes, digest, refetch)
        except _Stopped:
            return None
        except _ItemFailed as exc:
            return _Result(item, "failed", reason=str(exc))
        except OSError as exc:
            return _Result(item, "failed", reason=f"file system error on {item.relpath}: {exc}")


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DownloadSummary:
    """What a download run did.

    Attributes:
        requested: requested times in the range.
        downloaded: files fetched by this run.
        skipped: files already complete on disk (checked against the manifest).
        gaps: requested times with no observation within the tolerance (new or known).
        failed: items that failed (see ``failures`` and the manifest's ``reason``).
        bytes: bytes fetched by this run.
        manifest: the manifest file.
        failures: ``(requested time, reason)`` of each failure.
        torn_journal_lines: unfinished journal lines of a killed run, left out (their items
            were fetched again).
        stale_parts_removed: temporary files of a killed run that were removed.
        interrupted: the run was stopped early through ``cancel``; rerun to finish.
    """

    requested: int = 0
    downloaded: int = 0
    skipped: int = 0
    gaps: int = 0
    failed: int = 0
    bytes: int = 0
    manifest: Path | None = None
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    torn_journal_lines: int = 0
    stale_parts_removed: int = 0
    interrupted: bool = False

    @property
    def ok(self) -> int:
        """Files present and complete after the run."""
        return self.downloaded + self.skipped

    def format(self, max_failures: int = 10) -> str:
        """Return a human-readable summary (several lines)."""
        lines = [
            f"{self.requested} requested: {self.downloaded} downloaded "
            f"({_format_bytes(self.bytes)}), {self.skipped} already present, "
            f"{self.gaps} gap(s), {self.failed} failed",
            f"manifest: {self.manifest}",
        ]
        if self.interrupted:
            lines.append("interrupted: rerun the same command to finish")
        if self.stale_parts_removed or self.torn_journal_lines:
            lines.append(
                f"recovered from an interrupted run: removed {self.stale_parts_removed} partial "
                f"file(s), {self.torn_journal_lines} unfinished journal line(s)"
            )
        for when, reason in self.failures[:max_failures]:
            lines.append(f"  failed {when}: {reason}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more (see the manifest)")
        return "\n".join(lines)


def _format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


_PART_RE = re.compile(r"^\.(HMI\.m[0-9._]+\.jp2)\..+\.part$")


def _remove_stale_parts(out: Path, relpaths: np.ndarray) -> int:
    """Remove temporary files of a killed run, only those of the files of this range."""
    if len(relpaths) == 0:
        return 0
    rel = pd.Series(relpaths, dtype=object)
    split = rel.str.rsplit("/", n=1, expand=True)
    wanted = set(rel)
    removed = 0
    for folder in pd.unique(split[0]):
        directory = out / folder
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            match = _PART_RE.match(entry.name)
            if match and f"{folder}/{match.group(1)}" in wanted and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _plan(
    times: pd.DatetimeIndex,
    relpaths: np.ndarray,
    known: pd.DataFrame,
    tolerance: timedelta,
    retry_gaps: bool,
) -> tuple[list[_Item], int]:
    """Decide per requested time: fetch, verify a known-complete file, or keep a known gap.

    Returns the items to process and the number of known gaps kept without asking again.
    """
    k = known.set_index("requested_time").reindex(times)
    status = k["status"].fillna("").to_numpy(dtype=object)
    observed = pd.DatetimeIndex(k["observation_time"])
    far = np.asarray(observed.isna() | (abs(observed - times) > pd.Timedelta(tolerance)))
    keep_gap = (status == "gap") & far & (not retry_gaps)
    complete = (status == "ok") & (k["path"].fillna("").to_numpy(dtype=object) == relpaths)
    nbytes = k["bytes"].astype("Int64").to_numpy(dtype=object, na_value=None)
    digest = k["sha256"].fillna("").to_numpy(dtype=object)
    todo = np.flatnonzero(~keep_gap)
    items = [
        _Item(times[i], relpaths[i], nbytes[i], digest[i])
        if complete[i]
        else _Item(times[i], relpaths[i])
        for i in todo
    ]
    return items, int(keep_gap.sum())


def download_range(
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    out: str | os.PathLike[str],
    *,
    cadence: str | timedelta = "1h",
    tolerance: str | timedelta = "12min",
    source_id: int = HMI_MAGNETOGRAM_SOURCE_ID,
    base_url: str | None = None,
    concurrency: int = 4,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 1.0,
    backoff_max: float = 60.0,
    manifest: str | os.PathLike[str] | None = None,
    retry_gaps: bool = False,
    verify: str = "sha256",
    client: httpx.Client | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> DownloadSummary:
    """Download the JPEG 2000 images of a time range into ``out``; resumable.

    Args:
        start: first requested time (ISO 8601, UTC).
        end: last requested time, inclusive.
        out: download directory (``YYYY/MM/DD/HMI.m*.jp2`` below it).
        cadence: step between requested times (``1h``; the study used ``12min``).
        tolerance: largest distance between requested and observed time for a download;
            farther observations are recorded as gaps.
        source_id: Helioviewer data source (19: HMI magnetogram).
        base_url: API base URL; default ``$FDFLARE_HELIOVIEWER_URL`` or the public API.
        concurrency: most requests in flight at once.
        connect_timeout: seconds to connect.
        read_timeout: seconds to wait for each read from the server.
        retries: retries after the first attempt of each request (timeouts, 429, 5xx,
            broken connections).
        backoff: first back-off in seconds, doubled per retry, with jitter.
        backoff_max: longest back-off in seconds.
        manifest: manifest file; default ``out/manifest.csv``. Give each concurrent job
            writing into one directory its own manifest.
        retry_gaps: ask again for times recorded as gaps (by default a known gap is asked
            again only when the new ``tolerance`` could admit its observation).
        verify: how a file already on disk is checked against the manifest: ``sha256``
            (size and checksum) or ``size``.
        client: an :class:`httpx.Client` to use (its connection limits should admit
            ``concurrency`` connections); by default one is made and closed.
        progress: show a progress bar on stderr (when it is a terminal).
        cancel: set this event (from a signal handler or another thread) to stop early:
            nothing more starts, downloads in flight are abandoned (no partial file stays)
            or, when already complete, recorded, and the summary says ``interrupted``.

    Returns:
        Counts of what happened; the manifest holds one row per requested time.

    Raises:
        InputError: bad arguments, or a malformed manifest or one made for another source.
        DownloadError: another run holds the manifest.
    """
    times = requested_times(start, end, cadence)
    tol = parse_duration(tolerance, name="tolerance")
    url = _resolve_base_url(base_url)
    checks = (
        (isinstance(source_id, int) and source_id >= 0, "source_id", "a non-negative integer"),
        (isinstance(concurrency, int) and concurrency >= 1, "concurrency", "an integer >= 1"),
        (isinstance(retries, int) and retries >= 0, "retries", "an integer >= 0"),
        (connect_timeout > 0, "connect_timeout", "positive"),
        (read_timeout > 0, "read_timeout", "positive"),
        (backoff >= 0 and backoff_max >= 0, "backoff", "non-negative"),
        (verify in ("sha256", "size"), "verify", "'sha256' or 'size'"),
    )
    for ok, name, what in checks:
        if not ok:
            raise InputError(f"{name} must be {what}", field=name)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("the output directory is a file", path=out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = Path(manifest) if manifest is not None else out / MANIFEST_NAME
    relpaths = image_relpaths(times, ext="jp2")
    summary = DownloadSummary(requested=len(times), manifest=manifest_path)

    with _ManifestStore(manifest_path) as store:
        summary.torn_journal_lines = store.torn_lines
        known = store.table
        other = known["source_id"].dropna()
        other = other[other != source_id]
        if len(other):
            raise InputError(
                f"the manifest holds images of source {int(other.iloc[0])}, not {source_id}; "
                "use another output directory or --manifest for another source",
                path=manifest_path,
                field="source_id",
            )
        items, summary.gaps = _plan(times, relpaths, known, tol, retry_gaps)
        summary.stale_parts_removed = _remove_stale_parts(out, relpaths)

        own_client = client is None
        if client is None:
            client = httpx.Client(
                limits=httpx.Limits(
                    max_connections=concurrency, max_keepalive_connections=concurrency
                ),
                headers={"User-Agent": f"fdflare/{__version__}"},
                follow_redirects=True,
            )
        stop = threading.Event()
        fetcher = _Fetcher(
            client=client,
            base_url=url,
            out=out,
            source_id=source_id,
            tolerance=tol,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=None
            ),
            retries=retries,
            backoff=backoff,
            backoff_max=backoff_max,
            verify=verify,
            stop=stop,
        )

        def record(result: _Result) -> None:
            if result.status == "skipped":
                summary.skipped += 1
                return
            store.append(result.record(source_id))
            if result.status == "ok":
                summary.downloaded += 1
                summary.bytes += result.nbytes or 0
            elif result.status == "gap":
                summary.gaps += 1
            else:
                summary.failed += 1
                summary.failures.append((result.item.time.strftime(TIME_FORMAT), result.reason))

        try:
            summary.interrupted = _run_pool(
                fetcher, items, concurrency, stop, record, progress, summary.gaps, cancel
            )
        finally:
            if own_client:
                client.close()
    return summary


def _run_pool(
    fetcher: _Fetcher,
    items: list[_Item],
    concurrency: int,
    stop: threading.Event,
    handle: Callable[[_Result], None],
    progress: bool,
    known_gaps: int,
    cancel: threading.Event | None,
) -> bool:
    """Process items on ``concurrency`` threads, handing each result to ``handle``.

    ``handle`` runs on the calling thread, in order of completion. When ``cancel`` is set,
    or on an exception (such as KeyboardInterrupt), the workers are told to stop, queued
    items are dropped, and the results of items that still completed are handed over.

    Returns:
        Whether the run was cancelled.
    """
    from tqdm import tqdm

    counts = {"ok": 0, "gap": known_gaps, "failed": 0}
    bar = tqdm(
        total=len(items) + known_gaps,
        initial=known_gaps,
        unit="img",
        desc="download",
        file=sys.stderr,
        disable=None if progress else True,
        dynamic_ncols=True,
    )

    def finish(future: cf.Future[_Result | None]) -> None:
        result = future.result()
        if result is None:
            return
        handle(result)
        counts["ok" if result.status == "skipped" else result.status] += 1
        bar.update(1)
        bar.set_postfix(counts, refresh=False)

    def wind_down() -> None:
        stop.set()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        for future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                finish(future)  # completed while stopping: keep it
        pending.clear()

    queue = iter(items)
    pending: set[cf.Future[_Result | None]] = set()
    pool = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fdflare-download")
    try:
        while not (cancel is not None and cancel.is_set()):
            # A short queue keeps memory flat and lets a stop take effect promptly.
            while len(pending) < 2 * concurrency:
                item = next(queue, None)
                if item is None:
                    break
                pending.add(pool.submit(fetcher.process, item))
            if not pending:
                return False
            done, _ = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for future in done:
                finish(future)
                pending.discard(future)
        wind_down()
        return True
    except BaseException:
        wind_down()
        raise
    finally:
        stop.set()
        pool.shutdown(wait=True)
        bar.close()
