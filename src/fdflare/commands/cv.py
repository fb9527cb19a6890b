"""``fdflare cv``: cross-validation, every model on every fold, or a SLURM array script for it."""

from __future__ import annotations

import argparse
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare cv``: its own, and the settings of ``fdflare train``."""
    from dataclasses import fields

    from fdflare.commands._common import nonnegative_int, positive_int
    from fdflare.commands._config import list_type
    from fdflare.commands.train import add_recipe_arguments
    from fdflare.models.registry import list_models
    from fdflare.training.config import TrainConfig

    by_name = {f.name: f for f in fields(TrainConfig)}
    study = list_models(study_only=True)
    p.add_argument(
        "--models",
        type=list_type(by_name["model"], str),
        default=tuple(study),
        metavar="LIST",
        help=f"comma-separated models, each once (default {','.join(study)})",
    )
    p.add_argument(
        "--folds",
        type=list_type(by_name["fold"], int),
        default=None,
        metavar="LIST",
        help="comma-separated folds 1..4, each once (default: every fold of the labels: "
        "1,2,3,4 for the study's quarters, 1 for a chronological split)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--catalog",
        metavar="FILE",
        help="flare catalog: score persistence and climatology on the same validation "
        "instances and show each model beside them (OUT/baselines/, results.json, report.html)",
    )
    add_recipe_arguments(p, exclude=("model", "fold"))
    s = p.add_argument_group("SLURM")
    s.add_argument(
        "--slurm", action="store_true", help="print a SLURM array script instead of running"
    )
    s.add_argument(
        "--slurm-gpus",
        type=nonnegative_int,
        default=1,
        metavar="N",
        help="GPUs (and tasks) per job; 0: CPU only (default 1)",
    )
    s.add_argument(
        "--slurm-cpus",
        type=positive_int,
        default=8,
        metavar="N",
        help="CPUs per task (default %(default)s)",
    )
    s.add_argument(
        "--slurm-time", default="48:00:00", help="time limit per job (default %(default)s)"
    )
    s.add_argument("--slurm-partition", help="partition")
    s.add_argument("--slurm-account", help="account")


def _train_flags(config: Any) -> list[str]:
    """The ``fdflare train`` options that rebuild ``config`` (all but model and fold)."""
    from fdflare.commands._config import config_argv

    return config_argv(config, exclude=("model", "fold"))


def _protocol_line(protocol: str, rule: str) -> str:
    if protocol == "study":
        return (
            "protocol study: each fold's epoch was selected on the fold it is scored on (the "
            "study's way), which flatters the model; --protocol honest selects elsewhere"
        )
    if protocol == "honest":
        return (
            f"protocol honest: epochs selected ({rule}) on data that is never scored (the "
            "labels' selection interval or held-out training data)"
        )
    return "protocol mixed: some runs selected on the scored fold (see cv_summary.csv)"


def _label_folds(labels: str) -> tuple[int, ...]:
    """Every fold a label folder holds (1..4 when it cannot tell)."""
    from fdflare.analysis.baselines import list_folds
    from fdflare.core.errors import FdflareError

    try:
        folds = tuple(k for k in list_folds(labels) if 1 <= k <= 4) if labels else ()
    except FdflareError:  # missing or unreadable labels: the run itself says so
        folds = ()
    return folds or (1, 2, 3, 4)


def run(args: argparse.Namespace) -> int:
    """Run every model on every fold, or print the SLURM script."""
    from fdflare.commands.train import config_from_args
    from fdflare.core.errors import InputError
    from fdflare.core.outputs import check_output_dir
    from fdflare.reports.cv import check_pairs, run_cv, slurm_script
    from fdflare.training.config import check_hardware

    base = config_from_args(args)
    if args.folds is None:
        args.folds = _label_folds(base.labels)
    check_pairs(args.models, args.folds)
    if not base.labels or not base.images:
        raise InputError(
            "labels and images are needed (--labels DIR --images DIR, or in --config)",
            field="labels",
        )
    from fdflare.data.tables import check_label_folder

    check_label_folder(base.labels, list(args.folds))
    inputs = [base.labels, base.images, base.weights_path, args.config, args.catalog]
    out = check_output_dir(args.out, inputs=inputs, writes=["cv_summary.csv"])
    if args.slurm:
        flags = _train_flags(base.updated({"devices": "auto", "num_nodes": 1, "workers": 4}))
        flags = [f for f in flags if f != "--quiet"] + (["--quiet"] if args.quiet else [])
        script = slurm_script(
            out,
            args.models,
            args.folds,
            flags,
            gpus=args.slurm_gpus,
            cpus=args.slurm_cpus,
            time=args.slurm_time,
            partition=args.slurm_partition,
            account=args.slurm_account,
            workers=args.workers,
        )
        # SLURM opens the --output file before the script runs: its folder must exist
        (out / "slurm").mkdir(parents=True, exist_ok=True)
        sys.stdout.write(script)
        return 0
    check_hardware(base)

    def train_command(config: Any, run_dir: Path) -> list[str]:
        cmd = [sys.executable, "-m", "fdflare", "train", "--model", config.model]
        cmd += ["--fold", str(config.fold), "--out", str(run_dir), *_train_flags(config)]
        return cmd + (["--resume"] if args.resume else []) + (["--quiet"] if args.quiet else [])

    rows, path = run_cv(
        base,
        out,
        args.models,
        args.folds,
        resume=args.resume,
        quiet=args.quiet,
        train_command=train_command,
    )
    if path is None:
        return 0
    for r in rows:
        print(
            f"{r['model']:9s} fold {r['fold']}: TSS {r['tss']:.4f} HSS2 {r['hss2']:.4f} "
            f"(best epoch {r['best_epoch']}, selected on {r['selected_on']}: protocol "
            f"{r['protocol']}) -> {r['predictions']}"
        )
    print(f"summary: {path}")
    from fdflare.reports.cv_results import cv_results

    res = cv_results(out, base, args.models, args.folds, catalog=args.catalog)
    print(_protocol_line(res["protocol"], res["selection_rule"]))
    for model, entry in res["models"].items():
        if "comparison" in entry:
            from fdflare.analysis.skill import format_comparison

            print(f"\n{model} beside the baselines (same instances):")
            print(format_comparison({**entry["evaluate"], **entry}))
        if "calibration" in entry:
            bss = ", ".join(f"{i['after']['bss']:+.2f}" for i in entry["calibration"]["files"])
            print(f"{model}: cross-fold isotonic calibration, Brier skill per fold {bss}")
    print(f"report: {out / 'report.html'}")
    return 0
