"""The array store: every prepared image in one memory-mapped ``uint8`` array, and its index.

``OUT/images.npy`` holds an ``(N, size, size)`` ``uint8`` array (row 0 of each image at the
top, as in the image files); ``OUT/images_index.csv`` maps each row to the image's path
relative to ``OUT`` (the key of ``geometry.csv``). ``fdflare prepare`` writes
it (:func:`fdflare.prepare.pipeline.build_array_store`); the data stage reads it here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError, MissingDataError
from fdflare.core.io import read_csv_table

STORE_FILE = "images.npy"
STORE_INDEX_FILE = "images_index.csv"


def open_array_store(out: str | os.PathLike[str]) -> tuple[np.memmap, pd.DataFrame]:
    """Open the array store written by ``fdflare prepare`` (unless ``--no-array-store``).

    Returns:
        ``(images, index)``: a read-only ``uint8`` memory map of shape ``(N, size, size)``
        (row 0 of each image at the top, as in the image files) and the index table with
        columns ``row`` (0 .. N-1) and ``path`` (the image's path relative to ``out``, the
        key of ``geometry.csv``).

    Raises:
        MissingDataError: the store or its index is absent.
        InputError: the index does not match the array.
    """
    out = Path(out)
    store, index_path = out / STORE_FILE, out / STORE_INDEX_FILE
    if not store.is_file() or not index_path.is_file():
        missing = store if not store.is_file() else index_path
        raise MissingDataError(
            f"{missing} not found: run `fdflare prepare --source SRC --out {out}`, which writes "
            "it (--array-store, the default)"
        )
    images = np.load(store, mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 3:
        raise InputError(
            f"expected a 3-D uint8 array, found {images.ndim}-D {images.dtype}", path=store
        )
    index = read_csv_table(
        index_path, what="array store index", dtype={"path": "string"}, keep_default_na=False
    )
    for column in ("row", "path"):
        if column not in index.columns:
            raise InputError(f"missing column '{column}'", path=index_path, line=1)
    if (
        len(index) != images.shape[0]
        or not (index["row"].to_numpy() == np.arange(len(index))).all()
    ):
        raise InputError(
            f"index has {len(index)} rows numbered otherwise than the {images.shape[0]} images "
            f"of {store.name}: rerun `fdflare prepare ...` (--array-store, the default)",
            path=index_path,
        )
    return images, index
