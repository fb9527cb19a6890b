"""The training config: every setting of a run, its default, range and help, in one dataclass.

:class:`TrainConfig` is the one source of the training settings. Each field carries its
help text, choices and range as field metadata (:func:`setting`); from them

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

import json
import math
import os
import re
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fdflare.core.errors import InputError
from fdflare.models.registry import INPUT_ADAPTERS, list_models
from fdflare.training import protocol as P

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
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
DECODERS = ("pil", "torchvision")
FOLDS = (1, 2, 3, 4)
_YAML_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    flag: str | None = None,
    metavar: str | None = None,
    path: bool = False,
    runtime: bool = False,
) -> Any:
    """A config field with its help, choices and range (read by validation and the CLI).

    Args:
        default: the default value.
        help: one line for ``--help`` and the docs.
        choices: the allowed values.
        low: smallest allowed value (``low_open``: excluded).
        high: largest allowed value (``high_open``: excluded).
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
        flag: the command-line option, when not ``--field-name``.
        metavar: the value's name in ``--help``.
        path: the value is a file or folder (made absolute on the command line).
        runtime: free to change when a run is resumed (hardware, paths, loading).
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "flag": flag,
        "metavar": metavar,
        "path": path,
        "runtime": runtime,
    }
    return field(default=default, metadata=meta)


def field_problem(f: Field[Any], value: Any) -> str | None:
    """Return what is wrong with ``value`` for the field ``f`` (``None``: nothing).

    Checks the field's choices and range, and that numbers are finite.
    """
    m = f.metadata
    if value is None:
        return None
    choices = m.get("choices")
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if choices is not None and value not in choices and not isinstance(value, bool):
        if m.get("low") is not None and not isinstance(value, int):  # a number or "auto"
            return (
                f"must be {' or '.join(map(str, choices))} or a number of at least {_num(m['low'])}"
            )
        if m.get("low") is None:
            return f"choose one of {', '.join(map(str, choices))}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = m.get("low"), m.get("high")
        if low is not None and (value < low or (m.get("low_open") and value == low)):
            return _range_text(m)
        if high is not None and (value > high or (m.get("high_open") and value == high)):
            return _range_text(m)
    return None


def _range_text(m: Any) -> str:
    low, high = m.get("low"), m.get("high")
    if high is None:
        return f"must be {'above' if m['low_open'] else 'at least'} {_num(low)}"
    if low is None:
        return f"must be {'below' if m['high_open'] else 'at most'} {_num(high)}"
    left = "(" if m["low_open"] else "["
    right = ")" if m["high_open"] else "]"
    return f"must lie in {left}{_num(low)}, {_num(high)}{right}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


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


def updated(obj: Any, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None) -> Any:
    """Return a copy of the dataclass ``obj`` with ``values`` applied and checked.

    Raises:
        InputError: an unknown name, a value of the wrong type or out of range, naming the field.
    """
    hints = typing.get_type_hints(type(obj))
    known = {f.name: f for f in fields(obj) if f.init}
    new = {name: getattr(obj, name) for name in known}
    for key, value in values.items():
        if key not in known:
            raise InputError(
                f"unknown setting (known: {', '.join(sorted(known))})", path=path, field=key
            )
        new[key] = coerce(value, hints[key], key, path)
    cfg = type(obj)(**new)
    validate(cfg, path=path)
    return cfg


def validate(obj: Any, *, path: str | os.PathLike[str] | None = None) -> None:
    """Check each field of the dataclass ``obj`` against its metadata.

    Raises:
        InputError: naming the first bad field and its value.
    """
    for f in fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, (tuple, list)) else [value]
        for v in values:
            problem = field_problem(f, v)
            if problem:
                raise InputError(f"{v!r}: {problem}", path=path, field=f.name)


def coerce(value: Any, hint: Any, key: str, path: str | os.PathLike[str] | None) -> Any:
    """Check ``value`` against a field's type hint; ints are accepted for floats.

    Raises:
        InputError: a value of another type, naming the field.
    """
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{value!r} is not a mapping", path=path, field=key)
        return dict(value)
    if origin in (tuple, list):
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{value!r} is not a list", path=path, field=key)
        return tuple(coerce(v, item, key, path) for v in value)
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
        if t is float and isinstance(value, str) and _YAML_FLOAT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        if t is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in args)
    raise InputError(f"{value!r} is not a valid value (expected {names})", path=path, field=key)


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config file: one YAML or JSON mapping of settings (``.json``: JSON, else YAML).

    Raises:
        InputError: a missing or unreadable file, bad syntax (with its line), or no mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text file ({exc})", path=path) from exc
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from exc
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InputError(f"not valid YAML: {problem}", path=path, line=line) from exc
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InputError("a config file holds one mapping of settings (name: value)", path=path)
    return values


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


def default_of(f: Field[Any]) -> Any:
    """A field's default value."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ValueError(f"field {f.name} has no default")


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
