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
area-averaged to the output size, as the JP2 path does after its reduced decode.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fdflare.core.errors import InputError
from fdflare.prepare.geometry import disk_geometry

__all__ = [
    "FITS_SUFFIXES",
    "SCALINGS",
    "Scaling",
    "decode_fits_with_geometry",
    "fits_geometry",
    "is_fits",
    "north_up",
    "parse_scaling",
    "read_fits",
    "scale_field",
]

#: File names prepare reads as FITS (case-insensitive).
FITS_SUFFIXES = (".fits", ".fts", ".fit", ".fits.fz")
#: Helioviewer's clip for HMI magnetograms, gauss (JP2Gen ``hvs_default_hmi``).
HELIOVIEWER_CLIP_GAUSS = 250.0
#: The named scalings; ``clip:N`` is also accepted (:func:`parse_scaling`).
SCALINGS = ("helioviewer", "clip:N")


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
        ``COMMENT``/``HISTORY``).

    Raises:
        InputError: not a FITS file, or no 2-D image in it.
    """
    import warnings

    from astropy.io import fits

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
                return np.asarray(data, dtype=np.float32), header
    except OSError as exc:
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
    h = {str(k).upper(): v for k, v in header.items()}
    crota = _float(h.get("CROTA2", h.get("CROTA", 0.0)))
    turned = math.cos(math.radians(crota)) < 0
    if turned:
        data = data[::-1, ::-1]
        n2, n1 = data.shape
        h["CRPIX1"] = n1 + 1 - _float(h.get("CRPIX1"))
        h["CRPIX2"] = n2 + 1 - _float(h.get("CRPIX2"))
        h["CROTA2"] = crota % 360.0 - 180.0
        h.pop("CROTA", None)
        for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2"):
            if key in h:
                h[key] = -_float(h[key])
    return data[::-1], h  # a view: turned and flipped is one horizontal mirror


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mask_limb(out: np.ndarray, header: Mapping[str, Any]) -> None:
    """Set stored pixels at or beyond the limb to 0 (Helioviewer's ``CIRCLE_MASK ... 'GE'``).

    The circle is about the reference pixel with radius ``RSUN_OBS / CDELT1``, as
    Helioviewer draws it; done row by row on spans, without a full-size distance map.
    """
    n2, n1 = out.shape
    crpix1, crpix2 = _float(header.get("CRPIX1")), _float(header.get("CRPIX2"))
    cdelt, rsun = abs(_float(header.get("CDELT1"))), _float(header.get("RSUN_OBS"))
    if not all(math.isfinite(v) for v in (crpix1, crpix2, cdelt, rsun)) or cdelt == 0:
        return
    radius = rsun / cdelt
    cx, cy = crpix1 - 1, n2 - crpix2  # stored row of FITS row p is n2 - p
    dy = np.arange(n2) - cy
    half = np.sqrt(np.clip(radius * radius - dy * dy, 0.0, None))
    # inside: (col - cx)^2 + dy^2 < r^2, i.e. cx - half < col < cx + half
    lo = np.clip(np.floor(cx - half) + 1, 0, n1).astype(int)
    hi = np.clip(np.ceil(cx + half), 0, n1).astype(int)
    hi = np.where(half > 0, hi, lo)
    for row in range(n2):
        out[row, : lo[row]] = 0
        out[row, max(hi[row], lo[row]) :] = 0


def scale_field(stored: np.ndarray, header: Mapping[str, Any], scaling: Scaling) -> np.ndarray:
    """Full-resolution grey levels (``uint8``) of a field in gauss: clip, ``BYTSCL``, limb to 0.

    ``BYTSCL`` as IDL computes it: ``floor(255.9999 (B + clip) / (2 clip))``, so 0 G is
    127 and ``+-clip`` are 0 and 255. Pixels without data (NaN) and at or beyond the limb
    are 0.
    """
    v = np.add(stored, np.float32(scaling.clip), dtype=np.float32)
    v *= np.float32(255.9999 / (2 * scaling.clip))
    np.clip(v, 0.0, 255.9999, out=v)
    np.nan_to_num(v, copy=False, nan=0.0)
    out = v.astype(np.uint8)  # truncation: floor of values >= 0
    _mask_limb(out, header)
    return out


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


def decode_fits_with_geometry(
    path: str | os.PathLike[str], size: int, scaling: Scaling | str = "helioviewer"
) -> tuple[np.ndarray, dict[str, Any]]:
    """A FITS magnetogram as a ``size`` x ``size`` 8-bit image, north up, with its geometry.

    The geometry is computed before the image, so a file without usable geometry is not
    scaled. The full-resolution grey levels are area-averaged (box filter) to ``size``.

    Returns:
        ``(image, geometry)``: the ``uint8`` image (row 0 at the top) and
        :func:`fits_geometry`'s dict, with ``scaling`` (the transform's name) added.

    Raises:
        InputError: not a FITS image, or no usable geometry in its header.
    """
    from PIL import Image

    if isinstance(scaling, str):
        scaling = parse_scaling(scaling)
    data, header = read_fits(path)
    stored, header = north_up(data, header)
    geo = fits_geometry(header, stored.shape, size, path=path)
    grey = scale_field(stored, header, scaling)
    if grey.shape != (size, size):
        image = Image.fromarray(grey).resize((size, size), Image.Resampling.BOX)
        grey = np.asarray(image)
    geo["scaling"] = scaling.name
    return grey, geo
