"""Chosen rows of a RICE-compressed FITS image, decompressing only those rows.

A tile-compressed FITS image (the FITS tiled image compression convention) is a binary
table with one row per tile: a descriptor into the heap of compressed bytes
(``COMPRESSED_DATA``) and, for quantized floats, the tile's ``ZSCALE`` and ``ZZERO``. JSOC
compresses its exports with cfitsio's Rice, whose default tiling is one image row per tile
(``ZTILE1 = NAXIS1``, ``ZTILE2 = 1``; astropy writes the same by default), so any image row
can be decompressed on its own. (No real ``hmi.M_720s`` file was at hand to confirm its
tiling; any other tiling is read by astropy as before.)

astropy decompresses a ``CompImageHDU`` (or a ``.section`` of it) over the whole range of
tiles from the first to the last one asked for, with Python work per tile and about 1 ms
per ``.section`` call; reading every 8th row through it costs as much as the whole image.
:class:`RowTiles` reads the table itself (the convention is a FITS standard: descriptors,
``ZSCALE``/``ZZERO`` columns, ``BLANK``/``ZBLANK``) and runs astropy's own RICE_1 decoder
(``astropy.io.fits.hdu.compressed._compression.decompress_rice_1_c``, the decoder behind
``CompImageHDU``) on the chosen rows only, reading just their bytes; the caller scales
them in chunks. That decoder is not public API: when it cannot be imported, or the file
is anything else (other tilings, other algorithms, dithered quantization, tiles stored
uncompressed), :func:`open_row_tiles` returns ``None`` and the caller reads the whole
image with astropy's public API.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RowTiles", "open_row_tiles"]

#: Keywords of the binary table and of the compression, not of the image.
_TABLE_KEY = re.compile(
    r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|T(TYPE|FORM|UNIT|DIM|NULL|SCAL|ZERO|DISP)"
    r"\d+|THEAP|EXTEND|Z(IMAGE|SIMPLE|TENSION|EXTEND|BLOCKED|BITPIX|NAXIS\d*|TILE\d+|CMPTYPE|"
    r"NAME\d+|VAL\d+|MASKCMP|QUANTIZ|DITHER0|PCOUNT|GCOUNT|HECKSUM|DATASUM|BLANK)|COMMENT|"
    r"HISTORY|CHECKSUM|DATASUM)$"
)
#: Binary table column types (TFORM codes) and their big-endian numpy types.
_TFORM_TYPES = {
    "L": "u1",
    "B": "u1",
    "I": ">i2",
    "J": ">i4",
    "K": ">i8",
    "E": ">f4",
    "D": ">f8",
    "A": "S1",
}
_RICE_TYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


def _table_dtype(header: dict[str, Any]) -> np.dtype | None:
    """The record type of the table's rows from its ``TFORMn``, or None if unknown."""
    fields: list[tuple[Any, ...]] = []
    for i in range(1, int(header.get("TFIELDS", 0)) + 1):
        name, form = str(header.get(f"TTYPE{i}", f"col{i}")), str(header.get(f"TFORM{i}", ""))
        m = re.match(r"^\s*(\d*)([A-Z])", form.upper())
        if m is None:
            return None
        repeat, code = int(m.group(1) or 1), m.group(2)
        if code in ("P", "Q"):  # variable-length array descriptor: (count, heap offset)
            if repeat != 1:
                return None
            fields.append((name, ">i4" if code == "P" else ">i8", (2,)))
        elif code in _TFORM_TYPES:
            fields.append((name, _TFORM_TYPES[code], (repeat,) if repeat != 1 else ()))
        else:
            return None
    dtype = np.dtype(fields)
    return dtype if dtype.itemsize == int(header.get("NAXIS1", -1)) else None


class RowTiles:
    """A RICE_1 image tiled by rows, opened for reading chosen rows (:func:`open_row_tiles`).

    Attributes:
        header: the image's keywords (upper case; ``NAXIS1/2`` and ``BITPIX`` of the
            image, not of the table; no ``COMMENT``, the ``HISTORY`` lines joined), as
            :func:`fdflare.prepare.fits.read_fits` gives them.
        shape: ``(NAXIS2, NAXIS1)`` of the image.
    """

    def __init__(
        self,
        path: Path,
        table: np.ndarray,
        heap: int,
        header: dict[str, Any],
        rice: tuple[int, int],
        *,
        quantized: bool,
        blank: int | None,
    ) -> None:
        self._path, self._table, self._heap = path, table, heap
        self._rice, self._quantized, self._blank = rice, quantized, blank
        self.header = header
        self.shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))

    def rows(
        self, fits_rows: Sequence[int] | np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None] | None:
        """Decompress the image rows ``fits_rows`` (0-based array rows: FITS row 1 is 0).

        Returns:
            ``(q, scale, zero, blank)``: the stored integers (``len(fits_rows)`` x
            ``NAXIS1``, ``int32``, into ``out`` when given); the value of ``q[i]`` is
            ``q[i] * scale[i] + zero[i]`` (``ZSCALE`` and ``ZZERO`` of its tile, or
            ``BSCALE`` and ``BZERO``); ``blank`` is the integer that stands for no data
            (``BLANK``/``ZBLANK``), or None.
            None when a chosen tile is not RICE-compressed (stored raw or gzipped because
            it did not quantize), cannot be read or does not decompress (a truncated or
            damaged file): read the whole image instead, which reports what is wrong.
        """
        idx = np.asarray(fits_rows, dtype=np.int64)
        width = self.shape[1]
        q = out if out is not None else np.empty((len(idx), width), _RICE_TYPES[4])
        desc = self._table["COMPRESSED_DATA"][idx]
        if np.any(desc[:, 0] <= 0):
            return None
        from astropy.io.fits.hdu.compressed._compression import (
            CfitsioException,
            decompress_rice_1_c,
        )

        heap, (blocksize, bytepix) = self._heap, self._rice
        kind = _RICE_TYPES[bytepix]
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except OSError:
            return None
        try:
            for i, (count, offset) in enumerate(desc.tolist()):
                packed = os.pread(fd, count, heap + offset)
                if len(packed) != count:
                    return None  # the file ends inside the tile
                unpacked = decompress_rice_1_c(packed, blocksize, bytepix, width)
                q[i] = np.frombuffer(unpacked, kind, count=width)
        except (OSError, ValueError, CfitsioException):
            return None
        finally:
            os.close(fd)
        if self._quantized:
            scale = self._table["ZSCALE"][idx].astype(np.float64)
            zero = self._table["ZZERO"][idx].astype(np.float64)
        else:
            scale = np.full(len(idx), float(self.header.get("BSCALE", 1.0)))
            zero = np.full(len(idx), float(self.header.get("BZERO", 0.0)))
        return q, scale, zero, self._blank

    def field(self) -> np.ndarray | None:
        """Every row as ``float32`` values (no data: NaN), FITS row 1 first; None as :meth:`rows`."""
        got = self.rows(np.arange(self.shape[0]))
        if got is None:
            return None
        q, scale, zero, blank = got
        data = q.astype(np.float32)
        data *= scale.astype(np.float32)[:, None]
        data += zero.astype(np.float32)[:, None]
        if blank is not None:
            data[q == blank] = np.nan
        return data


def open_row_tiles(path: str | os.PathLike[str]) -> RowTiles | None:
    """Open a RICE_1, row-tiled, 2-D FITS image for :meth:`RowTiles.rows`, else None.

    None for anything this reader does not handle (an uncompressed image, another
    algorithm or tiling, dithered quantization, no RICE_1 decoder in this astropy): read
    the file with :func:`fdflare.prepare.fits.read_fits` then. Unreadable files give None
    too, and the full read reports them.
    """
    import warnings

    from astropy.io import fits

    try:
        from astropy.io.fits.hdu.compressed._compression import decompress_rice_1_c  # noqa: F401
    except ImportError:  # astropy moved its decoder: the whole-image path still works
        return None
    try:
        with (
            warnings.catch_warnings(),
            fits.open(
                path, disable_image_compression=True, memmap=False, lazy_load_hdus=True
            ) as hdul,
        ):
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            found = None
            for hdu in hdul:
                if hdu.header.get("ZIMAGE") is True:
                    h = {str(k).upper(): v for k, v in hdu.header.items() if k}
                    history = [str(line) for line in hdu.header.get("HISTORY", [])]
                    found = (h, int(hdu.fileinfo()["datLoc"]))
                    break
                if hdu.header.get("NAXIS", 0) == 2 and not isinstance(hdu, fits.BinTableHDU):
                    return None  # a plain image comes first: the full read takes it
    except (OSError, ValueError):
        return None
    if found is None:
        return None
    h, data_at = found
    n1, n2 = int(h.get("ZNAXIS1", 0)), int(h.get("ZNAXIS2", 0))
    if (
        h.get("ZNAXIS") != 2
        or str(h.get("ZCMPTYPE", "")).strip().upper() not in ("RICE_1", "RICE_ONE")
        or int(h.get("ZTILE1", n1)) != n1
        or int(h.get("ZTILE2", 1)) != 1
        or str(h.get("ZQUANTIZ", "NO_DITHER")).strip().upper() != "NO_DITHER"
        or n1 < 1
        or n2 < 1
    ):
        return None
    zbitpix = int(h.get("ZBITPIX", 0))
    params = {str(h.get(f"ZNAME{i}", "")).strip().upper(): h.get(f"ZVAL{i}") for i in (1, 2, 3)}
    blocksize = int(params.get("BLOCKSIZE") or 32)
    bytepix = int(params.get("BYTEPIX") or 4)
    quantized = zbitpix < 0
    if bytepix not in _RICE_TYPES or (zbitpix > 0 and zbitpix // 8 > 4):
        return None
    dtype = _table_dtype(h)
    names = set(dtype.names or ()) if dtype is not None else set()
    if dtype is None or "COMPRESSED_DATA" not in names:
        return None
    if quantized and not {"ZSCALE", "ZZERO"} <= names:
        return None
    if "ZBLANK" in names:
        return None  # a blank value per tile: rare, the full read handles it
    nrows = int(h.get("NAXIS2", 0))
    if nrows != n2:
        return None
    heap = data_at + int(h.get("THEAP", nrows * dtype.itemsize))
    with open(path, "rb") as f:  # the table only: the heap is read tile by tile
        f.seek(data_at)
        packed = f.read(nrows * dtype.itemsize)
    if len(packed) != nrows * dtype.itemsize:
        return None
    table = np.frombuffer(packed, dtype=dtype, count=nrows)
    header = {k: v for k, v in h.items() if not _TABLE_KEY.match(k)}
    header.update(NAXIS=2, NAXIS1=n1, NAXIS2=n2, BITPIX=zbitpix)
    if history:  # JSOC's processing steps (``fits.binned_by`` reads them)
        header["HISTORY"] = "\n".join(history)
    if quantized:
        header.pop("BSCALE", None)
        header.pop("BZERO", None)
        blank = h.get("ZBLANK")
    else:
        blank = h.get("ZBLANK", h.get("BLANK"))
    blank_value = (
        int(blank) if isinstance(blank, int | float) and not isinstance(blank, bool) else None
    )
    return RowTiles(
        Path(path),
        table,
        heap,
        header,
        (blocksize, bytepix),
        quantized=quantized,
        blank=blank_value,
    )
