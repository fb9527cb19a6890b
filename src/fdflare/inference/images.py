"""Prediction without answers: P(flare) for images that have no label yet, by one model or several.

:func:`predict_images` runs one checkpoint, or several as an ensemble (their mean), over the
images of a folder or of a text file listing them, and writes ``timestamp,flare_prob``: one
row per image, the image path as ``timestamp`` (as in the study's files), so a table of
forecasts can be labelled and scored later. A calibration map, given as a function, turns
the mean into a calibrated probability (``fdflare predict --calibration``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.io import atomic_open
from fdflare.core.paths import scan_images

#: image files a folder is searched for (the prepared images, not the JP2 sources)
EXTENSIONS = ("png", "jpg", "jpeg")


@dataclass
class ImagesResult:
    """What :func:`predict_images` wrote: the file, the images and each member's mean P."""

    out: Path
    n: int
    members: list[tuple[str, float]]
    #: what the reader should know (images past the catalog's last flare)
    notes: list[str] = field(default_factory=list)


def list_images(images: str | os.PathLike[str]) -> tuple[Path, list[str]]:
    """``(root, relative image paths)`` of a folder, an array store, or a text list of paths.

    A text file lists one image path per line, relative to the file's folder (blank lines
    and lines starting with ``#`` are skipped).

    Raises:
        InputError: no such path, a list that is not UTF-8 text or names an absolute path or
            ``..``, or a folder with no images.
    """
    path = Path(images)
    if path.is_dir():
        index = path / "images_index.csv"
        if (path / "images.npy").is_file() and index.is_file():
            from fdflare.core.io import read_csv_table

            names = read_csv_table(index, what="array store index")["path"].astype(str).tolist()
        else:
            names = scan_images(path, EXTENSIONS)
        if not names:
            raise InputError(
                f"no images (HMI.m*.{{{','.join(EXTENSIONS)}}}) in this folder", path=path
            )
        return path, names
    if not path.is_file():
        raise InputError("no such image folder or image list", path=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text file ({exc.reason})", path=path) from None
    names = []
    for i, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if Path(line).is_absolute() or ".." in Path(line).parts:
            raise InputError(
                "image paths are relative to the list's folder (no absolute path, no ..)",
                path=path,
                line=i,
            )
        names.append(line)
    if not names:
        raise InputError("the image list names no image", path=path)
    return path.parent, names


def predict_images(
    checkpoints: Sequence[str | os.PathLike[str]],
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    transform: Callable[..., np.ndarray] | None = None,
    member_transforms: Sequence[Callable[[np.ndarray], np.ndarray] | None] | None = None,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    model: str | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    workers: int = 0,
    accelerator: str = "auto",
    devices: int | str = "auto",
    image_ext: str | None = None,
    decoder: str = "pil",
    array_store: bool = True,
    quiet: bool = False,
    loaded: Sequence[Any] | None = None,
    history_of: Callable[[Sequence[str]], tuple[np.ndarray, list[str]]] | None = None,
) -> ImagesResult:
    """Predict every image with each checkpoint; write their mean (mapped by ``transform``).

    The output is checked against every input before anything is computed, and every
    member's checkpoint is loaded and its images checked before the first one runs.

    Args:
        checkpoints: one checkpoint, or several for an ensemble (the mean of their P).
        images: image folder, array store, or text file listing images.
        out: the CSV to write (``timestamp,flare_prob``).
        transform: calibration map applied to the ensemble mean.
        member_transforms: one calibration map (or None) per checkpoint, applied to that
            member's probability before the mean (an ``ensemble.json``'s maps).
        inputs: other files the caller read (the calibration map), never to be overwritten.
        model: architecture of bare ``state_dict`` files.
        image_size: image size of bare ``state_dict`` files.
        batch_size: images per batch.
        workers: loader worker processes.
        accelerator: as for :func:`fdflare.inference.predict.predict`.
        devices: ``auto`` or 1.
        image_ext: replace the listed images' extension.
        decoder: ``pil`` or ``torchvision``.
        array_store: read the array store when ``images`` holds one.
        quiet: no progress bar.
        loaded: the members already loaded (one :class:`~fdflare.inference.predict.LoadedModel`
            per checkpoint, e.g. by :func:`fdflare.forecast.ensemble.load_ensemble`, whose
            rules they were checked by); loaded from ``checkpoints`` when None.
        history_of: for a ``history`` map (``transform``): the flare history of the listed
            images (one row each, in order) and notes on it, from their names
            (:func:`fdflare.analysis.history.image_histories`); called before any model runs.
    """
    from fdflare.core.outputs import check_output_file
    from fdflare.data.dataset import FlareDataset
    from fdflare.data.sources import check_images, open_images
    from fdflare.inference.predict import load_model, predict_probabilities, resolve_device

    if not checkpoints:
        raise InputError("at least one checkpoint is needed")
    check_output_file(out, inputs=[*checkpoints, images, *inputs])
    root, names = list_images(images)
    history: np.ndarray | None = None
    notes: list[str] = []
    if history_of is not None:
        history, notes = history_of(names)
    table = pd.DataFrame({"label": names, "target": np.zeros(len(names), dtype=np.int64)})
    dev = resolve_device(accelerator, devices)
    source = open_images(root, ext=image_ext, decoder=decoder, array_store=array_store)
    if loaded is None:
        loaded = [load_model(c, model=model, image_size=image_size) for c in checkpoints]
    for member in loaded:
        check_images(table, source, image_size=member.image_size, table_path=str(images))
    probs = []
    for member in loaded:
        dataset = FlareDataset(table, source, image_size=member.image_size, as_uint8=True)
        probs.append(
            predict_probabilities(
                member.net,
                dataset,
                batch_size=batch_size,
                workers=workers,
                device=dev,
                progress=not quiet and sys.stderr.isatty(),
            )
        )
    if member_transforms is not None:
        if len(member_transforms) != len(probs):
            raise InputError("one calibration map (or none) per checkpoint is needed")
        probs = [
            p if f is None else np.clip(f(p), 0.0, 1.0)
            for p, f in zip(probs, member_transforms, strict=True)
        ]
    mean = np.mean(probs, axis=0)
    if transform is None:
        prob = mean
    elif history is not None:
        prob = np.clip(transform(mean, history), 0.0, 1.0)
    else:
        prob = np.clip(transform(mean), 0.0, 1.0)
    out = Path(out)
    with atomic_open(out, "w") as fh:
        pd.DataFrame({"timestamp": names, "flare_prob": prob}).to_csv(
            fh, index=False, lineterminator="\n"
        )
    return ImagesResult(
        out,
        len(names),
        [(str(c), float(p.mean())) for c, p in zip(checkpoints, probs, strict=True)],
        notes,
    )


def predict_array(
    net: Any, images: np.ndarray, *, device: Any = "auto", batch_size: int = 64
) -> np.ndarray:
    """P(flare) of images held in memory: ``(N, H, W)`` or ``(H, W)`` ``uint8``, as float64.

    The images are scaled to [0, 1] on the device exactly as :func:`predict_images` does.
    """
    import torch

    from fdflare.inference.predict import predict_probabilities

    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise InputError(f"expected (N, H, W) uint8 images, got {arr.dtype} {arr.shape}")
    x = torch.from_numpy(np.array(arr, copy=True)).unsqueeze(1)
    dataset = torch.utils.data.TensorDataset(x, torch.zeros(len(arr), dtype=torch.int64))
    return predict_probabilities(net, dataset, batch_size=batch_size, device=device)  # type: ignore[arg-type]
