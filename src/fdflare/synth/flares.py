"""Flares drawn from what the images show, and the GOES classes of their peak fluxes.

A region of current unsigned flux ``PHI`` and complexity ``c`` flares about
``flare_rate * 1.2 * (PHI / 1e22 Mx)**2.5 * (1 + 3 c)`` times a day at C1.0 or above
(levelling off at 20), with peak fluxes from a power law ``dN/dF ~ F**-2`` up to a largest
flare that grows with ``PHI`` and ``c``, so big complex regions give most M and X flares and
days with only small regions rarely have one. A flare behind the limb is seen by GOES
attenuated by ``exp(-depth / 3 deg)`` (``depth`` = angle behind the limb), so regions up to
about 10-15 deg behind the limb (``|lon|`` up to ~100 deg) appear in the catalog although
they cannot be seen in the images - a few per cent of the M and X flares.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fdflare.acquire.goes import format_goes_class
from fdflare.synth.config import _parse_time
from fdflare.synth.regions import _evolve, _region_arrays
from fdflare.synth.seeds import _HASH_UNLOCATED, _STREAM_FLARES, _days, _from_days, _hash_uniform
from fdflare.synth.sun import _observer_xyz, b0_angle

__all__ = ["draw_flares", "flare_productivity", "window_fraction"]

# Flares (see flare_productivity): a region of current unsigned flux PHI and complexity c
# has R / (1 + R / _FLARE_MAX_RATE) flares >= C1.0 a day, with
# R = _FLARE_BASE_RATE * (PHI / 1e22 Mx)**_FLARE_FLUX_INDEX * (1 + _FLARE_COMPLEXITY_GAIN c),
# and peak fluxes up to _FLARE_CAP * (PHI / 1e22 Mx)**_FLARE_CAP_INDEX * (1 + 3 c).
_FLARE_BASE_RATE = 1.2
_FLARE_FLUX_INDEX = 2.5
_FLARE_COMPLEXITY_GAIN = 3.0
_FLARE_CAP = 3e-5
_FLARE_CAP_INDEX = 1.5
_FLARE_MIN_FLUX = 1e-6  # C1.0
_FLARE_MAX_FLUX = 2e-3  # X20
_FLARE_MAX_RATE = 20.0  # flares >= C1.0 a day: the most productive regions level off
_OCCULT_SCALE_DEG = 3.0

# --------------------------------------------------------------------------- flares


def flare_productivity(
    flux: np.ndarray | float, complexity: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the flare rate and the largest flare of regions, from what the images show.

    A region of current total unsigned flux ``flux`` (Mx, what its pixels add up to before
    foreshortening) and ``complexity`` (0 for a simple bipole, 0.3 .. 1 for a compact region
    with a delta spot and intertwined polarities) flares

    * ``R / (1 + R / 20)`` times a day at C1.0 or above (at ``flare_rate`` 1), with
      ``R = 1.2 * (flux / 1e22 Mx)**2.5 * (1 + 3 complexity)``: strongly super-linear in
      flux, so that a few large complex regions give most flares and days with only small
      regions have few, levelling off at 20 flares a day for the most productive regions;
    * with peak fluxes up to ``3e-5 W/m^2 * (flux / 1e22 Mx)**1.5 * (1 + 3 complexity)``
      (at least C1.5, at most X20): a simple 3e21 Mx region tops out below C5, a simple
      1e22 Mx region at M3, and X flares need large or complex regions.

    Returns:
        ``(rate, cap)``: flares >= C1.0 per day and the largest peak flux (W/m^2).
    """
    f = np.asarray(flux, dtype=float) / 1e22
    c = np.asarray(complexity, dtype=float)
    rate = _FLARE_BASE_RATE * f**_FLARE_FLUX_INDEX * (1.0 + _FLARE_COMPLEXITY_GAIN * c)
    rate = rate / (1.0 + rate / _FLARE_MAX_RATE)
    cap = _FLARE_CAP * f**_FLARE_CAP_INDEX * (1.0 + 3.0 * c)
    return rate, np.clip(cap, 1.5 * _FLARE_MIN_FLUX, _FLARE_MAX_FLUX)


def draw_flares(
    regions: pd.DataFrame,
    start: Any,
    end: Any,
    *,
    seed: int = 0,
    flare_rate: float = 1.0,
    b0: float | str = 0.0,
    unlocated: float = 0.0,
    truth: bool = False,
) -> pd.DataFrame:
    """Draw the flares of ``regions`` starting between ``start`` and ``end`` (inclusive).

    Each region flares as an inhomogeneous Poisson process whose rate follows its current
    flux and its complexity (:func:`flare_productivity`, times ``flare_rate``), with peak
    fluxes from ``dN/dF ~ F**-2`` between C1.0 and the region's largest flare at that time,
    wherever the region is - also on the far side. GOES sees a flare behind the limb
    attenuated by ``exp(-depth / 3 deg)``; flares seen below C1.0 are not catalogued. Flares
    of a region come from a stream fixed by ``(seed, region)``.

    Args:
        regions: from :func:`simulate_regions`.
        start: first flare start time kept.
        end: last flare start time kept.
        seed: the synthetic Sun.
        flare_rate: multiplies every region's rate.
        b0: observer latitude (deg) or ``"auto"``; it sets which flares are behind the limb.
        unlocated: fraction of flares whose location is left unknown (NaN), seeded.
        truth: also return ``region``, ``flux`` (observed peak, W/m^2), ``true_flux``
            (before occultation), ``behind_limb_deg`` and ``region_flux`` (the region's
            unsigned flux at the flare, Mx).

    Returns:
        The catalog, sorted by start time: ``start_time`` (datetime64, whole minutes),
        ``goes_class`` (``M1.3``), ``fl_lon`` (Stonyhurst longitude = central-meridian
        distance, deg, up to about +-100 behind the limb), ``fl_lat`` (deg).
    """
    d0, d1 = _days([_parse_time(start, "start"), _parse_time(end, "end")])
    r = _region_arrays(regions)
    lam_peak, _ = flare_productivity(r["flux_max"], r["complexity"])
    expected = flare_rate * lam_peak * r["lifetime"]
    draws = []
    for i, (rid, m) in enumerate(zip(r["region"], expected, strict=True)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_FLARES, int(rid)]))
        count = int(rng.poisson(m))
        draws.append((np.full(count, i), rng.random((count, 3)), rng.standard_normal((count, 2))))
    idx = np.concatenate([d[0] for d in draws]).astype(np.int64) if draws else np.zeros(0, np.int64)
    u = np.concatenate([d[1] for d in draws]) if draws else np.zeros((0, 3))
    g = np.concatenate([d[2] for d in draws]) if draws else np.zeros((0, 2))
    days = r["emerge"][idx] + u[:, 0] * r["lifetime"][idx]
    days = np.floor(days * 1440.0) / 1440.0  # catalog times are whole minutes
    s = _evolve(r, idx, days)
    # Thinning: keep a candidate with the ratio of the rate at its time to the peak rate.
    rate, hi = flare_productivity(r["flux_max"][idx] * s["frac"], r["complexity"][idx])
    ratio = rate / np.maximum(lam_peak[idx], 1e-300)
    accept = (u[:, 1] < ratio) & s["alive"] & (days >= d0) & (days <= d1)
    # Truncated Pareto, dN/dF ~ F^-2 up to the region's cap at that time, by inversion.
    lo = _FLARE_MIN_FLUX
    true_flux = lo / (1.0 - u[:, 2] * (1.0 - lo / hi))
    spread = 0.15 * r["separation"][idx]
    lon = s["lon"] + g[:, 0] * spread
    lat = np.clip(s["lat"] + g[:, 1] * spread * 0.5, -89.0, 89.0)
    lon = (lon + 180.0) % 360.0 - 180.0
    when = _from_days(days)
    b0v = b0_angle(when) if b0 == "auto" else np.full(len(days), float(b0))
    _, _, z = _observer_xyz(lon, lat, b0v)
    depth = np.degrees(np.arcsin(np.clip(-z, 0.0, 1.0)))
    seen = true_flux * np.exp(-depth / _OCCULT_SCALE_DEG)
    # Round to the catalog's one decimal first, so every class kept is >= C1.0.
    keep = accept & (np.round(seen / 1e-6, 1) >= 1.0)
    order = np.lexsort((lon[keep], days[keep]))
    k = np.flatnonzero(keep)[order]
    flux_k = np.maximum(seen[k], lo)
    out = pd.DataFrame(
        {
            "start_time": when[k],
            "goes_class": pd.array(format_goes_class(flux_k), dtype="string"),
            "fl_lon": np.round(lon[k], 3),
            "fl_lat": np.round(lat[k], 3),
        }
    )
    if unlocated > 0 and len(out):
        key = (r["region"][idx[k]] % (1 << 40)) * 100_003 + np.floor(days[k] * 1440).astype(
            np.int64
        )
        gone = _hash_uniform(seed, _HASH_UNLOCATED, key) < unlocated
        out.loc[gone, ["fl_lon", "fl_lat"]] = np.nan
    if truth:
        out["region"] = r["region"][idx[k]]
        out["flux"] = flux_k
        out["true_flux"] = true_flux[k]
        out["region_flux"] = (r["flux_max"][idx] * s["frac"])[k]
        out["behind_limb_deg"] = depth[k]
    return out.reset_index(drop=True)


def window_fraction(
    times: Any, catalog: pd.DataFrame, threshold: float, window: str | pd.Timedelta = "24h"
) -> tuple[int, int]:
    """Count instance times whose window ``(t, t + window - 1 s]`` holds a flare >= ``threshold``.

    Returns:
        ``(positive, total)``.
    """
    from fdflare.acquire.goes import class_flux

    window = pd.Timedelta(window)
    t = pd.DatetimeIndex(pd.to_datetime(times)).as_unit("ns").to_numpy()
    if len(catalog) == 0:
        return 0, len(t)
    flux = class_flux(catalog["goes_class"])
    ft = np.sort(
        pd.DatetimeIndex(catalog["start_time"])
        .as_unit("ns")
        .to_numpy()[flux >= threshold * (1 - 1e-9)]
    )
    hi = np.searchsorted(ft, t + (window - pd.Timedelta(seconds=1)).to_timedelta64(), side="right")
    lo = np.searchsorted(ft, t, side="right")
    return int((hi > lo).sum()), len(t)
