"""The flare history up to an instance: what a forecaster knows from the catalog alone.

Persistence asks one question of the past (did a flare of the forecast's class start in the
last 24 hours?). A forecaster reads more from the same catalog: how large the recent flares
were and how many there were, over the last day and the last few days. :func:`flare_history`
gives four such numbers per instance time ``t``, each from the flares that *started* in a
window ``(t - w, t]`` (the label window mirrored into the past, as persistence uses it):

============== ==================================================================
``peak_24h``   log10 of the largest peak flux (W m^-2) in ``(t - 24 h, t]``, or
               log10 of :data:`FLOOR` (B1.0) when no flare is listed there
``peak_72h``   the same over ``(t - 72 h, t]``
``flares_24h`` ``log(1 + n)``: n flares >= C1.0 in ``(t - 24 h, t]``
``flares_72h`` the same over ``(t - 72 h, t]``
============== ==================================================================

They feed the ``history`` baseline (:mod:`fdflare.analysis.baselines`: a logistic regression
on them alone) and the ``history`` calibration map (:mod:`fdflare.analysis.calibration`:
a model's score together with them; :func:`fdflare.analysis.skill.with_history` runs it fold
by fold beside the baselines). Both use the catalog only up to each instance's time, so
both can be issued operationally, given a catalog that lists every flare as it happens. A
catalog whose listing depends on later flares (the study's ``flare_catalog_partial.csv``
lists a flare only where it was the largest of some instance's next 24 h) lets the future
into the history: read the history from a complete list.

The whole table is computed at once: sorted start times, ``numpy.searchsorted`` for the
window bounds and ``numpy.maximum.reduceat`` for the peaks, O((N + M) log M) for N instances
and M flares.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError

#: the history's numbers, in the order :func:`flare_history` returns them
FEATURES = ("peak_24h", "peak_72h", "flares_24h", "flares_72h")
#: the windows (hours) of the peaks and the counts
WINDOWS_H = (24, 72)
#: the peak flux an empty window stands at (B1.0, W m^-2): below any flare a forecaster counts
FLOOR = 1e-7
#: flares at or above this peak flux (C1.0) are counted
COUNT_FROM = 1e-6


def flare_history(times: pd.DatetimeIndex | pd.Series, catalog: pd.DataFrame) -> np.ndarray:
    """``(N, 4)``: :data:`FEATURES` at each of ``times`` from the flares of ``catalog``.

    Args:
        times: instance times (UTC, naive or aware).
        catalog: flares with ``start_time`` and ``flux`` (peak W m^-2), as
            :func:`fdflare.acquire.catalog.read_catalog` returns them; any order.

    Raises:
        InputError: a time that is missing (NaT): it has no past to read.
    """
    t_index = naive_utc(times)
    if len(t_index) and t_index.isna().any():
        i = int(np.flatnonzero(np.asarray(t_index.isna()))[0])
        raise InputError(f"instance {i} has no time: its flare history cannot be read")
    t = t_index.as_unit("ns").asi8
    start = naive_utc(catalog["start_time"])
    flux = catalog["flux"].to_numpy(dtype=float)
    keep = ~np.asarray(start.isna()) & np.isfinite(flux)
    starts = start.as_unit("ns").asi8[keep]
    flux = flux[keep]
    order = np.argsort(starts, kind="stable")
    starts, flux = starts[order], flux[order]
    counted = np.cumsum(np.concatenate([[0], flux >= COUNT_FROM]))
    # a sentinel at the end, so that an empty window at the end still indexes a real element
    peaks = np.concatenate([np.maximum(flux, FLOOR), [FLOOR]])
    hi = np.searchsorted(starts, t, side="right")
    out = np.empty((len(t), 2 * len(WINDOWS_H)))
    for j, hours in enumerate(WINDOWS_H):
        lo = np.searchsorted(starts, t - pd.Timedelta(hours=hours).value, side="right")
        empty = hi <= lo
        if len(t):
            bounds = np.empty(2 * len(t), dtype=np.intp)
            bounds[0::2], bounds[1::2] = lo, hi
            top = np.maximum.reduceat(peaks, bounds)[0::2]
        else:
            top = np.empty(0)
        out[:, j] = np.log10(np.where(empty, FLOOR, top))
        out[:, len(WINDOWS_H) + j] = np.log1p(counted[hi] - counted[lo])
    return out


def check_catalog(catalog: pd.DataFrame, *, what: str = "the flare history") -> None:
    """Refuse a catalog that lists no flare: every history would read as quiet.

    Raises:
        InputError: the catalog has no flare with a start time and a peak flux.
    """
    start = pd.to_datetime(catalog["start_time"], errors="coerce") if len(catalog) else []
    flux = catalog["flux"].to_numpy(dtype=float) if len(catalog) else np.empty(0)
    if not (len(catalog) and (~pd.isna(start) & np.isfinite(flux)).any()):
        raise InputError(f"the flare catalog lists no flare, so {what} would read quiet everywhere")


def naive_utc(times: pd.DatetimeIndex | pd.Series | pd.Index) -> pd.DatetimeIndex:
    """``times`` as a naive UTC index (aware times converted, naive ones taken as UTC)."""
    t = pd.DatetimeIndex(times)
    return t.tz_convert("UTC").tz_localize(None) if t.tz is not None else t


def flare_span(catalog: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The start times of the catalog's first and last flare (naive UTC), or None when empty."""
    start = naive_utc(pd.to_datetime(catalog["start_time"], errors="coerce")).dropna()
    return (start.min(), start.max()) if len(start) else None


def start_note(times: pd.DatetimeIndex | pd.Series, catalog: pd.DataFrame) -> str | None:
    """A note when instances' 72 h reach back before the catalog's first flare (its start).

    A catalog cannot say where it starts either: before its first flare an instance's
    history reads as quiet. Nothing is dropped; the note says how many instances that is.
    """
    t, span = naive_utc(times), flare_span(catalog)
    if span is None or not len(t):
        return None
    first = span[0]
    before = int((t - pd.Timedelta(hours=max(WINDOWS_H)) < first).sum())
    if not before:
        return None
    return (
        f"{before} of {len(t)} instances lie less than {max(WINDOWS_H)} h after the catalog's "
        f"first flare ({first:%Y-%m-%d %H:%M}), or before it: their flare history reads as "
        "quiet before it, which is true only if the catalog covers that time"
    )


def coverage_note(times: pd.DatetimeIndex | pd.Series, catalog: pd.DataFrame) -> str | None:
    """A note when instances lie after the catalog's last flare (its end, or a long quiet).

    A catalog cannot say where it ends: past its last flare the history of every instance
    reads as quiet. Nothing is dropped; the note says how many instances that is.
    """
    t, span = naive_utc(times), flare_span(catalog)
    if span is None or not len(t):
        return None
    last = span[1]
    after = int((t > last + pd.Timedelta(hours=max(WINDOWS_H))).sum())
    if not after:
        return None
    return (
        f"{after} of {len(t)} instances lie more than {max(WINDOWS_H)} h after the catalog's "
        f"last flare ({last:%Y-%m-%d %H:%M}): their flare history reads as quiet, which is "
        "true only if the catalog covers them"
    )


def describe_history(row: np.ndarray) -> str:
    """One line for people: the largest flares and the counts of one :func:`flare_history` row."""
    from fdflare.acquire.goes import format_goes_class

    k = len(WINDOWS_H)
    peaks = [
        "none" if v <= np.log10(FLOOR) + 1e-9 else str(format_goes_class(np.array([10.0**v]))[0])
        for v in row[:k]
    ]
    counts = [round(float(np.expm1(v))) for v in row[k:]]
    largest = ", ".join(f"{p} in {h} h" for p, h in zip(peaks, WINDOWS_H, strict=True))
    counted = ", ".join(f"{n} in {h} h" for n, h in zip(counts, WINDOWS_H, strict=True))
    return f"largest flare {largest}; flares >= C1.0: {counted}"


def table_histories(
    tables: Sequence[tuple[str | os.PathLike[str], pd.DataFrame]],
    catalog: pd.DataFrame,
    *,
    what: str = "the flare history",
) -> list[np.ndarray]:
    """:func:`flare_history` at the image time of each row of each prediction table.

    Args:
        tables: ``(file, table)`` pairs; the table's ``timestamp`` (or ``label``) column
            names the images (``HMI.mYYYY.MM.DD_HH.MM.SS``).
        catalog: the flares.
        what: what needs the history, named in the errors.

    Raises:
        InputError: a catalog without a flare, or the first image name without a time
            (naming the file, its line and field).
    """
    from fdflare.core.io import refuse_first
    from fdflare.core.paths import parse_image_times

    check_catalog(catalog, what=what)
    out = []
    for path, table in tables:
        column = "timestamp" if "timestamp" in table.columns else "label"
        names = table[column].astype(str)
        times, _ = parse_image_times(names)
        refuse_first(times.isna().to_numpy(), _no_time(names, what), path=path, field=column)
        out.append(flare_history(pd.DatetimeIndex(times), catalog))
    return out


def image_histories(
    names: Sequence[str], catalog: pd.DataFrame, images: str | os.PathLike[str]
) -> tuple[np.ndarray, list[str]]:
    """:func:`flare_history` at each image's time (from its name), and notes on coverage.

    Args:
        names: image paths (``.../HMI.mYYYY.MM.DD_HH.MM.SS.ext``).
        catalog: the flares.
        images: the folder or list the names came from, named in the error.

    Raises:
        InputError: a catalog without a flare, or an image name without a time (named).
    """
    from fdflare.core.paths import parse_image_times

    check_catalog(catalog, what="the history map")
    times, _ = parse_image_times(pd.Series(list(names), dtype=str))
    missing = np.flatnonzero(times.isna().to_numpy())
    if len(missing):
        raise InputError(
            f"image {names[missing[0]]} holds no time in its name (HMI.mYYYY.MM.DD_HH.MM.SS): "
            f"the history map needs each image's time; {len(missing)} such image(s) in all",
            path=images,
        )
    t = pd.DatetimeIndex(times)
    notes = [f"--catalog: {n}" for n in (start_note(t, catalog), coverage_note(t, catalog)) if n]
    return flare_history(t, catalog), notes


def _no_time(names: pd.Series, what: str) -> Callable[[int], str]:
    """The error of row ``i`` of ``names``, an image name without a time."""

    def message(i: int) -> str:
        return (
            f"image name {names.iloc[i]} holds no time (HMI.mYYYY.MM.DD_HH.MM.SS): "
            f"{what} needs each instance's time"
        )

    return message
