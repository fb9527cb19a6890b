"""Day counts and the seeded streams that make a seed's Sun the same in every run.

Regions are drawn per UTC day, flares per region and noise per image from
``numpy.random.SeedSequence`` streams tagged below, and per-time choices (observation
offsets, data gaps, unlocated flares) come from a counter-based hash of the time, so any
time window of a seed's history is the same whatever the run's ``start`` and ``end``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# Reference point of the internal day count, and RNG stream tags.
_EPOCH = np.datetime64("2000-01-01T00:00:00", "ms")
_MS_PER_DAY = 86_400_000
_DAY_OFFSET = 1_000_000  # keeps day numbers non-negative for SeedSequence
_STREAM_REGIONS, _STREAM_FLARES, _STREAM_NOISE, _STREAM_HASH = 1, 2, 3, 4
_HASH_DATE_OBS, _HASH_CENTER_X, _HASH_CENTER_Y, _HASH_MISSING, _HASH_UNLOCATED = 1, 2, 3, 4, 5


def _days(times: Any) -> np.ndarray:
    """Return days since 2000-01-01 00:00 UTC as float64 (millisecond resolution)."""
    if isinstance(times, (list, tuple)):
        times = [pd.Timestamp(t) for t in times]
    t = pd.DatetimeIndex(pd.to_datetime(times)).as_unit("ms").to_numpy()
    return (t - _EPOCH).astype(np.int64) / _MS_PER_DAY


def _from_days(days: np.ndarray) -> pd.DatetimeIndex:
    ms = np.rint(np.asarray(days, dtype=float) * _MS_PER_DAY).astype(np.int64)
    return pd.DatetimeIndex(_EPOCH + ms.astype("timedelta64[ms]")).as_unit("ns")


_MASK64 = (1 << 64) - 1


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hash_uniform(seed: int, tag: int, keys: np.ndarray) -> np.ndarray:
    """Return a uniform number in [0, 1) for each integer key, fixed by (seed, tag, key).

    Vectorised and independent of which other keys are asked for, so per-time choices
    (observation offsets, data gaps) do not depend on the run's time range.
    """
    base = _splitmix(
        np.array(
            [(seed * 0x100000001B3 + tag * 0x9E3779B9 + _STREAM_HASH) & _MASK64], dtype=np.uint64
        )
    )
    k = np.asarray(keys, dtype=np.int64).astype(np.uint64)
    z = _splitmix(_splitmix(k ^ base[0]))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _time_keys(times: pd.DatetimeIndex) -> np.ndarray:
    """Whole seconds since 2000-01-01, the per-time key of the seeded choices."""
    return np.floor(_days(times) * 86400.0 + 0.5).astype(np.int64)
