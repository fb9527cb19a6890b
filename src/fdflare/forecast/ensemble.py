"""``ensemble.json``: the fold checkpoints of a cross-validation and their calibration maps.

``fdflare cv`` (and ``fdflare demo``) write ``OUT/ensemble.json`` after the last pair::

    {"format": 1,
     "recipe": {"threshold": "M1.0", "window": "24h", ...},
     "members": [{"model": "alexnet", "fold": 1, "checkpoint": "alexnet/fold1/best.ckpt",
                  "image_size": 512, "recipe": {...},
                  "calibration": {"method": "isotonic", "x": [...], "y": [...], ...}}, ...]}

Checkpoint paths are relative to the file's folder and must stay inside it, so the folder
can be moved or copied whole. A member's ``calibration`` is the map fitted for its fold (on
its held-out training slice with ``--holdout-fraction``, else on the model's other folds), or
``null``. ``image_size`` and ``recipe`` record what each member was trained on: the image
size it must be given, and the event it forecasts (label threshold and window).

One reader, one set of rules, for ``fdflare predict --ensemble``, ``fdflare forecast
--ensemble`` and ``fdflare serve``:

* every field is checked (format, model, fold, image size, recipe, calibration map), and a
  malformed one is an error naming the file and the field;
* a member's ``model`` is the architecture its checkpoint must hold (an ``fdflare train``
  checkpoint of another architecture is refused) and names the architecture of a bare
  ``state_dict`` (the study's released weights), whose ``image_size`` then defaults to 512;
* a member's ``image_size`` must be its checkpoint's;
* a member's ``recipe`` must be its checkpoint's event; for a bare ``state_dict``, which
  records none, it states what the weights forecast (else the study's event is assumed);
* every member must forecast the same event.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fdflare.core.errors import InputError
from fdflare.core.recipe import Recipe

ENSEMBLE_NAME = "ensemble.json"
FORMAT = 1
_KEYS = ("model", "fold", "checkpoint", "image_size", "recipe", "calibration")


@dataclass
class EnsembleEntry:
    """One member as ``ensemble.json`` describes it (checked, not yet loaded)."""

    checkpoint: Path
    model: str | None = None
    fold: int | None = None
    image_size: int | None = None
    recipe: Recipe | None = None
    calibration: Any = None  # fdflare.analysis.calibration.Calibrator or None


def write_ensemble(out: Path, members: list[dict[str, Any]]) -> Path:
    """Write ``out/ensemble.json`` for ``members`` (``model, fold, checkpoint, calibration``).

    Each member's image size and recipe are read from its checkpoint; the file's top-level
    ``recipe`` is the event they share.

    Raises:
        InputError: a checkpoint outside ``out``, unreadable, or members of different events.
    """
    from fdflare.core.io import write_text_atomic
    from fdflare.core.recipe import common_recipe
    from fdflare.training.checkpoint import checkpoint_recipe, checkpoint_record, read_checkpoint

    rows, recipes = [], []
    for m in members:
        full = ckpt = Path(m["checkpoint"])
        rel = Path(os.path.relpath(full.resolve(), out.resolve()))
        if rel.parts and rel.parts[0] == "..":
            raise InputError(
                f"member {ckpt} lies outside the ensemble's folder {out} (the folder is moved whole)",
                path=ckpt,
            )
        rec = checkpoint_record(read_checkpoint(full, mmap=True), full)
        recipe = checkpoint_recipe(rec, full)
        recipes.append((rel.as_posix(), recipe))
        rows.append(
            {
                "model": m["model"],
                "fold": int(m["fold"]),
                "checkpoint": rel.as_posix(),
                "image_size": int(rec["config"].get("image_size", 512)),
                "recipe": None if recipe.assumed else recipe.to_dict(),
                "calibration": m.get("calibration"),
            }
        )
    shared = common_recipe(recipes)
    data = {
        "format": FORMAT,
        "recipe": None if shared.assumed else shared.to_dict(),
        "members": rows,
    }
    path = out / ENSEMBLE_NAME
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    return path


def _member_path(file: Path, i: int, text: str) -> Path:
    """A member's checkpoint, which must be a relative path inside the ensemble's folder."""
    rel = PurePosixPath(text.replace("\\", "/"))
    if text.strip() == "" or rel.is_absolute() or ".." in rel.parts or Path(text).is_absolute():
        raise InputError(
            f"member {i}: checkpoint {text!r} must be a path inside the ensemble's folder "
            "(relative, without '..'): the folder is moved whole",
            path=file,
            field="checkpoint",
        )
    ckpt = file.parent / Path(*rel.parts)
    if not ckpt.is_file():
        raise InputError(
            f"member {i}: checkpoint {text} not found beside the file",
            path=file,
            field="checkpoint",
        )
    return ckpt


def read_ensemble(path: str | os.PathLike[str]) -> list[EnsembleEntry]:
    """The members of an ``ensemble.json`` (a file, or the folder holding one), every field checked.

    Raises:
        InputError: not an ensemble file, or a malformed field (the member and field named).
    """
    from fdflare.analysis.calibration import MONOTONE, Calibrator
    from fdflare.core.io import read_json
    from fdflare.models.registry import list_models

    file = Path(path)
    if file.is_dir():
        file = file / ENSEMBLE_NAME
    data = read_json(file, what="ensemble file (`fdflare cv` writes OUT/ensemble.json)")
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or not members:
        raise InputError('expected {"format": 1, "members": [...]} with members', path=file)
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT or isinstance(fmt, bool):
        raise InputError(
            f"format {fmt!r}: this fdflare reads format {FORMAT}", path=file, field="format"
        )
    top = data.get("recipe")
    shared = None if top is None else Recipe.from_dict(top, path=file, field="recipe")
    out = []
    for i, m in enumerate(members, start=1):
        if not isinstance(m, dict):
            raise InputError(f"member {i} is not an object", path=file, field="members")
        unknown = sorted(set(m) - set(_KEYS))
        if unknown:
            raise InputError(
                f"member {i}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})",
                path=file,
                field=unknown[0],
            )
        if not isinstance(m.get("checkpoint"), str):
            raise InputError(f"member {i} has no checkpoint", path=file, field="checkpoint")
        model = m.get("model")
        if model is not None and (not isinstance(model, str) or model not in list_models()):
            raise InputError(
                f"member {i}: unknown model {model!r} ({', '.join(list_models())})",
                path=file,
                field="model",
            )
        fold = m.get("fold")
        if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
            raise InputError(f"member {i}: fold {fold!r} is not a number", path=file, field="fold")
        size = m.get("image_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise InputError(
                f"member {i}: image_size {size!r} is not a positive number of pixels",
                path=file,
                field="image_size",
            )
        recipe = (
            shared
            if m.get("recipe") is None
            else Recipe.from_dict(m["recipe"], path=file, field=f"members[{i}].recipe")
        )
        if shared is not None and recipe is not None and not recipe.same_event(shared):
            raise InputError(
                f"member {i} forecasts {recipe.event}, the file's recipe {shared.event}",
                path=file,
                field=f"members[{i}].recipe",
            )
        cal = m.get("calibration")
        if cal is not None and not isinstance(cal, dict):
            raise InputError(
                f'member {i}: calibration must be a map object ({{"method": ..., ...}}) or null',
                path=file,
                field="calibration",
            )
        ckpt = _member_path(file, i, m["checkpoint"])
        out.append(
            EnsembleEntry(
                checkpoint=ckpt,
                model=model,
                fold=fold,
                image_size=size,
                recipe=recipe,
                calibration=None
                if cal is None
                else Calibrator.from_dict(
                    cal,
                    path=str(file),
                    field=f"members[{i}].calibration",
                    methods=MONOTONE,
                ),
            )
        )
    return out


def load_ensemble(
    path: str | os.PathLike[str], *, model: str | None = None, image_size: int | None = None
) -> list[Any]:
    """Read an ``ensemble.json`` and load every member, by the rules of the module doc.

    Args:
        path: the file, or its folder.
        model: ``--model``: every member must be this architecture.
        image_size: ``--image-size``: every member must take this size.

    Returns:
        :class:`fdflare.forecast.service.Member` objects, loaded and in eval mode.

    Raises:
        InputError: a malformed file, a member that does not load or contradicts its entry,
            or members of different events.
    """
    from fdflare.forecast.service import load_members

    entries = read_ensemble(path)
    file = Path(path) / ENSEMBLE_NAME if Path(path).is_dir() else Path(path)
    for i, e in enumerate(entries, start=1):
        if model is not None and e.model is not None and e.model != model:
            raise InputError(
                f"member {i} ({e.checkpoint.name}) is a {e.model} model, not --model {model}",
                path=file,
                field="model",
            )
        if image_size is not None and e.image_size is not None and e.image_size != image_size:
            raise InputError(
                f"member {i} takes {e.image_size} px images, not --image-size {image_size}",
                path=file,
                field="image_size",
            )
    members = load_members(
        [e.checkpoint for e in entries],
        calibrations=[e.calibration for e in entries],
        model=model,
        models=[e.model for e in entries],
        image_sizes=[e.image_size or image_size for e in entries],
        recipes=[e.recipe for e in entries],
        source=file,
    )
    for member, entry in zip(members, entries, strict=True):
        member.fold = entry.fold
    return members


def load_checkpoints_or_ensemble(
    *,
    checkpoints: list[str] | None,
    ensemble: str | os.PathLike[str] | None,
    model: str | None = None,
    image_size: int | None = None,
) -> list[Any]:
    """The members of ``--checkpoint FILE...`` or ``--ensemble FILE``, loaded by one set of rules.

    What ``predict``, ``forecast`` and ``serve`` call: an ensemble file by
    :func:`load_ensemble`, checkpoints by :func:`fdflare.forecast.service.load_members`;
    either way members of different events are refused.
    """
    from fdflare.forecast.service import load_members

    if ensemble:
        return load_ensemble(ensemble, model=model, image_size=image_size)
    return load_members(checkpoints or [], model=model, image_size=image_size)
