"""``fdflare explain``: attribution maps of P(flare) over the magnetogram, and where they fall."""

from __future__ import annotations

import argparse

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

Needs captum: pip install "fdflare[explain]".

examples:
  fdflare explain --checkpoint run/best.ckpt --images synth/images --out explain/
  fdflare explain --checkpoint run/best.ckpt --predictions preds/fold1_joined.csv \\
      --where "near_limb and fn" --images synth/images --method ig --limit 20 --out limb_fn/
  fdflare explain --model alexnet --checkpoint fold1.pth --images hmi_512/ --out alex/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare explain``."""
    from fdflare.analysis.attribution import METHODS
    from fdflare.commands._common import add_model_options, positive_int, probability

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
        "--method",
        choices=METHODS,
        default=METHODS[0],
        help="attribution method (default %(default)s)",
    )
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
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (warnings and the summary still print)",
    )


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
    from fdflare.analysis.explain_select import explain

    result = explain(
        args.checkpoint,
        images=args.images,
        out=args.out,
        predictions=args.predictions,
        where=args.where,
        method=args.method,
        geometry=args.geometry,
        threshold=args.threshold,
        limit=args.limit,
        model=args.model,
        image_size=args.image_size,
        quiet=args.quiet,
    )
    parts = [f"explained {len(result.rows)} image(s) with {args.method} into {result.csv}"]
    if result.n_table is not None:
        parts.append(f"--where {args.where!r} selected {result.selected} of {result.n_table} rows")
    if result.left_out:
        parts.append(f"{result.left_out} more left out by --limit {args.limit}")
    if result.warnings:
        parts.append(f"{result.warnings} warning(s) on stderr")
    print("; ".join(parts))
    return 0
