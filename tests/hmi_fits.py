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
    sky: float = 0.998,
) -> np.ndarray:
    """A field in gauss on HMI's stored grid: noise, Gaussian blobs ``(x", y", gauss)``, NaN sky.

    The sky (NaN) starts at ``sky`` times the disk radius ``RSUN_OBS / CDELT1``.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(n, dtype=np.float64)[:, None]  # broadcast: a 4096 record in a second
    cols = np.arange(n, dtype=np.float64)[None, :]
    cx, cy = world_to_array(header, 0.0, 0.0)
    radius = header["RSUN_OBS"] / header["CDELT1"]
    field = rng.normal(0.0, noise, (n, n))
    sigma = 40.0 / header["CDELT1"]
    for x, y, gauss in blobs:
        bx, by = world_to_array(header, x, y)
        # a round Gaussian is the product of its row and column profiles
        along_rows = np.exp(-((rows - by) ** 2) / (2 * sigma * sigma))
        along_cols = np.exp(-((cols - bx) ** 2) / (2 * sigma * sigma))
        field += gauss * (along_rows * along_cols)
    field[np.hypot(cols - cx, rows - cy) >= radius * sky] = np.nan
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


def _c_round(x: float) -> int:
    """C's ``round``: halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def jsoc_rebin(field: np.ndarray, header: dict, n: int) -> tuple[np.ndarray, dict]:
    """What JSOC's export processing ``rebin`` (``jsoc_rebin``, ``method=boxcar``,
    ``scale=1/n``) makes of a record, from the module's published source.

    The image is turned by 180 deg when ``|CROTA2|`` lies between 179 and 181 (``CRPIX``
    follows, ``CROTA2`` drops by 180) and shifted by whole pixels so the disk centre is the
    nearest pixel to the image centre (when that is under 20 arcsec); each ``n`` x ``n``
    block from pixel 0 becomes the mean of its pixels with data (NaN where none has);
    ``CDELT`` is multiplied by ``n``, ``CRPIX`` becomes ``(CRPIX - 0.5) / n + 0.5``, and
    ``HISTORY`` says ``Boxcar bin by n, North is up``.
    """
    data = np.asarray(field, dtype=np.float64)
    ny, nx = data.shape
    x0, y0 = header["CRPIX1"] - 1, header["CRPIX2"] - 1
    crota2 = header["CROTA2"]
    if 179 < abs(crota2) < 181:
        data = data[::-1, ::-1]
        x0, y0 = nx - 1 - x0, ny - 1 - y0
        crota2 -= 180.0
        if crota2 < -90.0:
            crota2 += 360.0
    xoff, yoff = _c_round(x0 - (nx - 1) / 2), _c_round(y0 - (ny - 1) / 2)
    max_off = int(20.0 / header["CDELT1"])
    if abs(xoff) < max_off and abs(yoff) < max_off and (xoff or yoff):
        shifted = np.full_like(data, np.nan)
        # data2[iy, ix] = data[iy + yoff, ix + xoff] where that lies inside
        ys, xs = slice(max(0, -yoff), min(ny, ny - yoff)), slice(max(0, -xoff), min(nx, nx - xoff))
        shifted[ys, xs] = data[ys.start + yoff : ys.stop + yoff, xs.start + xoff : xs.stop + xoff]
        data = shifted
        x0, y0 = x0 - xoff, y0 - yoff
    blocks = data[: ny // n * n, : nx // n * n].reshape(ny // n, n, nx // n, n)
    valid = ~np.isnan(blocks)
    count = valid.sum(axis=(1, 3))
    total = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    h = dict(header)
    h["CDELT1"] = header["CDELT1"] * n
    h["CDELT2"] = header["CDELT2"] * n
    h["CRPIX1"] = (x0 + 1 - 0.5) / n + 0.5
    h["CRPIX2"] = (y0 + 1 - 0.5) / n + 0.5
    h["CROTA2"] = crota2
    h["HISTORY"] = f"Boxcar bin by {n}, North is up"
    return out.astype(np.float32), h
