"""Prediction: P(flare) for every image of a label table, in the study's format.

:func:`predict` loads a checkpoint (``fdflare train``'s ``best.ckpt`` / ``last.ckpt``, or
a plain ``state_dict`` file such as the study's own ``.pth`` files, with the architecture
named), runs it over the images of a label table and writes:

* ``OUT.csv``: ``timestamp,flare_prob,target``, one row per label in table order, the
  study's prediction files (``timestamp`` is the relative image path; ``flare_prob`` the
  softmax probability of class 1);
* with the full label table of ``fdflare label`` (``labels.csv``), also
  ``OUT_joined.csv``: ``label,flare_prob,target,goes_class,fl_lon,fl_lat,fl_start``, which
  ``fdflare evaluate`` and ``fdflare spatial`` read.

Images must have the checkpoint's size and be 8-bit grayscale; anything else is an error
naming the file, found up front in the main process. Checkpoints are read with torch
alone (:mod:`fdflare.training.checkpoint`): predicting imports no Lightning.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fdflare.core.errors import InputError, UsageError
from fdflare.core.io import atomic_open
from fdflare.core.recipe import Recipe, assumed_study
from fdflare.data.dataset import FlareDataset
from fdflare.data.sources import check_images, open_images
from fdflare.data.tables import read_label_csv
from fdflare.inference.predictions import JOINED_COLUMNS, PREDICTION_COLUMNS
from fdflare.models.networks import FlareNet, create_model, flare_probability
from fdflare.models.registry import list_models
from fdflare.models.weights import foreign_state_dict, load_model_state
from fdflare.training.checkpoint import checkpoint_recipe, checkpoint_record, read_checkpoint
from fdflare.training.config import accelerator_problem

#: what ``--accelerator`` of ``fdflare predict`` takes (one device: prediction does not shard)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclass
class LoadedModel:
    """A network ready for inference and what its checkpoint says about it."""

    net: FlareNet
    model: str
    image_size: int
    input_adapter: str
    epoch: int | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    #: the event the model was trained for (the study's, assumed, when the file records none)
    recipe: Recipe = field(default_factory=assumed_study)


def load_model(
    checkpoint: str | os.PathLike[str],
    *,
    model: str | None = None,
    image_size: int | None = None,
    input_adapter: str | None = None,
) -> LoadedModel:
    """Load a network from a checkpoint (``torch.load(weights_only=True)``), in eval mode.

    Args:
        checkpoint: an ``fdflare train`` checkpoint, or a file holding a plain
            ``state_dict`` (optionally under ``model_state_dict``, as the study's files).
        model: the expected architecture; required for plain ``state_dict`` files.
        image_size: image size of a plain ``state_dict`` (default 512, the study's).
        input_adapter: input adapter of a plain ``state_dict`` (default ``conv``).

    Raises:
        InputError: a corrupt or unknown file, a checkpoint of another architecture than
            ``model``, or weights that do not fit the architecture.
    """
    path = Path(checkpoint)
    ckpt = read_checkpoint(path)
    if "fdflare" in ckpt:
        rec = checkpoint_record(ckpt, path)
        cfg = rec["config"]
        arch, size, adapter = (
            cfg.get("model"),
            int(cfg.get("image_size", 512)),
            cfg.get("input_adapter", "conv"),
        )
        if model is not None and model != arch:
            raise InputError(
                f"checkpoint holds a {arch} model, not {model}", path=path, field="model"
            )
        if image_size is not None and image_size != size:
            raise InputError(
                f"checkpoint was trained on {size} px images, not {image_size}", path=path
            )
        sd = ckpt.get("state_dict", {})
        state = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
        epoch, scores = rec.get("epoch"), dict(rec.get("scores", {}))
        recipe = checkpoint_recipe(rec, path)
    else:
        foreign = foreign_state_dict(ckpt)
        if foreign is None:
            raise InputError(
                "neither an fdflare checkpoint nor a state_dict (a mapping of parameter names to tensors)",
                path=path,
            )
        if model is None:
            raise InputError(
                f"this file holds a bare state_dict: name its architecture with --model ({', '.join(list_models())})",
                path=path,
                field="model",
            )
        state = foreign
        arch, size, adapter = model, image_size or 512, input_adapter or "conv"
        epoch, scores, recipe = None, {}, assumed_study()
    if arch not in list_models():
        raise InputError(
            f"unknown architecture {arch!r} in the checkpoint", path=path, field="model"
        )
    net = create_model(arch, pretrained=False, input_adapter=adapter)
    load_model_state(net, state, path=path)
    net.eval()
    return LoadedModel(net, arch, size, adapter, epoch, scores, recipe)


def _check_labels_recipe(
    loaded: LoadedModel, checkpoint: str | os.PathLike[str], labels: str | os.PathLike[str]
) -> None:
    """Refuse targets of another event than the model's (both recorded, they differ).

    Raises:
        InputError: the label folder's recipe and the checkpoint's name different events.
    """
    from fdflare.core.recipe import labels_recipe

    theirs = labels_recipe(labels)
    if theirs.assumed or loaded.recipe.assumed or theirs.same_event(loaded.recipe):
        return
    raise InputError(
        f"the labels' targets are {theirs.event}, but {checkpoint} was trained for "
        f"{loaded.recipe.event}: score a model against labels of its own event",
        path=labels,
    )


def resolve_device(accelerator: str = "auto", devices: int | str = "auto") -> torch.device:
    """The one device prediction runs on.

    Args:
        accelerator: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``gpu`` (= ``cuda``),
            ``mps``, or ``cuda:N`` (a given GPU; the old ``--device`` spelling).
        devices: ``auto`` or 1: prediction runs on one device.

    Raises:
        UsageError: an accelerator this machine lacks, or more than one device.
    """
    if devices not in ("auto", 1):
        raise UsageError(f"--devices {devices}: prediction runs on one device (give 1 or auto)")
    if accelerator.startswith("cuda:"):
        index = accelerator.partition(":")[2]
        problem = accelerator_problem("cuda")
        if problem is None and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            problem = f"{accelerator}: no such GPU (this machine has {torch.cuda.device_count()})"
        if problem:
            raise UsageError(f"--accelerator {problem}")
        return torch.device(accelerator)
    if accelerator == "tpu":
        raise UsageError(
            "--accelerator tpu: only training runs on a TPU; this command runs on auto, cpu, "
            "gpu (= cuda) or mps"
        )
    if accelerator not in ACCELERATORS:
        raise UsageError(
            f"--accelerator {accelerator}: choose one of {', '.join(ACCELERATORS)} (or cuda:N)"
        )
    problem = accelerator_problem(accelerator)
    if problem:
        raise UsageError(f"--accelerator {problem}")
    if accelerator in ("gpu", "cuda"):
        return torch.device("cuda")
    if accelerator != "auto":
        return torch.device(accelerator)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def predict_probabilities(
    net: FlareNet,
    dataset: FlareDataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Return P(flare) for every item of ``dataset`` (in order) as float64.

    On CUDA the images travel as uint8 from pinned memory and the forward pass runs in
    bf16 autocast where supported; the softmax is taken in float32.
    """
    from fdflare.core.progress import progress_bar

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    # channels-last where it is the faster memory format for these convolutions: on a GPU and
    # on a CPU with AVX-512 (fdflare bench, predict_latency; training.config says why); the
    # network is the caller's, so its format is put back afterwards
    from fdflare.training.config import cpu_prefers_channels_last

    net = net.to(dev).eval()
    original_format = _memory_format(net)
    fmt = (
        torch.channels_last
        if dev.type == "cuda" or (dev.type == "cpu" and cpu_prefers_channels_last())
        else torch.contiguous_format
    )
    net = net.to(memory_format=fmt)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )
    bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    out: list[np.ndarray] = []
    with torch.inference_mode(), autocast:
        for x, _ in progress_bar(loader, desc="predict", unit="batch", enabled=progress):
            x = x.to(dev, non_blocking=True)
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)
            x = x.contiguous(memory_format=fmt)
            out.append(flare_probability(net.logits(x)).double().cpu().numpy())
    if original_format is not None:
        net.to(memory_format=original_format)
    return np.concatenate(out) if out else np.zeros(0)


def _memory_format(net: torch.nn.Module) -> torch.memory_format | None:
    """The memory format of the network's first 4-D weight (None: it has none)."""
    for p in net.parameters():
        if p.dim() == 4:
            cl = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            return torch.channels_last if cl else torch.contiguous_format
    return None


@dataclass
class PredictResult:
    """What :func:`predict` wrote."""

    predictions: Path
    joined: Path | None
    n: int
    skipped_missing: int = 0
    notes: list[str] = field(default_factory=list)


def joined_path(out: str | os.PathLike[str]) -> Path:
    """``OUT_joined.csv`` beside ``OUT.csv``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_joined.csv")


def join_table(
    pred: pd.DataFrame, table: pd.DataFrame, *, table_path: str | os.PathLike[str]
) -> pd.DataFrame:
    """Join predictions (``timestamp``, ``flare_prob``, ``target``) with ``labels.csv`` rows.

    Raises:
        InputError: predictions whose label is not in the table (count and first few), or
            a table without the columns of the joined format.
    """
    needed = [c for c in JOINED_COLUMNS if c not in ("flare_prob", "target")]
    missing_cols = [c for c in needed if c not in table.columns]
    if missing_cols:
        raise InputError(
            f"missing column(s) {', '.join(missing_cols)}: expected the full label table of `fdflare label`",
            path=table_path,
            field=missing_cols[0],
        )
    t = table[needed].drop_duplicates("label", keep="first").set_index("label")
    labels = pred["timestamp"].astype(str)
    known = labels.isin(t.index).to_numpy()
    if not known.all():
        absent = labels[~known].tolist()
        raise InputError(
            f"{len(absent)} of {len(labels)} predicted images are not in the label table, e.g. "
            f"{', '.join(absent[:5])}: is it the table of the same `fdflare label` run?",
            path=table_path,
            field="label",
        )
    rows = t.loc[labels.to_numpy()]
    joined = pd.DataFrame(
        {
            "label": labels.to_numpy(),
            "flare_prob": pred["flare_prob"].to_numpy(),
            "target": pred["target"].to_numpy(),
            "goes_class": rows["goes_class"].astype("string").fillna("").to_numpy(),
            "fl_lon": pd.to_numeric(rows["fl_lon"], errors="coerce").to_numpy(),
            "fl_lat": pd.to_numeric(rows["fl_lat"], errors="coerce").to_numpy(),
            "fl_start": _time_text(rows["fl_start"]),
        }
    )
    return joined


def _time_text(values: pd.Series) -> np.ndarray:
    t = pd.to_datetime(values, errors="coerce")
    text = t.dt.strftime("%Y-%m-%d %H:%M:%S")
    return text.astype("string").fillna("").to_numpy(dtype=object)


def predict(
    checkpoint: str | os.PathLike[str],
    labels: str | os.PathLike[str] | pd.DataFrame,
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    table: str | os.PathLike[str] | None = None,
    model: str | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    workers: int = 0,
    accelerator: str = "auto",
    devices: int | str = "auto",
    skip_missing: bool = False,
    image_ext: str | None = None,
    decoder: str = "pil",
    array_store: bool = True,
    quiet: bool = False,
) -> PredictResult:
    """Predict every image of a label table and write the study's prediction CSV.

    The outputs are checked before anything is computed: ``out`` (and ``OUT_joined.csv``
    with ``table``) must be writable files that are none of the inputs.

    Args:
        checkpoint: model checkpoint (:func:`load_model`).
        labels: label table CSV (e.g. ``Fold1_val.csv`` or ``labels.csv``), or such a table
            already read (:func:`fdflare.data.tables.read_label_csv`).
        images: image folder or array store.
        out: prediction CSV to write.
        table: ``fdflare label``'s full ``labels.csv``; also writes ``OUT_joined.csv``.
        model: expected architecture (required for a bare ``state_dict``).
        image_size: image size of a bare ``state_dict``.
        batch_size: images per batch.
        workers: loader worker processes.
        accelerator: ``auto``, ``cpu``, ``gpu``, ``mps`` or ``cuda:N`` (:func:`resolve_device`).
        devices: ``auto`` or 1.
        skip_missing: leave out rows whose image is missing (counted) instead of failing.
        image_ext: replace the labels' image extension.
        decoder: ``pil`` or ``torchvision``.
        array_store: read the array store when ``images`` holds one.
        quiet: no progress bar.

    Raises:
        InputError: bad checkpoint, table or image (naming the file).
        MissingDataError: missing images without ``skip_missing``.
        OutputError: an output that is an input, a folder, or not writable.
        UsageError: an accelerator this machine lacks.
    """
    from fdflare.core.outputs import check_output_file

    table_name = None if isinstance(labels, pd.DataFrame) else labels
    inputs = [checkpoint, table_name, images, table]
    if isinstance(labels, pd.DataFrame) and labels.attrs.get("path"):
        inputs.append(labels.attrs["path"])
    check_output_file(out, inputs=inputs)
    if table is not None:
        check_output_file(joined_path(out), inputs=inputs, option="--out (its _joined.csv)")
    dev = resolve_device(accelerator, devices)
    loaded = load_model(checkpoint, model=model, image_size=image_size)
    if isinstance(labels, pd.DataFrame):
        df = labels
        labels = str(df.attrs.get("path", "label table"))
    else:
        df = read_label_csv(labels)
        _check_labels_recipe(loaded, checkpoint, labels)
    source = open_images(images, ext=image_ext, decoder=decoder, array_store=array_store)
    check = check_images(
        df, source, image_size=loaded.image_size, skip_missing=skip_missing, table_path=labels
    )
    notes: list[str] = []
    if check.missing:
        notes.append(
            f"skipped {len(check.missing)} of {len(df)} rows whose image is missing "
            f"(e.g. {', '.join(check.missing[:5])})"
        )
        df = df[check.keep].reset_index(drop=True)
    full = None
    if table is not None:
        full = read_label_csv(table)  # the one label-table reader, as for --labels
        # every predicted image must be in the table: find out before predicting
        join_table(
            pd.DataFrame({"timestamp": df["label"], "flare_prob": 0.0, "target": df["target"]}),
            full,
            table_path=table,
        )
    dataset = FlareDataset(df, source, image_size=loaded.image_size, as_uint8=True)
    progress = not quiet and sys.stderr.isatty()
    prob = predict_probabilities(
        loaded.net,
        dataset,
        batch_size=batch_size,
        workers=workers,
        device=dev,
        progress=progress,
    )
    pred = pd.DataFrame(
        {"timestamp": df["label"].to_numpy(), "flare_prob": prob, "target": df["target"].to_numpy()}
    )
    joined = None
    joined_out: Path | None = None
    if full is not None and table is not None:
        joined = join_table(pred, full, table_path=table)
        if "target" in full.columns:
            t = full.drop_duplicates("label").set_index("label")["target"]
            other = pd.to_numeric(t.loc[pred["timestamp"].to_numpy()], errors="coerce").to_numpy()
            differ = int((other != pred["target"].to_numpy()).sum())
            if differ:
                notes.append(
                    f"{differ} of {len(pred)} targets differ between {labels} and {table} "
                    "(the joined table keeps those of the label file)"
                )
    out = Path(out)
    with atomic_open(out, "w") as fh:
        pred[list(PREDICTION_COLUMNS)].to_csv(fh, index=False, lineterminator="\n")
    if joined is not None:
        joined_out = joined_path(out)
        with atomic_open(joined_out, "w") as fh:
            joined[list(JOINED_COLUMNS)].to_csv(fh, index=False, lineterminator="\n")
    for note in notes:  # warnings: printed with --quiet too
        print(note, file=sys.stderr)
    return PredictResult(out, joined_out, len(pred), len(check.missing), notes)
