"""The run of ``fdflare explain``: load, select, attribute, write.

:func:`explain` checks everything first (captum, the output folder, the prediction table
and its ``--where`` expression (:mod:`fdflare.analysis.explain_select`), the checkpoint,
the images and the geometry file), then runs :func:`fdflare.analysis.explain.explain_image`
over the selected rows (or every image of a folder), one PNG each, and writes
``explanations.csv`` atomically.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.analysis.explain_select import read_prediction_table, select_rows
from fdflare.core.errors import InputError, MissingDataError

__all__ = ["ExplainResult", "default_geometry", "explain", "read_geometry_table"]


@dataclass
class ExplainResult:
    """What :func:`explain` wrote (``device``: where the attribution ran)."""

    csv: Path
    rows: list[dict[str, Any]]
    selected: int
    left_out: int = 0
    n_table: int | None = None
    warnings: int = 0
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"


def _png_names(names: Sequence[str], method: str) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        stem = Path(name).stem or "image"
        candidate, k = f"{stem}_{method}.png", 1
        while candidate in seen:
            k += 1
            candidate = f"{stem}_{method}_{k}.png"
        seen.add(candidate)
        out.append(candidate)
    return out


def default_geometry(root: Path) -> Path | None:
    """The default geometry file of an image folder, or ``None``.

    ``ROOT/geometry.csv`` (``fdflare prepare``), else ``ROOT/../geometry.csv`` when ROOT is
    ``DIR/images`` (``fdflare synth``): both list paths relative to the image folder.
    """
    for candidate in (root / "geometry.csv", root.parent / "geometry.csv"):
        if candidate.is_file() and (candidate.parent == root or root.name == "images"):
            return candidate
    return None


def read_geometry_table(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``geometry.csv`` rows by image path (and by file name where that is unique).

    Read by the one reader of the file, :func:`fdflare.prepare.geometry.read_geometry_file`.

    Raises:
        InputError: no such file, a column of ``path, center_x, center_y, radius_px``
            missing, a value that is not a usable number (naming its line and field), or two
            rows for one path.
    """
    from fdflare.prepare.geometry import read_geometry_file

    table = read_geometry_file(path)
    rows = {str(r["path"]): dict(r) for r in table.to_dict("records")}
    names = pd.Series([Path(p).name for p in rows])
    unique = set(names[~names.duplicated(keep=False)])
    for key in list(rows):
        if Path(key).name in unique:
            rows.setdefault(Path(key).name, rows[key])
    return rows


def _title(name: str, geometry: Mapping[str, Any] | None) -> str:
    from fdflare.core.paths import parse_image_times

    t = parse_image_times([name])[0].iloc[0]
    if t == t:  # not NaT
        return f"{t:%Y-%m-%d %H:%M:%S} UTC"
    if geometry is not None and str(geometry.get("date_obs", "")).strip():
        return str(geometry["date_obs"])
    return Path(name).name


def explain(
    checkpoint: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    predictions: str | os.PathLike[str] | None = None,
    where: str | None = None,
    method: str = "guided-gradcam",
    geometry: str | os.PathLike[str] | None = None,
    threshold: float = 0.5,
    limit: int | None = None,
    model: str | None = None,
    image_size: int | None = None,
    quiet: bool = False,
    warn: Callable[[str], None] | None = None,
    accelerator: str = "cpu",
) -> ExplainResult:
    """Explain every image of ``images``, or the rows of ``predictions`` that ``where`` selects.

    Everything is checked before the first map: captum, the output folder, the table and
    the expression, the checkpoint, every image (present, of the checkpoint's size) and the
    geometry file. Writes one PNG per image and ``OUT/explanations.csv`` (atomically,
    :data:`CSV_COLUMNS`); warnings go to ``warn`` (stderr by default), one line each.

    Args:
        checkpoint: model checkpoint or bare ``state_dict`` (with ``model``).
        images: image folder or array store (or, without ``predictions``, a text list).
        out: output folder.
        predictions: prediction table (:func:`read_prediction_table`).
        where: selection expression over ``predictions`` (:func:`parse_where`).
        method: attribution method.
        geometry: ``geometry.csv`` (default: :func:`default_geometry`).
        threshold: forecast threshold of ``tp``/``fp``/``tn``/``fn``.
        limit: explain at most this many images (the rest are counted).
        model: architecture of a bare ``state_dict``.
        image_size: image size of a bare ``state_dict``.
        quiet: no progress bar.
        warn: where warnings go.
        accelerator: where the model and the attribution run (captum works on CUDA
            tensors): ``auto``, ``cpu``, ``gpu``/``cuda`` or ``mps``
            (:func:`fdflare.inference.predict.resolve_device`).
    """
    from fdflare.analysis.attribution import METHODS, require_captum
    from fdflare.analysis.explain import CSV_COLUMNS
    from fdflare.core.io import atomic_open
    from fdflare.core.outputs import output_lock
    from fdflare.data.sources import open_images
    from fdflare.inference.predict import load_model, resolve_device

    def say(text: str) -> None:
        (warn or (lambda s: print(f"fdflare explain: {s}", file=sys.stderr)))(text)

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    require_captum()
    device = resolve_device(accelerator)  # an accelerator this machine lacks: refused now
    notes: list[str] = []
    root, names, flares, n_table = _selected_images(images, predictions, where, threshold)
    selected = len(names)
    left_out = max(0, selected - limit) if limit is not None else 0
    names, flares = names[: selected - left_out], flares[: selected - left_out]
    pngs = _png_names(names, method)
    geo_path = Path(geometry) if geometry is not None else None
    _check_output(out, images, root, [checkpoint, images, predictions, geo_path], pngs)
    if geo_path is None:
        geo_path = default_geometry(root)
    geo_rows = read_geometry_table(geo_path) if geo_path is not None else {}
    loaded = load_model(checkpoint, model=model, image_size=image_size)
    loaded.net.to(device)  # explain_image runs on the device of the network's parameters
    source = open_images(root)
    shown = predictions if predictions is not None else images
    _check_present(names, source, loaded.image_size, shown)
    if where is not None and not names:
        notes.append(
            f"note: --where {where!r} selected none of the {n_table} rows: nothing to explain"
        )
    rows: list[dict[str, Any]] = []
    n_warn = 0
    out = Path(out)
    from tqdm.auto import tqdm

    with output_lock(out, command="explain"):
        bar = tqdm(
            total=len(names),
            desc="explain",
            unit="image",
            disable=quiet or not sys.stderr.isatty(),
            file=sys.stderr,
        )
        for name, flare, png in zip(names, flares, pngs, strict=True):
            geo = geo_rows.get(name) or geo_rows.get(Path(name).name)
            row = _explain_row(loaded, source, name, flare, geo, geo_path, method, out, png)
            warnings = row.pop("warnings")
            for w in warnings:
                say(f"warning: {name}: {w}")
            n_warn += len(warnings)
            rows.append({**row, "warning": "; ".join(warnings)})
            bar.update(1)
        bar.close()
        csv = out / "explanations.csv"
        frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
        with atomic_open(csv, "w") as fh:
            frame.to_csv(fh, index=False, lineterminator="\n", float_format="%.10g")
    for note in notes:
        say(note)
    return ExplainResult(csv, rows, selected, left_out, n_table, n_warn, notes, str(device))


def _selected_images(
    images: str | os.PathLike[str],
    predictions: str | os.PathLike[str] | None,
    where: str | None,
    threshold: float,
) -> tuple[Path, list[str], list[tuple[float, float]], int | None]:
    """The image root, the images to explain, their flares' ``(lon, lat)`` and the table's rows.

    The rows of ``predictions`` that ``where`` selects, or every image of ``images``.
    """
    from fdflare.inference.images import list_images

    if predictions is None:
        root, names = list_images(images)
        return root, names, [(math.nan, math.nan)] * len(names), None
    if where is None:
        raise InputError("a prediction table needs a --where expression", path=predictions)
    sel = select_rows(read_prediction_table(predictions), where, threshold=threshold)
    flares = list(zip(sel.rows["fl_lon"], sel.rows["fl_lat"], strict=True))
    return Path(images), sel.rows["path"].tolist(), flares, sel.n_table


def _check_output(
    out: str | os.PathLike[str],
    images: str | os.PathLike[str],
    root: Path,
    inputs: list[Any],
    pngs: list[str],
) -> None:
    """The output guard, and no figures inside the image folder."""
    from fdflare.core.errors import OutputError
    from fdflare.core.outputs import check_output_dir

    resolved = check_output_dir(out, inputs=inputs, writes=["explanations.csv", *pngs])
    if Path(images).is_dir() and resolved.is_relative_to(root.resolve()):
        raise OutputError(
            f"--out {out} is inside the image folder {root}: its figures would be taken for "
            "magnetograms by every later run; write them elsewhere"
        )


def _check_present(names: list[str], source: Any, image_size: int, shown: Any) -> None:
    """Refuse missing images, or images of another size than the model's, before any map."""
    from fdflare.data.sources import check_images

    if not names:
        return
    wanted = pd.DataFrame({"label": names})
    missing = [n for n, ok in zip(names, source.exists(wanted["label"]), strict=True) if not ok]
    if missing:
        raise MissingDataError(
            f"{len(missing)} of {len(names)} images to explain are missing (listed in "
            f"{shown}), e.g. {', '.join(source.describe(n) for n in missing[:5])}"
        )
    check_images(wanted, source, image_size=image_size, table_path=shown)


def _explain_row(
    loaded: Any,
    source: Any,
    name: str,
    flare: tuple[float, float],
    geo: Mapping[str, Any] | None,
    geo_path: Path | None,
    method: str,
    out: Path,
    png: str,
) -> dict[str, Any]:
    """Explain one image into ``out/png``: its row of ``explanations.csv``, with ``warnings``."""
    from fdflare.analysis.explain import SHARE_KEYS, explain_image

    lon, lat = flare
    rec = explain_image(
        loaded,
        np.asarray(source.read(name)),
        geo,
        method=method,
        out_png=out / png,
        title=_title(name, geo),
        flare=(float(lon), float(lat)) if np.isfinite(lon) and np.isfinite(lat) else None,
        name=source.describe(name),
    )
    if geo is None and rec["warnings"]:  # say where the geometry was looked for
        where_geo = f"no row in {geo_path}" if geo_path else "no geometry.csv: give --geometry"
        rec["warnings"][0] = rec["warnings"][0].replace(
            "no disk geometry", f"no disk geometry ({where_geo})", 1
        )
    return {
        "path": name,
        "probability": rec["probability"],
        "method": method,
        **{k: rec[k] for k in SHARE_KEYS},
        "fl_lon": lon,
        "fl_lat": lat,
        "png": png,
        "warnings": rec["warnings"],
    }
