"""Rendering: the line-of-sight field on the visible disk, its 8-bit scale, its FITS header.

``B_los = B_r * mu`` on the visible hemisphere, averaged over each pixel, plus white noise;
scaled to 8 bits with 128 = 0 G and an ``asinh`` stretch so that weak fields show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fdflare.synth.sun import AU_M, RSUN_CM, RSUN_REF_M, DiskGeometry, _observer_xyz

__all__ = ["helioviewer_header", "render_magnetogram", "to_uint8"]

_PATCH_EXTENT_SIGMAS = 4.0
_PATCH_FLOOR_GAUSS = 0.5  # patches are cut where they fall below this


# --------------------------------------------------------------------------- rendering


def render_magnetogram(
    patches: pd.DataFrame | Mapping[str, np.ndarray],
    geometry: DiskGeometry,
    *,
    noise: float = 10.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render the line-of-sight field (gauss) of flux patches on the visible disk.

    Each patch is a radial field ``B_r = flux / (2 pi sigma^2 R^2) exp(-d^2 / 2 sigma^2)``
    (``d`` the angle from its centre); the image shows ``B_los = B_r * mu``. Each pixel
    shows the field averaged over its area, as an image resampled with area interpolation
    would: ``sigma^2`` is widened by the pixel's footprint, ``1 / (12 radius_px^2)``
    (rad^2), keeping the flux, so small images keep the flux of compact spots instead of
    sampling or missing their peaks. Each patch is summed over a window around it, out to
    where it falls below 0.5 G (at most 4 sigma), so the cost grows with the regions' area,
    not with the image.

    Args:
        patches: from :func:`region_patches` (``lon``, ``lat``, ``flux``, ``sigma``).
        geometry: where the disk lies and the observer's B0.
        noise: white noise, gauss per pixel (needs ``rng`` when positive).
        rng: random generator of the noise.

    Returns:
        ``float32`` array ``(size, size)``, row 0 at the top (north up, west right), NaN
        outside the disk.
    """
    n = geometry.size
    cx, cy, rad = geometry.center_x, geometry.center_y, geometry.radius_px
    xs = ((np.arange(n) - cx) / rad).astype(np.float32)
    ys = ((cy - np.arange(n)) / rad).astype(np.float32)
    r2 = xs[None, :] ** 2 + ys[:, None] ** 2
    on = r2 <= 1.0
    z = np.sqrt(np.maximum(1.0 - r2, 0.0), dtype=np.float32)
    field = np.zeros((n, n), dtype=np.float32)
    flux = np.asarray(patches["flux"], dtype=float)
    if len(flux):
        px, py, pz = _observer_xyz(
            np.asarray(patches["lon"], dtype=float),
            np.asarray(patches["lat"], dtype=float),
            geometry.b0_deg,
        )
        # Each pixel shows the field averaged over its area (as an image resampled with
        # area interpolation): the Gaussian widened by the pixel's footprint, flux kept.
        sig = np.radians(np.asarray(patches["sigma"], dtype=float))
        sig = np.sqrt(sig * sig + 1.0 / (12.0 * rad * rad))
        amp = flux / (2 * np.pi * (sig * RSUN_CM) ** 2)
        # Out to where the patch falls below _PATCH_FLOOR_GAUSS, at most 4 sigma.
        ratio = np.maximum(np.abs(amp) / _PATCH_FLOOR_GAUSS, 1.0)
        extent = np.minimum(np.sqrt(2.0 * np.log(ratio)), _PATCH_EXTENT_SIGMAS) * sig
        half = np.ceil(extent * rad) + 1
        col, row = cx + px * rad, cy - py * rad
        # A point within angle `extent` of the centre projects within `extent * rad` pixels
        # of the projected centre; nothing shows when the patch lies wholly behind the limb.
        visible = (extent > 0) & (pz > -np.sin(extent))
        for i in np.flatnonzero(visible):
            c0, c1 = max(math.floor(col[i] - half[i]), 0), min(math.ceil(col[i] + half[i]) + 1, n)
            r0, r1 = max(math.floor(row[i] - half[i]), 0), min(math.ceil(row[i] + half[i]) + 1, n)
            if c0 >= c1 or r0 >= r1:
                continue
            zw = z[r0:r1, c0:c1]
            cosd = xs[None, c0:c1] * np.float32(px[i]) + ys[r0:r1, None] * np.float32(py[i])
            cosd += zw * np.float32(pz[i])
            # exp(-d^2 / 2 sigma^2) with d^2 ~ 2 (1 - cos d); off-disk pixels have zw = 0.
            np.minimum(cosd - np.float32(1.0), np.float32(0.0), out=cosd)
            cosd *= np.float32(1.0 / sig[i] ** 2)
            np.exp(cosd, out=cosd)
            cosd *= zw
            cosd *= np.float32(amp[i])
            field[r0:r1, c0:c1] += cosd
    if noise > 0:
        if rng is None:
            raise ValueError("render_magnetogram: noise > 0 needs an rng")
        field += rng.standard_normal((n, n), dtype=np.float32) * np.float32(noise)
    field[~on] = np.nan
    return field


def to_uint8(field: np.ndarray, clip: float = 1500.0, stretch: float = 8.0) -> np.ndarray:
    """Scale a field in gauss to 8 bits: 128 is 0 G, +-``clip`` and beyond are 255 and 1.

    With ``stretch`` 0 the scale is Helioviewer's linear one, ``128 + B * 127 / clip``. A
    positive ``stretch`` s gives ``128 + 127 asinh(s B / clip) / asinh(s)``: linear for
    fields well below ``clip / s`` (there about ``s / asinh(s)`` times brighter, 2.9x at the
    default 8), logarithmic above, so weak plage shows in small images while strong spots
    are still told apart instead of saturating. Values are rounded and clipped to 1..255 on
    the disk; pixels outside it (NaN in ``field``) are 0.
    """
    if stretch > 0:
        gain = np.float32(stretch / clip)
        v = np.rint(128.0 + np.arcsinh(field * gain) * np.float32(127.0 / math.asinh(stretch)))
    else:
        v = np.rint(128.0 + field * np.float32(127.0 / clip))
    out = np.clip(np.nan_to_num(v, nan=0.0), 1, 255).astype(np.uint8)
    out[np.isnan(field)] = 0
    return out


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
