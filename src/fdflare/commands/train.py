"""``fdflare train``: train one model on one cross-validation fold."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

HELP = "train one model (alexnet, vgg16, resnet34) on one fold with the study's recipe"
DESCRIPTION = """\
Train a model on fold K of the labels (DIR/Fold{K}_train.csv and DIR/Fold{K}_val.csv, or
DIR/labels.csv split by quarter) with the study's recipe: augmented training set (flare x4,
no-flare x2), weighted NLL loss, SGD + OneCycleLR, model selection on validation TSS and
HSS2. Settings come from the packaged default config (the study's), then --config FILE, then
the flags given. Writes OUT/config.json, OUT/metrics.csv, OUT/last.ckpt, OUT/best.ckpt and
OUT/summary.json. Runs on CPU, one or several GPUs (--devices) and nodes (--num-nodes);
--resume continues a killed run.

examples:
  fdflare train --model alexnet --fold 1 --labels labels/ --images hmi_jpgs_512/ --out runs/alex1
  fdflare train --config my.json --fold 2 --out runs/x2 --devices 4
  fdflare train --model resnet34 --fold 1 --labels labels/ --images imgs/ --out runs/r1 --resume
"""


def _defaults() -> dict[str, Any]:
    from importlib import resources

    text = resources.files("fdflare").joinpath("configs/default.json").read_text(encoding="utf-8")
    return json.loads(text)


def _devices(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("expected 1 or more devices")
    return n


# the registry of fdflare.models.networks (kept here so that building the parser imports no torch)
MODELS = ("alexnet", "vgg16", "resnet34", "resnet18")

# flag destination -> config field, for the flags that map one to one
FLAG_FIELDS = {
    "fold": "fold",
    "labels": "labels",
    "images": "images",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "image_size": "image_size",
    "input_adapter": "input_adapter",
    "devices": "devices",
    "num_nodes": "num_nodes",
    "workers": "workers",
    "seed": "seed",
    "lr": "lr",
    "max_lr": "max_lr",
    "weight_decay": "weight_decay",
    "holdout": "holdout_fraction",
    "image_ext": "image_ext",
    "decoder": "decoder",
    "accelerator": "accelerator",
    "precision": "precision",
    "weights": "weights_path",
}


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options shared by ``fdflare train`` and ``fdflare cv`` (all but model and fold)."""
    d = _defaults()
    p.add_argument(
        "--labels",
        metavar="DIR",
        help="label folder: Fold{K}_train.csv + Fold{K}_val.csv, or labels.csv",
    )
    p.add_argument(
        "--images", metavar="DIR", help="image folder (YYYY/MM/DD/HMI.m*.png|jpg) or array store"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="JSON config file (any subset of the settings in docs/train.md)",
    )
    p.add_argument(
        "--epochs", type=int, metavar="N", help=f"training epochs (default {d['epochs']})"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"batch size per process (default {d['batch_size']})",
    )
    p.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help=f"image width = height (default {d['image_size']})",
    )
    p.add_argument(
        "--no-pretrained",
        action="store_true",
        help="start from random weights: no ImageNet weights file is needed",
    )
    p.add_argument(
        "--weights", metavar="FILE", help="ImageNet weights file (default: the torch hub cache)"
    )
    p.add_argument(
        "--input-adapter",
        choices=["conv", "sum"],
        help="conv: the study's extra Conv2d(1, 3); sum: first conv summed to one channel "
        f"(default {d['input_adapter']})",
    )
    p.add_argument("--lr", type=float, help=f"SGD learning rate (default {d['lr']})")
    p.add_argument(
        "--max-lr", type=float, help=f"OneCycleLR peak learning rate (default {d['max_lr']})"
    )
    p.add_argument(
        "--weight-decay", type=float, help=f"SGD weight decay (default {d['weight_decay']})"
    )
    p.add_argument(
        "--holdout",
        type=float,
        metavar="FRACTION",
        help="select the epoch on the latest FRACTION of the training instances (held out "
        "from training) instead of the validation fold (default 0: the study)",
    )
    p.add_argument("--no-augment", action="store_true", help="train on the original images only")
    p.add_argument("--seed", type=int, help=f"random seed (default {d['seed']})")
    p.add_argument(
        "--skip-missing", action="store_true", help="drop rows whose image is missing (reported)"
    )
    p.add_argument(
        "--image-ext",
        metavar="EXT",
        help="image extension to use instead of the labels' (e.g. png)",
    )
    p.add_argument(
        "--decoder", choices=["pil", "torchvision"], help=f"image decoder (default {d['decoder']})"
    )
    p.add_argument(
        "--no-array-store",
        action="store_true",
        help="read image files even where --images holds the array store of `fdflare prepare --array-store`",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"loader workers per process (default {d['workers']})",
    )
    p.add_argument("--accelerator", help="auto, cpu, gpu or mps (default auto)")
    p.add_argument(
        "--devices",
        type=_devices,
        metavar="N",
        help="devices per node: auto or a number (default auto)",
    )
    p.add_argument("--num-nodes", type=int, metavar="N", help="nodes (default 1)")
    p.add_argument(
        "--precision",
        help="auto (bf16-mixed on CUDA with bf16, else 32-true) or a Lightning precision",
    )
    p.add_argument(
        "--channels-last", action="store_true", help="channels-last memory format (GPU speed)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last.ckpt"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare train``."""
    d = _defaults()
    p.add_argument("--model", choices=MODELS, help=f"architecture (default {d['model']})")
    p.add_argument("--fold", type=int, metavar="K", help="cross-validation fold 1..4 (default 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    add_recipe_arguments(p)


def config_from_args(args: argparse.Namespace, **extra: Any) -> Any:
    """Resolve the config: package defaults, then ``--config``, then the flags given, then ``extra``."""
    from fdflare.training.fit import TrainConfig, load_config

    config = TrainConfig()
    if getattr(args, "config", None):
        config = load_config(args.config, config)
    values: dict[str, Any] = {}
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[name] = value
    if getattr(args, "model", None):
        values["model"] = args.model
    if args.no_pretrained:
        values["pretrained"] = False
    if args.no_augment:
        values["augment"] = False
    if args.skip_missing:
        values["skip_missing"] = True
    if args.no_array_store:
        values["array_store"] = False
    if args.channels_last:
        values["channels_last"] = True
    for key in ("labels", "images", "weights_path"):
        if isinstance(values.get(key), str):
            values[key] = str(Path(values[key]).expanduser().resolve())
    values.update(extra)
    return config.updated(values)


def run(args: argparse.Namespace) -> int:
    """Train and print where the results are."""
    from fdflare.training.fit import fit

    config = config_from_args(args)
    result = fit(config, args.out, resume=args.resume, quiet=args.quiet)
    if not is_rank_zero():
        return 0
    if result.best_epoch is not None:
        print(
            f"{result.out}: {_epochs(result.epochs_done)}; best epoch {result.best_epoch} "
            f"(TSS {result.best_tss:.4f}, HSS2 {result.best_hss2:.4f}) in {result.best_checkpoint}"
        )
    else:
        print(
            f"{result.out}: {_epochs(result.epochs_done)}; no epoch met the selection rule (see last.ckpt)"
        )
    return 0


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def is_rank_zero() -> bool:
    """Whether this is the first process of a distributed run (or the only one)."""
    return all(
        os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK")
    )
