"""Which forecasts to explain: a prediction table and a small, safe selection language.

``fdflare explain --predictions CSV --where EXPR`` picks rows of a prediction table:

* the study's format ``timestamp,flare_prob,target`` (``fdflare predict``), or
* the joined table ``label,flare_prob,target,goes_class,fl_lon,fl_lat,fl_start``
  (``fdflare predict --table``), which adds the location of the window's largest flare.

``EXPR`` combines these names with ``and``, ``or``, ``not`` and parentheses (``not``
binds tightest, then ``and``, then ``or``):

==============  ===============================================================
``tp``          a flare (target 1) forecast: ``flare_prob >= threshold``
``fp``          no flare (target 0), forecast
``tn``          no flare, not forecast
``fn``          a flare, not forecast
``positive``    target 1
``negative``    target 0
``near_limb``   the flare's ``|fl_lon| > 70`` (rounded to 0.01 deg, as ``fdflare spatial``)
``central``     the flare's ``|fl_lon| <= 70``; rows without a location are neither
==============  ===============================================================

The expression is parsed here, by a recursive-descent parser over those tokens; nothing is
ever evaluated as Python. :func:`explain` runs :func:`fdflare.analysis.explain.explain_image`
over the selected rows (or every image of a folder) and writes ``explanations.csv``.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.disk import NEAR_LIMB_DEG as LIMB_DEG
from fdflare.core.errors import InputError, MissingDataError, UsageError

__all__ = [
    "NAMES",
    "ExplainResult",
    "Selection",
    "default_geometry",
    "explain",
    "parse_where",
    "read_geometry_table",
    "read_prediction_table",
    "select_rows",
]

#: Names of the selection language and what each needs from the table.
NAMES = {
    "tp": "target",
    "fp": "target",
    "tn": "target",
    "fn": "target",
    "positive": "target",
    "negative": "target",
    "near_limb": "location",
    "central": "location",
}
KEYWORDS = ("and", "or", "not")

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\()|(\)))")

# An expression tree: ("name", n) | ("not", e) | ("and", a, b) | ("or", a, b)
Node = tuple


def _tokens(text: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            start = len(text) - len(text[pos:].lstrip())
            raise UsageError(
                f"--where {text!r}: unexpected {text[start]!r} at character {start + 1}; "
                "use names, and, or, not and parentheses"
            )
        tok = (m.group(1) or m.group(2) or m.group(3) or "").lower()
        out.append((tok, m.start(m.lastindex or 0) + 1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def fail(self, what: str) -> UsageError:
        return UsageError(f"--where {self.text!r}: {what}")

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.toks:
            raise self.fail(f"empty expression; combine {', '.join(NAMES)}")
        node = self.disjunction()
        if self.i < len(self.toks):
            tok, at = self.toks[self.i]
            raise self.fail(f"unexpected {tok!r} at character {at}")
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.peek() == "or":
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.peek() == "and":
            self.take()
            node = ("and", node, self.negation())
        return node

    def negation(self) -> Node:
        if self.peek() == "not":
            self.take()
            return ("not", self.negation())
        return self.atom()

    def atom(self) -> Node:
        if self.peek() is None:
            raise self.fail("the expression ends too early")
        tok, at = self.take()
        if tok == "(":
            node = self.disjunction()
            if self.peek() != ")":
                raise self.fail(f"the parenthesis at character {at} is not closed")
            self.take()
            return node
        if tok == ")" or tok in KEYWORDS:
            raise self.fail(f"unexpected {tok!r} at character {at}")
        if tok not in NAMES:
            raise self.fail(f"unknown name {tok!r}; valid names: {', '.join(NAMES)}")
        return ("name", tok)


#: the longest --where expression (deeper nesting than it allows is refused too)
MAX_WHERE = 500


def parse_where(text: str) -> Node:
    """Parse a ``--where`` expression into a tree.

    Raises:
        UsageError: an unknown name (listing the valid ones), a stray character or
            keyword, or unbalanced parentheses, naming ``--where``.
    """
    if len(text) > MAX_WHERE:
        raise UsageError(
            f"--where is {len(text)} characters long; an expression holds at most {MAX_WHERE}"
        )
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise UsageError("--where is nested too deeply (parentheses or not)") from None


def _names(node: Node) -> set[str]:
    if node[0] == "name":
        return {node[1]}
    return set().union(*(_names(child) for child in node[1:]))


def _evaluate(node: Node, masks: dict[str, np.ndarray]) -> np.ndarray:
    kind = node[0]
    if kind == "name":
        return masks[node[1]]
    if kind == "not":
        return ~_evaluate(node[1], masks)
    left, right = _evaluate(node[1], masks), _evaluate(node[2], masks)
    return (left & right) if kind == "and" else (left | right)


def read_prediction_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a prediction table: ``path``, ``flare_prob``, ``target`` (or NA), ``fl_lon``, ``fl_lat``.

    Accepts ``timestamp,flare_prob[,target]`` and the joined table (``label`` for
    ``timestamp``, with ``fl_lon``, ``fl_lat``), read by the one reader of prediction files
    (:func:`fdflare.inference.predictions.read_prediction_file`). The result's ``attrs`` say
    whether the table has targets and locations.

    Raises:
        InputError: a missing column, or a value that is not a probability in [0, 1], a 0/1
            target, a longitude in -180..180 or a latitude in -90..90, naming file, line and
            field.
    """
    from fdflare.inference.predictions import read_prediction_file

    df = read_prediction_file(
        path,
        need=("id",),
        expected="a table of `fdflare predict` (timestamp,flare_prob,target or its _joined.csv)",
    )
    n = len(df)
    has_target, has_location = df.attrs["has_target"], df.attrs["has_location"]
    out = pd.DataFrame(
        {
            "path": df[df.attrs["id_column"]].astype(str).str.strip(),
            "flare_prob": df["flare_prob"].to_numpy(dtype=float),
            "target": df["target"].to_numpy(dtype=float) if has_target else np.full(n, np.nan),
            "fl_lon": df["fl_lon"].to_numpy(dtype=float) if has_location else np.full(n, np.nan),
            "fl_lat": df["fl_lat"].to_numpy(dtype=float) if has_location else np.full(n, np.nan),
        }
    )
    out.attrs.update(path=str(path), has_target=has_target, has_location=has_location)
    return out


@dataclass
class Selection:
    """The rows a ``--where`` expression picked, and how many there were."""

    rows: pd.DataFrame
    n_table: int
    expression: str


def select_rows(table: pd.DataFrame, where: str, *, threshold: float = 0.5) -> Selection:
    """The rows of ``table`` (:func:`read_prediction_table`) that ``where`` selects, in order.

    Raises:
        UsageError: a bad expression, or one that needs targets or flare locations the
            table lacks (naming the table and what gives them).
    """
    tree = parse_where(where)
    used = _names(tree)
    source = table.attrs.get("path", "the prediction table")
    need_target = sorted(n for n in used if NAMES[n] == "target")
    if need_target and not table.attrs.get("has_target", True):
        raise UsageError(
            f"--where {where!r}: {', '.join(need_target)} need(s) a target column, and "
            f"{source} has none (predict with --labels)"
        )
    need_location = sorted(n for n in used if NAMES[n] == "location")
    if need_location and not table.attrs.get("has_location", True):
        raise UsageError(
            f"--where {where!r}: {', '.join(need_location)} need(s) the flare locations "
            f"fl_lon, fl_lat, and {source} has none (use the _joined.csv of "
            "`fdflare predict --table labels.csv`)"
        )
    target = table["target"].to_numpy(float)
    forecast = table["flare_prob"].to_numpy(float) >= threshold
    lon = np.round(table["fl_lon"].to_numpy(float), 2)
    known = np.isfinite(lon)
    flare, quiet = target == 1, target == 0
    masks = {
        "tp": flare & forecast,
        "fp": quiet & forecast,
        "tn": quiet & ~forecast,
        "fn": flare & ~forecast,
        "positive": flare,
        "negative": quiet,
        "near_limb": known & (np.abs(np.where(known, lon, 0.0)) > LIMB_DEG),
        "central": known & (np.abs(np.where(known, lon, 0.0)) <= LIMB_DEG),
    }
    try:
        keep = _evaluate(tree, masks) if len(table) else np.zeros(0, dtype=bool)
    except RecursionError:
        raise UsageError("--where is nested too deeply (parentheses or not)") from None
    return Selection(table[keep].reset_index(drop=True), len(table), where)


# --------------------------------------------------------------------------- many images


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
    from fdflare.analysis.explain import CSV_COLUMNS, SHARE_KEYS, explain_image
    from fdflare.core.io import atomic_open
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.data.sources import check_images, open_images
    from fdflare.inference.images import list_images
    from fdflare.inference.predict import load_model, resolve_device

    def say(text: str) -> None:
        (warn or (lambda s: print(f"fdflare explain: {s}", file=sys.stderr)))(text)

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    require_captum()
    device = resolve_device(accelerator)  # an accelerator this machine lacks: refused now
    n_table: int | None = None
    notes: list[str] = []
    if predictions is not None:
        if where is None:
            raise InputError("a prediction table needs a --where expression", path=predictions)
        sel = select_rows(read_prediction_table(predictions), where, threshold=threshold)
        root, names = Path(images), sel.rows["path"].tolist()
        flares = list(zip(sel.rows["fl_lon"], sel.rows["fl_lat"], strict=True))
        n_table = sel.n_table
    else:
        root, names = list_images(images)
        flares = [(math.nan, math.nan)] * len(names)
    selected = len(names)
    left_out = max(0, selected - limit) if limit is not None else 0
    names, flares = names[: selected - left_out], flares[: selected - left_out]
    pngs = _png_names(names, method)
    geo_path = Path(geometry) if geometry is not None else None
    inputs = [checkpoint, images, predictions, geo_path]
    resolved = check_output_dir(out, inputs=inputs, writes=["explanations.csv", *pngs])
    if Path(images).is_dir() and resolved.is_relative_to(root.resolve()):
        from fdflare.core.errors import OutputError

        raise OutputError(
            f"--out {out} is inside the image folder {root}: its figures would be taken for "
            "magnetograms by every later run; write them elsewhere"
        )
    if geo_path is None:
        geo_path = default_geometry(root)
    geo_rows = read_geometry_table(geo_path) if geo_path is not None else {}
    loaded = load_model(checkpoint, model=model, image_size=image_size)
    loaded.net.to(device)  # explain_image runs on the device of the network's parameters
    source = open_images(root)
    shown = predictions if predictions is not None else images
    if names:
        wanted = pd.DataFrame({"label": names})
        missing = [n for n, ok in zip(names, source.exists(wanted["label"]), strict=True) if not ok]
        if missing:
            raise MissingDataError(
                f"{len(missing)} of {len(names)} images to explain are missing (listed in "
                f"{shown}), e.g. {', '.join(source.describe(n) for n in missing[:5])}"
            )
        check_images(wanted, source, image_size=loaded.image_size, table_path=shown)
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
        for name, (lon, lat), png in zip(names, flares, pngs, strict=True):
            geo = geo_rows.get(name) or geo_rows.get(Path(name).name)
            flare = (float(lon), float(lat)) if np.isfinite(lon) and np.isfinite(lat) else None
            rec = explain_image(
                loaded,
                np.asarray(source.read(name)),
                geo,
                method=method,
                out_png=out / png,
                title=_title(name, geo),
                flare=flare,
                name=source.describe(name),
            )
            if geo is None and rec["warnings"]:  # say where the geometry was looked for
                where_geo = (
                    f"no row in {geo_path}" if geo_path else "no geometry.csv: give --geometry"
                )
                rec["warnings"][0] = rec["warnings"][0].replace(
                    "no disk geometry", f"no disk geometry ({where_geo})", 1
                )
            for w in rec["warnings"]:
                say(f"warning: {name}: {w}")
            n_warn += len(rec["warnings"])
            rows.append(
                {
                    "path": name,
                    "probability": rec["probability"],
                    "method": method,
                    **{k: rec[k] for k in SHARE_KEYS},
                    "fl_lon": lon,
                    "fl_lat": lat,
                    "png": png,
                    "warning": "; ".join(rec["warnings"]),
                }
            )
            bar.update(1)
        bar.close()
        csv = out / "explanations.csv"
        frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
        with atomic_open(csv, "w") as fh:
            frame.to_csv(fh, index=False, lineterminator="\n", float_format="%.10g")
    for note in notes:
        say(note)
    return ExplainResult(csv, rows, selected, left_out, n_table, n_warn, notes, str(device))
