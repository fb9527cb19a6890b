"""``fdflare explain``: attribution maps of P(flare) over the magnetogram, and where they fall."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "attribution maps (Grad-CAM, Guided Grad-CAM, IG, occlusion) of forecasts, with disk shares"
DESCRIPTION = """\
Explain forecasts of a checkpoint: for each image, an attribution map of the flare logit
(captum) over the magnetogram, with the limb and the 70 deg circle drawn from the disk
geometry, saved as OUT/<image>_<method>.png; and OUT/explanations.csv with, per image, the
probability and the share of positive attribution off the disk, on the central disk (inside
the 70 deg circle), beyond 70 deg, and within 10 deg of the flare where the table gives its
location.

Either every image of --images (a folder, an array store or a text list of image paths), or
the rows of a prediction table (`fdflare predict`, or its _joined.csv for flare locations)
that --where selects: names tp, fp, tn, fn (at --threshold), positive, negative, near_limb,
central (|fl_lon| > / <= 70), combined with and, or, not and parentheses.

The model and the attribution run on --accelerator (default auto: a CUDA GPU where there
is one, else the CPU). --json prints one JSON object instead of the summary line.

Needs captum: pip install "fdflare[explain]".

examples:
  fdflare explain --checkpoint run/best.ckpt --images synth/images --out explain/
  fdflare explain --checkpoint run/best.ckpt --predictions preds/fold1_joined.csv \\
      --where "near_limb and fn" --images synth/images --explain-method ig --limit 20 \\
      --out limb_fn/
  fdflare explain --model alexnet --checkpoint fold1.pth --images hmi_512/ --out alex/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare explain``."""
    from fdflare.analysis.attribution import METHODS
    from fdflare.commands._common import (
        add_accelerator_option,
        add_deprecated_alias,
        add_json_option,
        add_model_options,
        positive_int,
        probability,
    )

    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="FILE",
        help="best.ckpt or last.ckpt of a run, or a bare state_dict with --model",
    )
    add_model_options(p)
    p.add_argument(
        "--images",
        required=True,
        metavar="DIR_OR_LIST",
        help="image folder or array store (with --predictions: where its images are); "
        "without --predictions also a text file of image paths",
    )
    p.add_argument(
        "--predictions",
        metavar="CSV",
        help="prediction table of `fdflare predict` (timestamp,flare_prob,target) or its "
        "_joined.csv (with fl_lon, fl_lat): explain the rows --where selects",
    )
    p.add_argument(
        "--where",
        metavar="EXPR",
        help="rows of --predictions to explain: tp, fp, tn, fn, positive, negative, "
        'near_limb, central with and, or, not, ( ); e.g. "near_limb and fn"',
    )
    p.add_argument(
        "--explain-method",
        choices=METHODS,
        default=METHODS[0],
        help="attribution method (default %(default)s)",
    )
    add_deprecated_alias(p, "--method", "--explain-method", dest="explain_method")
    p.add_argument(
        "--geometry",
        metavar="CSV",
        help="geometry.csv of `fdflare prepare` or `fdflare synth` (default: IMAGES/geometry.csv, "
        "or the one beside IMAGES when IMAGES is synth's DIR/images)",
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        metavar="P",
        help="forecast threshold of tp, fp, tn, fn (default %(default)s)",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="explain at most N images (the first N; how many were left out is reported)",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the PNGs and explanations.csv"
    )
    add_accelerator_option(p, help="where the model and the attribution run")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (warnings and the summary still print)",
    )
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    """Explain and print one summary line."""
    from fdflare.core.errors import UsageError

    if args.where is not None and args.predictions is None:
        raise UsageError("--where selects rows of --predictions CSV: give the prediction table")
    if args.predictions is not None and args.where is None:
        raise UsageError(
            '--predictions needs --where EXPR (e.g. --where "fn"; "tp or not tp" for all)'
        )
    from fdflare.commands._common import require_inputs

    require_inputs(
        checkpoint=args.checkpoint,
        images=args.images,
        predictions=args.predictions,
        geometry=args.geometry,
    )
    from fdflare.analysis.explain_run import explain

    result = explain(
        args.checkpoint,
        images=args.images,
        out=args.out,
        predictions=args.predictions,
        where=args.where,
        method=args.explain_method,
        geometry=args.geometry,
        threshold=args.threshold,
        limit=args.limit,
        model=args.model,
        image_size=args.image_size,
        quiet=args.quiet or args.json,
        accelerator=args.accelerator,
    )
    if args.json:
        from fdflare.commands._common import print_json

        print_json(
            {
                "csv": str(result.csv),
                "explained": len(result.rows),
                "explain_method": args.explain_method,
                "device": result.device,
                "pngs": [str(Path(args.out) / r["png"]) for r in result.rows],
                "selected": result.selected if result.n_table is not None else None,
                "table_rows": result.n_table,
                "left_out": result.left_out,
                "warnings": result.warnings,
                "notes": list(result.notes),
            }
        )
        return 0
    parts = [f"explained {len(result.rows)} image(s) with {args.explain_method} into {result.csv}"]
    if result.n_table is not None:
        parts.append(f"--where {args.where!r} selected {result.selected} of {result.n_table} rows")
    if result.left_out:
        parts.append(f"{result.left_out} more left out by --limit {args.limit}")
    if result.warnings:
        parts.append(f"{result.warnings} warning(s) on stderr")
    print("; ".join(parts))
    return 0
