"""The Sun seen from the Earth: distance, B0 angle, differential rotation, disk geometry.

* **Rotation** follows Snodgrass (1983) for magnetic features,
  ``omega = 14.11 - 1.70 sin^2(lat) - 2.35 sin^4(lat)`` deg/day sidereal, less Earth's
  mean orbital rate for the synodic (Earth-seen) rate.
* The disk radius follows the Earth-Sun distance of the date; the observer may be tilted
  by the B0 angle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fdflare.synth.seeds import (
    _HASH_CENTER_X,
    _HASH_CENTER_Y,
    _HASH_DATE_OBS,
    _days,
    _hash_uniform,
    _time_keys,
)

__all__ = [
    "AU_M",
    "DiskGeometry",
    "b0_angle",
    "disk_coordinates",
    "disk_geometry",
    "earth_sun_distance",
    "synodic_rotation_rate",
]

# Physical constants and HMI-like observer.
RSUN_REF_M = 696_000_000.0  # HMI's RSUN_REF
RSUN_CM = RSUN_REF_M * 100.0
AU_M = 149_597_870_700.0
HMI_CDELT_4096 = 0.504295  # arcsec per pixel of a 4096 x 4096 HMI image
EARTH_ORBIT_DEG_PER_DAY = 0.9856474  # mean, for the sidereal -> synodic rate
# Magnetic features, Snodgrass (1983): A, B, C in microrad/s (sunpy's "snodgrass" model).
SNODGRASS_MAGNETIC_URAD_S = (2.851, -0.343, -0.474)
_URAD_S_TO_DEG_DAY = 86400e-6 * 180.0 / math.pi


def _sun_angles(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean anomaly and apparent ecliptic longitude of the Sun (radians), low precision."""
    n = days - 0.5  # days since J2000.0 (2000-01-01 12:00 TT; TT - UTC is immaterial here)
    g = np.radians((357.529 + 0.98560028 * n) % 360.0)
    q = 280.459 + 0.98564736 * n
    lam = np.radians(q + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g))
    return g, lam


def earth_sun_distance(times: Any) -> np.ndarray:
    """Return the Earth-Sun distance in metres at each time (low-precision series, ~1e-5 AU)."""
    g, _ = _sun_angles(_days(times))
    return (1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2 * g)) * AU_M


def b0_angle(times: Any) -> np.ndarray:
    """Return the heliographic latitude of the Earth (the B0 angle, degrees) at each time.

    Uses the solar-coordinates formula of Meeus (Astronomical Algorithms, ch. 29) with a
    low-precision solar longitude; good to about 0.02 deg, plenty for synthetic images.
    """
    days = _days(times)
    _, lam = _sun_angles(days)
    jd = days + 2451544.5
    node = np.radians(73.6667 + 1.3958333 * (jd - 2396758.0) / 36525.0)
    return np.degrees(np.arcsin(np.sin(lam - node) * np.sin(np.radians(7.25))))


def synodic_rotation_rate(lat_deg: np.ndarray | float) -> np.ndarray:
    """Return the rotation rate of magnetic features seen from Earth, deg/day.

    The sidereal rate ``A + B sin^2(lat) + C sin^4(lat)`` of Snodgrass (1983), the
    ``"snodgrass"`` model of ``sunpy.sun.models.differential_rotation`` (about 14.11 deg/day
    at the equator), less the Earth's mean orbital rate.
    """
    a, b, c = (v * _URAD_S_TO_DEG_DAY for v in SNODGRASS_MAGNETIC_URAD_S)
    s2 = np.sin(np.radians(lat_deg)) ** 2
    return a + b * s2 + c * s2 * s2 - EARTH_ORBIT_DEG_PER_DAY


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class DiskGeometry:
    """Where the solar disk lies in an image.

    Attributes:
        size: width and height of the (square) image in pixels.
        center_x: column of the disk centre, 0-based, pixel ``j`` centred on ``x = j``.
        center_y: row of the disk centre, 0-based, row 0 at the top.
        radius_px: disk radius in pixels.
        b0_deg: heliographic latitude of the observer (positive: north pole tilted towards
            the observer).
    """

    size: int
    center_x: float
    center_y: float
    radius_px: float
    b0_deg: float = 0.0

    @classmethod
    def centred(
        cls, size: int, radius_fraction: float = 0.4645, b0_deg: float = 0.0
    ) -> DiskGeometry:
        """Return a disk centred in a ``size`` image with radius ``radius_fraction * size``."""
        c = (size - 1) / 2.0
        return cls(int(size), c, c, radius_fraction * size, float(b0_deg))


def disk_geometry(
    times: Any,
    *,
    size: int = 512,
    seed: int = 0,
    b0: float | str = 0.0,
) -> pd.DataFrame:
    """Return the observation time and disk geometry of an HMI-like image at each requested time.

    The observation time is the requested time plus a seeded offset within +-22.5 s (HMI's
    45 s cadence); the disk radius is the Sun's angular radius at the Earth-Sun distance
    of that time over the pixel scale of a 4096-pixel HMI image resampled to ``size``; the
    centre sits within +-2 pixels (of a 4096-pixel image) of the image centre. The same
    seed and time give the same geometry at every ``size`` (scaled).

    Args:
        times: requested image times.
        size: image width and height in pixels.
        seed: seed of the per-time offsets.
        b0: observer latitude in degrees, or ``"auto"`` for the Earth's B0 at each time.

    Returns:
        Columns ``date_obs`` (datetime64), ``center_x``, ``center_y``, ``radius_px``,
        ``width``, ``height``, ``crota2`` (0: north up), ``rsun_obs`` (arcsec), ``b0_deg``,
        ``cdelt_arcsec``, ``dsun_m``.
    """
    t = pd.DatetimeIndex(pd.to_datetime(times)).as_unit("ns")
    keys = _time_keys(t)
    offset_ms = np.rint((_hash_uniform(seed, _HASH_DATE_OBS, keys) - 0.5) * 45_000).astype(np.int64)
    date_obs = t + pd.to_timedelta(offset_ms, unit="ms")
    dsun = earth_sun_distance(date_obs)
    rsun = np.degrees(np.arcsin(RSUN_REF_M / dsun)) * 3600.0
    cdelt = HMI_CDELT_4096 * 4096.0 / size
    scale = size / 4096.0
    jx = (_hash_uniform(seed, _HASH_CENTER_X, keys) - 0.5) * 4.0
    jy = (_hash_uniform(seed, _HASH_CENTER_Y, keys) - 0.5) * 4.0
    # Pixel p of the 4096 grid covers [p - 0.5, p + 0.5]; its centre maps to (p + 0.5) s - 0.5.
    cx = (2047.5 + jx + 0.5) * scale - 0.5
    cy = (2047.5 + jy + 0.5) * scale - 0.5
    b0v = b0_angle(date_obs) if b0 == "auto" else np.full(len(t), float(b0))
    return pd.DataFrame(
        {
            "date_obs": np.asarray(date_obs),
            "center_x": cx,
            "center_y": cy,
            "radius_px": rsun / cdelt,
            "width": np.full(len(t), size, dtype=np.int64),
            "height": np.full(len(t), size, dtype=np.int64),
            "crota2": np.zeros(len(t)),
            "rsun_obs": rsun,
            "b0_deg": b0v,
            "cdelt_arcsec": np.full(len(t), cdelt),
            "dsun_m": dsun,
        }
    )


def _observer_xyz(
    lon_deg: np.ndarray, lat_deg: np.ndarray, b0_deg: np.ndarray | float
) -> tuple[np.ndarray, ...]:
    """Unit vectors of heliographic points, observer frame: x west, y north, z to observer."""
    lon, lat, b0 = np.radians(lon_deg), np.radians(lat_deg), np.radians(b0_deg)
    x = np.cos(lat) * np.sin(lon)
    ys = np.sin(lat)
    zs = np.cos(lat) * np.cos(lon)
    y = ys * np.cos(b0) - zs * np.sin(b0)
    z = ys * np.sin(b0) + zs * np.cos(b0)
    return x, y, z


def disk_coordinates(geometry: DiskGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``mu``, Stonyhurst longitude and latitude (degrees) of every pixel centre.

    Off-disk pixels are NaN in all three arrays. ``mu`` is the cosine of the heliocentric
    angle (1 at disk centre, 0 at the limb), the foreshortening factor of a radial field.
    """
    n = geometry.size
    x = ((np.arange(n) - geometry.center_x) / geometry.radius_px)[None, :]
    y = ((geometry.center_y - np.arange(n)) / geometry.radius_px)[:, None]
    r2 = x * x + y * y
    on = r2 <= 1.0
    z = np.sqrt(np.where(on, 1.0 - r2, np.nan))
    b0 = math.radians(geometry.b0_deg)
    ys = y * math.cos(b0) + z * math.sin(b0)
    zs = -y * math.sin(b0) + z * math.cos(b0)
    lat = np.degrees(np.arcsin(np.clip(ys, -1.0, 1.0)))
    lon = np.degrees(np.arctan2(np.broadcast_to(x, z.shape), zs))
    lon = np.where(on, lon, np.nan)
    return z, lon, lat
