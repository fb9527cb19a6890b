"""``fdflare predict``: P(flare) for the images of a label table, in the study's format."""

from __future__ import annotations

import argparse

HELP = "predict P(flare) for every image of a label table with a trained checkpoint"
DESCRIPTION = """\
Run a checkpoint of `fdflare train` (or a bare state_dict file with --model) over the images
of a label CSV and write OUT: timestamp,flare_prob,target (the study's prediction files;
timestamp is the relative image path). With --table DIR/labels.csv (the full table of
`fdflare label`) also write OUT_joined.csv: label,flare_prob,target,goes_class,fl_lon,fl_lat,
fl_start, read by `fdflare evaluate` and `fdflare spatial`.

example:
  fdflare predict --checkpoint runs/alex1/best.ckpt --labels labels/Fold1_val.csv \\
      --images hmi_jpgs_512/ --out preds/fold1_alex.csv --table labels/labels.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare predict``."""
    from fdflare.commands.train import MODELS

    p.add_argument(
        "--checkpoint", required=True, metavar="FILE", help="best.ckpt or last.ckpt of a run"
    )
    p.add_argument(
        "--labels",
        required=True,
        metavar="CSV",
        help="label table: label + target (or goes_class 0/1)",
    )
    p.add_argument("--images", required=True, metavar="DIR", help="image folder or array store")
    p.add_argument("--out", required=True, metavar="CSV", help="prediction file to write")
    p.add_argument(
        "--table",
        metavar="CSV",
        help="full labels.csv of `fdflare label`: also write OUT_joined.csv",
    )
    p.add_argument(
        "--model",
        choices=MODELS,
        help="architecture: checked against the checkpoint; required for a bare state_dict",
    )
    p.add_argument(
        "--image-size", type=int, metavar="PX", help="image size of a bare state_dict (default 512)"
    )
    p.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="batch size (default %(default)s)"
    )
    p.add_argument(
        "--workers", type=int, default=2, metavar="N", help="loader workers (default %(default)s)"
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default %(default)s)"
    )
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out rows whose image is missing (reported)",
    )
    p.add_argument(
        "--image-ext",
        metavar="EXT",
        help="image extension to use instead of the labels' (e.g. png)",
    )
    p.add_argument("--decoder", choices=["pil", "torchvision"], default="pil", help="image decoder")
    p.add_argument(
        "--no-array-store",
        action="store_true",
        help="read image files even where an array store exists",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or notes")


def run(args: argparse.Namespace) -> int:
    """Predict and print what was written."""
    from fdflare.inference.predict import predict

    result = predict(
        args.checkpoint,
        args.labels,
        args.images,
        args.out,
        table=args.table,
        model=args.model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        skip_missing=args.skip_missing,
        image_ext=args.image_ext,
        decoder=args.decoder,
        array_store=not args.no_array_store,
        quiet=args.quiet,
    )
    extra = f" and {result.joined}" if result.joined else ""
    skipped = (
        f" ({result.skipped_missing} rows skipped: image missing)" if result.skipped_missing else ""
    )
    print(f"wrote {result.n} predictions to {result.predictions}{extra}{skipped}")
    return 0
