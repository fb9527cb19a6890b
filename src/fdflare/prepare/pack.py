"""Pack prepared images into the array store (:mod:`fdflare.prepare.store` reads it)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.io import atomic_open, atomic_path
from fdflare.prepare.store import STORE_FILE, STORE_INDEX_FILE
from fdflare.prepare.workers import progress_bar, run_tasks

__all__ = ["build_array_store"]


def _mtimes(root: Path, rels: Iterable[str]) -> np.ndarray:
    """Modification times (ns) of ``root/rel``; -1 where the file is missing or unreadable."""
    out = []
    for rel in rels:
        try:
            out.append(os.stat(root / rel).st_mtime_ns)
        except OSError:
            out.append(-1)
    return np.asarray(out, dtype=np.int64)


def _write_table(path: Path, table: pd.DataFrame) -> None:
    with atomic_open(path, "w") as fh:
        table.to_csv(fh, index=False, float_format="%.6f", lineterminator="\n")


def _fill_store(args: tuple[str, str, int, list[str], int]) -> dict[str, Any]:
    """Decode images ``paths`` into rows ``start ..`` of the ``.npy`` array at ``store``."""
    from PIL import Image

    store, out, start, paths, size = args
    array = np.load(store, mmap_mode="r+")
    try:
        for i, rel in enumerate(paths):
            with Image.open(Path(out) / rel) as im:
                if im.size != (size, size) or im.mode != "L":
                    return {"bad": f"{rel}: expected a {size} x {size} grey image"}
                array[start + i] = np.asarray(im)
        array.flush()
    finally:
        del array
    return {"done": len(paths)}


def build_array_store(
    out: str | os.PathLike[str],
    geometry: pd.DataFrame,
    size: int,
    *,
    workers: int = 1,
    progress: bool = True,
    chunk: int = 256,
) -> tuple[Path, int]:
    """Pack the images listed in ``geometry`` into ``out/images.npy`` and its index.

    The store is rebuilt only when the list of images changed or an image is newer than
    it. Rows of another size than ``size`` are left out (and counted).

    Returns:
        ``(path of images.npy, rows left out)``.
    """
    out = Path(out)
    store, index_path = out / STORE_FILE, out / STORE_INDEX_FILE
    same = (pd.to_numeric(geometry["width"]) == size) & (pd.to_numeric(geometry["height"]) == size)
    paths = geometry.loc[same, "path"].astype(str).sort_values(kind="stable").tolist()
    excluded = int((~same).sum())
    index = pd.DataFrame({"row": np.arange(len(paths), dtype=np.int64), "path": paths})

    if store.exists() and index_path.exists():
        try:
            old_index = pd.read_csv(index_path, dtype={"path": "string"}, keep_default_na=False)
            old = np.load(store, mmap_mode="r")
            current = (
                old.shape == (len(paths), size, size)
                and old_index["path"].astype(str).tolist() == paths
                and int(_mtimes(out, paths).max(initial=0)) <= store.stat().st_mtime_ns
            )
            del old
        except (OSError, ValueError, KeyError):
            current = False
        if current:
            return store, excluded

    with atomic_path(store) as tmp:
        array = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size)
        )
        array.flush()
        del array
        jobs = [
            (str(tmp), str(out), i, paths[i : i + chunk], size) for i in range(0, len(paths), chunk)
        ]
        failures: list[str] = []
        bar = progress_bar(len(paths), enabled=progress)
        bar.set_description("array store")

        def on_result(job: tuple[str, str, int, list[str], int], res: dict[str, Any]) -> None:
            if "bad" in res:
                failures.append(res["bad"])
            bar.update(len(job[3]))

        try:
            run_tasks(_fill_store, jobs, min(workers, max(1, len(jobs))), on_result)
        finally:
            bar.close()
        if failures:
            raise InputError(f"cannot pack the array store: {failures[0]}", path=out)
        # the old index must not pair with the new array, even if we stop right here
        index_path.unlink(missing_ok=True)
    _write_table(index_path, index)
    return store, excluded
