"""NOAA's yearly GOES XRS flare reports (``goes-xrs-report_YYYY.txt``), read vectorised.

NOAA NGDC published one fixed-width text file per year of GOES X-ray flares (1975 to
mid-2017). The layout (NGDC's ``xray.fmt``; 1-based columns) is:

=========  ======  ============================================================
columns    format  field
=========  ======  ============================================================
1-2        I2      data code, always ``31``
3-5        I3      station code, ``777`` for GOES
6-11       3I2     year (two digits), month, day
12-13      A2      asterisks mark a record with an unconfirmed change
14-17      I4      start time HHMM (UT)
19-22      I4      end time HHMM (may read ``24xx`` past midnight)
24-27      I4      peak time HHMM
29-34      A6      location ``N|S`` latitude, ``E|W`` central-meridian distance
                   (``S25W33``), blank when unknown
35-37      A3      ``SXI`` (2004+), or optical importance and brightness (older)
60         A1      X-ray class letter A, B, C, M or X
61-63      I3      X-ray intensity in tenths: ``23`` is 2.3, ``280`` is 28.0
                   (older files may write it with a decimal point, ``2.3``)
68-71      A4      station name (``G15``)
73-80      A8      integrated flux, J/m^2
81-85      I5      NOAA active region number
=========  ======  ============================================================

Some transcriptions of the same records move the location to the end of the line and
pad the fields differently (``31777110115  1149 1221 1212 C    23    G15  3.5E-03 11131
S25W33``). Columns 1-27 are the same in both; when columns 28-63 do not hold the
documented layout, the class (first ``A|B|C|M|X`` followed by the intensity) and the
location (``[NS]dd[EW]dd``) are taken from the tokens after the peak time instead.

Conventions: latitude north positive; longitude (central-meridian distance, which is the
Stonyhurst longitude) west positive, east negative. ``N00E00`` is a placeholder for "no
position" and becomes unknown (NaN), as in :mod:`fdflare.acquire.catalog`.

Lines with a valid date and times but no X-ray class at all (a few optical-only reports
per year) are not GOES flares: they are left out and counted. Byte-identical repeated
lines (the files list some records twice) are left out and counted. Anything else that
does not parse is an :class:`~fdflare.core.errors.InputError` naming the file and line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.acquire.goes import LETTER_FLUX
from fdflare.core.errors import InputError

__all__ = ["is_noaa_report", "parse_location", "read_noaa_report"]

# A record starts with 11 digits (data code, station, yymmdd), a 2-character flag field,
# then the start time.
_RECORD_START = re.compile(r"^\d{11}[ *]{2}[ \d]{3}\d[ ]")
_LOCATION = r"[NS]\d{2}[EW]\d{2}"
_LETTERS = "".join(LETTER_FLUX)  # "ABCMX"
# Alternative layout: class letter not glued to a preceding letter or digit (so the
# optical brightness in ``1B`` or ``SB`` is not read as a B-class flare), then the
# intensity, not followed by more digits.
_FALLBACK_CLASS = rf"(?<![A-Za-z0-9.])([{_LETTERS}])\s{{0,6}}(\d{{1,3}}(?:\.\d)?)(?![\d.])"
_FALLBACK_LOCATION = rf"(?<![A-Za-z0-9])({_LOCATION})(?![A-Za-z0-9])"


def is_noaa_report(path: str | os.PathLike[str]) -> bool:
    """Return True when the first record line of ``path`` looks like a GOES XRS report line.

    Only the first 4 KiB are read; blank lines and ``#`` comments are skipped.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    text = head.decode("latin-1")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        return bool(_RECORD_START.match(line))
    return False


def parse_location(loc: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``S25W33``-style locations into (longitude, latitude) in degrees.

    West and north are positive. Anything that is not a location (blank, ``NA``) gives NaN.

    Returns:
        Two float arrays: Stonyhurst longitude (central-meridian distance) and latitude.
    """
    parts = loc.astype("string").str.strip().str.extract(r"^([NS])(\d{2})([EW])(\d{2})$")
    lat = parts[1].astype(float).to_numpy()
    lon = parts[3].astype(float).to_numpy()
    south = parts[0].eq("S").fillna(False).to_numpy(dtype=bool)
    east = parts[2].eq("E").fillna(False).to_numpy(dtype=bool)
    lat = np.where(south, -lat, lat)
    lon = np.where(east, -lon, lon)
    return lon.astype(float), lat.astype(float)


def _intensity(digits: pd.Series) -> np.ndarray:
    """Intensity field to the multiplier: ``23`` -> 2.3, ``280`` -> 28.0, ``2.3`` -> 2.3."""
    s = digits.astype("string").str.strip()
    value = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    has_point = s.str.contains(".", regex=False).fillna(False).to_numpy(dtype=bool)
    return np.where(has_point, value, value / 10.0)


def _first_error(mask: np.ndarray, line_no: np.ndarray, lines: pd.Series) -> tuple[int, str]:
    i = int(np.flatnonzero(mask)[0])
    return int(line_no[i]), str(lines.iloc[i])


def read_noaa_report(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a NOAA GOES XRS yearly report into the common catalog schema.

    Args:
        path: a ``goes-xrs-report_YYYY.txt`` file (either layout, see the module docstring).

    Returns:
        One row per flare, sorted by start time, with columns ``start_time``
        (datetime64[ns]), ``goes_class`` (string, e.g. ``C2.3``), ``flux`` (W/m^2),
        ``fl_lon``, ``fl_lat`` (degrees, NaN when unknown). ``attrs`` holds ``source``,
        ``format`` (``noaa``), ``lines`` (record lines read), ``unclassified`` (records
        without an X-ray class, left out), ``duplicates`` (repeated identical lines,
        left out), ``placeholder_locations`` and ``alternative_layout`` (lines read with
        the token fallback).

    Raises:
        InputError: the file is missing, or a line is not a report record, or its date,
            start time or class is malformed (naming the file, line and field).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    text = path.read_bytes().decode("latin-1")
    all_lines = pd.Series(text.splitlines(), dtype="string")
    line_no_all = np.arange(1, len(all_lines) + 1)
    keep = ~(all_lines.str.strip().eq("") | all_lines.str.lstrip().str.startswith("#"))
    keep_arr = keep.to_numpy(dtype=bool)
    lines = all_lines[keep_arr].str.rstrip().reset_index(drop=True)
    line_no = line_no_all[keep_arr]
    if len(lines) == 0:
        raise InputError("no GOES XRS report records in the file", path=path)

    # Columns 1-27: identical in both layouts.
    not_record = ~lines.str.match(_RECORD_START.pattern).fillna(False).to_numpy(dtype=bool)
    if not_record.any():
        ln, raw = _first_error(not_record, line_no, lines)
        raise InputError(
            f"not a GOES XRS report record: {raw[:40]!r} (expected 11 digits "
            f"'31777YYMMDD' then the start time HHMM in columns 14-17); "
            f"{int(not_record.sum())} such line(s) in all",
            path=path,
            line=ln,
        )

    duplicated = lines.duplicated().to_numpy(dtype=bool)
    n_duplicates = int(duplicated.sum())
    lines = lines[~duplicated].reset_index(drop=True)
    line_no = line_no[~duplicated]

    yy = lines.str.slice(5, 7).astype(int).to_numpy()
    century = np.where(yy >= 75, "19", "20")
    stamp = pd.Series(century, dtype="string") + lines.str.slice(5, 11) + lines.str.slice(13, 17)
    start = pd.to_datetime(stamp.str.replace(" ", "0"), format="%Y%m%d%H%M", errors="coerce")
    bad_time = start.isna().to_numpy()
    if bad_time.any():
        ln, raw = _first_error(bad_time, line_no, lines)
        raise InputError(
            f"invalid date or start time {raw[5:11]!r} {raw[13:17]!r} (expected YYMMDD in "
            f"columns 6-11 and HHMM in 14-17); {int(bad_time.sum())} such line(s) in all",
            path=path,
            line=ln,
            field="start_time",
        )

    # Documented layout: location in 29-34 (blank or S25W33), class letter in 60,
    # intensity in 61-63.
    padded = lines.str.pad(90, side="right")
    loc_fixed = padded.str.slice(28, 34)
    letter_fixed = padded.str.slice(59, 60)
    digits_fixed = padded.str.slice(60, 63)
    loc_ok = (
        loc_fixed.str.strip().eq("") | loc_fixed.str.fullmatch(_LOCATION).fillna(False)
    ).to_numpy(dtype=bool)
    class_blank = (letter_fixed + digits_fixed).str.strip().eq("").to_numpy(dtype=bool)
    class_ok = (
        letter_fixed.isin(list(_LETTERS))
        & digits_fixed.str.fullmatch(r"\s*\d{1,3}\s*|\d\.\d").fillna(False)
    ).to_numpy(dtype=bool)
    fixed = loc_ok & (class_ok | class_blank)

    letter = letter_fixed.to_numpy(dtype=object).copy()
    digits = digits_fixed.to_numpy(dtype=object).copy()
    loc = loc_fixed.to_numpy(dtype=object).copy()

    # Lines not in the documented layout, and lines whose class columns are blank (which
    # may be a re-padded line rather than a record without a class), are read by tokens.
    alt = ~fixed | class_blank
    unclassified = np.zeros(len(lines), dtype=bool)
    if alt.any():
        rest = lines[alt].str.slice(27)
        cls = rest.str.extract(_FALLBACK_CLASS)
        where = rest.str.extract(_FALLBACK_LOCATION)[0]
        no_class = cls[0].isna().to_numpy()
        malformed = no_class & ~fixed[alt]
        if malformed.any():
            ln, raw = _first_error(malformed, line_no[alt], lines[alt])
            raise InputError(
                f"no GOES X-ray class found in {raw[27:].strip()!r} (expected the class "
                "letter A, B, C, M or X in column 60 and the intensity in tenths in "
                f"61-63, e.g. 'C 23' for C2.3); {int(malformed.sum())} such line(s) in all",
                path=path,
                line=ln,
                field="goes_class",
            )
        found = ~no_class
        idx = np.flatnonzero(alt)
        letter[idx[found]] = cls[0].to_numpy(dtype=object)[found]
        digits[idx[found]] = cls[1].to_numpy(dtype=object)[found]
        # The location token, if any, lies after the peak time in both layouts.
        loc[idx[found]] = where.fillna("").to_numpy(dtype=object)[found]
        unclassified[idx[no_class]] = True
        alt = np.zeros(len(lines), dtype=bool)
        alt[idx[found]] = True

    keep_rows = ~unclassified
    mult = _intensity(pd.Series(digits[keep_rows], dtype="string"))
    letters = pd.Series(letter[keep_rows], dtype="string")
    flux = letters.map(LETTER_FLUX).to_numpy(dtype=float) * mult
    bad_class = ~np.isfinite(flux) | (mult <= 0)
    if bad_class.any():
        ln, raw = _first_error(bad_class, line_no[keep_rows], lines[keep_rows])
        raise InputError(
            f"malformed X-ray class in {raw[27:].strip()!r}; "
            f"{int(bad_class.sum())} such line(s) in all",
            path=path,
            line=ln,
            field="goes_class",
        )
    lon, lat = parse_location(pd.Series(loc[keep_rows], dtype="string"))
    placeholder = (lon == 0) & (lat == 0)
    lon[placeholder] = np.nan
    lat[placeholder] = np.nan
    goes_class = letters + pd.Series(np.char.mod("%.1f", mult), dtype="string")

    out = pd.DataFrame(
        {
            "start_time": start[keep_rows].to_numpy().astype("datetime64[ns]"),
            "goes_class": goes_class.astype("string").to_numpy(),
            "flux": flux,
            "fl_lon": lon,
            "fl_lat": lat,
        }
    )
    out["goes_class"] = out["goes_class"].astype("string")
    out = out.sort_values("start_time", kind="stable").reset_index(drop=True)
    out.attrs.update(
        {
            "source": str(path),
            "format": "noaa",
            "lines": len(lines) + n_duplicates,
            "unclassified": int(unclassified.sum()),
            "duplicates": n_duplicates,
            "placeholder_locations": int(placeholder.sum()),
            "alternative_layout": int(alt.sum()),
        }
    )
    return out
