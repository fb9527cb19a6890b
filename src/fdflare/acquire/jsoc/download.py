"""Download HMI magnetograms (FITS, the field in gauss) from JSOC through ``drms``: the run.

For each requested time of ``[start, end)`` every ``cadence``, the record whose ``T_REC``
is closest (within ``tolerance``) is chosen from a ``jsoc_info`` listing of the range; a
record whose ``QUALITY`` is not 0 is a *gap* (counted apart as bad quality), as is a time
with no record near it. The chosen records are exported in chunks (one ``jsoc_fetch``
export of ``chunk`` records at a time, polled until JSOC has staged the files) and each
file is fetched to::

    OUT/YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.fits

named after the *requested* time, as the Helioviewer source names its JP2s. The tree, the
``manifest.csv`` (with its journal and lock), the resume rules, the gap records and the
atomic writes are those of :mod:`fdflare.acquire.helioviewer`; ``source_id`` is the
series' number (:func:`~fdflare.acquire.jsoc.client.source_id`: :data:`~fdflare.acquire.jsoc.client.SERIES`,
plus the binning factor in millions when ``rebin`` asks JSOC to bin the images) and
``image_id`` JSOC's record number. A failed export fails the items of its chunk (with JSOC's reason); the
next run tries them again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare import __version__
from fdflare.acquire.helioviewer.client import ItemFailed
from fdflare.acquire.helioviewer.download import (
    DownloadSummary,
    _format_delta,
    _Item,
    _plan,
    _Result,
    requested_times,
)
from fdflare.acquire.helioviewer.manifest import (
    MANIFEST_NAME,
    TIME_FORMAT,
    ManifestStore,
    refuse_other_source,
)
from fdflare.acquire.jsoc.client import (
    EMAIL_ENV,
    SERIES,
    ExportFailed,
    JsocClient,
    check_rebin,
    resolve_jsoc_url,
    source_id,
    source_of,
)
from fdflare.core.errors import InputError
from fdflare.core.http import GaveUp, HttpPolicy, Stopped
from fdflare.core.paths import image_relpaths
from fdflare.core.timeparse import parse_duration

__all__ = ["JsocSummary", "download_jsoc", "resolve_email"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PART_RE = re.compile(r"^\.(HMI\.m[0-9._]+\.fits)\..+\.part$")


@dataclasses.dataclass
class JsocSummary(DownloadSummary):
    """What a JSOC run did: :class:`DownloadSummary` plus JSOC's own counts.

    Attributes:
        bad_quality: gaps of this run whose closest record has ``QUALITY`` not 0 (listed
            in the manifest's ``reason``).
        exports: export requests that finished.
        pending_polls: status polls of exports (each after a wait, while pending).
    """

    bad_quality: int = 0
    exports: int = 0
    pending_polls: int = 0

    def format(self, max_failures: int = 10) -> str:
        """The summary of :class:`DownloadSummary` with the JSOC counts."""
        text = super().format(max_failures)
        first, _, rest = text.partition("\n")
        extra = (
            f"; {self.bad_quality} bad-quality record(s) among the gaps; "
            f"{self.exports} export(s), {self.pending_polls} pending poll(s)"
        )
        return first + extra + ("\n" + rest if rest else "")


def resolve_email(email: str | None) -> str:
    """``email``, else ``$JSOC_EMAIL``; JSOC requires a registered address for exports.

    Raises:
        InputError: none given, or not an e-mail address.
    """
    value = email or os.environ.get(EMAIL_ENV, "")
    if not value:
        raise InputError(
            f"JSOC exports need a registered e-mail address: give --email or set ${EMAIL_ENV} "
            "(register it at http://jsoc.stanford.edu/ajax/register_email.html)",
            field="email",
        )
    if not _EMAIL.match(value):
        raise InputError(f"not an e-mail address: {value!r}", field="email")
    return value


def _choose(
    items: list[_Item], records: pd.DataFrame, tolerance: pd.Timedelta
) -> tuple[dict[int, tuple[_Item, int, pd.Timestamp, str]], list[_Result], int]:
    """The closest record of each item: ``{recnum: (item, recnum, t_rec, text)}``, gaps, bad."""
    chosen: dict[int, tuple[_Item, int, pd.Timestamp, str]] = {}
    gaps: list[_Result] = []
    bad = 0
    t_rec = pd.DatetimeIndex(records["t_rec"])
    for item in items:
        if len(records) == 0:
            gaps.append(_Result(item, "gap", reason="no record in JSOC near this time"))
            continue
        dist = np.abs((t_rec - item.time).to_numpy())
        i = int(np.argmin(dist))
        observed = t_rec[i]
        row = records.iloc[i]
        delta = observed - item.time
        recnum = int(row["recnum"])
        if abs(delta) > tolerance:
            reason = (
                f"closest record is {_format_delta(delta)} "
                f"{'after' if delta > pd.Timedelta(0) else 'before'} the requested time "
                f"(tolerance {_format_delta(tolerance)})"
            )
            gaps.append(_Result(item, "gap", observed.floor("s"), recnum, reason=reason))
            continue
        quality = str(row["quality"]).strip()
        try:
            good = int(quality, 0) == 0
        except ValueError:
            good = False
        if not good:
            bad += 1
            gaps.append(
                _Result(
                    item,
                    "gap",
                    observed.floor("s"),
                    recnum,
                    reason=f"bad quality: QUALITY={quality} of {row['t_rec_text']}",
                )
            )
            continue
        chosen[recnum] = (item, recnum, observed.floor("s"), str(row["t_rec_text"]))
    return chosen, gaps, bad


def download_jsoc(
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    out: str | os.PathLike[str],
    *,
    email: str | None = None,
    series: str = "hmi.M_720s",
    cadence: str | timedelta = "1h",
    tolerance: str | timedelta = "12min",
    chunk: int = 24,
    rebin: int = 1,
    base_url: str | None = None,
    policy: HttpPolicy | None = None,
    export_timeout: float = 3600.0,
    manifest: str | os.PathLike[str] | None = None,
    retry_gaps: bool = False,
    verify: str = "sha256",
    poll_sleep: object = None,
    cancel: threading.Event | None = None,
) -> JsocSummary:
    """Download the HMI magnetograms (FITS) of a time range from JSOC; resumable.

    Args:
        start: first requested time (ISO 8601, UTC), included.
        end: end of the range, excluded.
        out: download directory (``YYYY/MM/DD/HMI.m*.fits`` below it).
        email: address registered at JSOC for exports (default ``$JSOC_EMAIL``).
        series: ``hmi.M_720s`` (definitive) or ``hmi.M_720s_nrt`` (near real time).
        cadence: step between requested times.
        tolerance: largest distance between a requested time and its record's ``T_REC``.
        chunk: records per export request.
        rebin: bin each image ``rebin`` x ``rebin`` on JSOC's side (one of
            :data:`~fdflare.acquire.jsoc.client.REBIN_FACTORS`; 1, the default, keeps the
            4096 x 4096 record). ``8`` brings 512 x 512 images, the study's size, at about
            1/64 of the bytes; their limb and strong fields differ a little from the
            full-resolution image's (docs/prepare.md).
        base_url: JSOC base URL (default ``$FDFLARE_JSOC_URL`` or JSOC at Stanford).
        policy: the HTTP policy (:class:`fdflare.core.http.HttpPolicy`): requests in flight
            (file downloads run in parallel), the timeouts (file downloads; drms uses its
            own 60 s), the retries of each request and their back-off; default
            ``HttpPolicy()``.
        export_timeout: longest wait in seconds for one export to be staged.
        manifest: manifest file (default ``out/manifest.csv``).
        retry_gaps: ask again for times recorded as gaps.
        verify: check of files already on disk, ``sha256`` or ``size``.
        poll_sleep: the function that waits between export polls (tests inject one).
        cancel: set to stop early; the summary then says ``interrupted``.

    Raises:
        InputError: bad arguments, no e-mail, an e-mail JSOC does not know, or a manifest
            of another source or series.
        BusyError: another run holds the manifest.
    """
    times = requested_times(start, end, cadence)
    tol = pd.Timedelta(parse_duration(tolerance, name="tolerance"))
    url = resolve_jsoc_url(base_url)
    address = resolve_email(email)
    if series not in SERIES:
        raise InputError(f"unknown series {series!r}: use {' or '.join(SERIES)}", field="series")
    if not (isinstance(chunk, int) and chunk >= 1):
        raise InputError("chunk must be a positive integer", field="chunk")
    check_rebin(rebin)
    if verify not in ("sha256", "size"):
        raise InputError("verify must be 'sha256' or 'size'", field="verify")
    if policy is None:
        policy = HttpPolicy()
    source = source_id(series, rebin)
    name = series if rebin == 1 else f"{series} binned {rebin} x {rebin}"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("the output directory is a file", path=out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = Path(manifest) if manifest is not None else out / MANIFEST_NAME
    relpaths = image_relpaths(times, ext="fits")
    summary = JsocSummary(requested=len(times), manifest=manifest_path)
    stop = threading.Event()

    with (
        ManifestStore(manifest_path) as store,
        policy.client(headers={"User-Agent": f"fdflare/{__version__}"}) as http,
    ):
        summary.torn_journal_lines = store.torn_lines
        refuse_other_source(
            store.table,
            source,
            manifest_path,
            name=name,
            advice=_advice(store.table, series, rebin),
        )
        items, summary.gaps = _plan(times, relpaths, store.table, tol, retry_gaps)
        summary.stale_parts_removed = _remove_stale_parts(out, relpaths)
        api = JsocClient(
            base_url=url,
            series=series,
            email=address,
            policy=policy,
            stop=stop,
            http=http,
            export_timeout=export_timeout,
            sleep=poll_sleep,  # type: ignore[arg-type]
            rebin=rebin,
        )

        def record(result: _Result) -> None:
            store.append(result.record(source))
            if result.status == "ok":
                summary.downloaded += 1
                summary.bytes += result.nbytes or 0
            elif result.status == "gap":
                summary.gaps += 1
            else:
                summary.failed += 1
                summary.failures.append((result.item.time.strftime(TIME_FORMAT), result.reason))

        try:
            todo = _verified(items, out, verify, summary)
            if todo and not _email_known(api, summary, url):
                if not summary.unreachable:
                    raise InputError(
                        f"JSOC does not know {address} as registered for exports: register it "
                        "at http://jsoc.stanford.edu/ajax/register_email.html",
                        field="email",
                    )
                return summary
            for first in range(0, len(todo), chunk):
                if cancel is not None and cancel.is_set():
                    summary.interrupted = True
                    break
                part = todo[first : first + chunk]
                results = _run_chunk(api, part, tol, out, summary, policy.concurrency)
                if results is None:  # unreachable before any answer
                    summary.unreachable = f"{url}: {api.last_reason}"
                    break
                for result in results:
                    record(result)
        finally:
            stop.set()
            summary.pending_polls = api.pending_polls
    return summary


def _advice(table: pd.DataFrame, series: str, rebin: int) -> str:
    """What to do about a manifest of another JSOC source: the options that give its own."""
    held = table["source_id"].dropna()
    other = source_of(int(held.iloc[0])) if len(held) else None
    if other is None:
        return "use another output directory or --manifest"
    their_series, binned = other
    options = [f"--series {their_series}"] if their_series != series else []
    if binned > 1:
        options.append(f"--rebin {binned}")
    elif rebin > 1:
        options.append("no --rebin")
    shown = their_series + (f" binned {binned} x {binned}" if binned > 1 else "")
    return (
        f"it holds {shown}: rerun with {' and '.join(options)}, or use another output "
        "directory or --manifest"
    )


def _verified(items: list[_Item], out: Path, verify: str, summary: JsocSummary) -> list[_Item]:
    """Items still to fetch: complete files on disk (as the manifest says) are skipped."""
    todo = []
    for item in items:
        if item.expected_bytes is not None:
            if _matches(out / item.relpath, item, verify):
                summary.skipped += 1
                continue
            with contextlib.suppress(FileNotFoundError):
                (out / item.relpath).unlink()  # never leave a corrupt file behind
        todo.append(_Item(item.time, item.relpath))
    return todo


def _matches(path: Path, item: _Item, verify: str) -> bool:
    """Whether the file has the manifest's size (and SHA-256, unless ``verify`` is ``size``)."""
    import hashlib

    try:
        if path.stat().st_size != item.expected_bytes:
            return False
    except FileNotFoundError:
        return False
    if verify == "size":
        return True
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == item.expected_sha256


def _email_known(api: JsocClient, summary: JsocSummary, url: str) -> bool:
    try:
        return api.check_email()
    except GaveUp as exc:
        if exc.unreachable:
            summary.unreachable = f"{url}: {exc.reason}"
            return False
        raise InputError(f"cannot check the e-mail address with JSOC: {exc.reason}") from None
    except ItemFailed as exc:
        raise InputError(f"cannot check the e-mail address with JSOC: {exc}") from None


def _run_chunk(
    api: JsocClient,
    items: list[_Item],
    tol: pd.Timedelta,
    out: Path,
    summary: JsocSummary,
    concurrency: int,
) -> list[_Result] | None:
    """List, choose, export and fetch one chunk; None when JSOC was never reached."""
    import concurrent.futures as cf

    def failed(reason: str) -> list[_Result]:
        return [_Result(item, "failed", reason=reason) for item in items]

    try:
        records = api.records(items[0].time - tol, items[-1].time + tol)
        chosen, gaps, bad = _choose(items, records, tol)
        summary.bad_quality += bad
        if not chosen:
            return gaps
        files = api.export(sorted(chosen))
        summary.exports += 1
    except Stopped:
        return []
    except GaveUp as exc:
        api.last_reason = exc.reason
        if exc.unreachable and not api.policy.reached.is_set():
            return None
        return failed(exc.reason)
    except (ItemFailed, ExportFailed) as exc:
        return failed(str(exc))

    by_text = {text: (item, recnum, observed) for item, recnum, observed, text in chosen.values()}

    def fetch(t_rec: str, file_url: str) -> _Result:
        item, recnum, observed = by_text[t_rec]
        try:
            nbytes, digest = api.fetch(file_url, out / item.relpath)
        except GaveUp as exc:
            return _Result(item, "failed", observed, recnum, reason=exc.reason)
        except ItemFailed as exc:
            return _Result(item, "failed", observed, recnum, reason=str(exc))
        except OSError as exc:
            return _Result(item, "failed", observed, recnum, reason=f"file system error: {exc}")
        return _Result(item, "ok", observed, recnum, nbytes, digest)

    wanted = [(t, u) for t, u in files if t in by_text]
    results = list(gaps)
    try:
        with cf.ThreadPoolExecutor(max_workers=concurrency) as pool:
            results += list(pool.map(lambda tu: fetch(*tu), wanted))
    except Stopped:
        pass
    listed = {t for t, _ in wanted}
    for item, recnum, observed, text in chosen.values():
        if text not in listed:
            results.append(
                _Result(item, "failed", observed, recnum, reason="the export listed no file")
            )
    return results


def _remove_stale_parts(out: Path, relpaths: np.ndarray) -> int:
    """Remove temporary files of a killed run, only those of the files of this range."""
    removed = 0
    wanted = set(relpaths.tolist())
    for folder in sorted({r.rsplit("/", 1)[0] for r in wanted}):
        directory = out / folder
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            m = _PART_RE.match(entry.name)
            if m and f"{folder}/{m.group(1)}" in wanted and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
