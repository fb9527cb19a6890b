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
use for "no position" become NaN, never zero. Times without a zone are UTC; notations may be
mixed in one file (``2011-02-01 00:39:00`` beside ``2011-02-01T00:40:00Z``).

Duplicates: one rule, :data:`DUPLICATE_KEY`, everywhere. Two rows are the same flare when
their start time, peak flux and location are equal (unknown locations compare equal).
:func:`read_catalog` keeps the first of each and says how many it dropped
(``attrs["duplicates_dropped"]``); :func:`select_flares` applies the same rule across files
and monthly queries.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.acquire.goes import class_flux, normalise_class
from fdflare.acquire.noaa import is_noaa_report, read_noaa_report
from fdflare.core.errors import InputError
from fdflare.core.io import refuse_first
from fdflare.core.recipe import parse_threshold
from fdflare.core.timeparse import parse_utc_series

__all__ = [
    "COLUMNS",
    "DUPLICATE_KEY",
    "FORMATS",
    "STUDY_COLUMNS",
    "detect_format",
    "drop_duplicate_flares",
    "read_catalog",
    "select_flares",
    "write_catalog",
]

#: Columns of the catalog frame that :func:`read_catalog` returns.
COLUMNS = ("start_time", "goes_class", "flux", "fl_lon", "fl_lat")
#: Columns of the study's catalog file, which :func:`write_catalog` writes (``fdflare
#: catalog``, ``fdflare synth``).
STUDY_COLUMNS = ("start_time", "goes_class", "fl_lon", "fl_lat")
FORMATS = {
    "study": STUDY_COLUMNS,
    "hek": ("event_starttime", "goes_class", "hgs_lon", "hgs_lat"),
    "swpc": ("date", "start_time", "goes_class"),
}
_UNKNOWN_TOKENS = {"", "unk", "unknown", "nan", "none", "null", "na", "n/a", "--"}
DUPLICATE_KEY = ("start_time", "flux", "fl_lon", "fl_lat")
"""The columns that make two catalog rows the same flare."""


def drop_duplicate_flares(catalog: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the first row of each flare (same :data:`DUPLICATE_KEY`); return it and the count dropped."""
    dup = catalog.duplicated(subset=list(DUPLICATE_KEY)).to_numpy(dtype=bool)
    if not dup.any():
        return catalog, 0
    kept = catalog[~dup].reset_index(drop=True)
    kept.attrs = dict(catalog.attrs)
    return kept, int(dup.sum())


def detect_format(columns: list[str] | pd.Index) -> str | None:
    """Return the catalog format whose required columns are all present, or None."""
    cols = {str(c).strip() for c in columns}
    if {"date", "start_time", "goes_class"} <= cols and "fl_lon" not in cols:
        return "swpc"
    for name, required in FORMATS.items():
        if set(required) <= cols:
            return name
    return None


def _quoted(raw: object) -> str:
    return "empty" if raw is pd.NA or raw == "" else repr(str(raw))


def _parse_times(values: pd.Series, *, path: Path, field: str, fmt: str | None = None) -> pd.Series:
    s = values.astype("string").str.strip()
    times = parse_utc_series(s, fmt=fmt)
    bad = times.isna().to_numpy()
    refuse_first(
        bad,
        lambda i: (
            f"unparsable time {_quoted(s.iloc[i])} (expected YYYY-MM-DD HH:MM:SS); "
            f"{int(bad.sum())} unparsable value(s) in all"
        ),
        path=path,
        field=field,
    )
    return times.astype("datetime64[ns]")


def _parse_coord(values: pd.Series, *, path: Path, field: str) -> np.ndarray:
    s = values.astype("string").str.strip()
    unknown = s.isna() | s.str.lower().isin(_UNKNOWN_TOKENS)
    nums = pd.to_numeric(s.where(~unknown), errors="coerce")
    refuse_first(
        (nums.isna() & ~unknown).to_numpy(),
        lambda i: (
            f"not a number: {str(s.iloc[i])!r} (use a number in degrees, or leave "
            "empty/UNK for an unknown location)"
        ),
        path=path,
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


def _check_field_counts(path: Path) -> None:
    """Refuse a row with more (or fewer) fields than the others, naming its line.

    A file whose data rows all hold one field more than the header has an unnamed index
    column first (as pandas writes it) and is read as such, unless every row's extra field
    is an empty last one (a trailing comma, as spreadsheets write): read as an index, that
    would shift every column by one and blame the wrong field.
    """
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, skipinitialspace=True)
            header = next(reader, None)
            if header is None:
                return
            rows = [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"not a readable CSV table ({exc})", path=path) from None
    n = len(header)
    names = ", ".join(header)
    comma = " (a trailing comma: a comma at the end of the line?)"
    counts = np.array([len(row) for _line, row in rows], dtype=int)
    expected = n + 1 if (counts == n + 1).sum() > (counts == n).sum() else n
    if expected == n + 1 and _trailing_commas([row for _line, row in rows if len(row) == n + 1]):
        raise InputError(
            f"too many fields: {n + 1} where the header has {n} ({names}){comma}; "
            f"{int((counts == n + 1).sum())} such row(s) in all",
            path=path,
            line=rows[int(np.flatnonzero(counts == n + 1)[0])][0],
        )
    bad = np.flatnonzero(counts != expected)
    if len(bad):
        line, row = rows[int(bad[0])]
        k = len(row)
        what = "too many" if k > expected else "too few"
        hint = comma if k == n + 1 and row[-1].strip() == "" else ""
        raise InputError(
            f"{what} fields: {k} where the header has {n} ({names}){hint}; "
            f"{len(bad)} such row(s) in all",
            path=path,
            line=line,
        )


def _trailing_commas(rows: list[list[str]]) -> bool:
    """Whether rows one field longer than the header end with a comma, not start with an index.

    An index column (as pandas writes it) starts each row with an integer; a trailing comma
    leaves every row's last field empty.
    """
    ends_empty = all(row[-1].strip() == "" for row in rows)
    starts_index = all(row[0].strip().isdigit() for row in rows)
    return ends_empty and not starts_index


def location_problem(
    lon: np.ndarray, lat: np.ndarray, lon_known: np.ndarray, lat_known: np.ndarray
) -> tuple[int, str, bool] | None:
    """First row with an impossible location: ``(row, message, on_longitude)``."""
    with np.errstate(invalid="ignore"):
        bad_lon = lon_known & ~(np.abs(lon) <= 180)
        bad_lat = lat_known & ~(np.abs(lat) <= 90)
    half = lon_known != lat_known
    # (0, 0) is the "no position" placeholder of some catalogs, as read_catalog treats it
    rows = np.flatnonzero(bad_lon | bad_lat | half)
    if not len(rows):
        return None
    i = int(rows[0])
    if bad_lon[i]:
        return i, f"longitude {lon[i]:g} is not a number from -180 to 180 degrees", True
    if bad_lat[i]:
        return i, f"latitude {lat[i]:g} is not a number from -90 to 90 degrees", False
    if lon_known[i]:
        return i, "a longitude without a latitude (give both, or neither for an unknown one)", False
    return i, "a latitude without a longitude (give both, or neither for an unknown one)", True


def read_catalog(path: str | os.PathLike[str], fmt: str = "auto") -> pd.DataFrame:
    """Read a flare catalog file into the common schema (see module docstring).

    Args:
        path: CSV file in one of the supported formats.
        fmt: ``auto`` (detect from the content), ``study``, ``hek``, ``swpc`` or ``noaa``.

    Returns:
        The catalog, sorted by start time, each flare once (see :data:`DUPLICATE_KEY`);
        ``attrs`` holds ``source``, ``format``, ``placeholder_locations`` and
        ``duplicates_dropped`` (rows left out as repeats of an earlier row, counting the
        repeated lines of a NOAA report).

    Raises:
        InputError: naming the file, line and field of the first bad value (an impossible
            location too: a longitude outside -180..180, a latitude outside -90..90, or one
            without the other), the line of a row with too many or too few fields, or the
            missing columns. Nothing else is dropped: a bad row is an error, not a skip.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder; expected a catalog file" if path.is_dir() else "no such file"
        raise InputError(what, path=path)
    if fmt == "noaa" or (fmt == "auto" and is_noaa_report(path)):
        report = read_noaa_report(path)
        out, n_dup = drop_duplicate_flares(report)
        out.attrs["duplicates_dropped"] = int(report.attrs.get("duplicates", 0)) + n_dup
        return out
    _check_field_counts(path)
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
        problem = location_problem(lon, lat, ~np.isnan(lon), ~np.isnan(lat))
        if problem is not None:
            i, message, on_lon = problem
            raise InputError(message, path=path, line=i + 2, field=lon_col if on_lon else lat_col)

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
    out, n_dup = drop_duplicate_flares(out)
    out.attrs["source"] = str(path)
    out.attrs["format"] = found
    out.attrs["placeholder_locations"] = int(placeholder.sum())
    out.attrs["duplicates_dropped"] = n_dup
    return out


def select_flares(
    catalog: pd.DataFrame,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    min_class: str | None = None,
) -> pd.DataFrame:
    """Keep the flares starting in ``[start, end)`` at or above ``min_class``, once each.

    Duplicates (:data:`DUPLICATE_KEY`: e.g. a flare listed by two monthly queries or by
    two overlapping files) are removed and counted, by the rule :func:`read_catalog` uses.

    Args:
        catalog: flares in the common schema.
        start: first start time kept (None: no lower bound).
        end: start times strictly before this are kept (None: no upper bound).
        min_class: lowest class kept, e.g. ``C1.0`` or ``M`` (None: all).

    Returns:
        The selection, sorted by start time, with ``attrs["counts"]``: ``in_catalog``,
        ``outside_range``, ``below_min_class``, ``duplicates``, ``kept``,
        ``unknown_location``.
    """
    t = catalog["start_time"]
    in_range = np.ones(len(catalog), dtype=bool)
    if start is not None:
        in_range &= (t >= start).to_numpy(dtype=bool)
    if end is not None:
        in_range &= (t < end).to_numpy(dtype=bool)
    above = np.ones(len(catalog), dtype=bool)
    if min_class:
        # Relative tolerance: "C1.0" parsed twice must compare equal.
        above = catalog["flux"].to_numpy(dtype=float) >= parse_threshold(
            min_class, what="min_class"
        )[0] * (1 - 1e-9)
    chosen = catalog[in_range & above]
    dup = chosen.duplicated(subset=list(DUPLICATE_KEY)).to_numpy(dtype=bool)
    out = chosen[~dup].sort_values("start_time", kind="stable").reset_index(drop=True)
    out.attrs = {
        "counts": {
            "in_catalog": len(catalog),
            "outside_range": int((~in_range).sum()),
            "below_min_class": int((in_range & ~above).sum()),
            "duplicates": int(dup.sum()),
            "kept": len(out),
            "unknown_location": int(out["fl_lon"].isna().sum()),
        }
    }
    return out


def write_catalog(catalog: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a catalog in the study's schema (:data:`STUDY_COLUMNS`) atomically.

    Times are written ``YYYY-MM-DD HH:MM:SS``; unknown locations are left empty.
    """
    from fdflare.core.io import atomic_open

    out = pd.DataFrame(
        {
            "start_time": pd.to_datetime(catalog["start_time"]).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "goes_class": catalog["goes_class"].astype(str),
            "fl_lon": catalog["fl_lon"],
            "fl_lat": catalog["fl_lat"],
        },
        columns=list(STUDY_COLUMNS),
    )
    with atomic_open(path, "w") as fh:
        out.to_csv(fh, index=False, lineterminator="\n")
