"""``fdflare verify``: score a forecast history against a flare catalog, beside the baselines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fdflare.commands._common import fraction, probability

HELP = "score forecasts (forecast --history or --store) against a flare catalog, beside persistence and climatology"
DESCRIPTION = """\
Label every forecast of a history table (`fdflare forecast --history CSV`) or a forecast
store (`--store FILE`) from a flare catalog with the event of the forecasts' recipe: 1 when
a flare at or above its threshold starts in its window after the window start, as the
study labels an image (a history without recipe columns is the study's, >= M1.0 in 24 h,
assumed, and the report says so).

One forecast per window: the first issued (the one made before the window began, when
there is one); re-issues are counted and left out. Forecasts whose window ends after the
catalog (its last flare, or --until) are pending, and those before it (its first flare's
day, or --since) are not covered: both are counted and left out, never scored. On the
verified forecasts, print TSS, HSS2, AUC, Brier and BSS of the model beside persistence (a
flare in the window before) and climatology (--climatology, else the catalog's rate in the
year before the first forecast), and say whether the model beats them. --out writes the
verified rows with their target: a prediction file that `fdflare evaluate` scores.

--import-history CSV adds a history's forecasts to --store (rows already there are skipped)
before verifying; without --catalog it only imports.

exit status: 0 verified (or imported); 1 nothing verifiable yet (every window pending);
2 bad arguments or input (nothing is written).

examples:
  fdflare catalog --source hek --start 2026-11-01 --end 2026-12-02 --out flares.csv
  fdflare verify --history forecasts.csv --catalog flares.csv --out verified.csv
  fdflare verify --store forecasts.sqlite --catalog flares.csv
  fdflare verify --store forecasts.sqlite --import-history forecasts.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare verify``."""
    p.add_argument("--history", metavar="CSV", help="forecast history table")
    p.add_argument("--store", metavar="FILE", help="forecast store (`fdflare forecast --store`)")
    p.add_argument(
        "--import-history",
        metavar="CSV",
        help="add this history's forecasts to --store first (rows already there are skipped)",
    )
    p.add_argument("--catalog", metavar="FILE", help="flare catalog")
    p.add_argument(
        "--catalog-format", default="auto", choices=["auto", "study", "hek", "swpc", "noaa"]
    )
    p.add_argument(
        "--until",
        metavar="ISO",
        help="the time the catalog is complete to (default: its last flare's start)",
    )
    p.add_argument(
        "--since",
        metavar="ISO",
        help="the time the catalog is complete from (default: its first flare's day)",
    )
    p.add_argument(
        "--climatology",
        type=fraction,
        metavar="RATE",
        help="the reference rate of the Brier skill score (e.g. the models' training rate)",
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="P >= threshold is a yes forecast (default %(default)s)",
    )
    p.add_argument("--out", metavar="CSV", help="write the verified forecasts with their target")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _check(args: argparse.Namespace) -> tuple[Any, Any]:
    """Validate the options before any work; return ``(until, since)``."""
    from fdflare.core.errors import UsageError
    from fdflare.core.outputs import check_output_file
    from fdflare.core.timeparse import option_time

    if bool(args.history) == bool(args.store):
        raise UsageError("give --history CSV or --store FILE (one of them)")
    if args.import_history and not args.store:
        raise UsageError("--import-history adds a history to a store: give --store FILE too")
    if not args.catalog and not args.import_history:
        raise UsageError("give --catalog FILE (the flares to verify against)")
    if not args.catalog:
        for option in ("out", "until", "since", "climatology"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option} needs --catalog (without it, verify only imports)")
    until = option_time(args.until, "--until") if args.until else None
    since = option_time(args.since, "--since") if args.since else None
    if until is not None and since is not None and since >= until:
        raise UsageError(
            f"--since {args.since} is not before --until {args.until}: no time lies between them"
        )
    inputs = [args.history, args.catalog, args.import_history]
    if args.store:
        check_output_file(args.store, inputs=inputs, option="--store")
    if args.out:
        check_output_file(args.out, inputs=[*inputs, args.store], option="--out")
    return until, since


def run(args: argparse.Namespace) -> int:
    """Verify (and import) and print the result."""
    from fdflare.core.io import StagedFiles
    from fdflare.forecast.verify import format_verification, read_forecasts, verify_history

    until, since = _check(args)
    extra = None
    if args.import_history:
        extra, _name = read_forecasts(history=args.import_history)
        n_import = len(extra)
        from pathlib import Path

        from fdflare.forecast.store import ForecastStore

        if Path(args.store).is_file() and Path(args.store).stat().st_size > 0:
            # not a store, or a newer one: refused now; rows already there are not added twice
            with ForecastStore.open(args.store, create=False) as store:
                extra = store.missing(extra)
    v = None
    if args.catalog:
        v = verify_history(
            args.history,
            args.catalog,
            store=args.store,
            catalog_format=args.catalog_format,
            until=until,
            since=since,
            climatology=args.climatology,
            threshold=args.threshold,
            extra=extra,
        )
    lines = []
    with StagedFiles() as staged:
        if args.out and v is not None and v.table is not None:
            staged.write(args.out, v.table.to_csv(index=False, lineterminator="\n"))
            lines.append(f"wrote {len(v.table)} verified forecasts to {args.out}")
        if extra is not None:
            from fdflare.forecast.store import ForecastStore

            with ForecastStore.open(args.store) as store:
                added, _none = store.import_history(extra, source=str(args.import_history))
            skipped = n_import - added
            lines.insert(
                0,
                f"imported {added} forecast(s) from {args.import_history} into {args.store}"
                + (f" ({skipped} already there, skipped)" if skipped else ""),
            )
        staged.commit()
    if v is not None:
        print(json.dumps(v.to_dict()) if args.json else format_verification(v))
    for line in lines:
        print(line, file=sys.stderr if args.json else sys.stdout)
    return 0 if v is None or v.n_verified else 1
