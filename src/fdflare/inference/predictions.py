"""Prediction files: their one schema and their one reader.

Three layouts, all read by :func:`read_prediction_file`:

* the study's prediction file, :data:`PREDICTION_COLUMNS` (``timestamp,flare_prob,target``):
  what ``fdflare predict`` and the baselines write, and ``evaluate``, ``calibrate``,
  ``cv`` and ``reproduce`` score;
* fdflare's joined table, :data:`JOINED_COLUMNS` (``predict --table``'s ``_joined.csv``):
  the predictions with the largest flare's class and location, for ``spatial`` and
  ``explain --where``;
* the study's ``*_{x,m,c}_class.csv``: ``timestamp, flare_prob, goes_class, fl_location =
  "(lon, lat)", flare_start``, for ``spatial``.

One set of rules for every reader (each names the file, line and field of the first bad
value): ``flare_prob`` a number in [0, 1]; ``target``, where present, 0 or 1; the image
column (``timestamp`` or ``label``), where present, one row per image; ``goes_class``, where
present, a GOES class, or empty, ``NF`` or a missing-value marker (``NA``, ``NULL``, ...:
:data:`NO_FLARE`) for a window without a flare; a location, where present, both a longitude
in -180..180 and a latitude in -90..90, or neither (empty, ``nan``, ``unk``, ``none``,
``NA``, ...: :data:`UNKNOWN_LOCATION`, unknown).

This module imports no torch: ``analysis`` and ``reports`` read predictions through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.io import parse_probabilities, read_csv_table, refuse_first, shown_cell
from fdflare.core.recipe import CLASS_PATTERN

__all__ = [
    "ID_COLUMNS",
    "JOINED_COLUMNS",
    "PREDICTION_COLUMNS",
    "read_prediction_file",
]

#: The image column of a prediction file: ``timestamp`` (the study's), or ``label``.
ID_COLUMNS = ("timestamp", "label")
#: The study's prediction file.
PREDICTION_COLUMNS = ("timestamp", "flare_prob", "target")
#: fdflare's joined table: predictions with the largest flare of each window.
JOINED_COLUMNS = ("label", "flare_prob", "target", "goes_class", "fl_lon", "fl_lat", "fl_start")
#: What a location cell may say for "unknown" (lower case): the study's, and the missing-value
#: markers pandas reads as empty by default (``NA``, ``N/A``, ``NULL``, ...), which the
#: readers before this one (``spatial``) accepted.
UNKNOWN_LOCATION = ("", "nan", "-nan", "unk", "none", "na", "n/a", "#n/a", "null", "<na>")
#: What a ``goes_class`` cell may say for "no flare" (upper case): the study's ``NF`` and the
#: same missing-value markers.
NO_FLARE = ("NF", "NAN", "-NAN", "NONE", "NA", "N/A", "#N/A", "NULL", "<NA>")
#: What a reader may need beyond ``flare_prob``.
NEEDS = ("id", "target", "goes_class", "location")


def read_prediction_file(
    path: str | os.PathLike[str],
    *,
    need: Sequence[str] = (),
    expected: str = "timestamp, flare_prob, target",
) -> pd.DataFrame:
    """Read a prediction file of any of the three layouts, checked by the module's rules.

    Args:
        path: the CSV file.
        need: what the caller needs besides ``flare_prob``: ``id`` (a ``timestamp`` or
            ``label`` column), ``target``, ``goes_class``, ``location`` (``fl_location`` or
            ``fl_lon`` and ``fl_lat``).
        expected: the columns the caller expects, for the "missing column" message.

    Returns:
        Every column of the file as text, except: ``flare_prob`` (float), ``target`` (int64),
        ``goes_class`` (stripped, ``NF`` as empty), ``fl_lon`` and ``fl_lat`` (float, NaN
        when unknown; also made from ``fl_location``). ``attrs``: ``path``, ``id_column``
        (``None`` without one), ``has_target``, ``has_class``, ``has_location``.

    Raises:
        InputError: a folder, no such file, a needed column missing, or a value that breaks
            a rule, naming the file, line and field.
    """
    unknown = [n for n in need if n not in NEEDS]
    if unknown:
        raise ValueError(f"unknown needs {unknown}; choose from {NEEDS}")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"is a folder; expected a prediction CSV file ({expected})", path=path)
    df = read_csv_table(path, what="prediction file", dtype=str, keep_default_na=False)
    columns = set(df.columns)
    id_col = next((c for c in ID_COLUMNS if c in columns), None)
    location = (
        ("fl_location", "fl_location")
        if "fl_location" in columns
        else ("fl_lon", "fl_lat")
        if {"fl_lon", "fl_lat"} <= columns
        else None
    )
    present = {
        "flare_prob": "flare_prob" in columns,
        "timestamp": id_col is not None or "id" not in need,
        "target": "target" in columns or "target" not in need,
        "goes_class": "goes_class" in columns or "goes_class" not in need,
        "fl_location": location is not None or "location" not in need,
    }
    for col, ok in present.items():
        if not ok:
            more = ' "(lon, lat)" or fl_lon and fl_lat' if col == "fl_location" else ""
            raise InputError(
                f"missing column {col!r}{more}: expected {expected}; found "
                f"{', '.join(map(str, df.columns))}",
                path=path,
                field=col,
            )

    if id_col is not None:
        ids = df[id_col]
        refuse_first(
            ids.duplicated().to_numpy(dtype=bool),
            lambda i: f"a second row for {ids.iloc[i]} (it would be counted twice)",
            path=path,
            field=id_col,
        )
    df["flare_prob"] = parse_probabilities(df["flare_prob"], path=path).to_numpy(dtype=float)
    if "target" in columns:
        raw = df["target"]
        target = pd.to_numeric(raw.str.strip(), errors="coerce")
        refuse_first(
            ~target.isin([0, 1]).to_numpy(),
            lambda i: f"target {shown_cell(raw.iloc[i])} is not 0 or 1",
            path=path,
            field="target",
        )
        df["target"] = target.to_numpy().astype(np.int64)
    if "goes_class" in columns:
        df["goes_class"] = _classes(df["goes_class"], path)
    if location is not None:
        if location[0] == "fl_location":
            cell = df["fl_location"].str.strip().str.strip("()[]")
            parts = cell.str.split(",", n=1, expand=True).reindex(columns=[0, 1])
            lon_raw, lat_raw = parts[0].fillna(""), parts[1].fillna("")
        else:
            lon_raw, lat_raw = df["fl_lon"], df["fl_lat"]
        df["fl_lon"], df["fl_lat"] = _location(lon_raw, lat_raw, location, path)
    df.attrs.update(
        path=str(path),
        id_column=id_col,
        has_target="target" in columns,
        has_class="goes_class" in columns,
        has_location=location is not None,
    )
    return df


def _classes(raw: pd.Series, path: Path) -> pd.Series:
    """``goes_class``: a GOES class such as ``M1.3``, or empty / ``NF`` (the study's) for none."""
    cls = raw.str.strip()
    cls = cls.mask(cls.str.upper().isin(NO_FLARE), "")
    bad = ((cls != "") & ~cls.str.match(CLASS_PATTERN)).to_numpy(dtype=bool)
    refuse_first(
        bad,
        lambda i: (
            f"not a GOES class: {str(cls.iloc[i])!r} (expected a letter A, B, C, M or X "
            f"and a number, e.g. M1.3, or NF or empty for no flare); {int(bad.sum())} such "
            "value(s) in all"
        ),
        path=path,
        field="goes_class",
    )
    return cls


def _not_a_location(s: pd.Series) -> Callable[[int], str]:
    return lambda i: f"not a location: {s.iloc[i]!r}"


def _out_of_range(s: pd.Series, what: str, limit: float) -> Callable[[int], str]:
    return lambda i: f"{what} {s.iloc[i]} is not a number from -{limit:g} to {limit:g} degrees"


def _location(
    lon_raw: pd.Series, lat_raw: pd.Series, fields: tuple[str, str], path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes (NaN where unknown): both known or neither, within range."""
    coords, known = [], []
    for raw, fld, limit, what in (
        (lon_raw, fields[0], 180.0, "longitude"),
        (lat_raw, fields[1], 90.0, "latitude"),
    ):
        s = raw.astype(str).str.strip()
        unknown = s.str.lower().isin(UNKNOWN_LOCATION).to_numpy()
        values = pd.to_numeric(s.where(~unknown, None), errors="coerce").to_numpy(dtype=float)
        refuse_first(np.isnan(values) & ~unknown, _not_a_location(s), path=path, field=fld)
        with np.errstate(invalid="ignore"):
            out = ~unknown & ~(np.abs(values) <= limit)
        refuse_first(out, _out_of_range(s, what, limit), path=path, field=fld)
        coords.append(np.where(unknown, np.nan, values))
        known.append(~unknown)
    half = known[0] != known[1]
    if half.any():
        i = int(np.flatnonzero(half)[0])
        raise InputError(
            "a location needs both longitude and latitude (or neither, for an unknown one)",
            path=path,
            line=i + 2,
            field=fields[1] if known[0][i] else fields[0],
        )
    return coords[0], coords[1]
