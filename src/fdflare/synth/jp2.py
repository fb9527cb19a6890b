"""Helioviewer-style JPEG 2000 files: the FITS header of a synthetic image, and the writer.

Helioviewer's JP2 files carry the FITS header of the observation in an XML box
(``<meta><fits><DATE-OBS>...</DATE-OBS>...</fits><helioviewer>...</helioviewer></meta>``)
right after the ``jp2h`` header box. :func:`write_helioviewer_jp2` writes files of that
layout (``fdflare synth --jp2``, tests, benchmarks); the prepare stage reads them
(:mod:`fdflare.prepare.jp2`).
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from fdflare.core.io import atomic_path
from fdflare.synth.sun import AU_M, RSUN_REF_M

__all__ = ["helioviewer_header", "helioviewer_xml", "write_helioviewer_jp2"]

_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def helioviewer_header(row: pd.Series | dict[str, Any], size: int) -> dict[str, str | int | float]:
    """Return the FITS keywords of a Helioviewer HMI magnetogram JP2 for one geometry row.

    ``row`` is a row of :func:`disk_geometry` computed for ``size`` (``date_obs``,
    ``center_x``, ``center_y``, ``rsun_obs``, ``cdelt_arcsec``, ``dsun_m``, ``b0_deg``).
    ``CRPIX1/2`` are 1-based FITS pixels with row 1 at the bottom, so the stored (top-down)
    centre row ``center_y`` is ``CRPIX2 = size - center_y``.
    """
    t = pd.Timestamp(row["date_obs"])
    date_obs = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    tai = (t + pd.Timedelta(seconds=34)).strftime(
        "%Y.%m.%d_%H:%M:%S."
    ) + f"{t.microsecond // 1000:03d}_TAI"
    b0 = float(row["b0_deg"])
    return {
        "SIMPLE": 1,
        "BITPIX": 8,
        "NAXIS": 2,
        "NAXIS1": int(size),
        "NAXIS2": int(size),
        "DATE-OBS": date_obs,
        "DATE_OBS": date_obs,
        "T_OBS": tai,
        "TELESCOP": "SDO/HMI",
        "INSTRUME": "HMI_SIDE1",
        "WAVELNTH": 6173.0,
        "WAVEUNIT": "angstrom",
        "CONTENT": "MAGNETOGRAM",
        "BUNIT": "Mx/cm^2",
        "ORIGIN": "fdflare synth (synthetic data, not an observation)",
        "CTYPE1": "HPLN-TAN",
        "CTYPE2": "HPLT-TAN",
        "CRPIX1": float(row["center_x"]) + 1.0,
        "CRPIX2": float(size) - float(row["center_y"]),
        "CRVAL1": 0.0,
        "CRVAL2": 0.0,
        "CDELT1": float(row["cdelt_arcsec"]),
        "CDELT2": float(row["cdelt_arcsec"]),
        "CUNIT1": "arcsec",
        "CUNIT2": "arcsec",
        "CROTA2": 0.0,
        "DSUN_OBS": float(row["dsun_m"]),
        "DSUN_REF": AU_M,
        "RSUN_REF": RSUN_REF_M,
        "RSUN_OBS": float(row["rsun_obs"]),
        "HGLN_OBS": 0.0,
        "HGLT_OBS": b0,
        "CRLT_OBS": b0,
        "COMMENT": "Synthetic magnetogram made by fdflare synth for demos, tests and benchmarks.",
        "HV_SOURCE": "fdflare synth",
        "HV_ROTATION": 0.0,
    }


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
    pos = 0
    while pos + 8 <= len(jp2):
        length, kind = struct.unpack(">I4s", jp2[pos : pos + 8])
        if length == 1:
            (length,) = struct.unpack(">Q", jp2[pos + 8 : pos + 16])
        elif length == 0:
            length = len(jp2) - pos
        if length < 8:
            break
        if kind == b"jp2h":
            end = pos + length
            box = struct.pack(">I4s", 8 + len(xml), b"xml ") + xml
            return jp2[:end] + box + jp2[end:]
        pos += length
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
