"""GOES flare catalogs: read the formats in use into one schema, and write the study's.

The common schema (a :class:`pandas.DataFrame`, one row per flare, sorted by start time):

============  ==================  ==================================================
column        dtype               meaning
============  ==================  ==================================================
start_time    datetime64[ns]      flare start (UTC)
goes_class    string              GOES class as written, normalised (``M1.3``)
flux          float64             peak flux in W/m^2 (``M1.3`` -> 1.3e-5)
fl_lon        float64             Stonyhurst longitude, degrees (central-meridian
                                  distance); NaN when unknown
fl_lat        float64             Stonyhurst latitude, degrees; NaN when unknown
============  ==================  ==================================================

Readers (chosen from the header by :func:`read_catalog`):

* ``study``: the study's ``goes_flares_integrated.csv`` schema ``start_time, goes_class,
  fl_lon, fl_lat`` (what ``fdflare catalog`` writes);
* ``hek``: HEK-style lists with ``event_starttime, goes_class, hgs_lon, hgs_lat``;
* ``swpc``: NOAA SWPC event lists with ``date`` (YYYYMMDD), ``start_time`` (HHMM) and
  ``goes_class``, which carry no locations;
* ``noaa``: NOAA NGDC's fixed-width yearly GOES XRS reports (``goes-xrs-report_YYYY.txt``),
  recognised from the file content and read by :func:`fdflare.acquire.noaa.read_noaa_report`.

Unknown locations (empty, ``UNK``, ``nan``) and the ``(0, 0)`` placeholder some catalogs
use for "no position" become NaN, never zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.acquire.goes import class_flux, normalise_class
from fdflare.acquire.noaa import is_noaa_report, read_noaa_report

COLUMNS = ("start_time", "goes_class", "flux", "fl_lon", "fl_lat")
STUDY_COLUMNS = ("start_time", "goes_class", "fl_lon", "fl_lat")
FORMATS = {
    "study": ("start_time", "goes_class", "fl_lon", "fl_lat"),
    "hek": ("event_starttime", "goes_class", "hgs_lon", "hgs_lat"),
    "swpc": ("date", "start_time", "goes_class"),
}
_UNKNOWN_TOKENS = {"", "unk", "unknown", "nan", "none", "null", "na", "n/a", "--"}


def detect_format(columns: list[str] | pd.Index) -> str | None:
    """Return the catalog format whose required columns are all present, or None."""
    cols = {str(c).strip() for c in columns}
    if {"date", "start_time", "goes_class"} <= cols and "fl_lon" not in cols:
        return "swpc"
    for name, required in FORMATS.items():
        if set(required) <= cols:
            return name
    return None


def _parse_times(values: pd.Series, *, path: Path, field: str, fmt: str | None = None) -> pd.Series:
    s = values.astype("string").str.strip()
    if fmt is None:
        times = pd.to_datetime(s, format="ISO8601", errors="coerce")
    else:
        times = pd.to_datetime(s, format=fmt, errors="coerce")
    bad = times.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raw = s.iloc[i]
        shown = "empty" if raw is pd.NA or raw == "" else repr(str(raw))
        raise InputError(
            f"unparsable time {shown} (expected YYYY-MM-DD HH:MM:SS); "
            f"{int(bad.sum())} unparsable value(s) in all",
            path=path,
            line=i + 2,
            field=field,
        )
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times.astype("datetime64[ns]")


def _parse_coord(values: pd.Series, *, path: Path, field: str) -> np.ndarray:
    s = values.astype("string").str.strip()
    unknown = s.isna() | s.str.lower().isin(_UNKNOWN_TOKENS)
    nums = pd.to_numeric(s.where(~unknown), errors="coerce")
    bad = (nums.isna() & ~unknown).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"not a number: {str(s.iloc[i])!r} (use a number in degrees, or leave empty/UNK "
            "for an unknown location)",
            path=path,
            line=i + 2,
            field=field,
        )
    return nums.to_numpy(dtype=float)


def _missing_columns(path: Path, columns: pd.Index, fmt: str | None) -> InputError:
    wanted = FORMATS.get(fmt or "study", FORMATS["study"])
    missing = [c for c in wanted if c not in set(map(str, columns))]
    return InputError(
        f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, columns))}. "
        "A flare catalog needs start_time, goes_class, fl_lon, fl_lat (the study's schema), "
        "or event_starttime, goes_class, hgs_lon, hgs_lat (HEK), "
        "or date, start_time, goes_class (NOAA SWPC)",
        path=path,
        field=missing[0] if missing else None,
    )


def read_catalog(path: str | os.PathLike[str], fmt: str = "auto") -> pd.DataFrame:
    """Read a flare catalog file into the common schema (see module docstring).

    Args:
        path: CSV file in one of the supported formats.
        fmt: ``auto`` (detect from the content), ``study``, ``hek``, ``swpc`` or ``noaa``.

    Raises:
        InputError: naming the file, line and field of the first bad value, or the missing
            columns. Nothing is dropped silently: a bad row is an error, not a skip.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    if fmt == "noaa" or (fmt == "auto" and is_noaa_report(path)):
        return read_noaa_report(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"not a readable CSV table ({exc})", path=path) from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    found = detect_format(raw.columns) if fmt == "auto" else fmt
    if found is None or not set(FORMATS[found]) <= set(raw.columns):
        raise _missing_columns(path, raw.columns, found)

    if found == "swpc":
        day = raw["date"].astype("string").str.strip()
        hhmm = raw["start_time"].astype("string").str.strip().str.zfill(4)
        start = _parse_times(day + hhmm, path=path, field="start_time", fmt="%Y%m%d%H%M")
        lon = np.full(len(raw), np.nan)
        lat = np.full(len(raw), np.nan)
    else:
        time_col, _cls, lon_col, lat_col = FORMATS[found]
        start = _parse_times(raw[time_col], path=path, field=time_col)
        lon = _parse_coord(raw[lon_col], path=path, field=lon_col)
        lat = _parse_coord(raw[lat_col], path=path, field=lat_col)

    flux = class_flux(raw["goes_class"], path=path, field="goes_class")
    placeholder = (lon == 0) & (lat == 0)
    lon[placeholder] = np.nan
    lat[placeholder] = np.nan
    out = pd.DataFrame(
        {
            "start_time": start.to_numpy(),
            "goes_class": normalise_class(raw["goes_class"]).to_numpy(dtype=object),
            "flux": flux,
            "fl_lon": lon,
            "fl_lat": lat,
        }
    )
    out["goes_class"] = out["goes_class"].astype("string")
    out = out.sort_values("start_time", kind="stable").reset_index(drop=True)
    out.attrs["source"] = str(path)
    out.attrs["format"] = found
    out.attrs["placeholder_locations"] = int(placeholder.sum())
    return out


def write_catalog(catalog: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a catalog in the study's schema ``start_time,goes_class,fl_lon,fl_lat`` atomically.

    Times are written ``YYYY-MM-DD HH:MM:SS``; unknown locations are left empty.
    """
    from fdflare.core.io import atomic_open

    out = pd.DataFrame(
        {
            "start_time": pd.to_datetime(catalog["start_time"]).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "goes_class": catalog["goes_class"].astype(str),
            "fl_lon": catalog["fl_lon"],
            "fl_lat": catalog["fl_lat"],
        }
    )
    with atomic_open(path, "w") as fh:
        out.to_csv(fh, index=False, lineterminator="\n")
