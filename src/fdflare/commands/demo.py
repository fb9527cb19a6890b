"""``fdflare demo``: synth -> label -> train -> predict -> evaluate -> spatial, in minutes."""

from __future__ import annotations

import argparse

HELP = "run the whole pipeline end to end on synthetic data (minutes on a laptop CPU)"
DESCRIPTION = """\
Generate a year of synthetic full-disk magnetograms with a flare catalog, label them, train
one model per fold (ResNet18 by default, small images, few epochs, no ImageNet weights),
predict each validation fold, and evaluate and map the results. Writes OUT/results.json ({"evaluate": ..., "spatial":
...}), OUT/report.md and every intermediate file. The data are synthetic: the numbers show the
pipeline works, not real forecast skill. Rerunning the same command resumes.

example:
  fdflare demo --out demo/
  fdflare demo --out demo-alexnet/ --model alexnet --folds 1,2 --epochs 20
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare demo``."""
    from fdflare.reports.demo import DemoConfig

    d = DemoConfig()
    p.add_argument("--out", default="fdflare-demo", help="output folder (default %(default)s)")
    p.add_argument(
        "--model",
        default=d.model,
        help="alexnet, vgg16, resnet34 or resnet18 (default %(default)s)",
    )
    p.add_argument(
        "--folds", default=",".join(map(str, d.folds)), help="folds to run (default %(default)s)"
    )
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--max-lr", type=float, default=d.max_lr, help="OneCycleLR peak (default %(default)s)"
    )
    p.add_argument(
        "--days", type=int, default=d.days, help="days of synthetic data (default %(default)s)"
    )
    p.add_argument("--cadence", default=d.cadence, help="image cadence (default %(default)s)")
    p.add_argument(
        "--image-size", type=int, default=d.size, help="image size in pixels (default %(default)s)"
    )
    p.add_argument("--start", default=d.start)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="data-loading workers per fold")
    p.add_argument("--json", action="store_true", help="print results.json instead of tables")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its tables."""
    import json

    from fdflare.reports.demo import DemoConfig, run_demo
    from fdflare.core.errors import InputError
    from fdflare.analysis.metrics import format_table as eval_table
    from fdflare.analysis.spatial import format_table as spatial_table

    try:
        folds = tuple(int(f) for f in str(args.folds).split(",") if f.strip())
    except ValueError as exc:
        raise InputError(
            f"--folds must be a comma-separated list of 1..4, got {args.folds!r}"
        ) from exc
    if not folds or any(f not in (1, 2, 3, 4) for f in folds):
        raise InputError(f"--folds must be a comma-separated list of 1..4, got {args.folds!r}")
    if args.days < 1 or args.epochs < 1 or args.image_size < 16:
        raise InputError("--days and --epochs must be >= 1 and --image-size >= 16")
    cfg = DemoConfig(
        start=args.start,
        days=args.days,
        cadence=args.cadence,
        size=args.image_size,
        seed=args.seed,
        model=args.model,
        folds=folds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_lr=args.max_lr,
        workers=args.workers,
    )
    res = run_demo(args.out, cfg, quiet=args.quiet)
    if args.json:
        print(json.dumps({"evaluate": res["evaluate"], "spatial": res["spatial"]}))
        return 0
    print(eval_table(res["evaluate"]))
    print()
    print(spatial_table(res["spatial"]))
    print(f"\nwrote {args.out}/results.json and {args.out}/report.md ({res['seconds']:.0f} s)")
    return 0
