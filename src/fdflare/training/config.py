"""The training config: every setting of a run, its default, range and help, in one dataclass.

:class:`TrainConfig` is the one source of the training settings. Each field carries its
help text, choices and range as field metadata (:func:`fdflare.core.settings.setting`);
from them

* :meth:`TrainConfig.validate` checks a config (one message naming the field),
* ``fdflare train``, ``cv`` and ``demo`` generate their options (``fdflare.commands._config``),
* ``configs/study.yaml`` (the study's recipe) lists the defaults, and ``--config FILE``
  (YAML or JSON) reads any subset of the fields.

:func:`resolve_runtime` turns the hardware fields into what Lightning will run with, and
:func:`check_hardware` refuses, before any work, an accelerator the machine does not have.
Nothing here imports torch or Lightning at module level: building the command line stays
light.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fdflare.core.settings import read_settings, setting, updated, validate
from fdflare.models.registry import INPUT_ADAPTERS, list_models
from fdflare.training import protocol as P
from fdflare.training.runtime import ACCELERATORS

#: Lightning's precision values (``auto`` is fdflare's: bf16-mixed where supported).
PRECISIONS = (
    "auto",
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "32",
    "16",
    "bf16",
    "64",
)
DECODERS = ("pil", "torchvision")
FOLDS = (1, 2, 3, 4)


OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    """Everything a training run depends on, with the study's defaults.

    Recipe fields (a resumed run must keep them): ``model``, ``pretrained``,
    ``input_adapter``, ``fold``, ``image_size``, ``epochs``, ``batch_size``, the optimiser and
    ``OneCycleLR`` settings, ``augment``, ``rotation_degrees``, ``threshold``,
    ``hss2_tolerance``, ``holdout_fraction`` and ``seed``. Runtime fields (free to change on
    resume): paths, image loading and hardware. Each field's help text is its field
    metadata (:func:`setting`); ``fdflare train --help`` and docs/train.md show them.
    """

    model: str = setting(
        "alexnet",
        f"architecture: {', '.join(list_models(study_only=True))} (the study's) or "
        + ", ".join(m for m in list_models() if m not in list_models(study_only=True)),
        choices=list_models(),
        metavar="NAME",
    )
    pretrained: bool = setting(
        True, "start from ImageNet weights (--no-pretrained: random weights, no file needed)"
    )
    input_adapter: str = setting(
        "conv",
        "conv: the study's extra Conv2d(1, 3); sum: first convolution summed to one channel",
        choices=INPUT_ADAPTERS,
    )
    fold: int = setting(
        1, "cross-validation fold: validate on quarter K", choices=FOLDS, metavar="K"
    )
    image_size: int = setting(
        512, "image width = height in pixels; other sizes are an error", low=16, metavar="PX"
    )
    epochs: int = setting(50, "training epochs", low=1, metavar="N")
    batch_size: int = setting(64, "images per batch (per process under DDP)", low=1, metavar="N")
    lr: float = setting(
        1e-4, "SGD learning rate (OneCycleLR sets the rate from the first step)", low=0, metavar="X"
    )
    weight_decay: float = setting(1e-3, "SGD weight decay", low=0, metavar="X")
    optimizer: str = setting(
        "sgd",
        "sgd: the study's SGD; adamw: AdamW (decoupled weight decay; OneCycleLR cycles its "
        "beta1 where it would cycle momentum), for models trained from scratch in few steps",
        choices=OPTIMIZERS,
    )
    max_lr: float = setting(
        1e-5, "OneCycleLR peak learning rate", low=0, low_open=True, metavar="X"
    )
    anneal_strategy: str = setting("cos", "OneCycleLR annealing", choices=("cos", "linear"))
    pct_start: float = setting(
        0.3,
        "OneCycleLR share of steps spent raising the rate",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
        metavar="F",
    )
    div_factor: float = setting(
        25.0, "OneCycleLR initial lr = max_lr / this", low=0, low_open=True, metavar="X"
    )
    final_div_factor: float = setting(
        1e4, "OneCycleLR final lr = initial lr / this", low=0, low_open=True, metavar="X"
    )
    cycle_momentum: bool = setting(True, "let OneCycleLR cycle SGD's momentum (as the study)")
    base_momentum: float = setting(0.85, "lower momentum of the cycle", low=0, high=1, metavar="X")
    max_momentum: float = setting(0.95, "upper momentum of the cycle", low=0, high=1, metavar="X")
    augment: bool = setting(
        True, "the study's augmentation: flare x4, no-flare x2 (--no-augment: originals only)"
    )
    rotation_degrees: float = setting(
        5.0, "augmentation rotations lie within +-this angle", low=0, high=180, metavar="DEG"
    )
    threshold: float = setting(
        0.5,
        "P(flare) threshold of TSS and HSS2",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
        metavar="P",
    )
    hss2_tolerance: float = setting(
        0.02,
        "largest HSS2 drop from the best so far that still allows selection",
        low=0,
        metavar="X",
    )
    holdout_fraction: float = setting(
        0.0,
        "select the epoch on the latest FRACTION of the training instances (held out from "
        "training) instead of the validation fold (0: the study)",
        low=0,
        high=1,
        high_open=True,
        aliases=("--holdout",),
        metavar="FRACTION",
    )
    protocol: str = setting("study", P.HELP["protocol"], choices=P.PROTOCOLS)
    select_by: str = setting("auto", P.HELP["select_by"], choices=P.SELECTION_RULES)
    average: str = setting("none", P.HELP["average"], choices=P.AVERAGES)
    ema_decay: float = setting(0.98, P.HELP["ema_decay"], **P.EMA_DECAY_RANGE)
    seed: int = setting(
        40, "seed of initialisation, shuffling, augmentation and dropout", low=0, metavar="N"
    )
    labels: str = setting(
        "",
        "label folder: Fold{K}_train.csv + Fold{K}_val.csv, or labels.csv",
        path=True,
        runtime=True,
        metavar="DIR",
    )
    images: str = setting(
        "",
        "image folder (YYYY/MM/DD/HMI.m*.png|jpg) or array store",
        path=True,
        runtime=True,
        metavar="DIR",
    )
    image_ext: str | None = setting(
        None,
        "image extension to use instead of the labels' (e.g. png)",
        runtime=True,
        metavar="EXT",
    )
    decoder: str = setting("pil", "image decoder", choices=DECODERS, runtime=True)
    array_store: bool = setting(
        True,
        "read the array store of `fdflare prepare --array-store` where --images holds one "
        "(--no-array-store: the image files)",
        runtime=True,
    )
    skip_missing: bool = setting(
        False, "drop rows whose image is missing (counted and reported)", runtime=True
    )
    check_headers: bool = setting(
        True,
        "check every image's size, mode and end up front (--no-check-headers: the first only)",
        runtime=True,
    )
    weights_path: str | None = setting(
        None,
        "ImageNet weights file (default: the torch hub cache)",
        flag="--weights",
        path=True,
        runtime=True,
        metavar="FILE",
    )
    workers: int = setting(
        4, "loader worker processes per training process", low=0, runtime=True, metavar="N"
    )
    accelerator: str = setting(
        "auto", "auto, cpu, gpu (cuda), mps or tpu", choices=ACCELERATORS, runtime=True
    )
    devices: int | str = setting(
        "auto",
        "devices per node: auto or a number",
        choices=("auto",),
        low=1,
        runtime=True,
        metavar="N",
    )
    num_nodes: int = setting(1, "nodes", low=1, runtime=True, metavar="N")
    precision: str = setting(
        "auto",
        "auto (bf16-mixed on CUDA with bf16, else 32-true) or a Lightning precision",
        choices=PRECISIONS,
        runtime=True,
    )
    deterministic: bool | None = setting(
        None, "deterministic algorithms (default: on CPU only)", runtime=True
    )
    channels_last: bool | None = setting(
        None,
        "channels-last memory format (default: on CUDA GPUs and on CPUs with AVX-512, where "
        "it measures faster; NCHW on CPUs without, where it measured slower: fdflare bench)",
        runtime=True,
    )
    device_augment: bool | None = setting(
        None,
        "flip and rotate the training images on the device, after the copy (default: on "
        "CUDA GPUs; the same pixels as in the loader workers)",
        runtime=True,
    )
    torch_compile: bool | None = setting(
        None,
        "compile the network with torch.compile (default: on CUDA GPUs)",
        flag="--compile",
        runtime=True,
    )

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> TrainConfig:
        """Build a config from a mapping (e.g. a config file), checking names and types."""
        return cls().updated(values, path=path)

    def updated(
        self, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> TrainConfig:
        """Return a copy with ``values`` applied, checking names, types and ranges.

        Raises:
            InputError: an unknown name or a bad value, naming the field.
        """
        return updated(self, values, path=path)

    def validate(self, *, path: str | os.PathLike[str] | None = None) -> None:
        """Check every field's choices and range.

        Raises:
            InputError: naming the field and its value.
        """
        validate(self, path=path)

    def field_values(self) -> dict[str, Any]:
        """Every field, as a plain dict (the content of ``config.json``)."""
        return asdict(self)


RUNTIME_FIELDS = frozenset(f.name for f in fields(TrainConfig) if f.metadata.get("runtime"))


def load_config(path: str | os.PathLike[str], base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML or JSON config file (any subset of :class:`TrainConfig` fields) over ``base``.

    A run's ``config.json`` also records the label recipe (``"recipe"``); it is read from the
    labels, not set, so it is passed over here.

    Raises:
        InputError: unreadable file, an unknown field or a bad value, naming the file.
    """
    values = read_settings(path)
    values.pop("recipe", None)
    return (base or TrainConfig()).updated(values, path=path)


def configs_dir() -> Path:
    """The folder of the packaged configs (``fdflare/configs``)."""
    return Path(__file__).parents[1] / "configs"


def default_config_path() -> Path:
    """The packaged study config, ``fdflare/configs/study.yaml``: the defaults of :class:`TrainConfig`."""
    return configs_dir() / "study.yaml"


# --------------------------------------------------------------------------- hardware


#: the files of a run folder (``fdflare train --out``)
RUN_FILES = ("config.json", "metrics.csv", "last.ckpt", "best.ckpt", "summary.json")


# the machine side (what runs where) lives in training.runtime; its names stay importable here
from fdflare.training.runtime import (  # noqa: E402, F401  (re-exported)
    Runtime,
    accelerator_problem,
    check_hardware,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_prefers_channels_last,
    resolve_runtime,
)
