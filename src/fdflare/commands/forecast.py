"""``fdflare forecast``: P(flare in the window) from the magnetogram closest to a time."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "forecast P(flare in the members' window) now or at a time: magnetogram -> ensemble -> probability"
DESCRIPTION = """\
Ask Helioviewer (or read a local --archive, or ask JSOC's near-real-time series with
--source jsoc-nrt) for the HMI magnetogram closest to --time
(default now), decode it at reduced resolution in memory with its disk geometry, run every
member (--checkpoint given one or more times, or the ensemble.json of `fdflare cv`) and
print P(flare >= threshold in the window after the observation), the threshold and window
of the members' label recipe (the study's, >= M1.0 in 24 h, when they record none): the
mean of the members, each through its own calibration map when the ensemble carries them
(and the mean through --calibration when given). A history map (`calibrate --method
history`) maps the score together with the flares of --catalog that started in the 72 h up
to the observation: the largest flare and the number >= C1.0 in 24 and 72 h.

Each --base-url is tried in turn (the first that answers is used; the others are mirrors);
every request follows the downloader's HTTP policy (timeouts, retries with back-off,
Retry-After). --archive DIR reads a JP2 tree as `download` or `synth --jp2` writes it.

Every output (--history, --store, --scoreboard, --explain) is written, or none is: each is
prepared in a temporary file and renamed when all are ready; a file that cannot be
written is named. The history and the store are append-only: a rerun for the same --time
adds a row, it never replaces the earlier one. With --store, a forecast that fails (status
3 or 4) is kept there as a failed attempt with its reason.

exit status: 0 forecast made; 2 bad arguments or input (a checkpoint that does not load,
a --time in the future, a bad --archive, an output that cannot be written: then nothing
is written); 3 the service down or answering garbage on every base URL; 4 no observation
within --tolerance (the message names the closest one); 130 interrupted.

examples:
  fdflare forecast --ensemble cv/ensemble.json
  fdflare forecast --time 2017-09-06T08:00 --checkpoint fold{1,2,3,4}.pth --model alexnet --json
  fdflare forecast --ensemble cv/ensemble.json --history forecasts.csv --explain now.png
  fdflare forecast --ensemble cv/ensemble.json --archive /data/hmi --store forecasts.sqlite
  fdflare forecast --checkpoint fold{1,2,3,4}.pth --model alexnet \\
      --calibration cal-history/calibration.json --catalog flares-last-days.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare forecast``."""
    from fdflare.commands._common import (
        add_accelerator_option,
        add_http_options,
        add_model_options,
        add_rebin_option,
    )

    p.add_argument(
        "--time",
        default="now",
        metavar="ISO|now",
        help="the time to forecast from, UTC (default %(default)s; never in the future)",
    )
    p.add_argument(
        "--checkpoint",
        action="extend",
        nargs="+",
        metavar="FILE",
        help="best.ckpt of `fdflare train`, or a bare state_dict with --model; several make "
        "an ensemble (their mean)",
    )
    p.add_argument(
        "--ensemble",
        metavar="FILE",
        help="ensemble.json of `fdflare cv`: every fold checkpoint, each through its own "
        "calibration map, then their mean",
    )
    add_model_options(p)
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="calibration map of `fdflare calibrate` applied to the mean; a history map "
        "(`calibrate --method history`) needs --catalog",
    )
    p.add_argument(
        "--catalog",
        metavar="FILE",
        help="flare catalog of the flares up to the observation, for a history map: the "
        "largest flare and the number of flares >= C1.0 in the 24 and 72 h up to the "
        "observation time go into the map with the score",
    )
    p.add_argument(
        "--catalog-format", default="auto", choices=["auto", "study", "hek", "swpc", "noaa"]
    )
    p.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help="Helioviewer API base URL; give it again for mirrors, tried in turn (default "
        "$FDFLARE_HELIOVIEWER_URL, else https://api.helioviewer.org/v2/ then the IAS mirror)",
    )
    p.add_argument(
        "--source",
        choices=["helioviewer", "jsoc-nrt"],
        default="helioviewer",
        help="where the magnetogram comes from: helioviewer (default) or jsoc-nrt, JSOC's "
        "near-real-time series hmi.M_720s_nrt as FITS (--base-url: JSOC's, default "
        "$FDFLARE_JSOC_URL or http://jsoc.stanford.edu/; needs --email or $JSOC_EMAIL)",
    )
    p.add_argument(
        "--email",
        default=None,
        help="address registered at JSOC for exports (--source jsoc-nrt; default $JSOC_EMAIL)",
    )
    add_rebin_option(p, "--rebin", goes_with="--source jsoc-nrt", what="the record")
    p.add_argument(
        "--archive",
        metavar="DIR",
        help="read the closest magnetogram from this local JP2 tree (as `fdflare download` or "
        "`synth --jp2` writes it) instead of Helioviewer",
    )
    p.add_argument(
        "--tolerance",
        default="12min",
        help="largest distance between --time and the observation (default %(default)s; "
        "near-real-time HMI images reach Helioviewer with a delay: use e.g. 3h with now)",
    )
    add_http_options(p, retries=3)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: probability, requested_time, observation_time, window_start, "
        "window_end, members, ...",
    )
    p.add_argument(
        "--scoreboard",
        metavar="DIR",
        help="also write the CCMC Flare Scoreboard submission file "
        "DIR/Flare_Forecast_<method>_<yyyymmdd_hhmm>.txt",
    )
    p.add_argument(
        "--method-name",
        metavar="NAME",
        help="method name of the scoreboard file (default fdflare_<model>)",
    )
    p.add_argument(
        "--history",
        metavar="CSV",
        help="append the forecast to this table (created if missing) for `fdflare verify`",
    )
    p.add_argument(
        "--store",
        metavar="FILE",
        help="append the forecast to this SQLite forecast store (created if missing) for "
        "`fdflare verify --store` and `fdflare serve`",
    )
    p.add_argument(
        "--explain",
        metavar="PNG",
        help="write an attribution map of the magnetogram (first member) to PNG",
    )
    from fdflare.analysis.attribution import METHODS

    p.add_argument(
        "--explain-method",
        choices=METHODS,
        default=METHODS[0],
        help="attribution method of --explain (default %(default)s)",
    )
    add_accelerator_option(p, help="where the members run")


def _check(args: argparse.Namespace) -> tuple[list[str], Any, Any, Any]:
    """Validate every option before any work; return the base URLs, tolerance, archive and catalog."""
    import os
    from pathlib import Path

    from fdflare.acquire.helioviewer.client import BASE_URL_ENV, resolve_base_url
    from fdflare.core.errors import InputError, UsageError
    from fdflare.core.outputs import check_output_dir, check_output_file
    from fdflare.core.timeparse import option_duration
    from fdflare.forecast.formats import check_method_name
    from fdflare.forecast.service import DEFAULT_BASE_URLS

    if args.accelerator == "tpu":  # a machine with a TPU runtime gets here: refused before work
        raise UsageError("--accelerator tpu: only training runs on a TPU; forecast runs on one "
                         "device: auto, cpu, gpu (= cuda) or mps")  # fmt: skip
    if bool(args.checkpoint) == bool(args.ensemble):
        raise UsageError("give --checkpoint FILE... or --ensemble FILE (one of them)")
    tolerance = option_duration(args.tolerance, "--tolerance")
    archive: Any = None
    urls: list[str] = []
    if args.source == "jsoc-nrt":
        archive = _jsoc_source(args, tolerance)
    else:
        if args.email is not None:
            raise UsageError("--email is for --source jsoc-nrt")
        if args.rebin is not None:
            raise UsageError("--rebin is for --source jsoc-nrt")
        urls = args.base_url or (
            [os.environ[BASE_URL_ENV]] if os.environ.get(BASE_URL_ENV) else list(DEFAULT_BASE_URLS)
        )
        try:
            urls = [resolve_base_url(u, option="--base-url") for u in urls]
        except InputError as exc:
            raise UsageError(f"--base-url: {exc.message}") from None
    if args.archive and args.base_url:
        raise UsageError("give --archive DIR or --base-url URL (one source)")
    if args.archive:
        from fdflare.forecast.archive import LocalArchive

        archive = LocalArchive(args.archive)
    if args.method_name is not None:
        check_method_name(args.method_name)
    if args.method_name is not None and not args.scoreboard:
        raise UsageError("--method-name names the --scoreboard file: give --scoreboard DIR too")
    from fdflare.commands._common import read_history_catalog, require_inputs

    # before torch loads: a missing checkpoint is refused at once
    require_inputs(
        checkpoint=args.checkpoint,
        ensemble=args.ensemble,
        calibration=args.calibration,
        catalog=args.catalog,
    )
    inputs = [*(args.checkpoint or []), args.ensemble, args.calibration, args.catalog]
    if args.history:
        check_output_file(args.history, inputs=inputs, option="--history")
        history = Path(args.history)
        if history.is_file() and history.stat().st_size > 0:
            from fdflare.forecast.formats import read_history

            read_history(history)  # a file that is not a history is refused before any work
    if args.store:
        check_output_file(args.store, inputs=[*inputs, args.history], option="--store")
        if Path(args.store).is_file() and Path(args.store).stat().st_size > 0:
            from fdflare.forecast.store import ForecastStore

            # not a store, or a newer one: refused before any work (a new one is made later)
            ForecastStore.open(args.store, create=False).close()
    if args.explain:
        check_output_file(
            args.explain, inputs=[*inputs, args.history, args.store], option="--explain"
        )
        if Path(args.explain).suffix.lower() != ".png":
            raise UsageError(f"--explain {args.explain}: the figure is a PNG file (name it .png)")
    if args.scoreboard:
        check_output_dir(
            args.scoreboard,
            inputs=[*inputs, args.history, args.explain, args.store],
            option="--scoreboard",
        )
    return urls, tolerance, archive, read_history_catalog(args)


def _jsoc_source(args: argparse.Namespace, tolerance: Any) -> Any:
    """JSOC's NRT series as the source, checked before any work."""
    from fdflare.core.errors import InputError, UsageError
    from fdflare.forecast.jsoc_source import JsocSource

    if args.archive:
        raise UsageError("give --archive DIR or --source jsoc-nrt (one source)")
    if args.base_url and len(args.base_url) > 1:
        raise UsageError("--source jsoc-nrt takes one --base-url (JSOC's)")
    try:
        source = JsocSource(
            base_url=args.base_url[0] if args.base_url else None,
            email=args.email,
            tolerance=tolerance,
            policy=None,
            rebin=args.rebin or 1,
        )
    except InputError as exc:
        raise UsageError(f"--{exc.field or 'base-url'}: {exc.message}") from None
    return source


def run(args: argparse.Namespace) -> int:
    """Forecast, print it, and write what was asked for."""
    from fdflare.core.http import HttpPolicy
    from fdflare.forecast import formats, service

    urls, tolerance, archive, catalog = _check(args)
    requested = service.parse_requested_time(args.time, now=service.utcnow())
    from fdflare.commands._common import load_members_and_map

    members, cal = load_members_and_map(args, history_from="--catalog")
    if args.explain:
        from fdflare.analysis.explain import check_explain_available

        check_explain_available()
    policy = HttpPolicy(
        retries=args.retries,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        concurrency=1,
    )
    try:
        fc = _forecast(args, members, requested, urls, tolerance, cal, policy, archive, catalog)
    except (service.NoObservationError, service.ServiceError) as exc:
        if args.store:  # the store keeps failed attempts too, with their reason
            from fdflare.forecast.store import ForecastStore

            kind = "no_observation" if isinstance(exc, service.NoObservationError) else "service"
            with ForecastStore.open(args.store) as store:
                store.record_failure(
                    cycle=None,
                    requested=requested,
                    issue_time=service.utcnow().floor("s"),
                    reason=str(exc),
                    kind=kind,
                )
        raise
    print(json.dumps(fc.to_dict(), indent=2) if args.json else formats.format_text(fc))
    sys.stdout.flush()
    written = _write_outputs(args, fc, members)
    for line in written:
        print(f"wrote {line}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _forecast(
    args: argparse.Namespace,
    members: list[Any],
    requested: Any,
    urls: list[str],
    tolerance: Any,
    cal: Any,
    policy: Any,
    archive: Any,
    catalog: Any = None,
) -> Any:
    from fdflare.forecast import service

    return service.run_forecast(
        members,
        requested=requested,
        base_urls=urls,
        tolerance=tolerance,
        calibration=cal,
        accelerator=args.accelerator,
        policy=policy,
        now=service.utcnow,
        archive=archive,
        flare_catalog=catalog,
    )


def _write_outputs(args: argparse.Namespace, fc: Any, members: list[Any]) -> list[str]:
    """Write every output asked for, or none (see the description); return what was written."""
    import contextlib
    from pathlib import Path

    from fdflare.core.io import StagedFiles
    from fdflare.forecast import formats, service

    written = []
    with StagedFiles() as staged, contextlib.ExitStack() as stack:
        if args.explain:
            from fdflare.analysis.explain import explain_image

            first = members[0]
            size = first.loaded.image_size
            record = explain_image(
                first.loaded,
                fc.observation.images[size],
                fc.observation.geometry[size],
                method=args.explain_method,
                out_png=staged.path(Path(args.explain)),
                title=f"{service.iso(fc.observation.time)}: forecast {fc.probability:.3f}; "
                f"the map of member 1 of {len(members)}",
            )
            for warning in record.get("warnings", []):
                print(f"fdflare forecast: warning: {warning}", file=sys.stderr)
            written.append(
                f"{args.explain}: explanation ({args.explain_method}, {first.checkpoint})"
            )
        if args.scoreboard:
            method = args.method_name or f"fdflare_{members[0].loaded.model}"
            path = Path(args.scoreboard) / formats.scoreboard_name(fc, method)
            staged.write(path, formats.scoreboard_text(fc, method))
            written.append(f"{path}: the scoreboard file")
        if args.history:
            hist = formats.history_target(args.history)
            stack.enter_context(formats.history_lock(hist))
            rows, earlier = formats.stage_history(staged, hist, fc)
            what = "appended the forecast" + (
                f" (a re-issue: {earlier} earlier row(s) of this time kept)" if earlier else ""
            )
            written.append(f"{args.history}: {what} ({rows} forecasts)")
        if args.store:
            from fdflare.forecast.store import ForecastStore

            with ForecastStore.open(args.store) as store:
                fid = store.issue(fc)
            written.append(f"{args.store}: forecast {fid}")
        staged.commit()
    return written
