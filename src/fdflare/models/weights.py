"""Weights files: ImageNet backbones from the torch hub cache, and foreign ``state_dict`` files.

Everything is read with ``torch.load(weights_only=True)`` on CPU (:func:`torch_load`), which
only unpickles tensors and plain values; a file that needs more is refused, never loaded
with ``weights_only=False``. This module imports torch but neither torchvision nor Lightning,
so a checkpoint can be read without them.

* :func:`weights_file` and :func:`load_imagenet_state_dict`: the ImageNet weights of a
  registered backbone, read from the local cache (nothing is downloaded);
* :func:`foreign_state_dict`: the ``state_dict`` held by a file written outside fdflare,
  as is or under ``model_state_dict`` (the study's own ``.pth`` files);
* :func:`load_model_state`: load a ``state_dict`` strictly, with a message naming the file.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fdflare.core.errors import InputError, MissingDataError
from fdflare.models.registry import get_spec

_ZIP_MAGIC = b"PK\x03\x04"


def weights_file(name: str) -> Path:
    """Return where the ImageNet weights of ``name`` are expected.

    That is ``torch.hub.get_dir()/checkpoints/<file>``, the file name being the last part of
    torchvision's URL (e.g. ``alexnet-owt-7be5be79.pth``): where
    ``torch.hub.load_state_dict_from_url`` caches it.
    """
    spec = get_spec(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.weights_filename


def torch_load(path: str | os.PathLike[str], *, what: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with a one-line error for unreadable files.

    Args:
        path: the file.
        what: what the file should be, for the message (``"checkpoint"``).
        mmap: map the tensors from the file instead of reading them.

    Raises:
        InputError: ``cannot read <what>: <why>``, naming the file: empty, not a file of
            ``torch.save``, corrupt or truncated, or holding objects other than tensors and
            plain values.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", path=path) from exc
    if not head:
        raise InputError(f"cannot read {what}: the file is empty", path=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # pickle, zip and unpickler errors have no common base class
        raise InputError(f"cannot read {what}: {_load_problem(exc, head)}", path=path) from exc


def _load_problem(exc: Exception, head: bytes) -> str:
    """Say in words why ``torch.load(weights_only=True)`` failed (never advising to unset it)."""
    if head != _ZIP_MAGIC and not head.startswith(b"\x80"):
        return "not a file written by torch.save"
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
        if head != _ZIP_MAGIC:
            return "not a file written by torch.save (or a corrupt one)"
        return (
            "it holds objects other than tensors and plain values, which fdflare does not "
            "unpickle (weights are read with weights_only=True)"
        )
    if isinstance(exc, (EOFError, RuntimeError, pickle.UnpicklingError)):
        return f"corrupt or truncated file ({type(exc).__name__})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def load_imagenet_state_dict(
    name: str, path: str | os.PathLike[str] | None = None
) -> dict[str, torch.Tensor]:
    """Read the ImageNet ``state_dict`` of a backbone from a local file (never downloads).

    Args:
        name: registry name.
        path: the weights file; by default :func:`weights_file` (the torch hub cache).

    Raises:
        MissingDataError: the file is absent; the message names it, the folder it belongs
            in, the URL to fetch it from and ``--no-pretrained``.
        InputError: the file is not a readable ``state_dict``.
    """
    spec = get_spec(name)
    file = Path(path) if path is not None else weights_file(name)
    if not file.is_file():
        raise MissingDataError(
            f"ImageNet weights for {name} not found: {file} does not exist. Download "
            f"{spec.url} on a machine with internet access and put it in {file.parent}/ "
            f"(keeping the file name {file.name}), or pass --no-pretrained to train from random "
            "initialisation."
        )
    state = torch_load(file, what="ImageNet weights file")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"not a {name} state_dict (a mapping of parameter names to tensors)", path=file
        )
    return state


def foreign_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """Return the ``state_dict`` held by a file written outside fdflare, or ``None``.

    Accepts a bare ``state_dict`` and the study's ``{'model_state_dict': ...,
    'optimizer_state_dict': ...}``; module names are the study's, so both load as they are.
    """
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        return None
    return state


def load_model_state(
    model: nn.Module, state: dict[str, torch.Tensor], *, path: str | os.PathLike[str]
) -> None:
    """Load ``state`` into ``model`` strictly.

    Raises:
        InputError: the weights belong to another architecture or input adapter.
    """
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        arch = getattr(model, "arch", type(model).__name__)
        raise InputError(
            f"checkpoint weights do not fit a {arch} model (is it a checkpoint of another "
            f"architecture or input adapter?): {first_line(exc)}",
            path=path,
        ) from exc


def first_line(exc: BaseException) -> str:
    """The gist of an exception's message: its first line and a little more, at most 300 characters."""
    text = str(exc).strip().splitlines()
    detail = " ".join(line.strip() for line in text[1:3]) if len(text) > 1 else ""
    return (text[0] + (" " + detail if detail else ""))[:300] if text else type(exc).__name__
