"""JPEG 2000 files with Helioviewer headers: the box structure, the codestream header, the XML.

Helioviewer's JP2 files carry the FITS header of the observation in an XML box
(``<meta><fits><DATE-OBS>...</DATE-OBS>...</fits><helioviewer>...</helioviewer></meta>``).
This module walks the JP2 box structure directly (nothing is decoded), so reading the header
of a 4096 x 4096 file costs a few small reads. The disk geometry computed from the header
is in :mod:`fdflare.prepare.geometry`. :func:`write_helioviewer_jp2` writes files of the
same structure, for tests and synthetic data (``fdflare synth --jp2``).

Pixel conventions used throughout:

* *Stored* pixel coordinates are 0-based, with pixel ``(row i, column j)`` centred on
  ``(y=i, x=j)`` and row 0 at the **top** of the image as stored in the JP2 (what Pillow and
  ``numpy.asarray(Image.open(...))`` give). Helioviewer JP2s are stored flipped relative to
  their FITS data: FITS row 1 (the bottom) is the last stored row. sunpy flips the array on
  reading (``data[::-1]``) to restore the FITS orientation.
* FITS pixel coordinates (``CRPIX1/2``) are 1-based with row 1 at the bottom, so the FITS
  pixel ``(px, py)`` is stored column ``px - 1``, stored row ``NAXIS2 - py``.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import numpy as np

from fdflare.core.errors import InputError
from fdflare.core.io import atomic_path

__all__ = [
    "JP2Info",
    "helioviewer_xml",
    "parse_helioviewer_xml",
    "read_jp2_header",
    "read_jp2_info",
    "reduced_size",
    "write_helioviewer_jp2",
]

#: The 12-byte JPEG 2000 signature box that starts every JP2 file.
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: Start of a raw JPEG 2000 codestream: SOC then SIZ markers.
CODESTREAM_START = b"\xff\x4f\xff\x51"
#: Largest XML box read; Helioviewer's are a few kilobytes.
MAX_XML_BYTES = 16 * 1024 * 1024

_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")


@dataclass(frozen=True)
class JP2Info:
    """What the box structure and main codestream header of a JPEG 2000 file say.

    Attributes:
        width: image width in pixels (``Xsiz - XOsiz``).
        height: image height in pixels.
        components: number of components (1 for Helioviewer's grey images).
        bit_depth: bits per sample of the first component.
        signed: whether samples of the first component are signed.
        levels: number of wavelet decomposition levels (main COD marker); a decoder can
            reduce the resolution by up to ``2**levels``.
        layers: number of quality layers.
        progression: progression order (``"LRCP"``, ``"RPCL"``, ...).
        offset_x: image offset on the reference grid (``XOsiz``), normally 0.
        offset_y: image offset on the reference grid (``YOsiz``), normally 0.
        complete: whether the codestream ends with the EOC marker (a truncated download
            does not).
        xml: the first XML box holding a ``<fits>`` element, or ``None``.
        is_jp2: ``True`` for a JP2 file, ``False`` for a raw codestream.
    """

    width: int
    height: int
    components: int
    bit_depth: int
    signed: bool
    levels: int
    layers: int
    progression: str
    offset_x: int
    offset_y: int
    complete: bool
    xml: bytes | None
    is_jp2: bool = True


def _read_exact(fh: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise InputError(
            f"truncated file: expected {n} bytes of {what} at byte {fh.tell() - len(data)}, "
            f"got {len(data)}",
            path=path,
        )
    return data


def _iter_boxes(fh: BinaryIO, start: int, end: int, path: Path) -> Iterator[tuple[bytes, int, int]]:
    """Yield ``(type, payload_offset, payload_length)`` for each box in ``[start, end)``."""
    pos = start
    while pos < end:
        if end - pos < 8:
            raise InputError(
                f"malformed JP2: {end - pos} stray byte(s) at byte {pos} where a box header "
                "was expected",
                path=path,
            )
        fh.seek(pos)
        length, kind = struct.unpack(">I4s", _read_exact(fh, 8, path, "box header"))
        header = 8
        if length == 1:
            (length,) = struct.unpack(">Q", _read_exact(fh, 8, path, "box length"))
            header = 16
        elif length == 0:
            length = end - pos
        if length < header:
            raise InputError(
                f"malformed JP2: box {kind!r} at byte {pos} declares length {length}", path=path
            )
        if pos + length > end:
            raise InputError(
                f"truncated file: box {kind.decode('latin-1')!r} at byte {pos} declares "
                f"{length} bytes but only {end - pos} remain",
                path=path,
            )
        yield kind, pos + header, length - header
        pos += length


def _parse_main_header(fh: BinaryIO, start: int, end: int, path: Path) -> dict[str, Any]:
    """Parse SIZ and COD from the main header of the codestream at ``[start, end)``."""
    fh.seek(start)
    if _read_exact(fh, 4, path, "codestream start") != CODESTREAM_START:
        raise InputError(
            f"malformed JP2: the codestream at byte {start} does not start with SOC/SIZ markers",
            path=path,
        )
    (lsiz,) = struct.unpack(">H", _read_exact(fh, 2, path, "SIZ marker"))
    siz = _read_exact(fh, lsiz - 2, path, "SIZ marker")
    (_rsiz, xsiz, ysiz, xo, yo, _xt, _yt, _xto, _yto, csiz) = struct.unpack(">H8IH", siz[:36])
    if csiz < 1 or len(siz) < 36 + 3 * csiz:
        raise InputError("malformed JP2: SIZ marker lists no components", path=path)
    ssiz = siz[36]
    info: dict[str, Any] = {
        "width": xsiz - xo,
        "height": ysiz - yo,
        "offset_x": xo,
        "offset_y": yo,
        "components": csiz,
        "bit_depth": (ssiz & 0x7F) + 1,
        "signed": bool(ssiz & 0x80),
    }
    if info["width"] <= 0 or info["height"] <= 0:
        raise InputError(f"malformed JP2: image size {info['width']} x {info['height']}", path=path)
    pos = fh.tell()
    while pos + 4 <= end:
        fh.seek(pos)
        marker, length = struct.unpack(">HH", _read_exact(fh, 4, path, "marker segment"))
        if marker == 0xFF90:  # SOT: main header over
            break
        if marker == 0xFF52:  # COD
            cod = _read_exact(fh, length - 2, path, "COD marker")
            info["progression"] = _PROGRESSIONS[cod[1]] if cod[1] < 5 else f"#{cod[1]}"
            info["layers"] = struct.unpack(">H", cod[2:4])[0]
            info["levels"] = cod[5]
            break
        if marker >> 8 != 0xFF or length < 2:
            raise InputError(
                f"malformed JP2: unexpected bytes {marker:#06x} at byte {pos} in the main header",
                path=path,
            )
        pos += 2 + length
    if "levels" not in info:
        raise InputError("malformed JP2: no COD marker in the main header", path=path)
    fh.seek(end - 2)
    info["complete"] = fh.read(2) == b"\xff\xd9"
    return info


def read_jp2_info(path: str | os.PathLike[str]) -> JP2Info:
    """Read the box structure and main codestream header of a JPEG 2000 file.

    Only box headers, the XML box and the first bytes of the codestream are read; nothing is
    decoded. Also accepts a raw codestream (``.j2k``), which has no XML box.

    Raises:
        InputError: the file is empty, not JPEG 2000, or its boxes or main header are
            malformed or cut short (the message says which box and at which byte).
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InputError("empty file (0 bytes)", path=path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] == CODESTREAM_START:
            info = _parse_main_header(fh, 0, size, path)
            return JP2Info(xml=None, is_jp2=False, **info)
        if head != JP2_SIGNATURE:
            raise InputError(
                "not a JPEG 2000 file (no JP2 signature box and no codestream marker)", path=path
            )
        xml: bytes | None = None
        codestream: tuple[int, int] | None = None
        have_header = False
        for kind, start, length in _iter_boxes(fh, 0, size, path):
            if kind == b"jp2h":
                have_header = True
                for sub, sub_start, sub_len in _iter_boxes(fh, start, start + length, path):
                    if sub == b"xml " and xml is None:
                        xml = _read_xml_box(fh, sub_start, sub_len, path)
            elif kind == b"xml " and xml is None:
                xml = _read_xml_box(fh, start, length, path)
            elif kind == b"jp2c" and codestream is None:
                codestream = (start, length)
        if not have_header:
            raise InputError("malformed JP2: no 'jp2h' header box", path=path)
        if codestream is None:
            raise InputError("malformed JP2: no 'jp2c' codestream box", path=path)
        info = _parse_main_header(fh, codestream[0], codestream[0] + codestream[1], path)
    return JP2Info(xml=xml, is_jp2=True, **info)


def _read_xml_box(fh: BinaryIO, start: int, length: int, path: Path) -> bytes | None:
    if length > MAX_XML_BYTES:
        raise InputError(f"XML box of {length} bytes exceeds {MAX_XML_BYTES}", path=path)
    fh.seek(start)
    data = _read_exact(fh, length, path, "XML box")
    return data if b"<fits" in data.lower() else None


def parse_helioviewer_xml(
    xml: bytes | str, *, path: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """Return the keywords of a Helioviewer XML header as ``{KEYWORD: text}``.

    Keywords are upper-cased (FITS keywords are case-insensitive; some Helioviewer files
    write them in lower case). Both the ``<fits>`` section and the ``<helioviewer>`` section
    (``HV_*`` keywords) are returned; a keyword given more than once (``COMMENT``,
    ``HISTORY``) has its texts joined by newlines.

    Raises:
        InputError: the XML is malformed, declares a DTD, or has no ``<fits>`` element.
    """
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    data = data.strip(b"\x00 \t\r\n")
    if b"<!doctype" in data.lower() or b"<!entity" in data.lower():
        raise InputError("XML header declares a DTD or entities, which are not allowed", path=path)
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise InputError(f"malformed XML header: {exc}", path=path) from None
    if root.tag.lower() == "fits":
        sections = [root]
    else:
        sections = [child for child in root if child.tag.lower() == "fits"]
        if not sections:
            raise InputError("XML header has no <fits> element", path=path)
        sections += [child for child in root if child.tag.lower() == "helioviewer"]
    out: dict[str, str] = {}
    for section in sections:
        for element in section:
            key = element.tag.upper()
            text = (element.text or "").strip()
            if key in out and section is sections[0]:
                out[key] = f"{out[key]}\n{text}" if out[key] else text
            else:
                out.setdefault(key, text)
    return out


def read_jp2_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the FITS (and ``HV_*``) keywords from a Helioviewer JP2's XML box.

    The image is not decoded. Keys are upper-case keyword names; values are the element
    texts as written (``"2048.5"``, ``"2011-01-01T00:00:00.35"``).

    Raises:
        InputError: the file is not a readable JPEG 2000 file or has no XML box with a
            ``<fits>`` element.
    """
    info = read_jp2_info(path)
    if info.xml is None:
        raise InputError(
            "no Helioviewer XML box (<meta><fits>...) in this JPEG 2000 file", path=path
        )
    return parse_helioviewer_xml(info.xml, path=path)


def _format_value(key: str, value: str | int | float) -> str:
    if isinstance(value, (bool, np.bool_)):
        text = "1" if value else "0"
    elif isinstance(value, (float, np.floating)):
        text = repr(float(value)) if math.isfinite(value) else str(float(value)).lower()
    else:
        text = str(value)
    if _XML_INVALID.search(text):
        raise ValueError(f"header keyword {key!r}: value contains characters XML cannot hold")
    return escape(text)


def helioviewer_xml(header: Mapping[str, str | int | float]) -> bytes:
    """Return the XML box content of a Helioviewer JP2 for ``header``.

    Keywords starting with ``HV_`` go to the ``<helioviewer>`` section, all others to
    ``<fits>``, in the order given.

    Raises:
        ValueError: a keyword is not a valid XML element name, appears twice (ignoring
            case), or a value holds control characters.
    """
    fits: list[str] = []
    hv: list[str] = []
    seen: set[str] = set()
    for key, value in header.items():
        if not _KEY_PATTERN.match(key) or key.lower().startswith("xml"):
            raise ValueError(f"header keyword {key!r} cannot be an XML element name")
        if key.upper() in seen:
            raise ValueError(f"header keyword {key!r} appears twice")
        seen.add(key.upper())
        element = f"<{key}>{_format_value(key, value)}</{key}>"
        (hv if key.upper().startswith("HV_") else fits).append(element)
    text = (
        '<?xml version="1.0" encoding="utf-8"?><meta><fits>'
        + "".join(fits)
        + "</fits><helioviewer>"
        + "".join(hv)
        + "</helioviewer></meta>"
    )
    return text.encode("utf-8")


def _insert_xml_box(jp2: bytes, xml: bytes) -> bytes:
    """Return ``jp2`` with an ``xml `` box inserted right after its ``jp2h`` box."""
    fh = io.BytesIO(jp2)
    for kind, start, length in _iter_boxes(fh, 0, len(jp2), Path("<encoded>")):
        if kind == b"jp2h":
            end = start + length
            box = struct.pack(">I4s", 8 + len(xml), b"xml ") + xml
            return jp2[:end] + box + jp2[end:]
    raise RuntimeError("the encoder wrote no 'jp2h' box")  # pragma: no cover


def write_helioviewer_jp2(
    path: str | os.PathLike[str],
    data: np.ndarray,
    header: Mapping[str, str | int | float],
    *,
    num_resolutions: int = 6,
    quality_layers: list[float] | tuple[float, ...] | None = None,
) -> None:
    """Write a JPEG 2000 file with a Helioviewer XML header box, atomically.

    The file has the layout of Helioviewer's own JP2s: signature, ``ftyp``, ``jp2h``, then
    an ``xml `` box ``<?xml ...?><meta><fits>...</fits><helioviewer>...</helioviewer></meta>``
    and the codestream (resolution-major progression, ``RPCL``).

    Args:
        path: output file; written under a temporary name and renamed when complete.
        data: 2-D ``uint8`` image, row 0 at the top as it will be stored (flip a FITS-ordered
            array with ``data[::-1]`` first, as Helioviewer does).
        header: FITS keywords and values (``DATE-OBS``, ``CRPIX1``, ...); keywords starting
            with ``HV_`` go to the ``<helioviewer>`` section.
        num_resolutions: resolution levels (wavelet decomposition levels + 1); a reader can
            decode at up to ``2**(num_resolutions - 1)`` times reduced size.
        quality_layers: compression rates of the quality layers (e.g. ``[20]`` for about
            20:1, lossy 9/7 wavelet); ``None`` (default) writes a lossless file.

    Raises:
        ValueError: ``data`` is not a 2-D ``uint8`` array, ``num_resolutions`` does not fit
            the image size, or a header keyword cannot be written.
    """
    from PIL import Image

    data = np.asarray(data)
    if data.ndim != 2 or data.dtype != np.uint8:
        raise ValueError(f"data must be a 2-D uint8 array, got {data.ndim}-D {data.dtype}")
    if num_resolutions < 1 or 2 ** (num_resolutions - 1) > min(data.shape):
        raise ValueError(
            f"num_resolutions={num_resolutions} does not fit a {data.shape[1]} x "
            f"{data.shape[0]} image (need 1 <= num_resolutions and 2**(n-1) <= smallest side)"
        )
    xml = helioviewer_xml(header)
    options: dict[str, Any] = {
        "num_resolutions": num_resolutions,
        "progression": "RPCL",
        "no_jp2": False,
    }
    if quality_layers is not None:
        options.update(irreversible=True, quality_mode="rates", quality_layers=list(quality_layers))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(data)).save(buffer, format="JPEG2000", **options)
    content = _insert_xml_box(buffer.getvalue(), xml)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(content)


def reduced_size(full: int, reduce: int, offset: int = 0) -> int:
    """Return the size of an image axis decoded at ``2**reduce`` times reduced resolution."""
    step = 1 << reduce
    return -(-(full + offset) // step) - (-(-offset // step))
