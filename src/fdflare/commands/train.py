"""``fdflare train``: train one model on one cross-validation fold."""

from __future__ import annotations

import argparse
import os
from typing import Any

from fdflare.models.registry import list_models

HELP = f"train one model ({', '.join(list_models())}) on one fold with the study's recipe"
DESCRIPTION = """\
Train a model on fold K of the labels (DIR/Fold{K}_train.csv and DIR/Fold{K}_val.csv, or
DIR/labels.csv split by quarter) with the study's recipe: augmented training set (flare x4,
no-flare x2), weighted NLL loss, SGD + OneCycleLR, model selection on validation TSS and
HSS2. Settings come from the study's recipe (fdflare/configs/study.yaml), then --config FILE
(YAML or JSON), then the options given. Writes OUT/config.json, OUT/metrics.csv, OUT/last.ckpt, OUT/best.ckpt and
OUT/summary.json. Runs on CPU, one or several GPUs (--devices) and nodes (--num-nodes);
--resume continues a killed run.

examples:
  fdflare train --model alexnet --fold 1 --labels labels/ --images hmi_jpgs_512/ --out runs/alex1
  fdflare train --config my.yaml --fold 2 --out runs/x2 --devices 4
  fdflare train --model resnet34 --fold 1 --labels labels/ --images imgs/ --out runs/r1 --resume
"""


def add_recipe_arguments(p: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """Add the options shared by ``fdflare train`` and ``fdflare cv``: one per config field.

    The options are generated from :class:`~fdflare.training.config.TrainConfig` (help,
    defaults, choices and ranges from its field metadata), plus ``--config``, ``--resume``
    and ``--quiet``.
    """
    from fdflare.commands._config import add_options
    from fdflare.training.config import TrainConfig

    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON config file: any subset of the settings below (see "
        "fdflare/configs/study.yaml)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last.ckpt"
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar or per-epoch lines (the final summary still prints)",
    )
    from fdflare.commands._common import add_json_option

    add_json_option(p)
    group = p.add_argument_group("settings (from the study's recipe, fdflare/configs/study.yaml)")
    added = add_options(group, TrainConfig, exclude=exclude)
    p.set_defaults(_config_fields=added)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare train``."""
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    add_recipe_arguments(p)


def config_from_args(args: argparse.Namespace, **extra: Any) -> Any:
    """Resolve the config: package defaults, then ``--config``, then the flags given, then ``extra``."""
    from fdflare.commands._config import given_values
    from fdflare.training.config import TrainConfig, load_config

    config = TrainConfig()
    if getattr(args, "config", None):
        config = load_config(args.config, config)
    values = given_values(args, TrainConfig, getattr(args, "_config_fields", ()))
    values.update(extra)
    return config.updated(values)


def run(args: argparse.Namespace) -> int:
    """Train and print where the results are."""
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.training.config import RUN_FILES, check_hardware

    config = config_from_args(args)
    check_hardware(config)  # before Lightning loads: a missing GPU is refused at once
    from fdflare.training.fit import fit

    if not is_rank_zero():  # a process started by Lightning for DDP: rank 0 holds the lock
        fit(config, args.out, resume=args.resume, quiet=args.quiet)
        return 0
    inputs = [config.labels, config.images, config.weights_path, getattr(args, "config", None)]
    check_output_dir(args.out, inputs=inputs, writes=RUN_FILES)
    with output_lock(args.out, command="train"):
        result = fit(config, args.out, resume=args.resume, quiet=args.quiet or args.json)
    if args.json:
        from dataclasses import asdict

        from fdflare.commands._common import print_json

        print_json({**asdict(result), "summary": str(result.out / "summary.json")})
        return 0
    if result.best_epoch is not None:
        print(
            f"{result.out}: {_epochs(result.epochs_done)}; best epoch {result.best_epoch} "
            f"(TSS {_score(result.best_tss)}, HSS2 {_score(result.best_hss2)}) in "
            f"{result.best_checkpoint}"
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


def _score(value: float | None) -> str:
    """A selection score as printed; a selection set of one class has no TSS or HSS2."""
    return "undefined (one class in the selection set)" if value is None else f"{value:.4f}"
