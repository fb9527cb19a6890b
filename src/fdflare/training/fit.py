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
  from training, and the validation fold is reported untouched by selection.

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

import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
import time
import typing
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from fdflare.core.io import atomic_open, write_text_atomic
from fdflare.data.dataset import (
    EpochSampler,
    FlareDataset,
    check_images,
    class_weights,
    fold_tables,
    open_images,
)
from fdflare.core.errors import FdflareError, InputError, MissingDataError
from fdflare.analysis.metrics import skill_scores
from fdflare.models.networks import FlareNet, create_model, list_models, weights_file

CHECKPOINT_FORMAT = 1
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


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Everything a training run depends on, with the study's defaults.

    Recipe fields (a resumed run must keep them):

    Attributes:
        model: architecture (:func:`fdflare.models.networks.list_models`).
        pretrained: start from ImageNet weights (read from the torch hub cache).
        input_adapter: ``conv`` (the study's extra 1->3 convolution) or ``sum`` (RGB kernels
            of the first convolution summed to one channel).
        fold: cross-validation fold, 1..4.
        image_size: image width and height in pixels; other sizes are an error.
        epochs: training epochs.
        batch_size: images per batch (per process under DDP).
        lr: SGD learning rate (``OneCycleLR`` overrides it from the first step).
        weight_decay: SGD weight decay.
        max_lr: ``OneCycleLR`` peak learning rate.
        anneal_strategy: ``OneCycleLR`` annealing, ``cos`` or ``linear``.
        pct_start: ``OneCycleLR`` share of steps spent increasing the learning rate.
        div_factor: ``OneCycleLR`` initial lr = max_lr / div_factor.
        final_div_factor: ``OneCycleLR`` final lr = initial lr / final_div_factor.
        cycle_momentum: let ``OneCycleLR`` cycle SGD's momentum (as the study, by default).
        base_momentum: lower momentum of the cycle.
        max_momentum: upper momentum of the cycle.
        augment: the study's augmentation (flare x4, no-flare x2); ``False`` trains on originals.
        rotation_degrees: the augmentation's random rotations lie within +-this angle.
        threshold: P(flare) threshold of TSS and HSS2.
        hss2_tolerance: largest HSS2 drop from the best so far that still allows selection.
        holdout_fraction: 0 selects on the validation fold (the study); ``f`` > 0 holds out
            the latest ``f`` of the training instances (by image time) for selection.
        seed: seed of initialisation, shuffling, augmentation and dropout (40 in the study).

    Runtime fields (free to change on resume):

    Attributes:
        labels: label folder (``Fold{k}_{train,val}.csv`` or ``labels.csv``).
        images: image folder or array store.
        image_ext: replace the labels' image extension (e.g. ``png``).
        decoder: ``pil`` or ``torchvision``.
        array_store: read the packed array of ``fdflare prepare --array-store`` when the
            image folder holds one (faster), else the image files.
        skip_missing: drop rows whose image is missing (counted and reported).
        check_headers: check every image's size and mode up front (else only the first).
        weights_path: an explicit ImageNet weights file.
        workers: data-loading worker processes per training process.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``, ``mps``).
        devices: devices per node (``auto`` or a number).
        num_nodes: nodes.
        precision: ``auto`` (bf16-mixed on CUDA with bf16, else 32-true) or a Lightning value.
        deterministic: deterministic algorithms; ``None``: on CPU only.
        channels_last: channels-last memory format (faster convolutions on recent GPUs).
    """

    model: str = "alexnet"
    pretrained: bool = True
    input_adapter: str = "conv"
    fold: int = 1
    image_size: int = 512
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-3
    max_lr: float = 1e-5
    anneal_strategy: str = "cos"
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    augment: bool = True
    rotation_degrees: float = 5.0
    threshold: float = 0.5
    hss2_tolerance: float = 0.02
    holdout_fraction: float = 0.0
    seed: int = 40
    labels: str = ""
    images: str = ""
    image_ext: str | None = None
    decoder: str = "pil"
    array_store: bool = True
    skip_missing: bool = False
    check_headers: bool = True
    weights_path: str | None = None
    workers: int = 4
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    deterministic: bool | None = None
    channels_last: bool = False

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> TrainConfig:
        """Build a config from a mapping (e.g. a JSON file), checking names and types."""
        return cls().updated(values, path=path)

    def updated(
        self, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> TrainConfig:
        """Return a copy with ``values`` applied, checking names and types.

        Raises:
            InputError: an unknown name or a value of the wrong type, naming the field.
        """
        hints = typing.get_type_hints(type(self))
        known = {f.name for f in fields(self)}
        new = asdict(self)
        for key, value in values.items():
            if key not in known:
                raise InputError(
                    f"unknown setting (known: {', '.join(sorted(known))})", path=path, field=key
                )
            new[key] = _coerce(value, hints[key], key, path)
        cfg = type(self)(**new)
        cfg.validate(path=path)
        return cfg

    def validate(self, *, path: str | os.PathLike[str] | None = None) -> None:
        """Check value ranges.

        Raises:
            InputError: naming the field.
        """
        checks: list[tuple[bool, str, str]] = [
            (
                self.model in list_models(),
                "model",
                f"unknown model; choose one of {', '.join(list_models())}",
            ),
            (self.input_adapter in ("conv", "sum"), "input_adapter", "must be conv or sum"),
            (self.fold >= 1, "fold", "must be 1 or more"),
            (self.image_size >= 16, "image_size", "must be 16 or more"),
            (self.epochs >= 1, "epochs", "must be 1 or more"),
            (self.batch_size >= 1, "batch_size", "must be 1 or more"),
            (
                self.max_lr > 0 and self.lr >= 0 and self.weight_decay >= 0,
                "max_lr",
                "rates must be positive",
            ),
            (self.anneal_strategy in ("cos", "linear"), "anneal_strategy", "must be cos or linear"),
            (0 < self.pct_start < 1, "pct_start", "must lie in (0, 1)"),
            (0 < self.threshold < 1, "threshold", "must lie in (0, 1)"),
            (0 <= self.holdout_fraction < 1, "holdout_fraction", "must lie in [0, 1)"),
            (self.workers >= 0, "workers", "must be 0 or more"),
            (self.num_nodes >= 1, "num_nodes", "must be 1 or more"),
            (self.decoder in ("pil", "torchvision"), "decoder", "must be pil or torchvision"),
            (
                self.devices == "auto" or (isinstance(self.devices, int) and self.devices >= 1),
                "devices",
                "must be auto or a number of 1 or more",
            ),
        ]
        for ok, name, message in checks:
            if not ok:
                raise InputError(f"{getattr(self, name)!r}: {message}", path=path, field=name)


RUNTIME_FIELDS = frozenset(
    {
        "labels",
        "images",
        "image_ext",
        "decoder",
        "array_store",
        "skip_missing",
        "check_headers",
        "weights_path",
        "workers",
        "accelerator",
        "devices",
        "num_nodes",
        "precision",
        "deterministic",
        "channels_last",
    }
)


def _coerce(value: Any, hint: Any, key: str, path: str | os.PathLike[str] | None) -> Any:
    """Check ``value`` against a field's type hint; ints are accepted for floats."""
    args = typing.get_args(hint) or (hint,)
    if value is None and type(None) in args:
        return None
    for t in args:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in args)
    raise InputError(f"{value!r} is not a valid value (expected {names})", path=path, field=key)


def load_config(path: str | os.PathLike[str], base: TrainConfig | None = None) -> TrainConfig:
    """Read a JSON config file (any subset of :class:`TrainConfig` fields) over ``base``.

    Raises:
        InputError: unreadable JSON, an unknown field or a wrong type, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file", path=path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text file ({exc})", path=path) from exc
    if not isinstance(values, dict):
        raise InputError("a config file holds one JSON object of settings", path=path)
    return (base or TrainConfig()).updated(values, path=path)


def default_config_path() -> Path:
    """The packaged default config (the study's recipe), ``fdflare/configs/default.json``."""
    return Path(__file__).parents[1] / "configs" / "default.json"


# --------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """How Lightning will run: resolved from the config and the machine."""

    accelerator: str
    devices: int | str
    n_devices: int
    num_nodes: int
    strategy: str
    precision: str
    deterministic: bool
    slurm: bool

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def resolve_runtime(config: TrainConfig) -> Runtime:
    """Pick accelerator, precision and strategy for this machine (see :class:`TrainConfig`)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    acc = config.accelerator
    cuda = torch.cuda.is_available() and acc in ("auto", "gpu", "cuda")
    mps = not cuda and acc in ("auto", "mps") and torch.backends.mps.is_available()
    on_cpu = not cuda and not mps
    if config.precision != "auto":
        precision = config.precision
    elif cuda and torch.cuda.is_bf16_supported():
        precision = "bf16-mixed"
    else:
        precision = "32-true"
    if isinstance(config.devices, int):
        n_devices = config.devices
    elif cuda:
        n_devices = torch.cuda.device_count()
    else:
        n_devices = 1
    strategy = "ddp" if n_devices > 1 or config.num_nodes > 1 else "auto"
    deterministic = on_cpu if config.deterministic is None else config.deterministic
    return Runtime(
        accelerator="cpu" if on_cpu and acc == "auto" else acc,
        devices=config.devices,
        n_devices=n_devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=precision,
        deterministic=deterministic,
        slurm=SLURMEnvironment.detect(),
    )


# --------------------------------------------------------------------------- Lightning parts


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class FlareClassifier(L.LightningModule):
    """The study's training and validation steps around a :class:`~fdflare.models.networks.FlareNet`.

    Args:
        config: the run's config.
        weights: NLL class weights ``(w_noflare, w_flare)``.
        model: the network; by default built from ``config``.
    """

    def __init__(
        self, config: TrainConfig, weights: tuple[float, float], model: FlareNet | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.model = model if model is not None else create_model(config.model, pretrained=False)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.register_buffer(
            "class_weights", torch.tensor(weights, dtype=torch.float32), persistent=False
        )
        self._train_sum = torch.zeros(2)  # loss sum, batches
        self._epoch_begun = -1
        self._val: dict[int, torch.Tensor] = {}  # per loader: loss sum, batches, tp, fp, tn, fn
        self.epoch_scores: dict[str, float | None] = {}

    @property
    def weights(self) -> torch.Tensor:
        """The NLL class weights ``[w_noflare, w_flare]`` (a buffer: on the module's device)."""
        return typing.cast(torch.Tensor, self.class_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, 2]``."""
        return self.model(x)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """At an epoch's first batch, seed dropout from (seed, epoch, rank) and reset the loss sum.

        Done here rather than in ``on_train_epoch_start``, which Lightning skips for the first
        epoch after resuming from an end-of-epoch checkpoint: a resumed run draws the same
        dropout masks as an uninterrupted one.
        """
        if self._epoch_begun != self.current_epoch:
            self._epoch_begun = self.current_epoch
            torch.manual_seed(_epoch_seed(self.config.seed, self.current_epoch, self.global_rank))
            self._train_sum = torch.zeros(2, device=self.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:  # noqa: D102
        x, y = batch
        loss = F.nll_loss(self.model(x), y, weight=self.weights)
        self._train_sum += torch.stack([loss.detach().float(), torch.ones((), device=loss.device)])
        if (
            self.trainer.progress_bar_callback is not None
        ):  # a value for the bar costs a device sync
            self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return loss

    def train_loss(self) -> float:
        """Mean batch loss of the epoch so far, over all processes (call on every rank)."""
        total = self.trainer.strategy.reduce(self._train_sum.clone(), reduce_op="sum")
        return float(total[0] / total[1]) if float(total[1]) > 0 else float("nan")

    def on_validation_epoch_start(self) -> None:  # noqa: D102
        self._val = {}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:  # noqa: D102
        x, y = batch
        logp = self.model(x).float()
        loss = F.nll_loss(logp, y, weight=self.weights)
        pred = logp[:, 1].exp() >= self.config.threshold
        truth = y.bool()
        row = torch.stack(
            [
                loss.detach(),
                torch.ones((), device=logp.device),
                (pred & truth).sum().float(),
                (pred & ~truth).sum().float(),
                (~pred & ~truth).sum().float(),
                (~pred & truth).sum().float(),
            ]
        )  # float32: exact for counts below 2**24, and MPS has no float64
        acc = self._val.get(dataloader_idx)
        self._val[dataloader_idx] = row if acc is None else acc + row

    def on_validation_epoch_end(self) -> None:
        """Reduce over processes and compute loss, TSS and HSS2 per loader (val, holdout)."""
        n_loaders = 2 if self.config.holdout_fraction > 0 else 1
        scores: dict[str, float | None] = {}
        for idx, prefix in zip(range(n_loaders), ("val", "holdout"), strict=False):
            acc = self._val.get(idx, torch.zeros(6, device=self.device))
            acc = self.trainer.strategy.reduce(acc, reduce_op="sum")
            loss_sum, batches, tp, fp, tn, fn = (float(v) for v in acc.cpu())
            tss, hss2, _notes = skill_scores(int(tp), int(fp), int(tn), int(fn))
            scores[f"{prefix}_loss"] = loss_sum / batches if batches else None
            scores[f"{prefix}_tss"] = tss
            scores[f"{prefix}_hss2"] = hss2
            scores[f"{prefix}_tp"], scores[f"{prefix}_fp"] = tp, fp
            scores[f"{prefix}_tn"], scores[f"{prefix}_fn"] = tn, fn
        self.epoch_scores = scores

    def configure_optimizers(self) -> Any:
        """SGD with weight decay and ``OneCycleLR`` stepped every batch."""
        c = self.config
        optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=c.max_lr,
            total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=c.pct_start,
            anneal_strategy=c.anneal_strategy,  # type: ignore[arg-type]  # checked by validate()
            cycle_momentum=c.cycle_momentum,
            base_momentum=c.base_momentum,
            max_momentum=c.max_momentum,
            div_factor=c.div_factor,
            final_div_factor=c.final_div_factor,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class FlareDataModule(L.LightningDataModule):
    """Loaders over prepared datasets, sharded by :class:`~fdflare.data.dataset.EpochSampler`.

    Args:
        train: the augmented training set.
        val: the validation fold.
        holdout: the selection set, when held out from training.
        batch_size: images per batch per process.
        workers: loader worker processes.
        seed: shuffle seed.
        channels_last: hand batches to the model in channels-last memory format.

    Batches of uint8 images are scaled to [0, 1] after the copy to the device.
    """

    def __init__(
        self,
        train: FlareDataset,
        val: FlareDataset,
        holdout: FlareDataset | None = None,
        *,
        batch_size: int = 64,
        workers: int = 4,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.holdout_set = train, val, holdout
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.channels_last = channels_last

    def _loader(self, dataset: FlareDataset, *, train: bool) -> torch.utils.data.DataLoader:
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        sampler = EpochSampler(
            len(dataset), shuffle=train, seed=self.seed, rank=rank, world_size=world, pad=train
        )
        cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=cuda,
            persistent_workers=self.workers > 0,
            prefetch_factor=4 if self.workers > 0 else None,
            drop_last=False,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Scale uint8 images to [0, 1] on the device (``ToTensor`` semantics)."""
        x, y = batch
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def train_dataloader(self) -> torch.utils.data.DataLoader:  # noqa: D102
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> list[torch.utils.data.DataLoader]:  # noqa: D102
        loaders = [self._loader(self.val_set, train=False)]
        if self.holdout_set is not None:
            loaders.append(self._loader(self.holdout_set, train=False))
        return loaders


class _StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars, written to stderr so stdout stays clean."""

    def init_train_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_sanity_tqdm(self) -> Any:
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
    """

    def __init__(
        self, out: Path, config: TrainConfig, meta: dict[str, Any], quiet: bool = False
    ) -> None:
        self.out, self.config, self.meta, self.quiet = out, config, meta, quiet
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"tss": 0.0, "hss2": 0.0, "epoch": None}
        self._t0 = self._t1 = 0.0
        self._train_seconds = 0.0
        self._val_seconds = 0.0
        self._epoch_timed = -1

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
        sel = "holdout" if self.config.holdout_fraction > 0 else "val"
        if sel == "holdout":
            for key in HOLDOUT_COLUMNS:
                row[key] = scores.get(key)
        for key in ("tp", "fp", "tn", "fn"):
            row[f"val_{key}"] = int(scores.get(f"val_{key}") or 0)
        tss, hss2 = scores.get(f"{sel}_tss"), scores.get(f"{sel}_hss2")
        improved = is_improvement(
            self.best["tss"], self.best["hss2"], tss, hss2, self.config.hss2_tolerance
        )
        if improved:
            self.best = {"tss": tss, "hss2": hss2, "epoch": epoch}
        row["selected"] = int(improved)
        self.history.append(row)

        last, best = self.out / "last.ckpt", self.out / "best.ckpt"
        tmp = self.out / ".last.ckpt.part"
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, last)
            if improved:
                _link_or_copy(last, best)
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
        if self.config.holdout_fraction > 0:
            columns += list(HOLDOUT_COLUMNS)
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
    if sel == "holdout":
        text += f" holdout_tss {f(row['holdout_tss'])} holdout_hss2 {f(row['holdout_hss2'])}"
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
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# --------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)`` on CPU.

    ``mmap=True`` maps the tensors from the file instead of reading them.

    Raises:
        InputError: the file is missing, corrupt or not a dict.
    """
    from fdflare.models.networks import _torch_load

    path = Path(path)
    if not path.is_file():
        raise InputError("no such checkpoint file", path=path)
    ckpt = _torch_load(path, what="checkpoint", mmap=mmap)
    if not isinstance(ckpt, dict):
        raise InputError("not a checkpoint (expected a dict of state)", path=path)
    return ckpt


def checkpoint_record(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return fdflare's record in a checkpoint (config, epoch, scores...).

    Raises:
        InputError: the checkpoint was not written by ``fdflare train``.
    """
    rec = ckpt.get("fdflare")
    if not isinstance(rec, dict) or "config" not in rec:
        raise InputError("not an fdflare training checkpoint (no 'fdflare' record)", path=path)
    if rec.get("format", 0) > CHECKPOINT_FORMAT:
        raise InputError(
            f"checkpoint format {rec.get('format')} is newer than this fdflare reads ({CHECKPOINT_FORMAT})",
            path=path,
        )
    return rec


# --------------------------------------------------------------------------- fit


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


def holdout_split(
    table: pd.DataFrame, fraction: float, *, path: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split off the latest ``fraction`` of a table by image time: ``(train_mask, holdout_mask)``.

    Raises:
        InputError: a label whose time cannot be read from its name (naming file and line).
    """
    from fdflare.core.paths import parse_image_times

    if "time" in table.columns:
        times = pd.to_datetime(table["time"], errors="coerce")
    else:
        times, _ = parse_image_times(table["label"])
    t = pd.DatetimeIndex(times)
    bad = t.isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            "cannot read the image time from this label (needed for the held-out split)",
            path=path,
            line=i + 2,
            field="label",
        )
    n_hold = math.ceil(fraction * len(table))
    order = np.argsort(t.asi8, kind="stable")
    hold = np.zeros(len(table), dtype=bool)
    hold[order[len(table) - n_hold :]] = True
    return ~hold, hold


def _msg(text: str, quiet: bool) -> None:
    if not quiet and getattr(rank_zero_only, "rank", 0) == 0:
        print(text, file=sys.stderr, flush=True)


def _prepare_table(
    table: pd.DataFrame,
    path: Path,
    source: Any,
    config: TrainConfig,
    what: str,
    notes: list[str],
    quiet: bool,
) -> tuple[pd.DataFrame, int]:
    check = check_images(
        table,
        source,
        image_size=config.image_size,
        skip_missing=config.skip_missing,
        table_path=path,
        check_headers=config.check_headers,
    )
    if check.missing:
        shown = ", ".join(check.missing[:5])
        note = f"{what}: skipped {len(check.missing)} of {len(table)} rows whose image is missing (e.g. {shown})"
        notes.append(note)
        _msg(note, quiet)
        table = table[check.keep].reset_index(drop=True)
    return table, len(check.missing)


def _check_classes(table: pd.DataFrame, path: Path, what: str) -> None:
    n_fl = int(table["target"].sum())
    n_nf = len(table) - n_fl
    if n_fl == 0 or n_nf == 0:
        raise InputError(
            f"the {what} set has no {'flare (target 1)' if n_fl == 0 else 'no-flare (target 0)'} "
            f"instances ({n_fl} flare, {n_nf} no-flare): both classes are needed",
            path=path,
            field="target",
        )


def _recipe_diff(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    now = asdict(config)
    return [
        f"{k}: run has {saved.get(k)!r}, now {now[k]!r}"
        for k in now
        if k not in RUNTIME_FIELDS and k in saved and saved[k] != now[k]
    ]


def fit(
    config: TrainConfig, out: str | os.PathLike[str], *, resume: bool = False, quiet: bool = False
) -> TrainResult:
    """Train one model on one fold into the run folder ``out``.

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
    out = Path(out)
    last = out / "last.ckpt"
    notes: list[str] = []
    resuming = False
    rec: dict[str, Any] = {}
    if last.exists():
        if not resume:
            raise InputError(
                "this folder already holds a training run; pass --resume to continue it or choose another --out",
                path=out,
            )
        rec = checkpoint_record(read_checkpoint(last, mmap=True), last)
        diff = _recipe_diff(rec["config"], config)
        if diff:
            raise InputError("cannot resume with a different recipe: " + "; ".join(diff), path=last)
        if int(rec.get("epoch", 0)) >= config.epochs:
            _msg(f"{out}: all {config.epochs} epochs are done; nothing to resume", quiet)
            return _result_from_record(out, rec, notes)
        resuming = True
        _msg(f"resuming {out} after epoch {rec.get('epoch')}", quiet)
    elif resume:
        _msg(f"{out}: no last.ckpt to resume from; starting a new run", quiet)

    # ImageNet weights first: fail before touching the data.
    if config.pretrained and not resuming:
        wf = Path(config.weights_path) if config.weights_path else weights_file(config.model)
        if not wf.is_file():
            create_model(
                config.model, pretrained=True, weights_path=config.weights_path
            )  # raises with advice

    if not config.labels or not config.images:
        raise InputError(
            "both labels and images must be given (--labels DIR --images DIR)", field="labels"
        )
    tables = fold_tables(config.labels, config.fold)
    source = open_images(
        config.images, ext=config.image_ext, decoder=config.decoder, array_store=config.array_store
    )
    train_df, n_miss_train = _prepare_table(
        tables.train, tables.train_path, source, config, "training", notes, quiet
    )
    val_df, n_miss_val = _prepare_table(
        tables.val, tables.val_path, source, config, "validation", notes, quiet
    )
    holdout_df = None
    if config.holdout_fraction > 0:
        keep, hold = holdout_split(train_df, config.holdout_fraction, path=str(tables.train_path))
        holdout_df = train_df[hold].reset_index(drop=True)
        train_df = train_df[keep].reset_index(drop=True)
        if holdout_df["target"].nunique() < 2:
            note = "the held-out selection set lacks one class: TSS is undefined and no epoch can be selected"
            notes.append(note)
            _msg(note, quiet)
    _check_classes(train_df, tables.train_path, "training")
    if len(val_df) == 0:
        raise InputError("the validation set is empty", path=tables.val_path)

    n_fl = int(train_df["target"].sum())
    n_nf = len(train_df) - n_fl
    copies = (4, 2) if config.augment else (1, 1)
    weights = class_weights(n_fl, n_nf, *copies)
    counts = {
        "train": len(train_df),
        "train_flare": n_fl,
        "train_noflare": n_nf,
        "train_samples": copies[0] * n_fl + copies[1] * n_nf,
        "val": len(val_df),
        "val_flare": int(val_df["target"].sum()),
        "holdout": 0 if holdout_df is None else len(holdout_df),
        "skipped_missing": n_miss_train + n_miss_val,
    }
    before = rec.get("counts", {}).get("train_samples")
    if resuming and before is not None and before != counts["train_samples"]:
        raise InputError(
            f"cannot resume: the training set had {before} samples and now has "
            f"{counts['train_samples']} (the learning-rate schedule depends on it)",
            path=last,
        )

    L.seed_everything(config.seed, verbose=False)
    model = create_model(
        config.model,
        pretrained=config.pretrained and not resuming,
        input_adapter=config.input_adapter,
        weights_path=config.weights_path,
    )
    module = FlareClassifier(config, weights, model)

    def dataset(table: pd.DataFrame, augment: bool = False) -> FlareDataset:
        return FlareDataset(
            table,
            source,
            image_size=config.image_size,
            augment=augment,
            seed=config.seed,
            as_uint8=True,
            rotation_degrees=config.rotation_degrees,
        )

    datamodule = FlareDataModule(
        dataset(train_df, augment=config.augment),
        dataset(val_df),
        None if holdout_df is None else dataset(holdout_df),
        batch_size=config.batch_size,
        workers=config.workers,
        seed=config.seed,
        channels_last=config.channels_last,
    )

    runtime = resolve_runtime(config)
    meta = {"counts": counts, "class_weights": list(weights), "runtime": runtime.to_dict()}
    recorder = RunRecorder(out, config, meta, quiet=quiet)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    try:
        trainer = _make_trainer(config, runtime, out, recorder, quiet)
        if resuming and rec.get("world_size", trainer.world_size) != trainer.world_size:
            raise InputError(
                f"cannot resume a run of {rec['world_size']} processes with {trainer.world_size} "
                "(the batches per epoch, and so the learning-rate schedule, depend on it)",
                path=last,
            )
        if trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.json", json.dumps(asdict(config), indent=2) + "\n")
            _msg(
                f"training {config.model} on fold {config.fold}: {n_fl} flare + {n_nf} no-flare "
                f"instances ({counts['train_samples']} samples), {len(val_df)} validation; class "
                f"weights [{weights[0]:.4f}, {weights[1]:.4f}]; {runtime.accelerator} x "
                f"{runtime.n_devices}, {runtime.precision}, strategy {runtime.strategy}",
                quiet,
            )
        with warnings.catch_warnings():
            # Lightning's hints about worker counts and logging intervals are not problems here.
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
            trainer.fit(
                module,
                datamodule=datamodule,
                ckpt_path=last if resuming else None,
                weights_only=True,
            )
    except InputError as exc:
        raise _clean_worker_error(exc) from None
    finally:
        # Lightning switches deterministic algorithms on for the whole process; switch back.
        torch.use_deterministic_algorithms(deterministic_before)

    result = TrainResult(
        out=out,
        epochs_done=len(recorder.history),
        best_epoch=recorder.best["epoch"],
        best_tss=recorder.best["tss"] if recorder.best["epoch"] else None,
        best_hss2=recorder.best["hss2"] if recorder.best["epoch"] else None,
        best_checkpoint=(out / "best.ckpt") if recorder.best["epoch"] else None,
        last_checkpoint=last,
        counts=counts,
        notes=notes,
    )
    if trainer.is_global_zero:
        if result.best_epoch is None:
            note = "no epoch met the selection rule (TSS above 0 and the best so far): no best.ckpt"
            result.notes.append(note)
            _msg(note, quiet)
        summary = {
            "epochs_done": result.epochs_done,
            "best_epoch": result.best_epoch,
            "best_tss": result.best_tss,
            "best_hss2": result.best_hss2,
            "selected_on": "holdout" if config.holdout_fraction > 0 else "val",
            "counts": counts,
            "class_weights": list(weights),
            "runtime": runtime.to_dict(),
            "notes": result.notes,
        }
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return result


def _result_from_record(out: Path, rec: dict[str, Any], notes: list[str]) -> TrainResult:
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
    callbacks: list[Callback] = [recorder]
    if show_bar:
        callbacks.append(_StderrProgressBar())
    logger: Any = False
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=str(out), name="tb", version="")
    plugins: Any = [SLURMEnvironment(auto_requeue=False)] if runtime.slurm else None
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
    return pd.read_csv(io.StringIO(path.read_text(encoding="utf-8")))
