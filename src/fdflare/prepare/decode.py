"""Reduced-resolution JPEG 2000 decoding: decode at ``2**k`` reduction, then area-average.

Decoding a 4096 x 4096 HMI JP2 at the largest wavelet reduction that keeps at least the
target size, then box-filtering the rest of the way, is tens of times faster than a full
decode plus resize (``benchmarks/bench_prepare.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fdflare.core.errors import InputError
from fdflare.prepare.geometry import disk_geometry
from fdflare.prepare.jp2 import JP2Info, parse_helioviewer_xml, read_jp2_info, reduced_size


def choose_reduce(width: int, height: int, size: int, levels: int) -> int:
    """Return the largest ``k <= levels`` whose ``2**k`` reduction keeps both sides ``>= size``."""
    k = 0
    while k < levels and reduced_size(width, k + 1) >= size and reduced_size(height, k + 1) >= size:
        k += 1
    return k


def decode_jp2(
    path: str | os.PathLike[str],
    size: int,
    *,
    full_decode: bool = False,
    info: JP2Info | None = None,
) -> tuple[np.ndarray, int]:
    """Decode a grey 8-bit JPEG 2000 file to a ``size`` x ``size`` ``uint8`` array.

    The file is decoded at ``2**k`` times reduced resolution (:func:`choose_reduce`), then
    area-averaged (box filter) to ``size``. With ``full_decode`` (or if the reduced decode
    fails, e.g. a tile has fewer levels than the main header says), the full image is decoded
    and area-averaged, as the study did.

    Returns:
        ``(image, k)``: the image, row 0 at the top as stored, and the reduction used.

    Raises:
        InputError: the file is not a complete 8-bit single-component JPEG 2000 file.
        OSError: the decoder failed on corrupt data.
    """
    from PIL import Image

    path = Path(path)
    if info is None:
        info = read_jp2_info(path)
    if not info.complete:
        raise InputError("truncated file: the codestream has no end marker (EOC)", path=path)
    if info.components != 1 or info.bit_depth != 8 or info.signed:
        raise InputError(
            f"expected one unsigned 8-bit component, found {info.components} component(s) of "
            f"{'signed ' if info.signed else ''}{info.bit_depth} bits",
            path=path,
        )
    k = 0
    if not full_decode and info.offset_x == 0 and info.offset_y == 0:
        k = choose_reduce(info.width, info.height, size, info.levels)
    image = None
    if k > 0:
        try:
            with Image.open(path) as im:
                im.reduce = k
                im.load()
                image = im.copy() if im.size == (size, size) else _box(im, size)
        except OSError:
            k = 0  # fall back to the full decode below
    if image is None:
        with Image.open(path) as im:
            im.load()
            image = im.copy() if im.size == (size, size) else _box(im, size)
    if image.mode != "L":
        raise InputError(f"expected a grey image, decoded mode {image.mode!r}", path=path)
    return np.asarray(image), k


def jp2_header(info: JP2Info, path: str | os.PathLike[str]) -> dict[str, str]:
    """The FITS keywords of a JP2's Helioviewer XML box.

    Raises:
        InputError: the file has no Helioviewer XML box, or it does not parse.
    """
    if info.xml is None:
        raise InputError(
            "no Helioviewer XML box (<meta><fits>...): cannot read the disk geometry", path=path
        )
    return parse_helioviewer_xml(info.xml, path=path)


def geometry_of(
    info: JP2Info, header: dict[str, str], size: int, k: int, path: str | os.PathLike[str]
) -> dict[str, Any]:
    """The disk geometry of a ``size`` x ``size`` image decoded at reduction ``k``.

    Returns:
        :func:`~fdflare.prepare.geometry.disk_geometry`'s keys plus ``width``, ``height``,
        ``src_width``, ``src_height`` and ``reduce``.
    """
    geo = disk_geometry(header, (info.height, info.width), (size, size), reduce=k, path=path)
    geo.update(width=size, height=size, src_width=info.width, src_height=info.height, reduce=k)
    return geo


def decode_with_geometry(
    path: str | os.PathLike[str], size: int, *, full_decode: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a Helioviewer JP2 to ``size`` x ``size`` in memory, with its disk geometry.

    The geometry is read first, so a file without usable geometry is not decoded. This is
    what ``fdflare prepare`` does for each file, without writing anything.

    Returns:
        ``(image, geometry)``: the ``uint8`` image and :func:`geometry_of`'s dict.

    Raises:
        InputError: not a usable 8-bit JPEG 2000 file, or no usable geometry in its header.
        OSError: the decoder failed on corrupt data.
    """
    info = read_jp2_info(path)
    header = jp2_header(info, path)
    geometry_of(info, header, size, 0, path)
    image, k = decode_jp2(path, size, full_decode=full_decode, info=info)
    return image, geometry_of(info, header, size, k, path)


def _box(im: Any, size: int) -> Any:
    from PIL import Image

    return im.resize((size, size), Image.Resampling.BOX)
