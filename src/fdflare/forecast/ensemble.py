"""``ensemble.json``: the fold checkpoints of a cross-validation and their calibration maps.

``fdflare cv`` writes ``OUT/ensemble.json`` after the last pair::

    {"format": 1,
     "members": [{"model": "alexnet", "fold": 1, "checkpoint": "alexnet/fold1/best.ckpt",
                  "calibration": {"method": "isotonic", "x": [...], "y": [...], ...}}, ...]}

Checkpoint paths are relative to the file's folder, so the folder can be moved or copied
whole. A member's ``calibration`` is the map fitted for its fold (on its held-out training
slice with ``--holdout``, else on the model's other folds), or ``null``. ``fdflare predict
--ensemble FILE`` runs every member, maps each member's probability through its own map,
and averages them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fdflare.core.errors import InputError

ENSEMBLE_NAME = "ensemble.json"
FORMAT = 1


def write_ensemble(out: Path, members: list[dict[str, Any]]) -> Path:
    """Write ``out/ensemble.json`` for ``members`` (``model, fold, checkpoint, calibration``)."""
    from fdflare.core.io import write_text_atomic

    rows = []
    for m in members:
        ckpt = Path(m["checkpoint"])
        rel = os.path.relpath(ckpt.resolve(), out.resolve()) if ckpt.is_absolute() else str(ckpt)
        rows.append(
            {
                "model": m["model"],
                "fold": int(m["fold"]),
                "checkpoint": Path(rel).as_posix(),
                "calibration": m.get("calibration"),
            }
        )
    path = out / ENSEMBLE_NAME
    write_text_atomic(path, json.dumps({"format": FORMAT, "members": rows}, indent=2) + "\n")
    return path


def read_ensemble(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The members of an ``ensemble.json``, checkpoints resolved and maps read.

    Returns:
        One dict per member: ``model``, ``fold``, ``checkpoint`` (a path) and
        ``calibration`` (a :class:`~fdflare.analysis.calibration.Calibrator` or None).

    Raises:
        InputError: not an ensemble file, a member without a checkpoint file, or a bad map.
    """
    from fdflare.analysis.calibration import Calibrator
    from fdflare.core.io import read_json

    file = Path(path)
    if file.is_dir():
        file = file / ENSEMBLE_NAME
    data = read_json(file, what="ensemble file (`fdflare cv` writes OUT/ensemble.json)")
    from fdflare.models.registry import list_models

    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or not members:
        raise InputError('expected {"format": 1, "members": [...]} with members', path=file)
    if data.get("format", FORMAT) != FORMAT:
        raise InputError(
            f"format {data.get('format')!r}: this fdflare reads format {FORMAT}",
            path=file,
            field="format",
        )
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("checkpoint"), str):
            raise InputError(f"member {i + 1} has no checkpoint", path=file, field="members")
        if m.get("model") is not None and m.get("model") not in list_models():
            raise InputError(
                f"member {i + 1}: unknown model {m.get('model')!r} ({', '.join(list_models())})",
                path=file,
                field="model",
            )
        fold = m.get("fold")
        if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
            raise InputError(
                f"member {i + 1}: fold {fold!r} is not a number", path=file, field="fold"
            )
        if m.get("calibration") is not None and not isinstance(m.get("calibration"), dict):
            raise InputError(
                f"member {i + 1}: calibration must be a map object "
                '({"method": ..., ...}) or null',
                path=file,
                field="calibration",
            )
        ckpt = (file.parent / m["checkpoint"]).resolve()
        if not ckpt.is_file():
            raise InputError(
                f"member {i + 1}: checkpoint {m['checkpoint']} not found beside the file",
                path=file,
                field="checkpoint",
            )
        cal = m.get("calibration")
        out.append(
            {
                "model": m.get("model"),
                "fold": m.get("fold"),
                "checkpoint": ckpt,
                "calibration": None if cal is None else Calibrator.from_dict(cal, path=str(file)),
            }
        )
    return out
