"""Active regions: emergence, evolution, and the flux patches that make them up.

Regions emerge at a constant mean rate (Poisson per UTC day) at Spörer's-law latitudes
(about 28 deg falling to 8 deg over each 11-year cycle, clipped to 4..38 deg), with
log-normal peak flux (many small regions, few large ones), Hale's polarity law (northern
leading polarity negative in even cycles, 5 % anti-Hale), Joy's-law tilt (leading polarity
nearer the equator), growth over 1-4 days and exponential decay over days (small regions)
to weeks (large ones), so that a handful to about ten regions are on the disk at a time.
Each polarity is a compact spot plus a spreading plage, Gaussian on the sphere. Complex
regions - rare among small ones, common among the largest - are drawn so that their
complexity shows: compact, with more of their flux in spots, a delta spot of the following
polarity pressed against the leading spot and a reversed bipole across the middle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.synth.config import REGION_COLUMNS, _parse_time
from fdflare.synth.seeds import _DAY_OFFSET, _STREAM_REGIONS, _days, _from_days
from fdflare.synth.sun import synodic_rotation_rate

__all__ = ["MAX_LIFETIME_DAYS", "region_patches", "simulate_regions"]

# Region model.
MAX_LIFETIME_DAYS = 60.0
_END_FRACTION = 0.05  # a region ends when its flux has decayed to this fraction of its peak
# Flares (see flare_productivity): a region of current unsigned flux PHI and complexity c

# Solar cycle minima (decimal years) that start cycles 23, 24 and 25; later and earlier
# cycles are extrapolated at 11 years.
_CYCLE_STARTS = ((23, 1996.6), (24, 2008.96), (25, 2019.96))
_CYCLE_LENGTH = 11.0


def _cycle(decimal_year: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the cycle number and phase (0 at minimum, 1 at the next) of each year."""
    y = np.asarray(decimal_year, dtype=float)
    number = np.full(y.shape, np.nan)
    phase = np.full(y.shape, np.nan)
    first_n, first_y = _CYCLE_STARTS[0]
    last_n, last_y = _CYCLE_STARTS[-1]
    starts = [s for _, s in _CYCLE_STARTS]
    # Known cycles.
    for (n, s), nxt in zip(_CYCLE_STARTS, [*starts[1:], last_y + _CYCLE_LENGTH], strict=True):
        m = (y >= s) & (y < nxt)
        number[m] = n
        phase[m] = (y[m] - s) / (nxt - s)
    # Extrapolated cycles after the last and before the first known minimum.
    after = y >= last_y + _CYCLE_LENGTH
    k = np.floor((y[after] - last_y) / _CYCLE_LENGTH)
    number[after] = last_n + k
    phase[after] = (y[after] - last_y - k * _CYCLE_LENGTH) / _CYCLE_LENGTH
    before = y < first_y
    k = np.ceil((first_y - y[before]) / _CYCLE_LENGTH)
    number[before] = first_n - k
    phase[before] = (y[before] - (first_y - k * _CYCLE_LENGTH)) / _CYCLE_LENGTH
    return number.astype(np.int64), phase


# --------------------------------------------------------------------------- regions


def _draw_day(seed: int, day: int, rate: float) -> dict[str, np.ndarray]:
    """Draw the regions that emerge on one UTC day (day number since 2000-01-01)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_REGIONS, day + _DAY_OFFSET]))
    n = int(rng.poisson(rate))
    u = rng.random((n, 8))
    g = rng.standard_normal((n, 4))
    emerge = day + u[:, 0]
    year = 2000.0 + emerge / 365.25
    cycle, phase = _cycle(year)
    north = u[:, 2] < 0.5
    hemi = np.where(north, 1.0, -1.0)
    mean_lat = 28.0 - 20.0 * np.clip(phase, 0.0, 1.0)  # Spörer's law
    lat = hemi * np.clip(mean_lat + 6.0 * g[:, 0], 4.0, 38.0)
    # Many small regions, few large ones: median 3e21 Mx, 8e20 .. 1e23 Mx.
    flux = 10.0 ** np.clip(21.5 + 0.45 * g[:, 1], 20.9, 23.0)
    f22 = flux / 1e22
    t_grow = 1.0 + 3.0 * u[:, 3]
    # Small regions fade within days, large ones last weeks.
    t_decay = np.minimum((1.0 + 5.0 * np.sqrt(f22)) * (0.7 + 0.6 * u[:, 4]), 18.0)
    lifetime = np.minimum(t_grow + t_decay * math.log(1.0 / _END_FRACTION), MAX_LIFETIME_DAYS)
    tilt = 0.5 * np.abs(lat) + 9.0 * g[:, 2]  # Joy's law, degrees
    anti_hale = u[:, 5] < 0.05
    # Hale: leading polarity of the north is negative in even cycles, positive in odd ones.
    north_leading = np.where(cycle % 2 == 0, -1.0, 1.0)
    leading = np.where(north, north_leading, -north_leading) * np.where(anti_hale, -1.0, 1.0)
    # Complexity (a delta configuration) is rare in small regions, common in large ones.
    p_complex = np.where(anti_hale, 0.8, 0.03 + 0.6 * np.minimum(1.0, flux / 4e22))
    complexity = np.where(u[:, 6] < p_complex, 0.3 + 0.7 * u[:, 7], 0.0)
    separation = np.clip(3.0 + 6.0 * np.sqrt(f22), 3.0, 16.0) * (
        0.8 + 0.4 * np.abs(np.tanh(g[:, 3]))
    )
    return {
        "region": (day + _DAY_OFFSET) * 1000 + np.arange(n, dtype=np.int64),
        "emerge": emerge,
        "lon0": -180.0 + 360.0 * u[:, 1],
        "lat": lat,
        "flux_max": flux,
        "t_grow": t_grow,
        "t_decay": t_decay,
        "lifetime": lifetime,
        "tilt": tilt,
        "separation": separation,
        "complexity": complexity,
        "leading_sign": leading.astype(np.int64),
        "anti_hale": anti_hale,
    }


def simulate_regions(
    start: Any,
    end: Any,
    *,
    seed: int = 0,
    region_rate: float = 1.5,
) -> pd.DataFrame:
    """Return the active regions alive at some time between ``start`` and ``end``.

    Regions are drawn per UTC day from a stream fixed by ``(seed, day)``, so a region is
    the same in every run that includes it, whatever the window.

    Args:
        start: first time of interest.
        end: last time of interest.
        seed: the synthetic Sun.
        region_rate: mean number of regions emerging per day.

    Returns:
        One row per region (:data:`REGION_COLUMNS`): ``region`` (int id), ``emerge_time``
        and ``end_time`` (datetime64), ``lon0`` (Stonyhurst longitude at emergence, deg),
        ``lat`` (deg), ``flux_max`` (peak total unsigned flux, Mx), ``t_grow``, ``t_decay``,
        ``lifetime`` (days), ``tilt`` (Joy's angle, deg, positive with the leading polarity
        nearer the equator), ``separation`` (final polarity separation, deg),
        ``complexity`` (0 for simple bipoles, 0.3 .. 1 with a delta configuration),
        ``leading_sign`` (+1 or -1), ``anti_hale`` (bool).
    """
    start, end = _parse_time(start, "start"), _parse_time(end, "end")
    if end < start:
        raise InputError(f"end {end} is before start {start}", field="end")
    d0, d1 = _days([start, end])
    first = math.floor(d0 - MAX_LIFETIME_DAYS)
    last = math.floor(d1)
    parts = [_draw_day(seed, day, region_rate) for day in range(first, last + 1)]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    alive = (cols["emerge"] <= d1) & (cols["emerge"] + cols["lifetime"] >= d0)
    cols = {k: v[alive] for k, v in cols.items()}
    emerge = cols.pop("emerge")
    table = pd.DataFrame(
        {
            "region": cols["region"],
            "emerge_time": _from_days(emerge),
            "end_time": _from_days(emerge + cols["lifetime"]),
            **{k: cols[k] for k in REGION_COLUMNS[3:]},
        }
    )
    return table.reset_index(drop=True)


def _region_arrays(regions: pd.DataFrame) -> dict[str, np.ndarray]:
    missing = [c for c in REGION_COLUMNS if c not in regions.columns]
    if missing:
        raise InputError(f"region table lacks column(s) {', '.join(missing)}", field=missing[0])
    out = {c: regions[c].to_numpy() for c in REGION_COLUMNS if c not in ("emerge_time", "end_time")}
    out["emerge"] = _days(regions["emerge_time"])
    for c in (
        "lon0",
        "lat",
        "flux_max",
        "t_grow",
        "t_decay",
        "lifetime",
        "tilt",
        "separation",
        "complexity",
    ):
        out[c] = out[c].astype(np.float64)
    out["leading_sign"] = out["leading_sign"].astype(np.float64)
    return out


def _evolve(r: dict[str, np.ndarray], idx: np.ndarray, days: np.ndarray) -> dict[str, np.ndarray]:
    """State of regions ``idx`` at times ``days`` (arrays of equal length)."""
    age = days - r["emerge"][idx]
    tg, td = r["t_grow"][idx], r["t_decay"][idx]
    x = np.clip(age / tg, 0.0, 1.0)
    grown = age >= tg
    f = np.where(grown, np.exp(-np.maximum(age - tg, 0.0) / td), x * x * (3.0 - 2.0 * x))
    alive = (age >= 0) & (age <= r["lifetime"][idx])
    lat = r["lat"][idx]
    lon = (r["lon0"][idx] + synodic_rotation_rate(lat) * age + 180.0) % 360.0 - 180.0
    return {
        "age": age,
        "frac": np.where(alive, f, 0.0),
        "alive": alive,
        "lon": lon,
        "lat": lat,
        "grow": x,
    }


def _patch_arrays(r: dict[str, np.ndarray], day: float) -> dict[str, np.ndarray]:
    """Patches of the regions ``r`` (from :func:`_region_arrays`) at ``day``, as arrays."""
    n = len(r["region"])
    s = _evolve(r, np.arange(n), np.full(n, day))
    keep = np.flatnonzero(s["alive"] & (s["frac"] > 0))
    s = {k: v[keep] for k, v in s.items()}
    flux = r["flux_max"][keep] * s["frac"]
    after = np.maximum(s["age"] - r["t_grow"][keep], 0.0)
    half = 0.5 * r["separation"][keep] * (0.3 + 0.7 * s["grow"])
    tilt = np.radians(r["tilt"][keep])
    hemi = np.where(s["lat"] >= 0, 1.0, -1.0)
    coslat = np.maximum(np.cos(np.radians(s["lat"])), 0.2)
    c = r["complexity"][keep]
    # Unit axis from follower to leader in (lon, lat) degrees: west, tilted to the equator;
    # and the unit vector at right angles to it, pointing to the pole.
    ax_lon, ax_lat = np.cos(tilt), -hemi * np.sin(tilt)
    pp_lon, pp_lat = np.sin(tilt), hemi * np.cos(tilt)
    lead_lon = s["lon"] + half * ax_lon / coslat
    lead_lat = s["lat"] + half * ax_lat
    foll_lon = s["lon"] - half * ax_lon / coslat
    foll_lat = s["lat"] - half * ax_lat
    # Spots hold more of the flux in complex regions and fade faster than the plage;
    # large regions have larger spots, complex ones a more compact leading spot.
    spot = (0.35 + 0.45 * c) * np.exp(-after / (0.7 * r["t_decay"][keep]))
    spot_sigma = 0.45 + 0.3 * np.sqrt(r["flux_max"][keep] / 1e22)
    lead_sigma = spot_sigma * (1.0 - 0.3 * c)
    plage_sigma = np.minimum(
        (0.8 + 0.7 * np.sqrt(r["flux_max"][keep] / 1e22)) * (1.0 + 0.06 * after), 5.0
    )
    sign = r["leading_sign"][keep]
    pol = flux / 2.0
    # Delta spot: new flux emerging in the leading spot, its following-polarity part
    # pressed against it on the poleward side a little towards the follower, less than two
    # spot widths away (a strong, short inversion line).
    delta = pol * 0.45 * c * (spot + 0.2)
    d_lon = -0.5 * ax_lon + 0.866 * pp_lon
    d_lat = -0.5 * ax_lat + 0.866 * pp_lat
    delta_lon = lead_lon + 1.8 * lead_sigma * d_lon / coslat
    delta_lat = lead_lat + 1.8 * lead_sigma * d_lat
    # Intertwined polarities: a reversed bipole across the middle of complex regions.
    mix = pol * 0.35 * c
    m_half = 0.8 + 0.25 * half
    mix_lon = s["lon"] - 0.8 * pp_lon / coslat
    mix_lat = s["lat"] - 0.8 * pp_lat
    mix_sigma = 0.8 * spot_sigma
    parts = [
        (lead_lon, lead_lat, sign * (pol * spot + delta), lead_sigma),
        (lead_lon, lead_lat, sign * pol * (1 - spot), plage_sigma),
        (foll_lon, foll_lat, -sign * pol * spot * 0.7, 1.3 * spot_sigma),
        (foll_lon, foll_lat, -sign * pol * (1 - 0.7 * spot), plage_sigma * 1.2),
        (delta_lon, delta_lat, -sign * delta, 0.7 * lead_sigma),
        (mix_lon + m_half * ax_lon / coslat, mix_lat + m_half * ax_lat, -sign * mix, mix_sigma),
        (mix_lon - m_half * ax_lon / coslat, mix_lat - m_half * ax_lat, sign * mix, mix_sigma),
    ]
    out = {
        "region": np.tile(r["region"][keep], len(parts)),
        "lon": (np.concatenate([p[0] for p in parts]) + 180.0) % 360.0 - 180.0,
        "lat": np.clip(np.concatenate([p[1] for p in parts]), -89.0, 89.0),
        "flux": np.concatenate([p[2] for p in parts]),
        "sigma": np.concatenate([p[3] for p in parts]),
    }
    nonzero = out["flux"] != 0
    return {k: v[nonzero] for k, v in out.items()}


def region_patches(regions: pd.DataFrame, time: Any) -> pd.DataFrame:
    """Return the Gaussian flux patches that make up the regions at ``time``.

    Each living region gives a leading and a following polarity, each a compact spot and
    a plage that spreads as the region decays, placed by Joy's tilt about the region's
    centre. Complex regions have more of their flux in spots, a more compact leading spot,
    a delta spot (new flux in the leading spot whose following-polarity part lies against
    it, less than two spot widths away on its poleward side) and a reversed bipole across
    the middle, all scaled by the complexity.

    Returns:
        Columns ``region``, ``lon``, ``lat`` (Stonyhurst, deg), ``flux`` (signed, Mx) and
        ``sigma`` (Gaussian width on the sphere, deg), one row per patch.
    """
    return pd.DataFrame(_patch_arrays(_region_arrays(regions), float(_days([time])[0])))
