"""``fdflare verify``: score a forecast history against a flare catalog, beside the baselines."""

from __future__ import annotations

import argparse
import json

from fdflare.commands._common import fraction, probability

HELP = "score a forecast history (forecast --history) against a flare catalog, beside persistence and climatology"
DESCRIPTION = """\
Label every forecast of a history table (`fdflare forecast --history CSV`) from a flare
catalog: 1 when a flare >= M1.0 starts in the 24 h after its window start, as the study
labels an image. Forecasts whose window ends after the catalog (its last flare, or
--until) are pending, and those before it (its first flare's day, or --since) are not
covered: both are counted and left out, never scored. On the verified forecasts, print TSS, HSS2,
AUC, Brier and BSS of the model beside persistence (a flare in the 24 h before) and
climatology (--climatology, else the catalog's rate in the year before the first
forecast), and say whether the model beats them. --out writes the verified rows with
their target, which `fdflare evaluate` scores.

exit status: 0 verified; 1 nothing verifiable yet (every window pending); 2 bad arguments
or input.

example:
  fdflare catalog --source hek --start 2026-11-01 --end 2026-12-02 --out flares.csv
  fdflare verify --history forecasts.csv --catalog flares.csv --out verified.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare verify``."""
    p.add_argument("--history", required=True, metavar="CSV", help="forecast history table")
    p.add_argument("--catalog", required=True, metavar="FILE", help="flare catalog")
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


def run(args: argparse.Namespace) -> int:
    """Verify and print the result."""
    from fdflare.core.io import atomic_open
    from fdflare.core.outputs import check_output_file
    from fdflare.core.timeparse import option_time
    from fdflare.forecast.verify import format_verification, verify_history

    until = option_time(args.until, "--until") if args.until else None
    since = option_time(args.since, "--since") if args.since else None
    if args.out:
        check_output_file(args.out, inputs=[args.history, args.catalog], option="--out")
    v = verify_history(
        args.history,
        args.catalog,
        catalog_format=args.catalog_format,
        until=until,
        since=since,
        climatology=args.climatology,
        threshold=args.threshold,
    )
    if args.out and v.table is not None:
        with atomic_open(args.out, "w") as fh:
            v.table.to_csv(fh, index=False, lineterminator="\n")
    print(json.dumps(v.to_dict()) if args.json else format_verification(v))
    if args.out and v.table is not None:
        if not args.json:
            print(f"wrote {len(v.table)} verified forecasts to {args.out}")
    return 0 if v.n_verified else 1
