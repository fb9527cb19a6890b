"""Reading checkpoints of ``fdflare train``: torch only, no Lightning.

A checkpoint is a Lightning checkpoint (model, optimiser, scheduler and loop state) plus
fdflare's own record under ``"fdflare"``: ``format``, ``config``, ``epoch``, ``scores``,
``best``, ``counts``, ``class_weights``, ``runtime``, ``world_size``. It holds only tensors
and plain values and is read with ``torch.load(weights_only=True)``, so prediction reads one
without importing Lightning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fdflare.core.errors import InputError
from fdflare.models.weights import torch_load

CHECKPOINT_FORMAT = 1


def read_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)`` on CPU.

    ``mmap=True`` maps the tensors from the file instead of reading them.

    Raises:
        InputError: the file is missing, corrupt or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such checkpoint file", path=path)
    ckpt = torch_load(path, what="checkpoint", mmap=mmap)
    if not isinstance(ckpt, dict):
        raise InputError("not a checkpoint (expected a dict of state)", path=path)
    return ckpt


def checkpoint_record(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return fdflare's record in a checkpoint (config, epoch, scores...), its fields checked.

    Every field that prediction reads is checked, since a checkpoint is a file a user can
    edit or damage: ``format`` (an integer this fdflare reads), ``config`` (a mapping with a
    known ``model`` name, a positive integer ``image_size`` and a string ``input_adapter``),
    ``epoch`` (an integer or absent) and ``scores`` (a mapping or absent).

    Raises:
        InputError: the checkpoint was not written by ``fdflare train``, or a field is
            malformed (the field named, e.g. ``fdflare.config.image_size``).
    """
    from fdflare.models.registry import list_models

    rec = ckpt.get("fdflare")
    if not isinstance(rec, dict) or "config" not in rec:
        raise InputError("not an fdflare training checkpoint (no 'fdflare' record)", path=path)
    fmt = rec.get("format", 0)
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise InputError(
            f"format {fmt!r} is not a format number", path=path, field="fdflare.format"
        )
    if fmt > CHECKPOINT_FORMAT:
        raise InputError(
            f"checkpoint format {fmt} is newer than this fdflare reads ({CHECKPOINT_FORMAT})",
            path=path,
            field="fdflare.format",
        )
    cfg = rec["config"]
    if not isinstance(cfg, dict):
        raise InputError(
            f"the training config is a {type(cfg).__name__}, not a mapping of settings",
            path=path,
            field="fdflare.config",
        )
    model = cfg.get("model")
    if not isinstance(model, str) or model not in list_models():
        raise InputError(
            f"unknown architecture {model!r} ({', '.join(list_models())})",
            path=path,
            field="fdflare.config.model",
        )
    size = cfg.get("image_size", 512)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InputError(
            f"image size {size!r} is not a positive number of pixels",
            path=path,
            field="fdflare.config.image_size",
        )
    adapter = cfg.get("input_adapter", "conv")
    if not isinstance(adapter, str):
        raise InputError(
            f"input adapter {adapter!r} is not a name",
            path=path,
            field="fdflare.config.input_adapter",
        )
    epoch = rec.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise InputError(f"epoch {epoch!r} is not a number", path=path, field="fdflare.epoch")
    if not isinstance(rec.get("scores", {}), dict):
        raise InputError("scores are not a mapping", path=path, field="fdflare.scores")
    return rec


def checkpoint_recipe(rec: dict[str, Any], path: str | os.PathLike[str]) -> Any:
    """The label recipe recorded in a checkpoint's record (the study's, assumed, when none).

    Returns:
        A :class:`fdflare.core.recipe.Recipe`.

    Raises:
        InputError: a malformed recipe (the field named).
    """
    from fdflare.core.recipe import recipe_or_study

    return recipe_or_study(rec.get("recipe"), path=path, field="fdflare.recipe")
