"""Download full-disk HMI magnetograms (JPEG 2000) from the Helioviewer API v2: the run.

For each requested time in the half-open range ``[start, end)`` (``start`` included,
``end`` excluded, every ``cadence``) the downloader asks ``getClosestImage`` for the
observation closest in time and fetches its JPEG 2000 file with ``getJP2Image`` only when
the observation lies within ``tolerance`` of the requested time; otherwise it records a
*gap* (Helioviewer always answers with the closest image, which can be hours away inside a
data gap). Files are stored in the study's layout, named after the *requested* time::

    OUT/YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.jp2

and every outcome is recorded in the manifest (:mod:`.manifest`).

Guarantees:

* at most ``concurrency`` requests are in flight (a thread pool of that size sharing one
  :class:`httpx.Client`, and the slots of :class:`fdflare.core.http.HttpPolicy`);
* timeouts, HTTP 429 and 5xx answers, broken connections, truncated bodies and ``200``
  answers that are not what was asked for (an HTML page) are retried with exponential
  back-off and jitter, honouring ``Retry-After`` (seconds or HTTP-date, capped);
* a file appears under its final name only when it is complete and is a JPEG 2000 file
  (JP2 signature box or J2K codestream); anything else is a failure with a reason;
* a killed run loses at most the items in flight, and a rerun finishes the job, skipping
  files that are already complete (size and SHA-256 checked against the manifest);
* when the service cannot be reached at all (no connection, after the retries of the first
  item), the run stops at once and says so (:attr:`DownloadSummary.unreachable`).

Example:
    >>> from fdflare.acquire.helioviewer import download_range
    >>> from fdflare.core.http import HttpPolicy
    >>> summary = download_range(  # doctest: +SKIP
    ...     "2011-01-01T00:00", "2011-01-02T00:00", "data/hmi_jp2", cadence="1h",
    ...     policy=HttpPolicy(concurrency=4, retries=5),
    ... )
    >>> print(summary.format())  # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import os
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from fdflare import __version__
from fdflare.acquire.helioviewer.client import (
    HMI_MAGNETOGRAM_SOURCE_ID,
    HelioviewerClient,
    ItemFailed,
    resolve_base_url,
)
from fdflare.acquire.helioviewer.manifest import (
    MANIFEST_NAME,
    TIME_FORMAT,
    ManifestStore,
    refuse_other_source,
)
from fdflare.core.errors import InputError
from fdflare.core.http import GaveUp, HttpPolicy, Stopped
from fdflare.core.paths import image_relpaths
from fdflare.core.timeparse import parse_duration, parse_time

__all__ = ["DownloadSummary", "download_range", "requested_times"]


def requested_times(
    start: str | pd.Timestamp, end: str | pd.Timestamp, cadence: str | timedelta = "1h"
) -> pd.DatetimeIndex:
    """Return the requested times ``start, start + cadence, ...`` before ``end`` (excluded).

    Raises:
        InputError: ``end`` not after ``start``, or a cadence that is not a whole number of
            seconds of at least one second.
    """
    t0 = parse_time(start, name="start")
    t1 = parse_time(end, name="end")
    step = parse_duration(cadence, name="cadence")
    if t1 <= t0:
        raise InputError(
            f"end {t1.isoformat()} is not after start {t0.isoformat()} (the range is "
            "[start, end): start included, end excluded)",
            field="end",
        )
    if step.total_seconds() < 1 or step != timedelta(seconds=round(step.total_seconds())):
        raise InputError(
            f"cadence must be a whole number of seconds, at least 1 s (got {step})", field="cadence"
        )
    times = pd.date_range(t0, t1, freq=pd.Timedelta(step)).as_unit("ns")
    return times[times < t1]


# --------------------------------------------------------------------------------------
# One item
# --------------------------------------------------------------------------------------


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
    unreachable: bool = False  # failed because the service could not be reached at all

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


def _format_delta(delta: pd.Timedelta) -> str:
    seconds = int(abs(delta).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


class _Fetcher:
    """Processes single items; shared by the worker threads (holds no per-item state)."""

    def __init__(
        self, *, api: HelioviewerClient, out: Path, tolerance: timedelta, verify: str
    ) -> None:
        self.api = api
        self.out = out
        self.tolerance = pd.Timedelta(tolerance)
        self.verify = verify

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
            found = self.api.closest(item.time)
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
            nbytes, digest = self.api.jp2(image_id, self.out / item.relpath)
            return _Result(item, "ok", observed, image_id, nbytes, digest, refetch)
        except Stopped:
            return None
        except GaveUp as exc:
            return _Result(item, "failed", reason=exc.reason, unreachable=exc.unreachable)
        except ItemFailed as exc:
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
        unreachable: why the service could not be reached at all (not one answer after
            the retries), or empty; the run stopped and recorded nothing for that.
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
    unreachable: str = ""

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
        if self.unreachable:
            lines.append(f"the service cannot be reached: {self.unreachable}")
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
    policy: HttpPolicy | None = None,
    manifest: str | os.PathLike[str] | None = None,
    retry_gaps: bool = False,
    verify: str = "sha256",
    client: httpx.Client | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
) -> DownloadSummary:
    """Download the JPEG 2000 images of a time range into ``out``; resumable.

    Args:
        start: first requested time (ISO 8601, UTC), included.
        end: end of the range, excluded: the last requested time is before it.
        out: download directory (``YYYY/MM/DD/HMI.m*.jp2`` below it).
        cadence: step between requested times (``1h``; the study used ``12min``).
        tolerance: largest distance between requested and observed time for a download;
            farther observations are recorded as gaps.
        source_id: Helioviewer data source (19: HMI magnetogram).
        base_url: API base URL; default ``$FDFLARE_HELIOVIEWER_URL`` or the public API.
        policy: the HTTP policy (:class:`fdflare.core.http.HttpPolicy`): requests in
            flight (``concurrency``), the timeouts, the retries of each request (timeouts,
            429, 5xx, broken connections, truncated bodies, HTML where an image was
            expected) and their back-off; default ``HttpPolicy()`` (4 in flight, 5 retries).
        manifest: manifest file; default ``out/manifest.csv``. Give each concurrent job
            writing into one directory its own manifest.
        retry_gaps: ask again for times recorded as gaps (by default a known gap is asked
            again only when the new ``tolerance`` could admit its observation).
        verify: how a file already on disk is checked against the manifest: ``sha256``
            (size and checksum) or ``size``.
        client: an :class:`httpx.Client` to use (its connection limits should admit the
            policy's ``concurrency`` connections); by default one is made and closed.
        progress: show progress on stderr (a bar on a terminal, a line per tenth elsewhere).
        cancel: set this event (from a signal handler or another thread) to stop early:
            nothing more starts, downloads in flight are abandoned (no partial file stays)
            or, when already complete, recorded, and the summary says ``interrupted``.

    Returns:
        Counts of what happened; the manifest holds one row per requested time.

    Raises:
        InputError: bad arguments, or a malformed manifest or one made for another source.
        BusyError: another run holds the manifest.
    """
    times = requested_times(start, end, cadence)
    tol = parse_duration(tolerance, name="tolerance")
    url = resolve_base_url(base_url)
    if not (isinstance(source_id, int) and source_id >= 0):
        raise InputError("source_id must be a non-negative integer", field="source_id")
    if verify not in ("sha256", "size"):
        raise InputError("verify must be 'sha256' or 'size'", field="verify")
    if policy is None:
        policy = HttpPolicy()

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("the output directory is a file", path=out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = Path(manifest) if manifest is not None else out / MANIFEST_NAME
    relpaths = image_relpaths(times, ext="jp2")
    summary = DownloadSummary(requested=len(times), manifest=manifest_path)

    with ManifestStore(manifest_path) as store:
        summary.torn_journal_lines = store.torn_lines
        known = store.table
        refuse_other_source(
            known,
            source_id,
            manifest_path,
            advice="use another output directory or --manifest for another source",
        )
        items, summary.gaps = _plan(times, relpaths, known, tol, retry_gaps)
        summary.stale_parts_removed = _remove_stale_parts(out, relpaths)

        own_client = client is None
        if client is None:
            client = policy.client(headers={"User-Agent": f"fdflare/{__version__}"})
        stop = threading.Event()
        api = HelioviewerClient(
            client=client, base_url=url, source_id=source_id, policy=policy, stop=stop
        )
        fetcher = _Fetcher(api=api, out=out, tolerance=tol, verify=verify)

        def record(result: _Result) -> None:
            if result.status == "skipped":
                summary.skipped += 1
                return
            if result.unreachable and not policy.reached.is_set():
                # Not one answer from the service: stop, record nothing (a rerun asks again).
                if not summary.unreachable:
                    summary.unreachable = f"{url}: {result.reason}"
                stop.set()
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
                fetcher, items, policy.concurrency, stop, record, progress, summary.gaps, cancel
            )
        finally:
            if own_client:
                client.close()
    if summary.unreachable:
        summary.interrupted = False
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
    from fdflare.core.progress import progress_bar

    counts = {"ok": 0, "gap": known_gaps, "failed": 0}
    bar = progress_bar(
        total=len(items) + known_gaps,
        initial=known_gaps,
        unit="img",
        desc="download",
        enabled=progress,
        dynamic_ncols=True,
    )

    def finish(future: cf.Future[_Result | None]) -> None:
        result = future.result()
        if result is None:
            return
        handle(result)
        counts["ok" if result.status == "skipped" else result.status] += 1
        bar.set_postfix(counts, refresh=False)
        bar.update(1)

    def wind_down() -> None:
        stop.set()
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        for future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                finish(future)  # completed while stopping: keep it
        pending.clear()

    def run_item(item: _Item) -> _Result | None:
        # a queued item that a worker picks up after the cancel is not started at all
        if cancel is not None and cancel.is_set():
            return None
        return fetcher.process(item)

    queue = iter(items)
    pending: set[cf.Future[_Result | None]] = set()
    pool = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fdflare-download")
    try:
        while not (stop.is_set() or (cancel is not None and cancel.is_set())):
            # A short queue keeps memory flat and lets a stop take effect promptly.
            while len(pending) < 2 * concurrency:
                item = next(queue, None)
                if item is None:
                    break
                pending.add(pool.submit(run_item, item))
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
