"""HMI magnetograms as FITS (JSOC's ``hmi.M_720s``): read, turn north up, scale to 8 bits.

JSOC serves the line-of-sight field in gauss as a 4096 x 4096 float image, RICE-compressed
in the first extension. :func:`read_fits` reads it with astropy; :func:`north_up` turns it
the way Helioviewer's images are turned (HMI is stored upside down: ``CROTA2`` is about
180 deg, so the array is turned by 180 deg and ``CRPIX1/2`` and ``CROTA2`` follow), and
gives it in fdflare's *stored* orientation (row 0 at the top, as a JP2 decodes: see
:mod:`fdflare.prepare.geometry`). The disk geometry then comes from the turned header
through the same :func:`~fdflare.prepare.geometry.disk_geometry` as a JP2's.

The scaling to training images is a named transform (:data:`SCALINGS`):

* ``helioviewer`` (default): Helioviewer's own recipe for HMI magnetograms (JP2Gen's
  ``hvs_default_hmi``): the field clipped to -250..+250 G, ``BYTSCL`` to 0..255 (0 G is
  grey 127), everything at or beyond the limb set to 0 (black). Images made this way match
  Helioviewer's grey levels, so models trained on Helioviewer images apply to them.
* ``clip:N``: the same with ``+-N`` gauss (e.g. ``clip:1500`` keeps strong fields apart).

Scaling happens at full resolution (integers, as the archive does), then the image is
area-averaged to the output size, as the JP2 path does after its reduced decode. RICE has
no reduced-resolution decode, so every row is decompressed; a row-tiled RICE image (JSOC's
layout) is read by fdflare's row reader (:mod:`fdflare.prepare.fitsrows`) and scaled and
averaged in chunks of rows (:func:`decode_fits_with_geometry`), about 3 times faster than
astropy's whole-image read, with the same image. Reading only sampled rows
(``rows_per_block``) is faster still but not the same image. An image JSOC binned before
sending it (``download --source jsoc --rebin N``; :func:`binned_by`) is small already: every
row is read, and its limb pixels are weighted by their on-disk share of full-resolution
pixels (:func:`_binned_coverage`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fdflare.core.errors import InputError
from fdflare.prepare.fitsrows import RowTiles, open_row_tiles
from fdflare.prepare.geometry import disk_geometry

__all__ = [
    "FITS_SUFFIXES",
    "SCALINGS",
    "Scaling",
    "binned_by",
    "decode_fits_with_geometry",
    "fits_geometry",
    "is_fits",
    "north_up",
    "parse_scaling",
    "read_fits",
    "reduced_rows",
    "scale_field",
]

#: File names prepare reads as FITS (case-insensitive).
FITS_SUFFIXES = (".fits", ".fts", ".fit", ".fits.fz")
#: Helioviewer's clip for HMI magnetograms, gauss (JP2Gen ``hvs_default_hmi``).
HELIOVIEWER_CLIP_GAUSS = 250.0
#: The named scalings; ``clip:N`` is also accepted (:func:`parse_scaling`).
SCALINGS = ("helioviewer", "clip:N")
#: The ``HISTORY`` line of JSOC's ``jsoc_rebin`` (export processing ``rebin``, boxcar)
_BINNED = re.compile(r"\bBoxcar bin by (\d+)\b", re.IGNORECASE)


def is_fits(name: str) -> bool:
    """Whether a file name is a FITS file prepare reads."""
    return name.lower().endswith(FITS_SUFFIXES)


@dataclass(frozen=True)
class Scaling:
    """A field-to-8-bit transform: ``BYTSCL`` of the field clipped to ``+-clip`` gauss.

    Attributes:
        name: as given (``helioviewer`` or ``clip:N``).
        clip: gauss mapped to the ends of the range (grey 0 and 255).
    """

    name: str
    clip: float


def parse_scaling(text: str) -> Scaling:
    """Parse ``helioviewer`` or ``clip:N`` (N gauss, positive).

    Raises:
        InputError: any other text (``field`` is ``fits_scale``).
    """
    text = str(text).strip().lower()
    if text == "helioviewer":
        return Scaling("helioviewer", HELIOVIEWER_CLIP_GAUSS)
    if text.startswith("clip:"):
        try:
            clip = float(text[5:])
        except ValueError:
            clip = math.nan
        if math.isfinite(clip) and clip > 0:
            return Scaling(f"clip:{clip:g}", clip)
    raise InputError(
        f"unknown FITS scaling {text!r}: use helioviewer (+-250 G, as Helioviewer's images) "
        "or clip:N (+-N gauss)",
        field="fits_scale",
    )


def read_fits(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The first 2-D image of a FITS file (a RICE-compressed extension included) and its header.

    Returns:
        ``(data, header)``: ``float32`` data as stored in the file (FITS row 1 is row 0
        of the array, i.e. the bottom), and the header's keywords (upper case, no
        ``COMMENT``; the ``HISTORY`` lines joined by newlines, when there are any).

    Raises:
        InputError: not a FITS file, no 2-D image in it, or tiles that do not decompress.
    """
    import warnings

    from astropy.io import fits

    try:  # what astropy's tile decompression raises on damaged data
        from astropy.io.fits.hdu.compressed._compression import CfitsioException
    except ImportError:  # pragma: no cover - an astropy that moved it
        CfitsioException = OSError

    path = Path(path)
    try:
        with warnings.catch_warnings(), fits.open(path, memmap=False) as hdul:
            # e.g. HMI's BLANK keyword on float data, which astropy rightly ignores
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            for hdu in hdul:
                if not hdu.is_image or hdu.header.get("NAXIS", 0) != 2:
                    continue
                data = hdu.data
                if data is None:
                    continue
                header = {
                    str(k).upper(): v
                    for k, v in hdu.header.items()
                    if k and k not in ("COMMENT", "HISTORY", "")
                }
                history = [str(line) for line in hdu.header.get("HISTORY", [])]
                if history:  # JSOC's processing steps (:func:`binned_by` reads them)
                    header["HISTORY"] = "\n".join(history)
                return np.asarray(data, dtype=np.float32), header
    except (OSError, ValueError, CfitsioException) as exc:  # ValueError: a truncated file
        raise InputError(f"not a readable FITS file ({exc})", path=path) from None
    raise InputError("no 2-D image in the FITS file", path=path)


def north_up(data: np.ndarray, header: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Turn an image north up (when ``CROTA2`` is nearer 180 than 0) and give it stored-side up.

    Returns:
        ``(stored, header)``: the array with row 0 at the **top** (as a JP2 decodes), and
        the header describing it in FITS terms: after the 180 deg turn ``CRPIX`` becomes
        ``NAXIS + 1 - CRPIX``, ``CROTA2`` drops by 180 (HMI's 179.93 becomes -0.07: the
        residual is kept in the geometry, not interpolated away) and any ``PCi_j`` changes
        sign.
    """
    turned, h = _turn_header(header, data.shape)
    if turned:
        data = data[::-1, ::-1]
    return data[::-1], h  # a view: turned and flipped is one horizontal mirror


def _turn_header(header: Mapping[str, Any], shape: tuple[int, ...]) -> tuple[bool, dict[str, Any]]:
    """Whether :func:`north_up` turns an image of ``shape`` by 180 deg, and its turned header."""
    h = {str(k).upper(): v for k, v in header.items()}
    crota = _float(h.get("CROTA2", h.get("CROTA", 0.0)))
    turned = math.cos(math.radians(crota)) < 0
    if turned:
        n2, n1 = shape
        h["CRPIX1"] = n1 + 1 - _float(h.get("CRPIX1"))
        h["CRPIX2"] = n2 + 1 - _float(h.get("CRPIX2"))
        h["CROTA2"] = crota % 360.0 - 180.0
        h.pop("CROTA", None)
        for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2"):
            if key in h:
                h[key] = -_float(h[key])
    return turned, h


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _limb_spans(
    header: Mapping[str, Any], shape: tuple[int, int], rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The on-disk columns ``lo[i] <= col < hi[i]`` of stored rows ``rows``, or None (no limb).

    The circle is about the reference pixel with radius ``RSUN_OBS / CDELT1``, as
    Helioviewer draws it (``CIRCLE_MASK ... 'GE'``: on the circle is beyond the limb).
    """
    n2, n1 = shape
    crpix1, crpix2 = _float(header.get("CRPIX1")), _float(header.get("CRPIX2"))
    cdelt, rsun = abs(_float(header.get("CDELT1"))), _float(header.get("RSUN_OBS"))
    if not all(math.isfinite(v) for v in (crpix1, crpix2, cdelt, rsun)) or cdelt == 0:
        return None
    radius = rsun / cdelt
    cx, cy = crpix1 - 1, n2 - crpix2  # stored row of FITS row p is n2 - p
    dy = np.asarray(rows) - cy
    half = np.sqrt(np.clip(radius * radius - dy * dy, 0.0, None))
    # inside: (col - cx)^2 + dy^2 < r^2, i.e. cx - half < col < cx + half
    lo = np.clip(np.floor(cx - half) + 1, 0, n1).astype(int)
    hi = np.clip(np.ceil(cx + half), 0, n1).astype(int)
    hi = np.maximum(np.where(half > 0, hi, lo), lo)
    return lo, hi


def binned_by(header: Mapping[str, Any]) -> int:
    """The factor JSOC's export processing binned the image by (``jsoc_rebin``), else 1.

    ``jsoc_rebin`` (``fdflare download --source jsoc --rebin N``) writes ``Boxcar bin by
    N`` in ``HISTORY``; its pixels are the mean field of the on-disk (not missing) pixels of
    each ``N`` x ``N`` block, and ``CDELT``/``CRPIX`` describe the binned grid.
    """
    m = _BINNED.search(str(header.get("HISTORY", "")))
    return int(m.group(1)) if m is not None and int(m.group(1)) >= 1 else 1


def _binned_coverage(
    header: Mapping[str, Any], shape: tuple[int, int], n: int
) -> np.ndarray | None:
    """The share of each binned pixel's ``n`` x ``n`` full-resolution pixels inside the limb.

    Counted exactly as the full-resolution path masks (:func:`_limb_spans` on the full grid:
    ``CDELT / n``, ``CRPIX`` back through ``jsoc_rebin``'s ``(CRPIX - 0.5) n + 0.5``), so a
    binned image's limb is grey where the full-resolution image's block mean is. None when
    the image is not square or the header has no usable geometry.
    """
    m2, m1 = shape
    if m2 != m1:
        return None
    full = dict(header)
    for key in ("CRPIX1", "CRPIX2"):
        full[key] = (_float(header.get(key)) - 0.5) * n + 0.5
    full["CDELT1"] = _float(header.get("CDELT1")) / n
    rows = np.arange(m2 * n)
    spans = _limb_spans(full, (m2 * n, m1 * n), rows)
    if spans is None:
        return None
    counts = _block_counts(rows // n, spans[0], spans[1], n, m1)
    return counts / np.float32(n * n)


def _mask_limb(out: np.ndarray, header: Mapping[str, Any]) -> None:
    """Set stored pixels at or beyond the limb to 0 (Helioviewer's ``CIRCLE_MASK ... 'GE'``).

    Done row by row on spans (:func:`_limb_spans`), without a full-size distance map.
    """
    spans = _limb_spans(header, out.shape, np.arange(out.shape[0]))
    if spans is None:
        return
    for row, (lo, hi) in enumerate(zip(*spans, strict=True)):
        out[row, :lo] = 0
        out[row, hi:] = 0


def scale_field(stored: np.ndarray, header: Mapping[str, Any], scaling: Scaling) -> np.ndarray:
    """Full-resolution grey levels (``uint8``) of a field in gauss: clip, ``BYTSCL``, limb to 0.

    ``BYTSCL`` as IDL computes it: ``floor(255.9999 (B + clip) / (2 clip))``, so 0 G is
    127 and ``+-clip`` are 0 and 255. Pixels without data (NaN) and at or beyond the limb
    are 0. An image JSOC binned (:func:`binned_by`) has each grey level times its pixel's
    on-disk share (:func:`_binned_coverage`), rounded half up, so its limb is the block
    mean's of the full-resolution image.
    """
    v = np.add(stored, np.float32(scaling.clip), dtype=np.float32)
    v *= np.float32(255.9999 / (2 * scaling.clip))
    np.clip(v, 0.0, 255.9999, out=v)
    np.nan_to_num(v, copy=False, nan=0.0)
    out = v.astype(np.uint8)  # truncation: floor of values >= 0
    n = binned_by(header)
    cover = _binned_coverage(header, out.shape, n) if n > 1 else None
    if cover is None:
        _mask_limb(out, header)
        return out
    return np.floor(out * cover + np.float32(0.5)).astype(np.uint8)


def fits_geometry(
    header: Mapping[str, Any],
    shape: tuple[int, int],
    size: int,
    path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The disk geometry of the ``size`` x ``size`` image of a turned (:func:`north_up`) header.

    Returns:
        :func:`~fdflare.prepare.geometry.disk_geometry`'s keys plus ``width``, ``height``,
        ``src_width``, ``src_height`` and ``reduce`` (0: FITS has no reduced decode).
    """
    geo = disk_geometry(header, shape, (size, size), reduce=0, path=path)
    geo.update(width=size, height=size, src_width=shape[1], src_height=shape[0], reduce=0)
    return geo


def reduced_rows(factor: int, rows_per_block: int | None = None) -> tuple[int, ...]:
    """The rows of each ``factor``-row block that the row reader decompresses.

    ``None`` (the default): all of them, so the image is the full-resolution average.
    One row: the central row (row 4 of 8; the samples sit half a row below the block's
    centre). Two rows: the central two of an even block (3 and 4 of 8), whose mean sits on
    the block's centre (an odd block keeps its central row). Sampled rows keep more of the
    noise than the average of all rows does, and models trained on averaged images do not
    transfer to them (``docs/prepare.md``).

    Raises:
        ValueError: ``rows_per_block`` is not None, 1 or 2.
    """
    if rows_per_block is None:
        return tuple(range(factor))
    if rows_per_block not in (1, 2):
        raise ValueError(f"rows_per_block is None, 1 or 2, not {rows_per_block!r}")
    if rows_per_block == 2 and factor % 2 == 0:
        return (factor // 2 - 1, factor // 2)
    return (factor // 2,)


#: Source rows decompressed and scaled together (keeps the float work in the CPU cache).
_CHUNK_SOURCE_ROWS = 64


def _block_counts(
    blocks: np.ndarray, lo: np.ndarray, hi: np.ndarray, fx: int, size: int
) -> np.ndarray:
    """On-disk pixels per output pixel: ``(size, size)`` sums over rows of ``[lo, hi)`` spans.

    Row ``n`` (in output row ``blocks[n]``) covers columns ``lo[n] <= col < hi[n]``; its
    count in column block ``c`` is ``C(hi, c) - C(lo, c)`` with ``C(x, c)`` the columns
    of block ``c`` left of ``x``: ``fx`` for ``c < x // fx``, ``x % fx`` at ``c = x // fx``.
    Summed as a difference array along the columns (four steps per end), then cumulated.
    """
    rows = np.asarray(blocks)
    ends = np.concatenate([hi, lo])
    sign = np.repeat(np.array([1, -1]), len(rows))
    both = np.concatenate([rows, rows])
    c, rem = np.divmod(ends, fx)
    zero = np.zeros_like(c)
    col = np.concatenate([zero, c, c, c + 1])
    weight = np.concatenate([sign * fx, -sign * fx, sign * rem, -sign * rem])
    flat = np.tile(both, 4) * (size + 2) + col
    diff = np.zeros((size, size + 2), np.int32)
    np.add.at(diff.reshape(-1), flat, weight.astype(np.int32))
    np.cumsum(diff, axis=1, out=diff)
    return diff[:, :size].astype(np.float32)


def _fill_from_neighbours(mean: np.ndarray, empty: np.ndarray) -> None:
    """Give ``mean``'s ``empty`` pixels the mean of their filled 4-neighbours, in place.

    For the blocks the limb crosses whose picked rows lie beyond the limb while other rows
    of the block do not: their grey level is taken from beside them (a few passes reach
    the ones whose neighbours are empty too).
    """
    n = mean.shape[0]
    ys, xs = np.nonzero(empty)
    filled = ~empty
    for _ in range(4):
        if len(ys) == 0:
            return
        total, count = np.zeros(len(ys)), np.zeros(len(ys))
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            y, x = np.clip(ys + dy, 0, n - 1), np.clip(xs + dx, 0, n - 1)
            ok = filled[y, x]
            total += np.where(ok, mean[y, x], 0.0)
            count += ok
        got = count > 0
        mean[ys[got], xs[got]] = total[got] / count[got]
        filled[ys[got], xs[got]] = True
        ys, xs = ys[~got], xs[~got]


def _reduced_grey(
    tiles: RowTiles,
    header: Mapping[str, Any],
    turned: bool,
    size: int,
    scaling: Scaling,
    rows_per_block: int | None,
) -> np.ndarray | None:
    """The ``size`` x ``size`` image from the rows :func:`reduced_rows` picks, or None.

    Each row is scaled per pixel (Helioviewer's ``BYTSCL``, beyond the limb 0) and summed
    over its blocks of columns. With every row picked the pixel is the block mean. With
    sampled rows it is ``(mean grey of the picked rows' on-disk pixels) x (on-disk share of
    the block)``, the share counted exactly from the limb circle over all rows of the
    block, so the limb is where the full average puts it; blocks the limb crosses whose
    picked rows are all beyond it take the mean from their neighbours. Output rows entirely
    beyond the limb are 0 and not decompressed. None when the image is not ``factor``
    times ``size`` on both axes (``factor >= 2``) or a tile cannot be decompressed here:
    the caller takes astropy's whole-image path.
    """
    n2, n1 = tiles.shape
    if n2 % size or n1 % size or n2 // size < 2 or n1 // size < 2:
        return None
    fy, fx = n2 // size, n1 // size
    pick = np.asarray(reduced_rows(fy, rows_per_block))
    r = len(pick)
    every = np.arange(n2)  # stored rows, top first
    spans = _limb_spans(header, (n2, n1), every)
    if spans is None:
        lo, hi = np.zeros(n2, np.int64), np.full(n2, n1, np.int64)
    else:
        lo, hi = spans
    if turned:  # stored column c is FITS column n1 - 1 - c: count and mask in FITS columns
        lo, hi = n1 - hi, n1 - lo
    stored = (np.arange(size)[:, None] * fy + pick).ravel()
    full_count = _block_counts(every // fy, lo, hi, fx, size)
    if r == fy:
        pick_count = full_count
    else:
        pick_count = _block_counts(stored // fy, lo[stored], hi[stored], fx, size)
    fits_rows = stored if turned else n2 - 1 - stored
    needed = np.flatnonzero(pick_count.any(axis=1))
    k = 255.9999 / (2 * scaling.clip)
    sums = np.zeros((size, size), np.float32)
    chunk = max(1, _CHUNK_SOURCE_ROWS // r)  # output rows at a time
    q = np.empty((chunk * r, n1), np.int32)
    g = np.empty((chunk * r, n1), np.float32)
    ones = np.ones(fx, np.float32)
    for start in range(0, len(needed), chunk):
        out_rows = needed[start : start + chunk]
        src = (out_rows[:, None] * r + np.arange(r)).ravel()  # indices into stored
        m = len(src)
        got = tiles.rows(fits_rows[src], out=q[:m])
        if got is None:
            return None
        qc, scale, zero, blank = got
        rows_here = stored[src]
        # the chunk's on-disk columns, widened to whole blocks: the rest is 0
        c0 = int(lo[rows_here].min()) // fx * fx
        c1 = min(n1, -(-int(hi[rows_here].max()) // fx) * fx)
        gc = g[:m, : c1 - c0]
        qc = qc[:, c0:c1]
        a, b = scale * k, (zero + scaling.clip) * k
        # one scalar for all rows when the tiles share it (BSCALE; ZSCALE as astropy writes)
        a_ = np.float32(a[0]) if np.all(a == a[0]) else a.astype(np.float32)[:, None]
        np.multiply(qc, a_, out=gc, dtype=np.float32, casting="unsafe")
        gc += np.float32(b[0]) if np.all(b == b[0]) else b.astype(np.float32)[:, None]
        np.clip(gc, 0.0, 255.9999, out=gc)
        np.floor(gc, out=gc)  # BYTSCL's integer grey levels
        if blank is not None and np.any(blank * a + b >= 1):
            gc[qc == blank] = 0.0  # no data is black (a blank that does not clip to 0)
        for i, row in enumerate(rows_here):
            gc[i, : max(lo[row] - c0, 0)] = 0.0
            gc[i, max(hi[row] - c0, 0) :] = 0.0
        nb = (c1 - c0) // fx
        col_sums = gc.reshape(m * nb, fx) @ ones  # block sums over fx columns
        sums[out_rows, c0 // fx : c0 // fx + nb] = col_sums.reshape(len(out_rows), r, nb).sum(
            axis=1
        )
    mean = sums
    if r < fy:  # sampled rows: their on-disk mean times the block's on-disk share
        empty = (pick_count == 0) & (full_count > 0)
        np.maximum(pick_count, 1.0, out=pick_count)
        mean /= pick_count
        if empty.any():
            _fill_from_neighbours(mean, empty)
        mean *= full_count
    mean *= np.float32(1.0 / (fy * fx))
    mean += np.float32(0.5)  # Pillow's box filter rounds to nearest
    np.clip(mean, 0.0, 255.0, out=mean)
    grey = mean.astype(np.uint8)
    return grey[:, ::-1] if turned else grey


def decode_fits_with_geometry(
    path: str | os.PathLike[str],
    size: int,
    scaling: Scaling | str = "helioviewer",
    *,
    full_decode: bool = False,
    rows_per_block: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A FITS magnetogram as a ``size`` x ``size`` 8-bit image, north up, with its geometry.

    The geometry is computed before the image, so a file without usable geometry is not
    scaled. A RICE-compressed image tiled by rows (JSOC's ``hmi.M_720s``) that is an
    integer multiple (2 or more) of ``size`` is read row by row (:mod:`.fitsrows`):
    by default every row, and each output pixel is the exact mean of its block's
    full-resolution grey levels, rounded half up. With ``rows_per_block`` (1 or 2) only
    those rows of each block (:func:`reduced_rows`) are decompressed: each pixel is their
    mean on-disk grey level over its block of columns times the block's on-disk share
    (counted over all its rows), so the limb and the geometry stay the full average's but
    the noise does not (models trained on averaged images do not transfer). Otherwise, or
    with ``full_decode``, astropy reads the whole image and Pillow's box filter
    area-averages it (rounding after each axis: one grey level off the exact mean at
    about 9% of pixels).

    Returns:
        ``(image, geometry)``: the ``uint8`` image (row 0 at the top) and
        :func:`fits_geometry`'s dict, with ``scaling`` (the transform's name) added.

    Raises:
        InputError: not a FITS image, or no usable geometry in its header.
        ValueError: ``rows_per_block`` is not None, 1 or 2.
    """
    from PIL import Image

    if isinstance(scaling, str):
        scaling = parse_scaling(scaling)
    reduced_rows(2, rows_per_block)  # None, 1 or 2, checked before any work
    tiles = None if full_decode else open_row_tiles(path)
    field = None
    if tiles is not None and binned_by(tiles.header) > 1:
        # binned by JSOC, a small image already: every row, then scaled whole (its limb
        # by each pixel's on-disk share: scale_field)
        field, fits_header = tiles.field(), tiles.header
        tiles = None
    if tiles is not None:
        turned, header = _turn_header(tiles.header, tiles.shape)
        geo = fits_geometry(header, tiles.shape, size, path=path)
        grey = _reduced_grey(tiles, header, turned, size, scaling, rows_per_block)
        if grey is not None:
            geo["scaling"] = scaling.name
            return grey, geo
    data, header = read_fits(path) if field is None else (field, fits_header)
    stored, header = north_up(data, header)
    geo = fits_geometry(header, stored.shape, size, path=path)
    grey = scale_field(stored, header, scaling)
    if grey.shape != (size, size):
        image = Image.fromarray(grey).resize((size, size), Image.Resampling.BOX)
        grey = np.asarray(image)
    geo["scaling"] = scaling.name
    return grey, geo
