"""Training: the study's recipe on Lightning, from one CPU to several GPU nodes.

The recipe (STUDY.md section 4), every number a :class:`TrainConfig` field:

* the study's augmented training set (:mod:`fdflare.data.dataset`), images in [0, 1], no normalisation;
* NLL loss with class weights ``[r, 1 - r]``, ``r = 1 - 2 N_nf / (4 N_fl + 2 N_nf)``;
* SGD (lr 1e-4, weight decay 1e-3) with ``OneCycleLR`` (cosine, max_lr 1e-5) stepped every
  batch; as in the study the scheduler also cycles SGD's momentum (0.95 -> 0.85 -> 0.95);
* batch 64, 50 epochs, input 512 x 512;
* model selection: after each epoch, keep the checkpoint when TSS improves on the best so far
  and HSS2 falls by no more than 0.02 from the best so far (threshold 0.5; both start at 0).
  By default TSS and HSS2 are those of the validation fold (the study); with
  ``holdout_fraction`` they are those of the latest part of the training period, held out
  from training, and the validation fold is reported untouched by selection. ``protocol:
  honest`` selects on the labels' selection interval (``Fold{k}_select.csv``) or a held-out
  part, by ``select_by`` (lowest loss by default there), on the weights of ``average``
  (an EMA or SWA through Lightning's ``WeightAveraging``) when set.

Lightning picks CPU, CUDA or MPS (``accelerator="auto"``), bf16 mixed precision on GPUs that
support it, DDP when ``devices > 1`` or ``num_nodes > 1``, and SLURM from its environment. A
run folder holds ``config.json`` (the resolved config; reusable with ``--config``),
``metrics.csv`` (one row per epoch), ``last.ckpt`` and ``best.ckpt`` (model, optimiser,
scheduler and loop state, plus fdflare's own record: config, epoch, scores), and
``summary.json``. ``resume=True`` continues a killed run from ``last.ckpt``; on CPU with the
same seed it ends with the same metrics and weights as an uninterrupted run (shuffling,
augmentation and dropout are seeded per epoch).

Example:
    >>> cfg = TrainConfig(model="resnet34", fold=1, labels="labels/", images="hmi_512/",
    ...                   pretrained=False, epochs=2, image_size=512)
    >>> result = fit(cfg, "runs/resnet34/fold1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from fdflare.core.errors import FdflareError, InputError, MissingDataError, UsageError
from fdflare.core.io import read_csv_table, write_text_atomic
from fdflare.core.recipe import STUDY, Recipe, labels_recipe, recipe_or_study
from fdflare.data.dataset import FlareDataset
from fdflare.models.networks import create_model
from fdflare.models.weights import weights_file
from fdflare.training.callbacks import RunRecorder, StderrProgressBar
from fdflare.training.checkpoint import checkpoint_record, read_checkpoint
from fdflare.training.config import (
    RUN_FILES,
    RUNTIME_FIELDS,
    Runtime,
    TrainConfig,
    check_hardware,
    resolve_runtime,
)
from fdflare.training.datamodule import FlareDataModule
from fdflare.training.module import FlareClassifier
from fdflare.training.protocol import selection_rule
from fdflare.training.sets import Note, RunSets, instance_counts, read_sets

__all__ = ["RUN_FILES", "TrainConfig", "TrainResult", "fit", "read_metrics"]


@dataclass
class TrainResult:
    """What :func:`fit` did."""

    out: Path
    epochs_done: int
    best_epoch: int | None
    best_tss: float | None
    best_hss2: float | None
    best_checkpoint: Path | None
    last_checkpoint: Path
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _msg(text: str, quiet: bool) -> None:
    if not quiet and getattr(rank_zero_only, "rank", 0) == 0:
        print(text, file=sys.stderr, flush=True)


def _noter(notes: list[str], quiet: bool) -> Note:
    """Keep a note for ``summary.json`` and print it (loud ones even when ``quiet``)."""

    def note(text: str, loud: bool) -> None:
        notes.append(text)
        _msg(text, quiet and not loud)

    return note


def fit(
    config: TrainConfig, out: str | os.PathLike[str], *, resume: bool = False, quiet: bool = False
) -> TrainResult:
    """Train one model on one fold into the run folder ``out``.

    The steps: the resume checks (:func:`_resume_point`), the ImageNet weights, the tables
    (:func:`fdflare.training.sets.read_sets`: missing images, the selection set, the
    purge), the model and its loaders (:func:`_model_and_loaders`), training
    (:func:`_run_trainer`) and the summary (:func:`_write_summary`).

    Args:
        config: the run's config (``labels`` and ``images`` set).
        out: the run folder.
        resume: continue from ``out/last.ckpt`` (starting afresh when there is none).
        quiet: no progress bar or per-epoch lines.

    Raises:
        MissingDataError: ImageNet weights, labels or images are missing (before any training).
        InputError: bad tables or images, an empty class, a run folder that already holds
            a run (without ``resume``), or a resumed run whose recipe differs.
    """
    config.validate()
    check_hardware(config)
    out = Path(out)
    notes: list[str] = []
    recipe = labels_recipe(config.labels) if config.labels else STUDY
    rec = _resume_point(config, out, recipe, resume=resume, quiet=quiet)
    if rec is not None and int(rec.get("epoch", 0)) >= config.epochs:
        return _result_from_record(out, rec, notes)
    if config.pretrained and rec is None:
        _check_imagenet_weights(config)  # fail before touching the data
    sets = read_sets(config, recipe, _noter(notes, quiet))
    counts, weights = instance_counts(sets, augment=config.augment)
    if rec is not None:
        _check_resumed_samples(rec, counts, out / "last.ckpt")
    runtime, module, datamodule = _model_and_loaders(
        config, sets, weights, resuming=rec is not None
    )
    recorded = None if recipe.assumed else recipe.to_dict()
    meta = {
        "counts": counts,
        "class_weights": list(weights),
        "runtime": runtime.to_dict(),
        "recipe": recorded,
    }
    rule = selection_rule(config, has_select=sets.has_select)
    recorder = RunRecorder(out, config, meta, quiet=quiet, selection=sets.selection, rule=rule)
    trainer = _run_trainer(
        config,
        runtime,
        out,
        recorder,
        module,
        datamodule,
        resume_from=rec,
        recorded=recorded,
        start_line=_start_line(config, counts, weights, runtime),
        quiet=quiet,
    )
    result = _result_from_recorder(out, recorder, counts, notes)
    if trainer.is_global_zero:
        _write_summary(
            result, config, recipe, meta, selection=sets.selection, rule=rule, quiet=quiet
        )
    return result


# --------------------------------------------------------------------------- resume checks


def _resume_point(
    config: TrainConfig, out: Path, recipe: Recipe, *, resume: bool, quiet: bool
) -> dict[str, Any] | None:
    """The record of ``out/last.ckpt`` when the run goes on from it; ``None`` for a new run.

    The record of a run whose epochs are all done is returned too (there is nothing to train).

    Raises:
        InputError: a run is there and ``resume`` is not set, or its recipe differs.
    """
    last = out / "last.ckpt"
    if not last.exists():
        if resume:
            _msg(f"starting a new run in {out} (nothing there to resume yet)", quiet)
        return None
    if not resume:
        raise InputError(
            "this folder already holds a training run; pass --resume to continue it or choose another --out",
            path=out,
        )
    rec = checkpoint_record(read_checkpoint(last, mmap=True), last)
    _check_resumed_recipe(rec, recipe, last)
    diff = _recipe_diff(rec["config"], config)
    if diff:
        raise InputError("cannot resume with a different recipe: " + "; ".join(diff), path=last)
    if int(rec.get("epoch", 0)) >= config.epochs:
        _msg(f"{out}: all {config.epochs} epochs are done; nothing to resume", quiet)
    else:
        _msg(f"resuming {out} after epoch {rec.get('epoch')}", quiet)
    return rec


def _recipe_diff(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    now = asdict(config)
    return [
        f"{k}: run has {saved.get(k)!r}, now {now[k]!r}"
        for k in now
        if k not in RUNTIME_FIELDS and k in saved and saved[k] != now[k]
    ]


def _check_resumed_recipe(rec: dict[str, Any], recipe: Any, last: Path) -> None:
    """Refuse to resume a run with labels of another recipe than it was trained on."""
    saved = rec.get("recipe")
    if saved == (None if recipe.assumed else recipe.to_dict()):
        return
    before = recipe_or_study(saved, path=last)
    if before.same_event(recipe):
        diff = [
            f"{k} {v!r} -> {recipe.to_dict()[k]!r}"
            for k, v in before.to_dict().items()
            if recipe.to_dict()[k] != v
        ]
        why = "the labels were remade (" + ", ".join(diff) + ")"
    else:
        why = f"the run was trained for {before.event}, the labels give {recipe.event}"
    raise InputError(f"cannot resume with labels of another recipe: {why}", path=last)


def _check_resumed_samples(rec: dict[str, Any], counts: dict[str, int], last: Path) -> None:
    """Refuse to resume on a training set of another size (the schedule depends on it)."""
    before = rec.get("counts", {}).get("train_samples")
    if before is not None and before != counts["train_samples"]:
        raise InputError(
            f"cannot resume: the training set had {before} samples and now has "
            f"{counts['train_samples']} (the learning-rate schedule depends on it)",
            path=last,
        )


def _check_resumed_world(rec: dict[str, Any], trainer: L.Trainer, last: Path) -> None:
    """Refuse to resume on another number of processes (the schedule depends on it)."""
    if rec.get("world_size", trainer.world_size) != trainer.world_size:
        raise InputError(
            f"cannot resume a run of {rec['world_size']} processes with {trainer.world_size} "
            "(the batches per epoch, and so the learning-rate schedule, depend on it)",
            path=last,
        )


# --------------------------------------------------------------------------- the run


def _check_imagenet_weights(config: TrainConfig) -> None:
    """Refuse, with advice, a pretrained run whose ImageNet weights are not on disk."""
    wf = Path(config.weights_path) if config.weights_path else weights_file(config.model)
    if not wf.is_file():
        create_model(config.model, pretrained=True, weights_path=config.weights_path)  # raises


def _model_and_loaders(
    config: TrainConfig, sets: RunSets, weights: tuple[float, float], *, resuming: bool
) -> tuple[Runtime, FlareClassifier, FlareDataModule]:
    """The seeded model, its LightningModule and the data loaders, on this machine's runtime."""
    L.seed_everything(config.seed, verbose=False)
    model = create_model(
        config.model,
        pretrained=config.pretrained and not resuming,
        input_adapter=config.input_adapter,
        weights_path=config.weights_path,
    )
    runtime = resolve_runtime(config)
    module = FlareClassifier(
        config,
        weights,
        model,
        channels_last=runtime.channels_last,
        compile=runtime.compile,
        selection=sets.selection,
    )

    def dataset(table: pd.DataFrame, augment: bool = False) -> FlareDataset:
        return FlareDataset(
            table,
            sets.source,
            image_size=config.image_size,
            augment=augment,
            seed=config.seed,
            as_uint8=True,
            rotation_degrees=config.rotation_degrees,
            device_augment=augment and runtime.device_augment,
        )

    datamodule = FlareDataModule(
        dataset(sets.train, augment=config.augment),
        dataset(sets.val),
        None if sets.holdout is None else dataset(sets.holdout),
        batch_size=config.batch_size,
        workers=config.workers,
        seed=config.seed,
        channels_last=runtime.channels_last,
    )
    return runtime, module, datamodule


def _start_line(
    config: TrainConfig, counts: dict[str, int], weights: tuple[float, float], runtime: Runtime
) -> str:
    return (
        f"training {config.model} on fold {config.fold}: {counts['train_flare']} flare + "
        f"{counts['train_noflare']} no-flare instances ({counts['train_samples']} samples), "
        f"{counts['val']} validation; class weights [{weights[0]:.4f}, {weights[1]:.4f}]; "
        f"{runtime.accelerator} x {runtime.n_devices}, {runtime.precision}, strategy "
        f"{runtime.strategy}"
    )


def _run_trainer(
    config: TrainConfig,
    runtime: Runtime,
    out: Path,
    recorder: RunRecorder,
    module: FlareClassifier,
    datamodule: FlareDataModule,
    *,
    resume_from: dict[str, Any] | None,
    recorded: dict[str, Any] | None,
    start_line: str,
    quiet: bool,
) -> L.Trainer:
    """Write ``config.json`` and train (from ``last.ckpt`` when resuming); Ctrl-C is exit 130.

    Lightning switches deterministic algorithms on for the whole process, and ignores SIGINT
    after a Ctrl-C; both are put back.
    """
    last = out / "last.ckpt"
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        trainer = _make_trainer(config, runtime, out, recorder, quiet)
        if resume_from is not None:
            _check_resumed_world(resume_from, trainer, last)
        if trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            for stale in (".last.ckpt.part", ".best.ckpt.part"):  # of a killed run: the
                (out / stale).unlink(missing_ok=True)  # folder is locked, no one else writes
            write_text_atomic(
                out / "config.json",
                json.dumps({**asdict(config), "recipe": recorded}, indent=2) + "\n",
            )
            _msg(start_line, quiet)
        with warnings.catch_warnings():
            # Lightning's hints about worker counts and logging intervals are not problems here.
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
            try:
                trainer.fit(
                    module,
                    datamodule=datamodule,
                    ckpt_path=last if resume_from is not None else None,
                    weights_only=True,
                )
            except SystemExit:
                # Lightning answers Ctrl-C with sys.exit(1) after its own clean-up: report an
                # interruption (exit status 130), as every fdflare command does
                if recorder.interrupted:
                    raise KeyboardInterrupt from None
                raise
    except InputError as exc:
        raise _clean_worker_error(exc) from None
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)
    return trainer


# --------------------------------------------------------------------------- the summary


def _write_summary(
    result: TrainResult,
    config: TrainConfig,
    recipe: Recipe,
    meta: dict[str, Any],
    *,
    selection: str,
    rule: str,
    quiet: bool,
) -> None:
    """Write ``summary.json`` (noting first when no epoch was selected)."""
    if result.best_epoch is None:
        note = "no epoch met the selection rule (TSS above 0 and the best so far): no best.ckpt"
        result.notes.append(note)
        _msg(note, quiet)
    summary = {
        "epochs_done": result.epochs_done,
        "best_epoch": result.best_epoch,
        "best_tss": result.best_tss,
        "best_hss2": result.best_hss2,
        "protocol": "study" if selection == "val" else "honest",
        "selected_on": selection,
        "selection_rule": rule,
        "average": config.average,
        "recipe": meta["recipe"],
        "event": recipe.event,
        "counts": meta["counts"],
        "class_weights": meta["class_weights"],
        "runtime": meta["runtime"],
        "notes": result.notes,
    }
    write_text_atomic(result.out / "summary.json", json.dumps(summary, indent=2) + "\n")


def _result_from_recorder(
    out: Path, recorder: RunRecorder, counts: dict[str, int], notes: list[str]
) -> TrainResult:
    """What a run that trained did: its epochs and the selected one."""
    best = recorder.best
    return TrainResult(
        out=out,
        epochs_done=len(recorder.history),
        best_epoch=best["epoch"],
        best_tss=best["tss"] if best["epoch"] else None,
        best_hss2=best["hss2"] if best["epoch"] else None,
        best_checkpoint=(out / "best.ckpt") if best["epoch"] else None,
        last_checkpoint=out / "last.ckpt",
        counts=counts,
        notes=notes,
    )


def _result_from_record(out: Path, rec: dict[str, Any], notes: list[str]) -> TrainResult:
    """What a finished run did, from its ``last.ckpt`` record (nothing left to resume)."""
    best = rec.get("best", {})
    ok = best.get("epoch") is not None
    return TrainResult(
        out=out,
        epochs_done=int(rec.get("epoch", 0)),
        best_epoch=best.get("epoch"),
        best_tss=best.get("tss") if ok else None,
        best_hss2=best.get("hss2") if ok else None,
        best_checkpoint=(out / "best.ckpt") if ok else None,
        last_checkpoint=out / "last.ckpt",
        counts=dict(rec.get("counts", {})),
        notes=notes,
    )


def _clean_worker_error(exc: InputError) -> FdflareError:
    """Turn an error re-raised from a loader worker (message with a traceback) into its own message."""
    text = str(exc)
    marker = "fdflare.core.errors.InputError: "
    if marker in text:
        return InputError(text.rsplit(marker, 1)[1].strip().splitlines()[0])
    return exc


def _make_trainer(
    config: TrainConfig, runtime: Runtime, out: Path, recorder: RunRecorder, quiet: bool
) -> L.Trainer:
    import importlib.util
    import logging

    from lightning.pytorch.plugins.environments import SLURMEnvironment

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    show_bar = not quiet and sys.stderr.isatty()
    callbacks: list[Callback] = [*_averaging(config), recorder]
    if show_bar:
        callbacks.append(StderrProgressBar())
    logger: Any = False
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=str(out), name="tb", version="")
    plugins: Any = [SLURMEnvironment(auto_requeue=False)] if runtime.slurm else None
    try:
        return _trainer(config, runtime, out, logger, callbacks, show_bar, plugins)
    except (ValueError, TypeError, RuntimeError) as exc:
        # Lightning's refusal of a combination (precision, devices, strategy) on this machine
        text = " ".join(str(exc).split())
        raise UsageError(
            f"Lightning cannot run --accelerator {runtime.accelerator} --devices "
            f"{runtime.devices} --precision {runtime.precision} here: {text}"
        ) from None


def _averaging(config: TrainConfig) -> list[Callback]:
    """Lightning's weight averaging (torch's ``AveragedModel``) for ``config.average``.

    The averaged weights are swapped in for validation, saved as the checkpoints'
    ``state_dict`` (so selection, ``predict`` and ``forecast`` all see them) and copied into
    the model when training ends.
    """
    if config.average == "none":
        return []
    from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging

    if config.average == "ema":
        return [EMAWeightAveraging(decay=config.ema_decay)]

    class SecondHalfAverage(WeightAveraging):
        """SWA's equal average of every step's weights from the second half of training."""

        def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
            total = int(self._trainer.estimated_stepping_batches)
            return step_idx is not None and step_idx >= total // 2

        def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
            self._trainer = trainer
            self._swapped = False
            super().setup(trainer, pl_module, stage)

        def _started(self) -> bool:
            model = self._average_model
            return model is not None and int(model.n_averaged) > 0

        # before the first update the average holds the initial weights: score and save
        # the current ones until then
        def on_validation_epoch_start(
            self, trainer: L.Trainer, pl_module: L.LightningModule
        ) -> None:
            self._swapped = self._started()
            if self._swapped:
                super().on_validation_epoch_start(trainer, pl_module)

        def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if self._swapped:
                super().on_validation_epoch_end(trainer, pl_module)
            self._swapped = False

        def on_save_checkpoint(
            self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
        ) -> None:
            if self._started():
                super().on_save_checkpoint(trainer, pl_module, checkpoint)

    return [SecondHalfAverage()]


def _trainer(
    config: TrainConfig,
    runtime: Runtime,
    out: Path,
    logger: Any,
    callbacks: list[Callback],
    show_bar: bool,
    plugins: Any,
) -> L.Trainer:
    return L.Trainer(
        accelerator=runtime.accelerator,
        devices=runtime.devices,
        num_nodes=runtime.num_nodes,
        strategy=runtime.strategy,
        precision=runtime.precision,  # type: ignore[arg-type]
        max_epochs=config.epochs,
        deterministic=runtime.deterministic,
        benchmark=not runtime.deterministic,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        default_root_dir=str(out),
        plugins=plugins,
        log_every_n_steps=10,
    )


def read_metrics(out: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a run's ``metrics.csv``."""
    path = Path(out) / "metrics.csv"
    if not path.is_file():
        raise MissingDataError(f"{path} does not exist (run `fdflare train` first)")
    return read_csv_table(path, what="metrics table")
