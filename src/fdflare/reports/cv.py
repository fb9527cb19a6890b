"""Cross-validation: every model on every fold, trained, predicted and summarised.

For each pair: train into ``OUT/<model>/fold<k>/`` (:func:`fdflare.training.fit.fit`), predict
its validation fold with the selected checkpoint into
``OUT/predictions/fold<k>_<short name>.csv`` and score it. Each pair writes its own summary
row, ``OUT/cv_summary.d/<model>_fold<k>.csv``, and ``OUT/cv_summary.csv`` is merged from all
of them under a lock, so SLURM array tasks that finish together lose no rows.

:func:`slurm_script` writes the SLURM array script that runs one pair per task.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fdflare.core.errors import RunError, UsageError
from fdflare.inference.predictions import read_prediction_file
from fdflare.models.registry import get_spec
from fdflare.training.config import TrainConfig

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
    "protocol",
    "selected_on",
)
SUMMARY_PARTS = "cv_summary.d"


def is_rank_zero() -> bool:
    """Whether this is the first process of a distributed run (or the only one)."""
    return all(
        os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK")
    )


def prediction_path(out: Path, model: str, fold: int) -> Path:
    """``OUT/predictions/fold<k>_<alex|vgg|resnet|...>.csv`` (the study's file names)."""
    return out / "predictions" / f"fold{fold}_{get_spec(model).short}.csv"


def check_pairs(models: Sequence[str], folds: Sequence[int]) -> None:
    """Refuse a model or fold given twice: two runs would train the same folder.

    Raises:
        UsageError: naming ``--models`` or ``--folds``.
    """
    for option, values in (
        ("--models", [str(m) for m in models]),
        ("--folds", [str(k) for k in folds]),
    ):
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise UsageError(f"{option}: {', '.join(dup)} given more than once")


def train_pair(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    quiet: bool,
    command: Sequence[str] | None = None,
) -> None:
    """Train one pair: in this process, or as ``command`` when DDP must launch several.

    Args:
        config: the pair's config.
        run_dir: its run folder.
        resume: continue a run found there.
        quiet: no per-epoch lines.
        command: the ``fdflare train`` command line of this pair, run in a fresh process when
            the pair uses more than one device (Lightning's DDP launcher re-runs the current
            command once per device).

    Raises:
        RunError: that process failed.
    """
    from fdflare.training.fit import fit

    multi = (isinstance(config.devices, int) and config.devices > 1) or config.num_nodes > 1
    under_srun = "SLURM_PROCID" in os.environ  # srun started one process per device already
    if not multi or under_srun or command is None:
        fit(config, run_dir, resume=resume, quiet=quiet)
        return
    rc = subprocess.run(list(command), check=False).returncode
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        raise RunError(
            f"training {config.model} fold {config.fold} failed (exit status {rc}): "
            f"{shlex.join(command)}"
        )


def predict_options(config: TrainConfig) -> dict[str, Any]:
    """The :func:`fdflare.inference.predict.predict` settings that follow a pair's training."""
    return {
        "batch_size": config.batch_size,
        "workers": config.workers,
        "accelerator": config.accelerator if config.accelerator != "tpu" else "auto",
        "skip_missing": config.skip_missing,
        "image_ext": config.image_ext,
        "decoder": config.decoder,
        "array_store": config.array_store,
    }


def summarise_pair(config: TrainConfig, run_dir: Path, out: Path, *, quiet: bool) -> dict[str, Any]:
    """Predict the pair's validation fold (unless done already) and score it."""
    import json

    import numpy as np

    from fdflare.core.scores import confusion, skill_scores
    from fdflare.data.tables import fold_tables
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
    pred_file = prediction_path(out, model, fold)
    labels = Path(config.labels)
    table = labels if labels.is_file() else labels / "labels.csv"
    fresh = pred_file.is_file() and pred_file.stat().st_mtime_ns >= ckpt.stat().st_mtime_ns
    if not fresh:
        pred_file.parent.mkdir(parents=True, exist_ok=True)
        predict(
            ckpt,
            fold_tables(labels, fold).val,
            config.images,
            pred_file,
            table=table if table.is_file() else None,
            quiet=quiet,
            **predict_options(config),
        )
    pred = read_prediction_file(pred_file, need=("target",))
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
        # the study selected on the scored fold itself (runs of an older fdflare record no
        # protocol: they selected on the validation fold unless held out)
        "protocol": summary.get(
            "protocol", "honest" if summary.get("selected_on") == "holdout" else "study"
        ),
        "selected_on": summary.get("selected_on", "val"),
    }


@contextlib.contextmanager
def _merge_lock(out: Path) -> Iterator[None]:
    """Wait for, then hold, the lock that serialises merges of ``cv_summary.csv``.

    Unlike the output-folder lock (which refuses a second run), tasks of one SLURM array
    share ``OUT`` on purpose: a merge takes milliseconds, so the next one waits for it.
    """
    from fdflare.core.locks import lock_file, unlock_file

    with open(out / ".cv_summary.lock", "a+", encoding="utf-8") as fh:
        lock_file(fh, blocking=True)
        try:
            yield
        finally:
            unlock_file(fh)


def write_summary(out: Path, rows: list[dict[str, Any]]) -> Path:
    """Write each pair's row to ``cv_summary.d/`` and merge every pair's row into ``cv_summary.csv``.

    Rows of pairs run elsewhere (other SLURM tasks, earlier runs) are kept: the merge reads
    every part file, under a lock, so concurrent writers lose nothing.
    """
    import pandas as pd

    from fdflare.core.io import atomic_open

    parts = out / SUMMARY_PARTS
    path = out / "cv_summary.csv"
    if not parts.is_dir() and path.is_file():  # a folder of an older fdflare: keep its rows
        rows = [*pd.read_csv(path).to_dict("records"), *rows]
    parts.mkdir(parents=True, exist_ok=True)
    for row in rows:
        part = parts / f"{row['model']}_fold{row['fold']}.csv"
        with atomic_open(part, "w") as fh:
            pd.DataFrame([row], columns=list(SUMMARY_COLUMNS)).to_csv(
                fh, index=False, lineterminator="\n"
            )
    with _merge_lock(out):
        frames = [pd.read_csv(p) for p in sorted(parts.glob("*.csv"))]
        table = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=list(SUMMARY_COLUMNS))
        )
        table = table.sort_values(["model", "fold"], kind="stable")
        with atomic_open(path, "w") as fh:
            table.to_csv(fh, index=False, lineterminator="\n")
    return path


def run_cv(
    base: TrainConfig,
    out: Path,
    models: Sequence[str],
    folds: Sequence[int],
    *,
    resume: bool,
    quiet: bool,
    train_command: Any = None,
) -> tuple[list[dict[str, Any]], Path | None]:
    """Train, predict and score every model on every fold, one pair after another.

    Args:
        base: the settings shared by every pair.
        out: the cross-validation folder.
        models: architectures.
        folds: folds.
        resume: skip finished pairs, continue an interrupted one.
        quiet: no progress bars or per-epoch lines.
        train_command: ``(config, run_dir) -> argv`` of ``fdflare train`` for one pair, for
            pairs that need their own process (DDP).

    Returns:
        The summary rows of this run's pairs and ``cv_summary.csv`` (``None`` off rank 0).
    """
    from fdflare.core.outputs import output_lock

    check_pairs(models, folds)
    rows = []
    for model in models:
        for fold in folds:
            config = replace(base, model=model, fold=fold)
            config.validate()
            run_dir = out / model / f"fold{fold}"
            command = train_command(config, run_dir) if train_command is not None else None
            multi = (isinstance(config.devices, int) and config.devices > 1) or config.num_nodes > 1
            if not is_rank_zero():
                train_pair(config, run_dir, resume=resume, quiet=quiet, command=command)
                continue
            if multi and command is not None and "SLURM_PROCID" not in os.environ:
                # the child `fdflare train` locks its run folder itself
                train_pair(config, run_dir, resume=resume, quiet=quiet, command=command)
                with output_lock(run_dir, command="cv"):
                    rows.append(summarise_pair(config, run_dir, out, quiet=quiet))
                continue
            with output_lock(run_dir, command="cv"):
                train_pair(config, run_dir, resume=resume, quiet=quiet, command=command)
                rows.append(summarise_pair(config, run_dir, out, quiet=quiet))
    if not is_rank_zero():
        return rows, None
    return rows, write_summary(out, rows)


def slurm_script(
    out: Path,
    models: Sequence[str],
    folds: Sequence[int],
    flags: Sequence[str],
    *,
    gpus: int,
    cpus: int,
    time: str,
    partition: str | None = None,
    account: str | None = None,
    workers: int | None = None,
) -> str:
    """Return a SLURM array script: one task per model x fold, each a ``fdflare cv`` of that pair.

    Args:
        out: the cross-validation folder.
        models: architectures (each once).
        folds: folds (each once).
        flags: the ``fdflare train`` settings passed on to every task.
        gpus: GPUs (and tasks) per job; 0 runs each task on CPU.
        cpus: CPUs per task.
        time: time limit per job.
        partition: SLURM partition.
        account: SLURM account.
        workers: loader workers per process (default: CPUs per task - 1).
    """
    check_pairs(models, folds)
    out = out.resolve()
    n = len(models) * len(folds)
    log = '"' + f"{out}/slurm/%x-%A_%a.out".replace('"', '\\"') + '"'
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=fdflare-cv",
        f"#SBATCH --array=0-{n - 1}",
        "#SBATCH --nodes=1",
        f"#SBATCH --ntasks-per-node={max(gpus, 1)}",
    ]
    if gpus > 0:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    lines += [
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --time={time}",
        f"#SBATCH --output={log}",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    cmd = ["fdflare", "cv", "--models", '"$MODEL"', "--folds", '"$FOLD"', "--out"]
    cmd += [shlex.quote(str(out)), *(shlex.quote(a) for a in flags)]
    n_workers = workers if workers is not None else max(1, cpus - 1)
    if gpus > 0:
        cmd += ["--devices", str(gpus)]
    else:
        cmd += ["--accelerator", "cpu", "--devices", "1"]
    cmd += ["--workers", str(n_workers), "--resume"]
    lines += [
        "",
        "# One task per model x fold; each task trains that pair (one process per GPU under srun,",
        "# DDP when --slurm-gpus > 1), predicts its validation fold, writes its row to",
        f"# {SUMMARY_PARTS}/ and merges cv_summary.csv.",
        "# --resume: a requeued or resubmitted task continues from its last.ckpt.",
        "set -euo pipefail",
        f"mkdir -p {shlex.quote(str(out / 'slurm'))}",
        f"MODELS=({' '.join(models)})",
        f"FOLDS=({' '.join(str(k) for k in folds)})",
        "MODEL=${MODELS[$((SLURM_ARRAY_TASK_ID / ${#FOLDS[@]}))]}",
        "FOLD=${FOLDS[$((SLURM_ARRAY_TASK_ID % ${#FOLDS[@]}))]}",
        "srun " + " ".join(cmd),
        "",
    ]
    return "\n".join(lines)
