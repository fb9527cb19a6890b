"""Per-epoch bookkeeping: the selection rule, checkpoints, ``metrics.csv`` and the progress bar."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import shutil
import sys
import time
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from fdflare.core.io import atomic_open
from fdflare.training.checkpoint import CHECKPOINT_FORMAT
from fdflare.training.config import TrainConfig
from fdflare.training.module import FlareClassifier

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_tss",
    "val_hss2",
    "lr",
    "train_seconds",
    "val_seconds",
)
HOLDOUT_COLUMNS = ("holdout_loss", "holdout_tss", "holdout_hss2")
#: epochs averaged by the ``smoothed_tss`` selection rule (the current one and those before)
SMOOTHING_EPOCHS = 3


def selection_columns(selection: str) -> tuple[str, ...]:
    """The metrics.csv columns of the selection set (none when it is the validation fold)."""
    if selection in ("val", "none"):
        return ()
    return tuple(f"{selection}_{m}" for m in ("loss", "tss", "hss2"))


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars, written to stderr so stdout stays clean."""

    def init_train_tqdm(self) -> Any:
        """Lightning's bar, on stderr."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        """Lightning's bar, on stderr."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_sanity_tqdm(self) -> Any:
        """Lightning's bar, on stderr."""
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()


class RunRecorder(Callback):
    """Per-epoch bookkeeping: timing, the selection rule, checkpoints and ``metrics.csv``.

    Its state (every epoch's row and the best scores so far) is saved in the checkpoints,
    so a resumed run rewrites ``metrics.csv`` and applies the selection rule exactly as an
    uninterrupted one.

    Args:
        out: the run folder.
        config: the run's config.
        meta: extra facts recorded in every checkpoint (counts, class weights...).
        quiet: no per-epoch line on stderr.
        selection: the set the epoch is selected on: ``val`` (the study), ``holdout`` or
            ``select`` (see :func:`~fdflare.training.config.selection_set`).
        rule: the selection rule: ``study``, ``loss`` or ``smoothed_tss``.
    """

    def __init__(
        self,
        out: Path,
        config: TrainConfig,
        meta: dict[str, Any],
        quiet: bool = False,
        *,
        selection: str = "val",
        rule: str = "study",
    ) -> None:
        self.out, self.config, self.meta, self.quiet = out, config, meta, quiet
        self.selection, self.rule = selection, rule
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"tss": 0.0, "hss2": 0.0, "epoch": None}
        self._t0 = self._t1 = 0.0
        self._train_seconds = 0.0
        self._val_seconds = 0.0
        self._epoch_timed = -1
        self.interrupted = False

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Note a Ctrl-C: Lightning turns it into a silent exit with status 1, fdflare into 130."""
        if isinstance(exception, KeyboardInterrupt):
            self.interrupted = True

    # -- Lightning state
    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"history": [dict(r) for r in self.history], "best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.history = [dict(r) for r in state_dict.get("history", [])]
        self.best = dict(state_dict.get("best", self.best))

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add fdflare's record: format, config, epoch, scores, best, counts."""
        checkpoint["fdflare"] = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "epoch": len(self.history),
            "scores": dict(self.history[-1]) if self.history else {},
            "best": dict(self.best),
            "world_size": trainer.world_size,
            **self.meta,
        }

    # -- timing
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._t0 = time.perf_counter()
        self._epoch_timed = trainer.current_epoch

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the clock here when Lightning skipped ``on_train_epoch_start`` (first epoch after resuming)."""
        if self._epoch_timed != trainer.current_epoch:
            self.on_train_epoch_start(trainer, pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._t1 = time.perf_counter()
        self._train_seconds = self._t1 - self._t0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._val_seconds = time.perf_counter() - self._t1

    # -- the epoch's record
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the epoch, apply the selection rule, save checkpoints, rewrite metrics.csv."""
        module = typing.cast(FlareClassifier, pl_module)
        scores = module.epoch_scores
        epoch = trainer.current_epoch + 1
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": module.train_loss(),
            "val_loss": scores.get("val_loss"),
            "val_tss": scores.get("val_tss"),
            "val_hss2": scores.get("val_hss2"),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            "train_seconds": self._train_seconds,
            "val_seconds": self._val_seconds,
        }
        sel = self.selection
        for key in selection_columns(sel):
            row[key] = scores.get(key)
        for key in ("tp", "fp", "tn", "fn"):
            row[f"val_{key}"] = int(scores.get(f"val_{key}") or 0)
        tss, hss2 = scores.get(f"{sel}_tss"), scores.get(f"{sel}_hss2")
        if sel == "none":  # nothing to select on: the validation scores, for the record
            tss, hss2 = scores.get("val_tss"), scores.get("val_hss2")
        score: float | None
        if self.rule == "last":
            improved, score = True, float(epoch)
        elif self.rule == "loss":
            loss = scores.get(f"{sel}_loss")
            improved = (
                loss is not None
                and not math.isnan(loss)
                and (self.best.get("loss") is None or loss < self.best["loss"])
            )
            score = loss
        elif self.rule == "smoothed_tss":
            window = [r.get(f"{sel}_tss") for r in self.history[-(SMOOTHING_EPOCHS - 1) :]]
            recent = [0.0 if v is None or math.isnan(v) else float(v) for v in [*window, tss]]
            score = sum(recent) / len(recent)
            improved = tss is not None and score > self.best.get("score", 0.0)
        else:
            score = tss
            improved = is_improvement(
                self.best["tss"], self.best["hss2"], tss, hss2, self.config.hss2_tolerance
            )
        if improved:
            self.best = {"tss": tss, "hss2": hss2, "epoch": epoch, "score": score}
            if self.rule == "loss":
                self.best["loss"] = score
        row["selected"] = int(improved)
        self.history.append(row)

        last, best = self.out / "last.ckpt", self.out / "best.ckpt"
        tmp = self.out / ".last.ckpt.part"  # the run folder is locked: one writer
        try:
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                os.replace(tmp, last)
        except OSError as exc:  # a full disk: name the checkpoint, not the temporary file
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(last)) from exc
        if trainer.is_global_zero:
            if improved:
                try:
                    _link_or_copy(last, best)
                except OSError as exc:
                    if exc.errno is None:
                        raise
                    raise OSError(exc.errno, exc.strerror or str(exc), str(best)) from exc
            self._write_metrics()
            if trainer.logger is not None:
                trainer.logger.log_metrics(
                    {k: v for k, v in row.items() if isinstance(v, float) and k != "epoch"},
                    step=epoch,
                )
            if not self.quiet:
                print(_epoch_line(row, self.config.epochs, sel), file=sys.stderr, flush=True)
        trainer.strategy.barrier("fdflare-epoch-end")

    def _write_metrics(self) -> None:
        columns = list(METRIC_COLUMNS)
        columns += list(selection_columns(self.selection))
        columns += ["val_tp", "val_fp", "val_tn", "val_fn", "selected"]
        with atomic_open(self.out / "metrics.csv", "w") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(columns)
            for r in self.history:
                writer.writerow(["" if r.get(c) is None else _fmt_cell(r.get(c)) for c in columns])


def is_improvement(
    best_tss: float,
    best_hss2: float,
    tss: float | None,
    hss2: float | None,
    tolerance: float = 0.02,
) -> bool:
    """The study's selection rule: TSS above the best so far, HSS2 at most ``tolerance`` below it.

    Both bests start at 0, so an epoch needs a positive TSS to be kept; an undefined score
    (``None``: a class absent from the selection set) never is.
    """
    if tss is None or hss2 is None or math.isnan(tss) or math.isnan(hss2):
        return False
    return tss > best_tss and (hss2 - best_hss2) >= -tolerance


def _fmt_cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _epoch_line(row: dict[str, Any], epochs: int, sel: str) -> str:
    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    text = (
        f"epoch {row['epoch']}/{epochs}: train_loss {f(row['train_loss'])} val_loss {f(row['val_loss'])} "
        f"val_tss {f(row['val_tss'])} val_hss2 {f(row['val_hss2'])}"
    )
    if sel not in ("val", "none"):
        text += f" {sel}_tss {f(row[sel + '_tss'])} {sel}_hss2 {f(row[sel + '_hss2'])}"
    text += f" lr {row['lr']:.3g} ({row['train_seconds']:.1f} s + {row['val_seconds']:.1f} s)"
    return text + (" [kept as best]" if row["selected"] else "")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, else copy), atomically."""
    tmp = dst.with_name(f".{dst.name}.part")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        try:
            shutil.copyfile(src, tmp)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    os.replace(tmp, dst)
