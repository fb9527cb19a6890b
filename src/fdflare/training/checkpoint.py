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
