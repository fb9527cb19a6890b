"""``fdflare cv``: cross-validation, every model on every fold, or a SLURM array script for it."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

HELP = "train and predict every model on every fold (or print a SLURM array script)"
DESCRIPTION = """\
For each model and fold: train into OUT/<model>/fold<k>/ (as `fdflare train`), predict the
validation fold with the selected checkpoint (best.ckpt, or last.ckpt when no epoch was
selected) into OUT/predictions/fold<k>_<alex|vgg|resnet>.csv (the study's file names; with
OUT/predictions/fold<k>_<name>_joined.csv when the label folder holds labels.csv), and
summarise all runs in OUT/cv_summary.csv. Runs go one after another; with --resume, finished
runs are skipped and an interrupted one continues. With --slurm, print instead a SLURM array
script with one task per model x fold (submit it with sbatch).

examples:
  fdflare cv --models alexnet,vgg16,resnet34 --folds 1,2,3,4 --labels labels/ --images imgs/ --out cv/
  fdflare cv --labels labels/ --images imgs/ --out cv/ --slurm --slurm-gpus 2 > cv.sbatch
"""

SHORT_NAMES = {"alexnet": "alex", "vgg16": "vgg", "resnet34": "resnet", "resnet18": "resnet18"}
SUMMARY_COLUMNS = (
    "model",
    "fold",
    "epochs_done",
    "best_epoch",
    "selected_tss",
    "selected_hss2",
    "checkpoint",
    "predictions",
    "n",
    "tp",
    "fp",
    "tn",
    "fn",
    "tss",
    "hss2",
)


def _list(kind: type, choices: tuple[Any, ...] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            values = [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        if choices is not None:
            bad = [v for v in values if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {bad[0]!r}; choose from {', '.join(map(str, choices))}"
                )
        return values

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare cv``."""
    from fdflare.commands.train import MODELS, add_recipe_arguments

    p.add_argument(
        "--models",
        type=_list(str, MODELS),
        default=["alexnet", "vgg16", "resnet34"],
        metavar="LIST",
        help="comma-separated models (default alexnet,vgg16,resnet34)",
    )
    p.add_argument(
        "--folds",
        type=_list(int),
        default=[1, 2, 3, 4],
        metavar="LIST",
        help="comma-separated folds (default 1,2,3,4)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_recipe_arguments(p)
    s = p.add_argument_group("SLURM")
    s.add_argument(
        "--slurm", action="store_true", help="print a SLURM array script instead of running"
    )
    s.add_argument(
        "--slurm-gpus",
        type=int,
        default=1,
        metavar="N",
        help="GPUs (and tasks) per job (default 1)",
    )
    s.add_argument(
        "--slurm-cpus", type=int, default=8, metavar="N", help="CPUs per task (default %(default)s)"
    )
    s.add_argument(
        "--slurm-time", default="48:00:00", help="time limit per job (default %(default)s)"
    )
    s.add_argument("--slurm-partition", help="partition")
    s.add_argument("--slurm-account", help="account")


# flags passed on to each run, rebuilt from parsed arguments
_VALUE_FLAGS = (
    "config",
    "epochs",
    "batch_size",
    "image_size",
    "weights",
    "input_adapter",
    "lr",
    "max_lr",
    "weight_decay",
    "holdout",
    "seed",
    "image_ext",
    "decoder",
    "workers",
    "accelerator",
    "devices",
    "num_nodes",
    "precision",
)
_BOOL_FLAGS = (
    "no_pretrained",
    "no_augment",
    "skip_missing",
    "no_array_store",
    "channels_last",
    "quiet",
)


def passthrough(args: argparse.Namespace, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The ``fdflare train`` flags that reproduce ``args`` (paths made absolute)."""
    argv: list[str] = []
    for dest in ("labels", "images"):
        if getattr(args, dest, None):
            argv += [f"--{dest}", str(Path(getattr(args, dest)).resolve())]
    for dest in _VALUE_FLAGS:
        value = getattr(args, dest, None)
        if value is None or dest in skip:
            continue
        if dest in ("config", "weights"):
            value = Path(value).resolve()
        argv += ["--" + dest.replace("_", "-"), str(value)]
    for dest in _BOOL_FLAGS:
        if getattr(args, dest, False) and dest not in skip:
            argv.append("--" + dest.replace("_", "-"))
    return argv


def slurm_script(args: argparse.Namespace) -> str:
    """Return a SLURM array script: one task per model x fold, each a `fdflare cv` of that pair."""
    out = Path(args.out).resolve()
    n = len(args.models) * len(args.folds)
    gpus = args.slurm_gpus
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=fdflare-cv",
        f"#SBATCH --array=0-{n - 1}",
        "#SBATCH --nodes=1",
        f"#SBATCH --ntasks-per-node={gpus}",
        f"#SBATCH --gres=gpu:{gpus}",
        f"#SBATCH --cpus-per-task={args.slurm_cpus}",
        f"#SBATCH --time={args.slurm_time}",
        f"#SBATCH --output={out}/slurm/%x-%A_%a.out",
    ]
    if args.slurm_partition:
        lines.append(f"#SBATCH --partition={args.slurm_partition}")
    if args.slurm_account:
        lines.append(f"#SBATCH --account={args.slurm_account}")
    flags = passthrough(args, skip=("devices", "num_nodes", "workers"))
    cmd = [
        "fdflare",
        "cv",
        "--models",
        '"$MODEL"',
        "--folds",
        '"$FOLD"',
        "--out",
        shlex.quote(str(out)),
    ]
    cmd += [shlex.quote(a) for a in flags]
    workers = args.workers if args.workers is not None else max(1, args.slurm_cpus - 1)
    cmd += ["--devices", str(gpus), "--workers", str(workers), "--resume"]
    lines += [
        "",
        "# One task per model x fold; each task trains that pair (one process per GPU under srun,",
        "# DDP when --slurm-gpus > 1), predicts its validation fold and updates cv_summary.csv.",
        "# --resume: a requeued or resubmitted task continues from its last.ckpt.",
        "set -euo pipefail",
        f"mkdir -p {shlex.quote(str(out / 'slurm'))}",
        f"MODELS=({' '.join(args.models)})",
        f"FOLDS=({' '.join(str(k) for k in args.folds)})",
        "MODEL=${MODELS[$((SLURM_ARRAY_TASK_ID / ${#FOLDS[@]}))]}",
        "FOLD=${FOLDS[$((SLURM_ARRAY_TASK_ID % ${#FOLDS[@]}))]}",
        "srun " + " ".join(cmd),
        "",
    ]
    return "\n".join(lines)


def _train_pair(args: argparse.Namespace, config: Any, run_dir: Path) -> None:
    """Train one pair: in this process, or in a fresh one when DDP launches several."""
    import subprocess

    from fdflare.core.errors import FdflareError
    from fdflare.training.fit import fit

    multi = (isinstance(config.devices, int) and config.devices > 1) or config.num_nodes > 1
    under_srun = "SLURM_PROCID" in os.environ  # srun started one process per device already
    if not multi or under_srun:
        fit(config, run_dir, resume=args.resume, quiet=args.quiet)
        return
    # Lightning's DDP launcher re-runs the current command once per device: give it a
    # command that trains this pair only.
    cmd = [sys.executable, "-m", "fdflare", "train", "--model", config.model]
    cmd += ["--fold", str(config.fold), "--out", str(run_dir), *passthrough(args)]
    cmd += ["--resume"] if args.resume else []
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise FdflareError(
            f"training {config.model} fold {config.fold} failed (exit status {rc}): {shlex.join(cmd)}"
        )


def _summarise_pair(
    args: argparse.Namespace, config: Any, run_dir: Path, out: Path
) -> dict[str, Any]:
    """Predict the pair's validation fold (unless done already) and score it."""
    import json

    import numpy as np
    import pandas as pd

    from fdflare.data.dataset import fold_tables
    from fdflare.analysis.metrics import confusion, skill_scores
    from fdflare.inference.predict import predict

    model, fold = config.model, config.fold
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    ckpt = run_dir / "best.ckpt"
    if not ckpt.is_file():
        ckpt = run_dir / "last.ckpt"
        print(
            f"{model} fold {fold}: no epoch was selected; predicting with last.ckpt",
            file=sys.stderr,
        )
    pred_file = out / "predictions" / f"fold{fold}_{SHORT_NAMES.get(model, model)}.csv"
    labels = Path(config.labels)
    table = labels if labels.is_file() else labels / "labels.csv"
    fresh = pred_file.is_file() and pred_file.stat().st_mtime_ns >= ckpt.stat().st_mtime_ns
    if not fresh:
        predict(
            ckpt,
            fold_tables(labels, fold).val,
            config.images,
            pred_file,
            table=table if table.is_file() else None,
            batch_size=config.batch_size,
            workers=config.workers,
            skip_missing=config.skip_missing,
            image_ext=config.image_ext,
            decoder=config.decoder,
            array_store=config.array_store,
            quiet=args.quiet,
        )
    pred = pd.read_csv(pred_file)
    tp, fp, tn, fn = confusion(pred["flare_prob"].to_numpy(), pred["target"].to_numpy(), 0.5)
    tss, hss2, _ = skill_scores(tp, fp, tn, fn)
    return {
        "model": model,
        "fold": fold,
        "epochs_done": summary.get("epochs_done"),
        "best_epoch": summary.get("best_epoch"),
        "selected_tss": summary.get("best_tss"),
        "selected_hss2": summary.get("best_hss2"),
        "checkpoint": str(ckpt),
        "predictions": str(pred_file),
        "n": len(pred),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "tss": np.nan if tss is None else tss,
        "hss2": np.nan if hss2 is None else hss2,
    }


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> Path:
    import pandas as pd

    from fdflare.core.io import atomic_open

    path = out / "cv_summary.csv"
    new = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    if path.is_file():  # keep the rows of pairs run elsewhere (other SLURM tasks)
        old = pd.read_csv(path)
        keys = set(zip(new["model"], new["fold"], strict=True))
        keep = [(m, f) not in keys for m, f in zip(old["model"], old["fold"], strict=True)]
        new = pd.concat([old[keep], new], ignore_index=True) if any(keep) else new
    new = new.sort_values(["model", "fold"], kind="stable")
    with atomic_open(path, "w") as fh:
        new.to_csv(fh, index=False, lineterminator="\n")
    return path


def run(args: argparse.Namespace) -> int:
    """Run every model on every fold, or print the SLURM script."""
    from fdflare.commands.train import config_from_args, is_rank_zero
    from fdflare.core.errors import InputError

    base = config_from_args(args)
    if not base.labels or not base.images:
        raise InputError(
            "labels and images are needed (--labels DIR --images DIR, or in --config)",
            field="labels",
        )
    if args.slurm:
        # SLURM opens the --output file before the script runs: its folder must exist
        (Path(args.out) / "slurm").mkdir(parents=True, exist_ok=True)
        sys.stdout.write(slurm_script(args))
        return 0
    out = Path(args.out)
    rows = []
    for model in args.models:
        for fold in args.folds:
            config = config_from_args(args, model=model, fold=fold)
            run_dir = out / model / f"fold{fold}"
            _train_pair(args, config, run_dir)
            if is_rank_zero():
                rows.append(_summarise_pair(args, config, run_dir, out))
    if not is_rank_zero():
        return 0
    path = _write_summary(out, rows)
    for r in rows:
        print(
            f"{r['model']:9s} fold {r['fold']}: TSS {r['tss']:.4f} HSS2 {r['hss2']:.4f} "
            f"(best epoch {r['best_epoch']}) -> {r['predictions']}"
        )
    print(f"summary: {path}")
    return 0
