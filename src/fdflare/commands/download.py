"""``fdflare download``: HMI magnetograms from Helioviewer (JPEG 2000) or JSOC (FITS), resumable."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from fdflare.commands._common import (
    add_http_options,
    add_json_option,
    add_rebin_option,
    nonnegative_float,
    nonnegative_int,
    positive_int,
)

if TYPE_CHECKING:
    from fdflare.acquire.helioviewer import DownloadSummary

HELP = "download HMI magnetograms from Helioviewer (JPEG 2000) or JSOC (FITS), resumable"
DESCRIPTION = """\
For every requested time in [--start, --end) (--start included, --end excluded, every
--cadence; the same half-open range as every fdflare command), ask the
Helioviewer API for the closest observation (getClosestImage) and download its JPEG 2000
file (getJP2Image) when it lies within --tolerance of the requested time; otherwise record a
gap. Files go to DIR/YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.jp2, named after the requested
time, and every outcome to DIR/manifest.csv (requested_time, observation_time, source_id,
image_id, path, bytes, sha256, status ok/gap/failed, reason).

Timeouts, HTTP 429/5xx, broken connections, truncated bodies and HTML pages where a JPEG 2000
file was expected are retried (--retries, back-off with jitter, Retry-After honoured).
Rerunning the same command resumes: complete files (size and SHA-256 as in the manifest) are
skipped, failed items are tried again, gaps are kept (--retry-gaps asks again about them).

exit status: 0 nothing failed; 1 some items failed (listed, and in the manifest's reason
column); 2 bad arguments or input, or the manifest is in use by another run; 3 the service
cannot be reached at all; 130 interrupted (rerun to finish).

The API base URL is --base-url, else $FDFLARE_HELIOVIEWER_URL, else the public API
(https://api.helioviewer.org/v2/); the IAS mirror is https://helioviewer-api.ias.u-psud.fr/v2/.

--source jsoc asks JSOC (through drms) instead: the field in gauss as RICE-compressed FITS
(--series hmi.M_720s, the definitive series, or hmi.M_720s_nrt, near real time), records
chosen by T_REC within --tolerance, QUALITY checked (bad records are gaps, counted), exports
of --chunk records at a time, files at DIR/YYYY/MM/DD/HMI.m*.fits and the same manifest.
--rebin 8 has JSOC bin each image to 512 x 512 before it is sent (1/64 of the bytes).
JSOC needs a registered e-mail address: --email or $JSOC_EMAIL. Its base URL is --base-url,
else $FDFLARE_JSOC_URL, else http://jsoc.stanford.edu/. See docs/download.md.

examples:
  fdflare download --source jsoc --email me@example.org --start 2011-01-01T00:00 \
      --end 2011-01-02T00:00 --out data/hmi_fits
  fdflare download --start 2011-01-01T00:00 --end 2011-02-01T00:00 --out data/hmi_jp2
  fdflare download --start 2010-12-01T00:00 --end 2011-01-01T00:00 --cadence 12min \\
      --out data/hmi_jp2 --manifest data/hmi_jp2/manifests/2010-12.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare download``."""
    p.add_argument(
        "--start", required=True, help="first requested time, UTC (e.g. 2011-01-01T00:00)"
    )
    p.add_argument(
        "--end", required=True, help="end of the range, UTC, excluded (e.g. 2011-01-02T00:00)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="download directory")
    p.add_argument(
        "--source",
        choices=["helioviewer", "jsoc"],
        default="helioviewer",
        help="the archive: helioviewer (JPEG 2000, default) or jsoc (FITS, the field in gauss)",
    )
    p.add_argument(
        "--series",
        choices=["hmi.M_720s", "hmi.M_720s_nrt"],
        default=None,
        help="JSOC series (--source jsoc; default hmi.M_720s, the definitive one)",
    )
    p.add_argument(
        "--email",
        default=None,
        help="address registered at JSOC for exports (--source jsoc; default $JSOC_EMAIL)",
    )
    p.add_argument(
        "--chunk",
        type=positive_int,
        default=None,
        metavar="N",
        help="records per JSOC export request (--source jsoc; default 24)",
    )
    add_rebin_option(p, "--rebin", goes_with="--source jsoc", what="each image")
    p.add_argument(
        "--export-timeout",
        type=nonnegative_float,
        default=None,
        metavar="SECONDS",
        help="longest wait for one JSOC export to be staged (--source jsoc; default 3600)",
    )
    p.add_argument(
        "--cadence",
        default="1h",
        help="step between requested times (default %(default)s; the study: 12min)",
    )
    p.add_argument(
        "--tolerance",
        default="12min",
        help="largest distance between requested and observed time (default %(default)s)",
    )
    p.add_argument(
        "--source-id",
        type=nonnegative_int,
        default=None,
        help="Helioviewer sourceId (default 19: HMI magnetogram)",
    )
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=4,
        metavar="N",
        help="most requests in flight (default %(default)s)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="API base URL (default $FDFLARE_HELIOVIEWER_URL or https://api.helioviewer.org/v2/)",
    )
    p.add_argument(
        "--manifest",
        default=None,
        metavar="FILE",
        help="manifest file (default DIR/manifest.csv); one per job when jobs share DIR",
    )
    add_http_options(p, retries=5)
    p.add_argument(
        "--backoff",
        type=nonnegative_float,
        default=1.0,
        metavar="SECONDS",
        help="first back-off, doubled per retry, with jitter (default %(default)s)",
    )
    p.add_argument(
        "--backoff-max",
        type=nonnegative_float,
        default=60.0,
        metavar="SECONDS",
        help="longest back-off (default %(default)s)",
    )
    p.add_argument(
        "--retry-gaps",
        action="store_true",
        help="ask again for times recorded as gaps by an earlier run",
    )
    p.add_argument(
        "--verify",
        choices=["sha256", "size"],
        default="sha256",
        help="check of files already on disk against the manifest (default %(default)s)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar; the final summary still prints"
    )
    add_json_option(p)


def _check_arguments(args: argparse.Namespace) -> None:
    """Validate every option before any work, naming the option in the error."""
    from pathlib import Path

    from fdflare.acquire.helioviewer.client import resolve_base_url
    from fdflare.core.errors import InputError, UsageError
    from fdflare.core.outputs import check_output_dir, check_output_file
    from fdflare.core.timeparse import option_duration, option_time

    start = option_time(args.start, "--start")
    end = option_time(args.end, "--end")
    if end <= start:
        raise UsageError(
            f"--end {args.end} is not after --start {args.start} (the range is [--start, --end): "
            "--start included, --end excluded)"
        )
    step = option_duration(args.cadence, "--cadence")
    if step.total_seconds() < 1 or step.total_seconds() != round(step.total_seconds()):
        raise UsageError(f"--cadence must be a whole number of seconds, at least 1s (got {step})")
    option_duration(args.tolerance, "--tolerance")
    jsoc_only = [
        ("--series", args.series),
        ("--email", args.email),
        ("--chunk", args.chunk),
        ("--rebin", args.rebin),
        ("--export-timeout", args.export_timeout),
    ]
    if args.source == "jsoc":
        from fdflare.acquire.jsoc.client import resolve_jsoc_url
        from fdflare.acquire.jsoc.download import resolve_email

        if args.source_id is not None:
            raise UsageError("--source-id is for --source helioviewer; JSOC takes --series")
        try:
            resolve_jsoc_url(args.base_url, option="--base-url")
            resolve_email(args.email)
        except InputError as exc:
            raise UsageError(f"--{exc.field or 'base-url'}: {exc.message}") from None
    else:
        given = [name for name, value in jsoc_only if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: for --source jsoc only")
        try:
            resolve_base_url(args.base_url, option="--base-url")
        except InputError as exc:
            raise UsageError(f"--base-url: {exc.message}") from None
    check_output_dir(args.out, writes=["manifest.csv"], option="--out")
    if args.manifest is not None:
        check_output_file(args.manifest, option="--manifest")
        if Path(args.manifest).exists() and not Path(args.manifest).is_file():
            raise UsageError(f"--manifest {args.manifest} is not a file")


def run(args: argparse.Namespace) -> int:
    """Run the download and print a summary.

    Returns 0 when nothing failed, 1 when some items failed, 130 when stopped; raises
    :class:`~fdflare.core.errors.DownloadError` (exit status 3) when the service cannot be
    reached at all.
    """
    from fdflare.acquire.helioviewer import download_range
    from fdflare.core.errors import DownloadError
    from fdflare.core.http import HttpPolicy

    _check_arguments(args)
    policy = HttpPolicy(
        concurrency=args.concurrency,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        retries=args.retries,
        backoff=args.backoff,
        backoff_max=args.backoff_max,
    )

    # Ctrl-C or a batch scheduler's SIGTERM (time limit, pre-emption) stops the run at a
    # safe point: nothing new starts, what completed is recorded, the manifest is written,
    # and the next run resumes. A second signal aborts at once.
    cancel = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print(
            f"fdflare download: {signal.Signals(signum).name}: stopping after the downloads in "
            "flight (send it again to abort)",
            file=sys.stderr,
            flush=True,
        )

    installed: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if signum is not None:
                installed[signum] = signal.signal(signum, stop)
    try:
        summary: DownloadSummary
        if args.source == "jsoc":
            from fdflare.acquire.jsoc import download_jsoc

            summary = download_jsoc(
                args.start,
                args.end,
                args.out,
                email=args.email,
                series=args.series or "hmi.M_720s",
                cadence=args.cadence,
                tolerance=args.tolerance,
                chunk=args.chunk or 24,
                rebin=args.rebin or 1,
                base_url=args.base_url,
                policy=policy,
                export_timeout=3600.0 if args.export_timeout is None else args.export_timeout,
                manifest=args.manifest,
                retry_gaps=args.retry_gaps,
                verify=args.verify,
                cancel=cancel,
            )
        else:
            summary = download_range(
                args.start,
                args.end,
                args.out,
                cadence=args.cadence,
                tolerance=args.tolerance,
                source_id=19 if args.source_id is None else args.source_id,
                base_url=args.base_url,
                policy=policy,
                manifest=args.manifest,
                retry_gaps=args.retry_gaps,
                verify=args.verify,
                progress=not (args.quiet or args.json),
                cancel=cancel,
            )
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    if args.json:
        import dataclasses

        from fdflare.commands._common import print_json

        print_json(
            {
                "out": args.out,
                **dataclasses.asdict(summary),
                "ok": summary.ok,
                "failures": [{"time": t, "reason": r} for t, r in summary.failures],
            }
        )
    else:
        print(summary.format(), flush=True)
    if summary.unreachable:
        raise DownloadError(
            f"the service cannot be reached ({summary.unreachable}); nothing was recorded for "
            "the times not asked, rerun when it is back"
        )
    if summary.interrupted:
        return 130
    return 0 if summary.failed == 0 else 1
