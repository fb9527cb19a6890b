"""Prepare stage: Helioviewer JPEG 2000 tree -> small 8-bit images, disk geometry, array store.

Each ``SRC/<rel>/<name>.jp2`` becomes ``OUT/<rel>/<name>.png`` (or ``.jpg``), ``size`` x
``size`` pixels. The JP2 is decoded at reduced resolution (the largest ``2**k`` reduction
that keeps at least ``size`` pixels and that the file's wavelet levels allow) and
area-averaged (box filter) the rest of the way, 40 to 130 times faster than a full decode
(``benchmarks/bench_prepare.py``).
The disk geometry of every image (observation time, centre, radius in output pixels) is read
from the JP2's Helioviewer XML header into ``OUT/geometry.csv``.

The batch runs over processes, skips images that are already up to date, writes every file
atomically, reports unreadable inputs in ``OUT/bad_files.csv`` and carries on. Optionally
it packs all images into one memory-mapped array for fast training
(:func:`open_array_store`). See ``docs/prepare.md`` for the file formats.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import FdflareError, InputError, MissingDataError
from fdflare.core.io import atomic_path
from fdflare.core.paths import walk_tree
from fdflare.prepare.decode import (
    choose_reduce,
    decode_jp2,
    decode_with_geometry,
    geometry_of,
    jp2_header,
)
from fdflare.prepare.fits import decode_fits_with_geometry, is_fits, parse_scaling
from fdflare.prepare.geometry import (
    GEOMETRY_FILE,
    PREPARE_GEOMETRY_COLUMNS,
    earth_b0_deg,
    read_geometry_file,
    write_geometry_file,
)
from fdflare.prepare.jp2 import read_jp2_info
from fdflare.prepare.pack import _mtimes, _write_table, build_array_store
from fdflare.prepare.store import STORE_FILE, STORE_INDEX_FILE, open_array_store
from fdflare.prepare.workers import default_workers, progress_bar, run_tasks

__all__ = [
    "BAD_FILES_COLUMNS",
    "GEOMETRY_COLUMNS",
    "PrepareResult",
    "build_array_store",
    "choose_reduce",
    "decode_jp2",
    "open_array_store",
    "prepare",
    "read_geometry",
]

#: Columns of the ``geometry.csv`` that prepare writes (:data:`GEOMETRY_SCHEMA`), in order.
GEOMETRY_COLUMNS = PREPARE_GEOMETRY_COLUMNS
#: Columns an older ``geometry.csv`` may lack; :func:`read_geometry` fills them in.
OPTIONAL_GEOMETRY_COLUMNS = ("b0_deg",)
#: Columns of ``bad_files.csv``.
BAD_FILES_COLUMNS = ("path", "reason")
BAD_FILES_FILE = "bad_files.csv"
FORMATS = {"png": ".png", "jpg": ".jpg"}
#: The study wrote its JPGs with OpenCV's default quality.
DEFAULT_JPEG_QUALITY = 95
#: Seconds between checkpoints of ``geometry.csv`` during a long run.
CHECKPOINT_SECONDS = 60.0

# Errors that mean "this input file cannot be used" (decoders raise all of these on
# corrupt data); anything else is a bug or an environment problem and stops the run.
_BAD_INPUT = (FdflareError, OSError, SyntaxError, ValueError, EOFError, struct.error)


@dataclass
class PrepareResult:
    """What a run of :func:`prepare` did.

    Attributes:
        out: the output directory.
        total: JP2 files found under the source directory.
        prepared: images decoded and written in this run.
        up_to_date: images skipped because their output was already complete and newer.
        failed: files (and folders) that could not be prepared (listed in ``bad_files.csv``).
        ignored: other files under the source directory (not ``.jp2``), not read.
        kept: geometry rows kept for images whose JP2 is no longer in the source tree.
        bad: the ``bad_files.csv`` table of this run.
        geometry: the ``geometry.csv`` table.
        store: path of the array store, when one was written or is up to date.
        store_excluded: geometry rows left out of the array store (image of another size).
        unreadable: folders and links under the source that could not be walked (unreadable,
            a link that loops back to a folder containing it, a link that points nowhere);
            they are also rows of ``bad_files.csv`` and counted in ``failed``.
        upsampled: images made from a JP2 smaller than ``size`` (upsampled, no detail added).
        smallest_source: ``"W x H"`` of the smallest such JP2.
        fits: how many of the ``total`` source files are FITS (the rest are JP2).
    """

    out: Path
    total: int = 0
    prepared: int = 0
    up_to_date: int = 0
    failed: int = 0
    ignored: int = 0
    kept: int = 0
    bad: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BAD_FILES_COLUMNS))
    geometry: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GEOMETRY_COLUMNS))
    store: Path | None = None
    store_excluded: int = 0
    unreadable: list[str] = field(default_factory=list)
    upsampled: int = 0
    smallest_source: str = ""
    fits: int = 0


def _write_image(path: Path, data: np.ndarray, fmt: str, jpeg_quality: int) -> None:
    from PIL import Image

    image = Image.fromarray(data)
    with atomic_path(path) as tmp:
        if fmt == "png":
            image.save(tmp, format="PNG", compress_level=1)
        else:
            image.save(tmp, format="JPEG", quality=jpeg_quality)


# --------------------------------------------------------------------------- one file


@dataclass(frozen=True)
class _Task:
    source: str  # relative to src
    path: str  # relative to out
    src: str  # absolute
    dst: str  # absolute
    size: int
    fmt: str
    full_decode: bool
    jpeg_quality: int
    header_only: bool = False  # output is up to date: only recompute its geometry row
    fits_scale: str = "helioviewer"


def _geometry_row(task: _Task, geo: dict[str, Any]) -> dict[str, Any]:
    return {"path": task.path, "source": task.source, **{c: geo[c] for c in GEOMETRY_COLUMNS[2:]}}


def _output_shape(path: str) -> tuple[int, int] | None:
    """Return ``(height, width)`` of an existing output image, ``None`` if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return (im.height, im.width) if im.mode == "L" else None
    except (OSError, SyntaxError, ValueError):
        return None


def _prepare_one(task: _Task) -> dict[str, Any]:
    """Prepare one file: ``{"row": ..., "redone": ...}``, or ``{"bad": reason}`` for bad input."""
    from PIL import Image

    try:
        if is_fits(task.src):
            data, geo = decode_fits_with_geometry(
                task.src, task.size, task.fits_scale, full_decode=task.full_decode
            )
            row = _geometry_row(task, geo)
            _write_image(Path(task.dst), data, task.fmt, task.jpeg_quality)
            return {"row": row, "redone": True}
        if task.header_only and _output_shape(task.dst) == (task.size, task.size):
            info = read_jp2_info(task.src)
            header = jp2_header(info, task.src)
            k = 0
            if not task.full_decode and info.offset_x == 0 and info.offset_y == 0:
                k = choose_reduce(info.width, info.height, task.size, info.levels)
            row = _geometry_row(task, geometry_of(info, header, task.size, k, task.src))
            return {"row": row, "redone": False}
        # geometry first: a file without usable geometry gets no output image
        data, geo = decode_with_geometry(task.src, task.size, full_decode=task.full_decode)
        row = _geometry_row(task, geo)
    except (*_BAD_INPUT, Image.DecompressionBombError) as exc:
        return {"bad": _reason(exc, task.src)}
    _write_image(Path(task.dst), data, task.fmt, task.jpeg_quality)  # write errors stop the run
    return {"row": row, "redone": True}


def _reason(exc: BaseException, src: str) -> str:
    """One short line for ``bad_files.csv``: newlines folded, at most 200 characters."""
    if isinstance(exc, InputError):
        where = f"field '{exc.field}': " if exc.field else ""
        text = where + exc.message
    else:
        text = str(exc).replace(src, "<file>").strip() or "no message"
        text = f"{type(exc).__name__}: {text}"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------- the batch


def _stem(source: str) -> str:
    """``a/b.jp2`` -> ``a/b``; ``a/b.fits.fz`` -> ``a/b``."""
    lower = source.lower()
    for suffix in (".fits.fz", ".jp2", ".fits", ".fts", ".fit"):
        if lower.endswith(suffix):
            return source[: -len(suffix)]
    return source


def _relative_prefix(out: Path, src: Path) -> str | None:
    """``"rel/"`` when ``out`` is ``src/rel`` (``""`` when it is ``src``), else ``None``."""
    try:
        rel = out.resolve().relative_to(src.resolve()).as_posix()
    except ValueError:
        return None
    return "" if rel == "." else rel + "/"


def _scan_sources(src: Path, out: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """Return the ``.jp2`` and FITS files under ``src``, the other files, the unreadable folders.

    Paths are relative POSIX paths. Links to folders are followed (a month kept on another
    disk); hidden files and folders are skipped (temporary files of an unfinished download or
    write), and so is ``out`` when it lies inside ``src`` (but not when it *is* ``src``). A
    folder that cannot be listed (permissions), a link back to a folder that contains it (a
    loop) and a link that points nowhere are returned with the reason, never skipped in
    silence.
    """
    out_resolved = out.resolve()
    files, unreadable = walk_tree(
        src, skip_hidden=True, prune=lambda folder: folder.resolve() == out_resolved
    )
    found = [f for f in files if f.lower().endswith(".jp2") or is_fits(f)]
    others = [f for f in files if not (f.lower().endswith(".jp2") or is_fits(f))]
    return found, others, unreadable


def read_geometry(out: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``OUT/geometry.csv`` written by :func:`prepare` (:func:`read_geometry_file`).

    Raises:
        MissingDataError: there is no ``geometry.csv``.
        InputError: it lacks a column of :data:`GEOMETRY_COLUMNS`, or a value is not what
            its column holds (:data:`GEOMETRY_SCHEMA`).
    """
    path = Path(out) / GEOMETRY_FILE
    if not path.is_file():
        raise MissingDataError(
            f"{path} not found: run `fdflare prepare --source SRC --out {Path(out)}` first"
        )
    required = tuple(c for c in GEOMETRY_COLUMNS if c not in OPTIONAL_GEOMETRY_COLUMNS)
    table = read_geometry_file(path, require=required, what="geometry table")
    if "b0_deg" not in table.columns:  # written before prepare recorded B0
        table["b0_deg"] = (
            earth_b0_deg(table["date_obs"].astype(str).to_numpy())
            if len(table)
            else pd.Series(dtype=float)
        )
    return table


def prepare(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    size: int = 512,
    fmt: str = "png",
    workers: int | None = None,
    full_decode: bool = False,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    array_store: bool = True,
    progress: bool = True,
    fits_scale: str = "helioviewer",
) -> PrepareResult:
    """Prepare every ``.jp2`` under ``src`` into ``size`` x ``size`` images under ``out``.

    Writes ``out/<rel>/<stem>.<fmt>`` for each ``src/<rel>/<stem>.jp2``,
    ``out/geometry.csv`` (one row per image, :data:`GEOMETRY_COLUMNS`) and
    ``out/bad_files.csv`` (``path, reason`` of the files that failed in this run), and
    (unless ``array_store`` is false) the array store ``out/images.npy`` plus
    ``out/images_index.csv``.

    Re-running is cheap and safe: an image whose output exists and is newer than its JP2
    is skipped and its geometry row kept; deleted or stale outputs are redone; rows of
    images whose JP2 has since been removed are kept while the image exists.

    Args:
        src: root of the JP2 tree (hidden files and folders are skipped).
        out: output root (created; may be ``src`` itself).
        size: side of the square output images in pixels.
        fmt: ``"png"`` (lossless) or ``"jpg"`` (the study's layout, quality ``jpeg_quality``).
        workers: processes to use (default: the CPUs available); 1 runs in this process.
        full_decode: decode at full resolution and area-resize, as the study did, instead of
            decoding at reduced resolution (40 to 130 times slower; sub-pixel different).
            FITS files are then read whole and area-averaged, instead of one row per
            output row (:func:`fdflare.prepare.fits.decode_fits_with_geometry`).
        jpeg_quality: JPEG quality for ``fmt="jpg"`` (the study used OpenCV's default, 95).
        array_store: also pack all images into ``out/images.npy`` (see
            :func:`open_array_store`), the default: training and prediction read it.
        progress: show a progress bar on stderr when it is a terminal.
        fits_scale: the transform of FITS magnetograms (gauss) to 8 bits:
            ``helioviewer`` (+-250 G, Helioviewer's grey levels) or ``clip:N``
            (:func:`fdflare.prepare.fits.parse_scaling`).

    Returns:
        The counts and tables of the run; ``result.failed > 0`` means some files are listed
        in ``bad_files.csv``.

    Raises:
        MissingDataError: ``src`` is not a directory.
        InputError: an argument is out of range, or an existing ``geometry.csv`` is malformed.
    """
    src, out = Path(src), Path(out)
    if src.is_file():
        raise InputError("is a file; expected a folder of JP2 files", path=src)
    if not src.is_dir():
        raise MissingDataError(f"source folder {src} not found")
    if fmt not in FORMATS:
        raise InputError(
            f"unknown image format {fmt!r}: use one of {', '.join(FORMATS)}", field="format"
        )
    if not 1 <= size <= 65536:
        raise InputError(f"size must be between 1 and 65536, got {size}", field="size")
    if not 1 <= jpeg_quality <= 100:
        raise InputError(
            f"JPEG quality must be between 1 and 100, got {jpeg_quality}", field="jpeg_quality"
        )
    fits_scale = parse_scaling(fits_scale).name
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a directory", path=out)
    out.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    result = PrepareResult(out=out)

    sources, others, unreadable = _scan_sources(src, out)
    result.unreadable = [rel for rel, _ in unreadable]
    table = pd.DataFrame({"source": pd.Series(sources, dtype="object")})
    table["path"] = pd.Series([_stem(s) + FORMATS[fmt] for s in sources], dtype="object")
    # files of ours found under src (when out is src or inside it) are not "ignored"
    ours = {GEOMETRY_FILE, BAD_FILES_FILE, STORE_FILE, STORE_INDEX_FILE, *table["path"]}
    prefix = _relative_prefix(out, src)
    result.ignored = sum(
        1 for rel in others if prefix is None or rel.removeprefix(prefix) not in ours
    )
    table["src_mtime"] = _mtimes(src, table["source"])
    table["out_mtime"] = _mtimes(out, table["path"])
    result.total = len(table)
    result.fits = sum(1 for name in sources if is_fits(name))

    previous = (
        read_geometry(out)
        if (out / GEOMETRY_FILE).exists()
        else pd.DataFrame(columns=GEOMETRY_COLUMNS)
    )
    previous = previous.drop_duplicates("path", keep="last")
    current = table.merge(
        previous[["path", "source", "width", "height"]].rename(columns={"source": "prev_source"}),
        on="path",
        how="left",
    )
    up_to_date = (
        (current["out_mtime"] >= current["src_mtime"]) & (current["src_mtime"] >= 0)
    ).to_numpy()
    same_row = (
        (current["prev_source"].astype("object") == current["source"]).to_numpy(dtype=bool)
        & (pd.to_numeric(current["width"], errors="coerce") == size).to_numpy()
        & (pd.to_numeric(current["height"], errors="coerce") == size).to_numpy()
    )
    duplicate = current["path"].duplicated(keep="first").to_numpy()
    keep_rows = up_to_date & same_row & ~duplicate
    header_only = up_to_date & ~same_row & ~duplicate

    rows: dict[str, dict[str, Any]] = {}
    bad: list[dict[str, str]] = [{"path": rel, "reason": why} for rel, why in unreadable]
    bad += [
        {"path": s, "reason": f"same output path as another file: {p}"}
        for s, p in zip(current["source"][duplicate], current["path"][duplicate], strict=True)
    ]
    # previous rows: of up-to-date images, and of images whose JP2 is gone but still exist
    kept_paths = set(current["path"][keep_rows])
    gone = previous[~previous["path"].isin(set(current["path"]))]
    gone = gone[_mtimes(out, gone["path"]) >= 0]
    result.kept = len(gone)
    result.up_to_date = int(keep_rows.sum())
    kept = pd.concat([previous[previous["path"].isin(kept_paths)], gone], ignore_index=True)

    tasks = [
        _Task(
            s,
            p,
            str(src / s),
            str(out / p),
            size,
            fmt,
            full_decode,
            jpeg_quality,
            bool(h),
            fits_scale,
        )
        for s, p, h in zip(
            current["source"][~keep_rows & ~duplicate],
            current["path"][~keep_rows & ~duplicate],
            header_only[~keep_rows & ~duplicate],
            strict=True,
        )
    ]

    def save_geometry() -> pd.DataFrame:
        new = pd.DataFrame(list(rows.values()), columns=list(GEOMETRY_COLUMNS))
        parts = [t for t in (kept, new) if len(t)]
        geometry = (
            pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=GEOMETRY_COLUMNS)
        )
        geometry = geometry[list(GEOMETRY_COLUMNS)].sort_values("path", kind="stable")
        write_geometry_file(out / GEOMETRY_FILE, geometry.reset_index(drop=True))
        return geometry

    bar = progress_bar(len(tasks), enabled=progress)
    last_save = time.monotonic()

    def on_result(task: _Task, res: dict[str, Any]) -> None:
        nonlocal last_save
        if "bad" in res:
            bad.append({"path": task.source, "reason": res["bad"]})
        else:
            rows[task.path] = res["row"]
            if res["redone"]:
                result.prepared += 1
            else:
                result.up_to_date += 1
        bar.update(1)
        if time.monotonic() - last_save > CHECKPOINT_SECONDS:
            save_geometry()
            last_save = time.monotonic()

    try:
        run_tasks(_prepare_one, tasks, workers, on_result)
    finally:
        bar.close()
        result.geometry = save_geometry().reset_index(drop=True)
        result.bad = pd.DataFrame(bad, columns=list(BAD_FILES_COLUMNS))
        result.bad = result.bad.sort_values("path", kind="stable").reset_index(drop=True)
        result.failed = len(result.bad)
        _write_table(out / BAD_FILES_FILE, result.bad)

    small = result.geometry[
        (pd.to_numeric(result.geometry["src_width"]) < pd.to_numeric(result.geometry["width"]))
        | (pd.to_numeric(result.geometry["src_height"]) < pd.to_numeric(result.geometry["height"]))
    ]
    result.upsampled = len(small)
    if len(small):
        least = small.iloc[int(np.argmin(pd.to_numeric(small["src_width"]).to_numpy()))]
        result.smallest_source = f"{int(least['src_width'])} x {int(least['src_height'])}"
    if array_store:
        result.store, result.store_excluded = build_array_store(
            out, result.geometry, size, workers=workers, progress=progress
        )
    return result
