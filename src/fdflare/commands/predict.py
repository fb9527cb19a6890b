"""``fdflare predict``: P(flare) for the images of a label table, in the study's format."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = (
    "predict P(flare) for the images of a label table, or any images, with one model or an ensemble"
)
DESCRIPTION = """\
Run a checkpoint of `fdflare train` (or a bare state_dict file with --model) over the images
of a label CSV and write OUT: timestamp,flare_prob,target (the study's prediction files;
timestamp is the relative image path). With --table DIR/labels.csv (the full table of
`fdflare label`) also write OUT_joined.csv: label,flare_prob,target,goes_class,fl_lon,fl_lat,
fl_start, read by `fdflare evaluate` and `fdflare spatial`.

Without --labels, every image of --images (a folder, an array store, or a text file of
image paths relative to it) is predicted and OUT holds timestamp,flare_prob: no answers are
needed. --checkpoint given several times is an ensemble (the mean of the members), and
--calibration FILE maps that mean through a calibration map of `fdflare calibrate`.

examples:
  fdflare predict --checkpoint runs/alex1/best.ckpt --labels labels/Fold1_val.csv \\
      --images hmi_jpgs_512/ --out preds/fold1_alex.csv --table labels/labels.csv
  fdflare predict --checkpoint cv/alexnet/fold{1,2,3,4}/best.ckpt --images new_images/ \\
      --out forecast.csv
"""


def _legacy_device(text: str) -> str:
    """The old ``--device`` values (auto, cpu, cuda, cuda:N, mps) as an ``--accelerator``."""
    if text in ("auto", "cpu", "cuda", "gpu", "mps"):
        return text
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def _one_device(text: str) -> int | str:
    if text in ("auto", "1"):
        return "auto" if text == "auto" else 1
    raise argparse.ArgumentTypeError(f"prediction runs on one device: give auto or 1, not {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare predict``."""
    from fdflare.commands._common import (
        add_accelerator_option,
        add_deprecated_alias,
        add_json_option,
        add_model_options,
        nonnegative_int,
        positive_int,
    )

    p.add_argument(
        "--ensemble",
        metavar="FILE",
        help="ensemble.json of `fdflare cv`: every member, each through its own calibration "
        "map, then their mean (images without --labels)",
    )
    p.add_argument(
        "--checkpoint",
        action="extend",
        nargs="+",
        metavar="FILE",
        help="best.ckpt or last.ckpt of a run (or a bare state_dict with --model); give it "
        "several times for an ensemble (their mean; images without --labels)",
    )
    p.add_argument(
        "--labels",
        metavar="CSV",
        help="label table: label + target (or goes_class 0/1); without it, every image of "
        "--images is predicted and OUT holds timestamp,flare_prob",
    )
    p.add_argument(
        "--images",
        required=True,
        metavar="DIR_OR_LIST",
        help="image folder or array store; without --labels also a text file of image paths",
    )
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="calibration map applied to the (ensemble) probability: a map of `fdflare "
        "calibrate` (calibration.json with one file, or one map object); without --labels; "
        "a history map needs --catalog",
    )
    p.add_argument(
        "--catalog",
        metavar="FILE",
        help="flare catalog for a history map (`calibrate --method history`): the flares "
        "of the 72 h up to each image's time (from its name) go into the map with the score",
    )
    p.add_argument(
        "--catalog-format", default="auto", choices=["auto", "study", "hek", "swpc", "noaa"]
    )
    p.add_argument("--out", required=True, metavar="CSV", help="prediction file to write")
    p.add_argument(
        "--table",
        metavar="CSV",
        help="full labels.csv of `fdflare label`: also write OUT_joined.csv",
    )
    add_model_options(p)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="N",
        help="batch size (default %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=nonnegative_int,
        default=2,
        metavar="N",
        help="loader worker processes (default %(default)s)",
    )
    add_accelerator_option(
        p, help="where prediction runs (auto: CUDA, then MPS, then the CPU; one device)"
    )
    p.add_argument(
        "--devices",
        type=_one_device,
        default="auto",
        metavar="N",
        help="devices: auto or 1 (prediction runs on one device)",
    )
    # the old --device also took cuda:N (one GPU by number)
    add_deprecated_alias(p, "--device", "--accelerator", dest="accelerator", type=_legacy_device)
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
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (the final summary still prints)"
    )
    add_json_option(p)


def _loading(args: argparse.Namespace) -> dict[str, Any]:
    """The options of both ways to predict: the model, the loader, the device, the images."""
    return {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "image_ext": args.image_ext,
        "decoder": args.decoder,
        "array_store": not args.no_array_store,
        "quiet": args.quiet,
    }


def run(args: argparse.Namespace) -> int:
    """Predict and print what was written."""
    from fdflare.core.errors import UsageError
    from fdflare.inference.predict import predict

    if bool(args.checkpoint) == bool(args.ensemble):
        raise UsageError("give --checkpoint FILE... or --ensemble FILE (one of them)")
    if args.labels is None:
        return _run_images(args)
    if args.ensemble:
        raise UsageError("--ensemble predicts the images of --images without --labels")
    if len(args.checkpoint) > 1:
        raise UsageError(
            "several --checkpoint (an ensemble) predict the images of --images without --labels"
        )
    if args.calibration or args.catalog:
        raise UsageError(
            f"{'--calibration' if args.calibration else '--catalog'} goes with predictions "
            "without --labels; calibrate labelled predictions with `fdflare calibrate --fit "
            "... --apply ...`"
        )
    result = predict(
        args.checkpoint[0],
        args.labels,
        args.images,
        args.out,
        table=args.table,
        skip_missing=args.skip_missing,
        **_loading(args),
    )
    if args.json:
        from fdflare.commands._common import print_json

        print_json(
            {
                "predictions": str(result.predictions),
                "n": result.n,
                "joined": None if not result.joined else str(result.joined),
                "skipped_missing": result.skipped_missing,
            }
        )
        return 0
    extra = f" and {result.joined}" if result.joined else ""
    skipped = (
        f" ({result.skipped_missing} rows skipped: image missing)" if result.skipped_missing else ""
    )
    print(f"wrote {result.n} predictions to {result.predictions}{extra}{skipped}")
    return 0


def _history_of(catalog: Any, images: str) -> Any:
    """The flare history of listed images, for a history map (``--catalog``)."""
    from fdflare.analysis.history import image_histories

    return lambda names: image_histories(names, catalog, images)


def _run_images(args: argparse.Namespace) -> int:
    from fdflare.core.errors import UsageError
    from fdflare.inference.images import predict_images

    if args.table:
        raise UsageError("--table joins labelled predictions: give --labels too")
    if args.skip_missing:
        raise UsageError(
            "--skip-missing goes with --labels (without them every listed image is needed)"
        )
    from fdflare.commands._common import load_members_and_map, read_history_catalog
    from fdflare.forecast.service import members_recipe

    catalog = read_history_catalog(args)
    members, cal = load_members_and_map(args, history_from="--catalog")
    recipe = members_recipe(members)
    checkpoints = [m.checkpoint for m in members]
    member_maps = [m.calibration for m in members]
    result = predict_images(
        checkpoints,
        args.images,
        args.out,
        transform=cal,
        member_transforms=member_maps,
        inputs=[args.calibration, args.ensemble, args.catalog],
        loaded=[m.loaded for m in members],
        history_of=None if catalog is None else _history_of(catalog, args.images),
        **_loading(args),
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        from fdflare.commands._common import print_json

        print_json(
            {
                "predictions": str(result.out),
                "n": result.n,
                "members": [{"checkpoint": str(c), "mean_prob": m} for c, m in result.members],
                "calibration": args.calibration,
                "catalog": args.catalog,
                "notes": result.notes,
                "ensemble": args.ensemble,
                "members_calibrated": sum(m is not None for m in member_maps or []),
                "flare_prob": recipe.describe(),
            }
        )
        return 0
    kind = "ensemble of " + str(len(result.members)) if len(result.members) > 1 else "model"
    cal_text = f", calibrated with {args.calibration}" if args.calibration else ""
    if args.catalog:
        cal_text += f" and the flare history of {args.catalog}"
    if args.ensemble:
        calibrated = sum(m is not None for m in member_maps or [])
        cal_text += f", {args.ensemble}: {calibrated} of {len(checkpoints)} members calibrated"
    print(f"wrote {result.n} predictions ({kind}{cal_text}) to {result.out}")
    print(f"  flare_prob is {recipe.describe()}")
    if len(result.members) > 1:
        for ckpt, mean in result.members:
            print(f"  member {ckpt}: mean P(flare) {mean:.4f}")
    return 0
