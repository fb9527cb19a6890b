"""The solar disk in an image, from a Helioviewer JP2's FITS header: time, centre, radius.

Also the one schema of ``geometry.csv`` (:data:`GEOMETRY_SCHEMA`), its reader
(:func:`read_geometry_file`) and writer (:func:`write_geometry_file`), used by ``prepare``,
``synth`` and every command that reads a disk's position.

Pixel conventions (as in :mod:`fdflare.prepare.jp2`):

* *Stored* pixel coordinates are 0-based, with pixel ``(row i, column j)`` centred on
  ``(y=i, x=j)`` and row 0 at the **top** of the image as stored in the JP2 (what Pillow and
  ``numpy.asarray(Image.open(...))`` give). Helioviewer JP2s are stored flipped relative to
  their FITS data: FITS row 1 (the bottom) is the last stored row.
* FITS pixel coordinates (``CRPIX1/2``) are 1-based with row 1 at the bottom, so the FITS
  pixel ``(px, py)`` is stored column ``px - 1``, stored row ``NAXIS2 - py``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fdflare.core.errors import InputError
from fdflare.prepare.jp2 import reduced_size

__all__ = [
    "DISK_COLUMNS",
    "GEOMETRY_COLUMNS",
    "GEOMETRY_FILE",
    "GEOMETRY_SCHEMA",
    "PREPARE_GEOMETRY_COLUMNS",
    "SOLAR_RADIUS_M",
    "SYNTH_GEOMETRY_COLUMNS",
    "disk_geometry",
    "earth_b0_deg",
    "observation_time",
    "read_geometry_file",
    "write_geometry_file",
]

#: Nominal solar radius (IAU 2015, the value sunpy uses when a header gives no RSUN_REF).
SOLAR_RADIUS_M = 695_700_000.0

_ISO_TIME = re.compile(
    r"^\s*(\d{4})[-/](\d{2})[-/](\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d+)?\s*(Z|UTC)?\s*$",
    re.IGNORECASE,
)
#: How far (in image widths) the disk centre may lie off the image before the header is refused.
_FAR_OFF = 100
_DATE_ONLY = re.compile(r"^\d{4}[-/]\d{2}[-/]\d{2}$")
_TAI_TIME = re.compile(r"^\s*(\d{4})\.(\d{2})\.(\d{2})_(\d{2}):(\d{2}):(\d{2})(\.\d+)?_TAI\s*$")


def _upper(header: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in header.items()}


def _number(h: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = h.get(key)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if default is None:
            raise InputError(f"header keyword {key} is missing", field=key)
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"header keyword {key} is not a number: {_shown(value)}", field=key
        ) from None
    if not math.isfinite(number):
        raise InputError(f"header keyword {key} is not finite: {_shown(value)}", field=key)
    return number


def _positive(h: Mapping[str, Any], key: str, default: float | None = None) -> float:
    number = _number(h, key, default)
    if number <= 0:
        raise InputError(
            f"header keyword {key} must be positive, got {_shown(h.get(key))}", field=key
        )
    return number


def _axis_length(h: Mapping[str, Any], key: str, default: int) -> int:
    number = _positive(h, key, float(default))
    if number != int(number):
        raise InputError(
            f"header keyword {key} must be a whole number of pixels, got {_shown(h.get(key))}",
            field=key,
        )
    return int(number)


def _shown(value: Any, limit: int = 40) -> str:
    """A header value for a one-line message: newlines folded, long values cut."""
    text = " ".join(str(value).split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def observation_time(header: Mapping[str, Any]) -> str:
    """Return the observation time as ISO 8601 UTC with milliseconds.

    Uses ``DATE-OBS``, else ``DATE_OBS``, else ``T_OBS``: ISO 8601 (``2013-06-24T17:31:30.84``,
    a trailing ``Z`` allowed), a date alone (``2013-05-13`` or ``2013/05/13``) completed by
    ``TIME-OBS``/``TIME_OBS``, or JSOC's ``2023.01.31_03:40:22.661_TAI`` (converted from TAI
    with astropy).

    Raises:
        InputError: none of the keywords is present or the time cannot be parsed.
    """
    h = _upper(header)
    for key in ("DATE-OBS", "DATE_OBS", "T_OBS"):
        value = h.get(key)
        if value is None or str(value).strip() == "":
            continue
        text = str(value).strip()
        if _DATE_ONLY.match(text):
            clock = str(h.get("TIME-OBS", h.get("TIME_OBS", "")) or "").strip()
            if clock:
                text = f"{text}T{clock}"
        m = _ISO_TIME.match(text)
        if m:
            frac = (m.group(7) or ".0")[1:]
            millis = round(float("0." + frac) * 1000)
            stamp = "{}-{}-{}T{}:{}:{}".format(*m.groups()[:6])
            try:
                return str(np.datetime64(stamp, "ms") + np.timedelta64(millis, "ms"))
            except ValueError:
                raise InputError(f"invalid observation time {_shown(text)}", field=key) from None
        m = _TAI_TIME.match(text)
        if m:
            try:
                from astropy.time import Time
            except ImportError:  # pragma: no cover - astropy comes with the 'solar' extra
                raise InputError(
                    f"observation time {text!r} is in TAI; converting it needs astropy "
                    "(pip install 'fdflare[solar]')",
                    field=key,
                ) from None
            iso = "{}-{}-{}T{}:{}:{}{}".format(*m.groups(default=""))
            try:
                return str(Time(iso, scale="tai").utc.isot)
            except ValueError:  # astropy's message lists every format it tried: keep it short
                raise InputError(f"invalid observation time {_shown(text)}", field=key) from None
        raise InputError(f"cannot parse observation time {_shown(text)}", field=key)
    raise InputError(
        "no observation time (DATE-OBS, DATE_OBS or T_OBS) in the header", field="DATE-OBS"
    )


def _angle_units(h: Mapping[str, Any], axis: int) -> float:
    """Return the factor from the axis' CUNIT to arcseconds."""
    unit = str(h.get(f"CUNIT{axis}", "arcsec") or "arcsec").strip().lower()
    factors = {"arcsec": 1.0, "deg": 3600.0, "arcmin": 60.0, "rad": 180 / math.pi * 3600}
    if unit not in factors:
        raise InputError(f"unsupported angle unit {_shown(unit)}", field=f"CUNIT{axis}")
    return factors[unit]


def disk_geometry(
    header: Mapping[str, Any],
    shape_in: tuple[int, int],
    shape_out: tuple[int, int],
    *,
    reduce: int = 0,
    path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Return the solar disk's observation time, centre and radius in output pixels.

    The centre is where the helioprojective origin (0", 0") falls, through the header's
    TAN projection (``CRVAL1/2``), pixel scale (``CDELT1/2``, ``CUNIT1/2``) and rotation
    (``PCi_j`` or ``CROTA2``); the radius is ``RSUN_OBS`` (else ``SOLAR_R``, else computed
    as ``arcsin(RSUN_REF / DSUN_OBS)``) over the pixel scale.

    Coordinates are 0-based stored pixels of the output image: ``center_x`` is the column,
    ``center_y`` the row counted from the **top** row as stored, and pixel ``(i, j)`` is
    centred on ``(y=i, x=j)``. The output image is taken to be the input decoded at
    ``2**reduce`` times reduced resolution (a JPEG 2000 low-pass band samples the even
    pixels, so reduced pixel ``u`` lies on full pixel ``2**reduce * u``), then area-resized
    to ``shape_out``. When the header's ``NAXIS1/2`` differ from ``shape_in``, the header is
    taken to describe the same field of view at ``NAXIS`` resolution.

    Args:
        header: FITS keywords (any case), as from :func:`read_jp2_header`.
        shape_in: ``(height, width)`` of the JP2 at full resolution.
        shape_out: ``(height, width)`` of the output image.
        reduce: resolution reduction of the decode step (0 for a full decode).
        path: the file the header came from, named in error messages.

    Returns:
        ``date_obs`` (ISO 8601 UTC), ``center_x``, ``center_y``, ``radius_px`` (geometric
        mean of the x and y radii, which agree unless the resize changes the aspect ratio),
        ``crota2`` (degrees), ``rsun_obs`` (arcsec) and ``b0_deg`` (the observer's
        heliographic latitude: ``HGLT_OBS``, else ``CRLT_OBS``, else ``SOLAR_B0``, else
        the Earth's at ``date_obs`` from :func:`earth_b0_deg`).

    Raises:
        InputError: a required keyword (``CRPIX1/2``, ``CDELT1/2``, the time, the solar
        radius) is missing or not a number; ``field`` names it.
    """
    try:
        try:
            return _disk_geometry(_upper(header), shape_in, shape_out, reduce)
        except (ArithmeticError, ValueError) as exc:  # what the checks missed: still one line
            raise InputError(
                f"the header gives no usable disk geometry ({type(exc).__name__})"
            ) from None
    except InputError as exc:
        if path is None or exc.path is not None:
            raise
        raise InputError(exc.message, path=path, line=exc.line, field=exc.field) from None


def _disk_geometry(
    h: dict[str, Any], shape_in: tuple[int, int], shape_out: tuple[int, int], reduce: int
) -> dict[str, Any]:
    date_obs = observation_time(h)
    crpix1, crpix2 = _number(h, "CRPIX1"), _number(h, "CRPIX2")
    ux, uy = _angle_units(h, 1), _angle_units(h, 2)
    cdelt1, cdelt2 = _number(h, "CDELT1") * ux, _number(h, "CDELT2") * uy
    if cdelt1 == 0 or cdelt2 == 0:
        raise InputError("pixel scale is zero", field="CDELT1" if cdelt1 == 0 else "CDELT2")
    crval1, crval2 = _number(h, "CRVAL1", 0.0) * ux, _number(h, "CRVAL2", 0.0) * uy
    crota2 = _number(h, "CROTA2", _number(h, "CROTA", 0.0))

    if "RSUN_OBS" in h or "SOLAR_R" in h or "RADIUS" in h:
        key = next(k for k in ("RSUN_OBS", "SOLAR_R", "RADIUS") if k in h)
        rsun = _positive(h, key)
    elif "DSUN_OBS" in h:
        ratio = _positive(h, "RSUN_REF", SOLAR_RADIUS_M) / _positive(h, "DSUN_OBS")
        if not 0 < ratio < 1:
            raise InputError("RSUN_REF / DSUN_OBS is not between 0 and 1", field="DSUN_OBS")
        rsun = math.degrees(math.asin(ratio)) * 3600.0
    else:
        raise InputError("no solar radius (RSUN_OBS, or DSUN_OBS)", field="RSUN_OBS")

    # Sun centre (0", 0") in intermediate world coordinates: the gnomonic (TAN) projection
    # about the reference point (CRVAL1, CRVAL2), default LONPOLE of 180 deg.
    a0, d0 = math.radians(crval1 / 3600.0), math.radians(crval2 / 3600.0)
    x_world = math.degrees(-math.tan(a0) / math.cos(d0)) * 3600.0
    y_world = math.degrees(-math.tan(d0)) * 3600.0
    # Intermediate world -> pixel offsets through the inverse of CDELT * PC.
    if any(f"PC{i}_{j}" in h for i in (1, 2) for j in (1, 2)):
        pc = np.array(
            [
                [_number(h, "PC1_1", 1.0), _number(h, "PC1_2", 0.0)],
                [_number(h, "PC2_1", 0.0), _number(h, "PC2_2", 1.0)],
            ]
        )
    else:
        rho = math.radians(crota2)
        lam = cdelt2 / cdelt1
        pc = np.array([[math.cos(rho), -lam * math.sin(rho)], [math.sin(rho) / lam, math.cos(rho)]])
    try:
        dx, dy = np.linalg.solve(pc, [x_world / cdelt1, y_world / cdelt2])
    except np.linalg.LinAlgError:
        raise InputError("the PC rotation matrix is singular", field="PC1_1") from None
    fits_x, fits_y = crpix1 + dx, crpix2 + dy  # 1-based, row 1 at the bottom

    height, width = (int(v) for v in shape_in)
    naxis1 = _axis_length(h, "NAXIS1", width)
    naxis2 = _axis_length(h, "NAXIS2", height)
    # Stored 0-based coordinates in the header's own grid, then in the JP2's grid.
    col = (fits_x - 1 + 0.5) * (width / naxis1) - 0.5
    row = (naxis2 - fits_y + 0.5) * (height / naxis2) - 0.5
    rx = rsun / abs(cdelt1) * (width / naxis1)
    ry = rsun / abs(cdelt2) * (height / naxis2)

    # Decode at reduced resolution: reduced pixel u sits on full pixel 2**reduce * u.
    step = float(1 << reduce)
    red_w, red_h = reduced_size(width, reduce), reduced_size(height, reduce)
    if reduce:
        col, row, rx, ry = col / step, row / step, rx / step, ry / step
    # Area resize of the (reduced) image to the output shape.
    out_h, out_w = (int(v) for v in shape_out)
    sx, sy = out_w / red_w, out_h / red_h
    # A centre off the image is valid WCS, but one hundreds of images away is a broken header.
    far = _FAR_OFF * max(red_w, red_h)
    if not (abs(col - red_w / 2) <= far and abs(row - red_h / 2) <= far):
        raise InputError(
            "the disk centre (from CRPIX1, CRPIX2, CRVAL1, CRVAL2 and the pixel scale) lies "
            f"more than {_FAR_OFF} image widths away from the image"
        )
    return {
        "date_obs": date_obs,
        "center_x": float((col + 0.5) * sx - 0.5),
        "center_y": float((row + 0.5) * sy - 0.5),
        "radius_px": float(math.sqrt(rx * sx * ry * sy)),
        "crota2": crota2,
        "rsun_obs": rsun,
        "b0_deg": _b0(h, date_obs),
    }


def _b0(h: Mapping[str, Any], date_obs: str) -> float:
    for key in ("HGLT_OBS", "CRLT_OBS", "SOLAR_B0"):
        if key in h and str(h[key]).strip() != "":
            value = _number(h, key)
            if abs(value) > 90:
                raise InputError(f"{key} is not a latitude: {value:g}", field=key)
            return value
    return float(earth_b0_deg(date_obs))


def earth_b0_deg(times: Any) -> np.ndarray:
    """The heliographic latitude of the Earth (B0, degrees) at each time (ISO 8601, UTC).

    Meeus' formula (Astronomical Algorithms, ch. 29) with the low-precision solar
    longitude: good to about 0.02 deg, for headers that carry no ``HGLT_OBS``/``CRLT_OBS``
    (SDO's B0 differs from the Earth's by under 0.01 deg).
    """
    t = np.atleast_1d(np.asarray(times, dtype="datetime64[ms]"))
    days = (t - np.datetime64("2000-01-01T12:00:00", "ms")) / np.timedelta64(1, "D")
    g = np.radians(357.529 + 0.98560028 * days)  # mean anomaly
    q = 280.459 + 0.98564736 * days  # mean longitude
    lam = np.radians(q + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g))
    jd = days + 2451545.0
    node = np.radians(73.6667 + 1.3958333 * (jd - 2396758.0) / 36525.0)
    b0 = np.degrees(np.arcsin(np.sin(lam - node) * np.sin(np.radians(7.25))))
    return b0 if np.ndim(times) else b0[0]


# --------------------------------------------------------------------------- geometry.csv

#: The one schema of ``geometry.csv``: every column either writer may write, in file order,
#: with its kind (``text``; ``number``: a finite float; ``count``: a whole number). ``fdflare
#: prepare`` writes the columns of :data:`PREPARE_GEOMETRY_COLUMNS`, ``fdflare synth`` those
#: of :data:`SYNTH_GEOMETRY_COLUMNS`; a reader asks for the columns it needs.
GEOMETRY_SCHEMA: dict[str, str] = {
    "path": "text",  # the image, relative to the image folder: the key
    "source": "text",  # the JP2 or FITS it was made from, relative to the source folder
    "date_obs": "text",  # observation time, ISO 8601 UTC
    "center_x": "number",  # disk centre, output pixels (0-based, row 0 at the top)
    "center_y": "number",
    "radius_px": "number",  # disk radius, output pixels
    "width": "count",  # image size, pixels
    "height": "count",
    "crota2": "number",  # rotation of the source image, degrees
    "rsun_obs": "number",  # apparent solar radius, arcsec
    "src_width": "count",  # size of the source image, pixels
    "src_height": "count",
    "reduce": "count",  # JPEG 2000 resolution reduction used to decode it
    "b0_deg": "number",  # heliographic latitude of the observer, degrees
    "cdelt_arcsec": "number",  # output pixel size, arcsec
    "dsun_m": "number",  # observer - Sun distance, metres
}
GEOMETRY_COLUMNS = tuple(GEOMETRY_SCHEMA)
#: Columns ``fdflare prepare`` writes.
PREPARE_GEOMETRY_COLUMNS = GEOMETRY_COLUMNS[:14]
#: Columns ``fdflare synth`` writes.
SYNTH_GEOMETRY_COLUMNS = tuple(
    c for c in GEOMETRY_COLUMNS if c not in ("source", "src_width", "src_height", "reduce")
)
#: Columns every reader needs: which image, and where its disk is.
DISK_COLUMNS = ("path", "center_x", "center_y", "radius_px")
GEOMETRY_FILE = "geometry.csv"

# the rule of each checked number: (accepts, "what it must be"); empty cells are allowed
# except in the DISK_COLUMNS
_RULES: dict[str, tuple[Any, str]] = {
    "center_x": (np.isfinite, "a finite number of pixels"),
    "center_y": (np.isfinite, "a finite number of pixels"),
    "radius_px": (lambda v: np.isfinite(v) & (v > 0), "a positive number of pixels"),
    "width": (lambda v: np.isfinite(v) & (v > 0), "a positive number of pixels"),
    "height": (lambda v: np.isfinite(v) & (v > 0), "a positive number of pixels"),
    "src_width": (lambda v: np.isfinite(v) & (v > 0), "a positive number of pixels"),
    "src_height": (lambda v: np.isfinite(v) & (v > 0), "a positive number of pixels"),
    "reduce": (lambda v: np.isfinite(v) & (v >= 0), "a reduction of 0 or more"),
    "crota2": (np.isfinite, "a finite angle in degrees"),
    "rsun_obs": (lambda v: np.isfinite(v) & (v > 0), "a positive angle in arcsec"),
    "b0_deg": (lambda v: np.isfinite(v) & (np.abs(v) <= 90), "a latitude from -90 to 90"),
    "cdelt_arcsec": (lambda v: np.isfinite(v) & (v > 0), "a positive angle in arcsec"),
    "dsun_m": (lambda v: np.isfinite(v) & (v > 0), "a positive distance in metres"),
}


def _not_a(raw: Any, must_be: str) -> Callable[[int], str]:
    return lambda i: f"{raw.iloc[i]!r} is not {must_be}"


def read_geometry_file(
    path: str | os.PathLike[str],
    *,
    require: tuple[str, ...] = DISK_COLUMNS,
    what: str = "geometry file",
) -> Any:
    """Read a ``geometry.csv`` of ``fdflare prepare`` or ``fdflare synth``, checked.

    The one reader of the file (prepare's resume, synth's images, ``explain``, ``spatial
    --disk-image``, the flux baseline). Text columns are read as written (``path``,
    ``source``, ``date_obs``); every number of :data:`GEOMETRY_SCHEMA` must be what its
    column holds (a finite centre, a positive radius and size, a latitude from -90 to 90,
    ...), empty only outside :data:`DISK_COLUMNS`; a path may have one row only. Other
    columns are kept as text.

    Args:
        path: the file.
        require: the columns the caller needs (always at least :data:`DISK_COLUMNS`).
        what: what the file is, for the messages.

    Returns:
        A frame in file order; numbers as int64 (a whole-number column without empties) or
        float64 (NaN for an empty cell).

    Raises:
        InputError: no such file, a folder, a column missing (line 1), a second row for one
            path, or a value that is not what its column holds, naming the file, line and
            field.
    """
    import pandas as pd

    from fdflare.core.io import read_csv_table, refuse_first

    table = read_csv_table(path, what=what, dtype=str, keep_default_na=False)
    missing = [c for c in dict.fromkeys((*DISK_COLUMNS, *require)) if c not in table.columns]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}: expected the geometry.csv of "
            "`fdflare prepare` or `fdflare synth`",
            path=path,
            line=1,
            field=missing[0],
        )
    refuse_first(
        table["path"].duplicated().to_numpy(dtype=bool),
        lambda i: f"a second row for {table['path'].iloc[i]}",
        path=path,
        field="path",
    )
    for column, kind in GEOMETRY_SCHEMA.items():
        if kind == "text" or column not in table.columns:
            continue
        raw = table[column].str.strip()
        empty = raw.isin(["", "nan", "NaN"]).to_numpy()
        values = pd.to_numeric(raw.where(~empty, None), errors="coerce")
        number = values.to_numpy(dtype=float)
        ok, must_be = _RULES[column]
        with np.errstate(invalid="ignore"):
            bad = ~ok(number) & ~(empty & (column not in DISK_COLUMNS))
            if kind == "count":
                bad |= ~empty & np.isfinite(number) & (number != np.round(number))
                must_be = must_be.replace("number", "whole number")
        refuse_first(bad, _not_a(table[column], must_be), path=path, field=column)
        table[column] = (
            values.astype(np.int64) if kind == "count" and not empty.any() else values.astype(float)
        )
    return table


def write_geometry_file(
    path: str | os.PathLike[str], table: Any, *, float_format: str | None = "%.6f"
) -> None:
    """Write ``geometry.csv`` atomically: the columns of :data:`GEOMETRY_SCHEMA` it has, in order.

    Args:
        path: the file.
        table: one row per image, with at least :data:`DISK_COLUMNS`.
        float_format: how numbers are written (``None``: as Python writes them, for a table
            whose numbers are already rounded).

    Raises:
        ValueError: a column of :data:`DISK_COLUMNS` is missing, or a column is not in the
            schema (a bug, not an input error).
    """
    from fdflare.core.io import atomic_open

    unknown = [c for c in table.columns if c not in GEOMETRY_SCHEMA]
    missing = [c for c in DISK_COLUMNS if c not in table.columns]
    if unknown or missing:
        raise ValueError(f"geometry table: unknown columns {unknown}, missing {missing}")
    columns = [c for c in GEOMETRY_COLUMNS if c in table.columns]
    with atomic_open(path, "w") as fh:
        table[columns].to_csv(fh, index=False, float_format=float_format, lineterminator="\n")
