"""HMI-like magnetograms in gauss, written as JSOC writes them: RICE-compressed FITS, upside down.

The field is drawn in world coordinates (helioprojective arcsec, x west, y north) and stored
the way HMI stores it: ``CROTA2`` near 180, so north is at the bottom of the array. Off the
disk the data are NaN, as in ``hmi.M_720s``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: HMI's keywords at full resolution (from a real hmi.M_720s header).
HMI_CDELT_4096 = 0.504295


def hmi_header(n: int, t_rec: str, *, b0: float = -7.226688, crota2: float = 179.929779) -> dict:
    """FITS keywords of an ``n`` x ``n`` HMI magnetogram at ``t_rec`` (``YYYY.MM.DD_HH:MM:SS_TAI``)."""
    scale = 4096 / n
    date = t_rec.replace(".", "-", 2).replace("_TAI", "").replace("_", "T")
    return {
        "T_REC": t_rec,
        "T_OBS": t_rec,
        "DATE-OBS": date + ".00",
        "CONTENT": "MAGNETOGRAM",
        "BUNIT": "Gauss",
        "TELESCOP": "SDO/HMI",
        "INSTRUME": "HMI_FRONT2",
        "CTYPE1": "HPLN-TAN",
        "CTYPE2": "HPLT-TAN",
        "CUNIT1": "arcsec",
        "CUNIT2": "arcsec",
        "CRPIX1": n / 2 + 0.5 + 3.1 / scale,
        "CRPIX2": n / 2 + 0.5 - 1.7 / scale,
        "CRVAL1": 0.0,
        "CRVAL2": 0.0,
        "CDELT1": HMI_CDELT_4096 * scale,
        "CDELT2": HMI_CDELT_4096 * scale,
        "CROTA2": crota2,
        "RSUN_OBS": 968.660583,
        "RSUN_REF": 696000000.0,
        "DSUN_OBS": 148205511547.72,
        "CRLT_OBS": b0,
        "CRLN_OBS": 132.56,
        "QUALITY": 0,
    }


def world_to_array(header: dict, x_arcsec: float, y_arcsec: float) -> tuple[float, float]:
    """0-based (column, row) in the FITS array (row 0 is FITS row 1) of a helioprojective point."""
    rho = math.radians(header["CROTA2"])
    cdelt = header["CDELT1"]
    # pixel offsets: world = cdelt * R(rho) @ (p - crpix), so p - crpix = R(-rho) world / cdelt
    dx = (math.cos(rho) * x_arcsec + math.sin(rho) * y_arcsec) / cdelt
    dy = (-math.sin(rho) * x_arcsec + math.cos(rho) * y_arcsec) / cdelt
    return header["CRPIX1"] - 1 + dx, header["CRPIX2"] - 1 + dy


def hmi_field(
    n: int,
    header: dict,
    *,
    blobs: tuple[tuple[float, float, float], ...] = ((0.0, 600.0, 1200.0), (600.0, 0.0, -900.0)),
    noise: float = 8.0,
    seed: int = 0,
) -> np.ndarray:
    """A field in gauss on HMI's stored grid: noise, Gaussian blobs ``(x", y", gauss)``, NaN sky."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((n, n), dtype=np.float64)
    cx, cy = world_to_array(header, 0.0, 0.0)
    radius = header["RSUN_OBS"] / header["CDELT1"]
    field = rng.normal(0.0, noise, (n, n))
    sigma = 40.0 / header["CDELT1"]
    for x, y, gauss in blobs:
        bx, by = world_to_array(header, x, y)
        field += gauss * np.exp(-((cols - bx) ** 2 + (rows - by) ** 2) / (2 * sigma * sigma))
    field[np.hypot(cols - cx, rows - cy) > radius * 0.998] = np.nan
    return field.astype(np.float32)


def write_hmi_fits(
    path: Path, field: np.ndarray, header: dict, *, integer: bool = False, **compression
) -> Path:
    """Write ``field`` as JSOC does: an empty primary HDU, then a RICE-compressed image.

    One image row per tile (astropy's and cfitsio's default). By default the field is a
    quantized float (0.01 G steps); ``integer`` writes it as ``hmi.M_720s``'s segment is
    stored: ``int32`` in 0.1 G (``BSCALE = 0.1``) with ``BLANK`` for no data.
    ``compression`` goes to ``CompImageHDU`` (e.g. ``tile_shape``).
    """
    from astropy.io import fits

    hdr = fits.Header()
    for key, value in header.items():
        hdr[key] = value
    if integer:
        blank = np.iinfo(np.int32).min
        ints = np.where(np.isnan(field), blank, np.rint(np.nan_to_num(field) / 0.1))
        comp = fits.CompImageHDU(
            data=ints.astype(np.int32), header=hdr, compression_type="RICE_1", **compression
        )
        comp.header["BSCALE"], comp.header["BZERO"], comp.header["BLANK"] = 0.1, 0.0, blank
    else:
        compression.setdefault("quantize_level", -0.01)
        comp = fits.CompImageHDU(data=field, header=hdr, compression_type="RICE_1", **compression)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path, overwrite=True)
    return path
