"""``fdflare calibrate``: calibrated probabilities, a reliability diagram and a threshold."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "calibrate prediction files (isotonic, Platt, or with the flare history), with a reliability diagram"
DESCRIPTION = """\
Map each prediction file's P(flare) through a calibration map fitted on
predictions the file's model did not validate on, and write the calibrated files under the
same names in --out, with calibration.json (the maps as plain numbers, and the scores
before and after) and reliability.png / reliability.svg (reliability diagram with the
instances per bin, and a sharpness histogram).

  --cross-fold FILE...     each fold is calibrated with a map fitted on the other folds'
                           files: for a published release the only out-of-sample choice
  --fit FILE... --apply FILE...
                           fit one map on --fit (e.g. predictions on the held-out slice of
                           training, `fdflare train --holdout-fraction`) and apply it to --apply

  --method isotonic        a non-decreasing step function of the score (the default)
  --method platt           a logistic curve on the logit of the score
  --method history         a logistic regression on the logit of the score and the flare
                           history up to each instance, read from --catalog (the largest flare
                           and the number of flares >= C1.0 in the last 24 and 72 hours): the
                           forecast from the model and the recent flares together. predict and
                           forecast apply only isotonic and platt maps.

The TSS-maximising threshold is chosen on the calibration data only; each file is scored at
it and at 0.5. The Brier skill score is against climatology: the positive rate of the
fold's training instances when --labels is given, else that of the calibration data.

examples:
  fdflare calibrate --method isotonic --cross-fold predictions/fold{1,2,3,4}_alex.csv --out cal/
  fdflare calibrate --method platt --fit runs/holdout.csv --apply runs/fold1.csv --out cal/
  fdflare calibrate --method history --catalog flares.csv --out cal-history/ \\
      --cross-fold predictions/fold{1,2,3,4}_alex.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare calibrate``."""
    from fdflare.analysis.calibration import METHODS

    p.add_argument("--method", choices=METHODS, default="isotonic", help="default %(default)s")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--cross-fold", nargs="+", metavar="FILE", help="one file per fold")
    mode.add_argument("--fit", nargs="+", metavar="FILE", help="files to fit the map on")
    p.add_argument("--apply", nargs="+", metavar="FILE", help="files to calibrate (with --fit)")
    p.add_argument(
        "--labels",
        metavar="DIR",
        help="label folder: the Brier skill score's climatology is each fold's training rate "
        "(files are matched to folds by the number in fold{k}_*.csv)",
    )
    p.add_argument(
        "--catalog", metavar="FILE", help="flare catalog (for --method history, and only for it)"
    )
    p.add_argument(
        "--catalog-format", default="auto", choices=["auto", "study", "hek", "swpc", "noaa"]
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--json", action="store_true", help="print calibration.json to stdout")


def _fold_of(name: str) -> int | None:
    import re

    m = re.match(r"^fold(\d+)[_.]", name, re.IGNORECASE)
    return int(m.group(1)) if m else None


def run(args: argparse.Namespace) -> int:
    """Calibrate, write and print a summary."""
    from pathlib import Path

    from fdflare.core.errors import UsageError
    from fdflare.core.outputs import check_output_dir, output_lock

    if args.fit and not args.apply:
        raise UsageError("--fit needs --apply FILE... (the files to calibrate)")
    if args.apply and not args.fit:
        raise UsageError("--apply goes with --fit FILE... (the files to fit the map on)")
    if args.fit and args.apply:
        both = {Path(f).resolve() for f in args.fit} & {Path(f).resolve() for f in args.apply}
        for path in sorted(both):
            print(
                f"note: {path} is in both --fit and --apply: its scores after calibration are "
                "in-sample (the map was fitted on it), not a test of the map",
                file=sys.stderr,
            )
    if args.method == "history" and not args.catalog:
        raise UsageError("--method history needs --catalog FILE (the flare catalog)")
    if args.catalog and args.method != "history":
        raise UsageError("--catalog is read only by --method history")
    files = args.cross_fold or args.apply
    inputs = [
        *(args.cross_fold or []),
        *(args.fit or []),
        *(args.apply or []),
        args.labels,
        args.catalog,
    ]
    names = [Path(f).name for f in files]
    check_output_dir(args.out, inputs=inputs, writes=[*names, "calibration.json"])

    from fdflare.analysis.calibration import cross_fold, fit_apply, write_calibrated

    rates = None
    if args.labels:
        from fdflare.data.tables import fold_tables

        rates = []
        for name in names:
            k = _fold_of(name)
            if k is None:
                raise UsageError(
                    f"--labels: cannot tell the fold of {name} (expected fold{{k}}_*.csv)"
                )
            rates.append(float(fold_tables(args.labels, k).train["target"].mean()))
    catalog = None
    if args.catalog:
        from fdflare.acquire.catalog import read_catalog

        catalog = read_catalog(args.catalog, fmt=args.catalog_format)
    if args.cross_fold:
        results = cross_fold(args.cross_fold, args.method, reference_rates=rates, catalog=catalog)
    else:
        results = fit_apply(
            args.fit, args.apply, args.method, reference_rates=rates, catalog=catalog
        )
    if catalog is not None:
        _coverage(results, catalog)
    with output_lock(args.out, command="calibrate"):
        record = write_calibrated(results, args.out)
    if args.json:
        print(json.dumps(record))
        return 0
    print(format_summary(record, args.method))
    print(
        f"wrote {len(results)} calibrated file(s), calibration.json and reliability.png/.svg to {args.out}"
    )
    return 0


def _coverage(results: list, catalog: object) -> None:
    """Say how many calibrated instances lie past the catalog's last flare (stderr)."""
    import pandas as pd

    from fdflare.analysis.history import coverage_note
    from fdflare.core.paths import parse_image_times

    names = pd.concat(
        [r.table["timestamp" if "timestamp" in r.table.columns else "label"] for r in results]
    )
    note = coverage_note(pd.DatetimeIndex(parse_image_times(names.astype(str))[0]), catalog)
    if note:
        print(f"note: --catalog: {note}", file=sys.stderr)


def format_summary(record: dict, method: str) -> str:
    """The before/after table of ``calibration.json``."""
    from fdflare.analysis.calibration import before_after
    from fdflare.core.table import render_table

    header, rows = before_after(record, method)
    return render_table(header, rows)
