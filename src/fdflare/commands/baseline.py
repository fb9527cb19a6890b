"""``fdflare baseline``: persistence, climatology and flux forecasts on the labels' folds."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "reference forecasts (persistence, climatology, flux, history) on the same instances as the models"
DESCRIPTION = """\
Forecast every validation instance of every fold of --labels with the reference forecasts a
model must beat, and score them exactly as `fdflare evaluate` does:

  persistence  yes iff a flare of the --mode class or above started in (t - 24 h, t]
               (needs --catalog)
  climatology  the positive rate of the fold's training instances, for every instance
               (the reference of the Brier skill score)
  flux         logistic regression, fitted on the fold's training instances, on two
               disk-integrated image features: an unsigned-flux proxy and the share of
               strong-field pixels (needs --images)
  history      logistic regression, fitted on the fold's training instances, on the flare
               history up to the instance: the largest flare and the number of flares
               >= C1.0 in the last 24 and 72 hours (needs --catalog)

By default: persistence, climatology and history, and flux when --images is given. With --out,
writes OUT/fold{k}_{kind}.csv in the study's format (timestamp,flare_prob,target), which
`fdflare evaluate`, `fdflare calibrate` and `fdflare evaluate --baseline OUT` read.

examples:
  fdflare baseline --catalog flares.csv --labels labels/ --out baselines/
  fdflare baseline --catalog flares.csv --labels labels/ --images hmi_512/ --kind flux --json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare baseline``."""
    from fdflare.analysis.baselines import KINDS

    p.add_argument("--labels", required=True, metavar="DIR", help="label folder or labels.csv")
    p.add_argument("--catalog", metavar="FILE", help="flare catalog (for persistence and history)")
    p.add_argument(
        "--kind",
        action="append",
        choices=KINDS,
        help="a baseline to run; repeat for several (default: persistence, climatology, "
        "history, and flux with --images)",
    )
    p.add_argument("--images", metavar="DIR", help="image folder or array store (for flux)")
    p.add_argument("--image-ext", metavar="EXT", help="image extension instead of the labels'")
    p.add_argument(
        "--geometry",
        metavar="FILE",
        help="disk geometry of the images (default: geometry.csv among or beside --images)",
    )
    p.add_argument(
        "--mode",
        default="M",
        help="persistence threshold: M (>= M1.0), C (>= C1.0) or a class such as M5.0 "
        "(default %(default)s)",
    )
    p.add_argument("--out", metavar="DIR", help="write fold{k}_{kind}.csv here")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--catalog-format", default="auto", choices=["auto", "study", "hek", "swpc", "noaa"]
    )


def run(args: argparse.Namespace) -> int:
    """Forecast, write and score the baselines."""
    import tempfile
    from pathlib import Path

    from fdflare.core.errors import UsageError
    from fdflare.core.outputs import check_output_dir, output_lock

    default = ["persistence", "climatology", "history"] + (["flux"] if args.images else [])
    kinds = list(dict.fromkeys(args.kind or default))
    for kind in ("persistence", "history"):
        if kind in kinds and not args.catalog:
            raise UsageError(f"--kind {kind} needs --catalog FILE (the flare catalog)")
    if "flux" in kinds and not args.images:
        raise UsageError("--kind flux needs --images DIR (the images behind the labels)")
    from fdflare.core.recipe import parse_threshold

    parse_threshold(args.mode, what="--mode")  # malformed or below A1.0: exit status 2
    inputs = [args.labels, args.catalog, args.images, args.geometry]
    if args.out:
        check_output_dir(args.out, inputs=inputs)

    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.baselines import baseline_predictions, write_predictions
    from fdflare.analysis.metrics import evaluate_files, format_table

    catalog = read_catalog(args.catalog, fmt=args.catalog_format) if args.catalog else None
    notes: list[str] = []
    preds = baseline_predictions(
        args.labels,
        kinds,
        catalog=catalog,
        mode=args.mode,
        images=args.images,
        image_ext=args.image_ext,
        geometry=args.geometry,
        optional=[] if args.kind else ["flux", "history"],  # what was asked for must run
        notes=notes,
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        with output_lock(args.out, command="baseline"):
            paths = write_predictions(preds, args.out)
            result = evaluate_files(paths)
    else:
        with tempfile.TemporaryDirectory(prefix="fdflare-baseline-") as tmp:
            paths = write_predictions(preds, tmp)
            result = evaluate_files(paths)
            for f in result["files"]:
                f["path"] = Path(f["path"]).name
    print(json.dumps(result) if args.json else format_table(result))
    return 0
