"""Synthetic full-disk magnetograms with a matching flare catalog, for demos, tests and benchmarks.

Nothing here is science. This module draws a toy Sun - bipolar active regions that emerge,
rotate differentially and decay, and flare at rates set by what the images show - and
writes it in the layout of prepared data, so that every later stage (``label``, ``train``,
``predict``, ``spatial``) runs on it unchanged and in minutes:

* ``images/YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.png``: 8-bit line-of-sight magnetograms
  (128 = 0 G, +-1500 G at the ends with an ``asinh`` stretch so weak fields show, 0 outside
  the disk);
* ``geometry.csv``: observation time, disk centre and radius of every image;
* ``catalog.csv``: the flares in the study's schema ``start_time,goes_class,fl_lon,fl_lat``;
* ``regions.csv``: the active regions drawn (the ground truth behind the images);
* optionally ``jp2/``: the same Sun as 4096 x 4096 JPEG 2000 files with Helioviewer's XML
  header, the input of ``fdflare prepare``.

The model, in short:

* **Regions** emerge at a constant mean rate (Poisson per UTC day) at Spörer's-law
  latitudes (about 28 deg falling to 8 deg over each 11-year cycle, clipped to 4..38 deg),
  with log-normal peak flux (many small regions, few large ones), Hale's polarity law
  (northern leading polarity negative in even cycles, 5 % anti-Hale), Joy's-law tilt
  (leading polarity nearer the equator), growth over 1-4 days and exponential decay over
  days (small regions) to weeks (large ones), so that a handful to about ten regions are on
  the disk at a time. Each polarity is a compact spot plus a spreading plage, Gaussian on
  the sphere. Complex regions - rare among small ones, common among the largest - are
  drawn so that their complexity shows: compact, with more of their flux in spots, a delta
  spot of the following polarity pressed against the leading spot and a reversed bipole
  across the middle (intertwined polarities, strong inversion lines).
* **Rotation** follows Snodgrass (1983) for magnetic features,
  ``omega = 14.11 - 1.70 sin^2(lat) - 2.35 sin^4(lat)`` deg/day sidereal, less Earth's
  mean orbital rate for the synodic (Earth-seen) rate.
* **Rendering**: ``B_los = B_r * mu`` on the visible hemisphere, averaged over each pixel,
  white noise, optional B0 tilt of the observer; the disk radius follows the Earth-Sun
  distance of the date.
* **Flares** follow what the images show (:func:`flare_productivity`): a region of current
  unsigned flux ``PHI`` and complexity ``c`` flares about
  ``flare_rate * 1.2 * (PHI / 1e22 Mx)**2.5 * (1 + 3 c)`` times a day at C1.0 or above
  (levelling off at 20), with peak fluxes from a power law ``dN/dF ~ F**-2`` up to a largest flare that grows with
  ``PHI`` and ``c``, so big complex regions give most M and X flares and days with only
  small regions rarely have one. A flare behind the limb is seen by GOES attenuated by
  ``exp(-depth / 3 deg)`` (``depth`` = angle behind the limb), so regions up to about 10-15
  deg behind the limb (``|lon|`` up to ~100 deg) appear in the catalog although they cannot
  be seen in the images - a few per cent of the M and X flares.

The same seed always describes the same synthetic Sun: regions are drawn per UTC day and
flares per region from seeded streams, so any time window of a seed's history is the same
whatever ``start`` and ``end`` were, and the files are byte-identical run to run.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare import __version__
from fdflare.core.io import atomic_path, write_text_atomic
from fdflare.core.errors import InputError
from fdflare.acquire.goes import LETTER_FLUX
from fdflare.core.paths import image_relpaths

__all__ = [
    "CATALOG_COLUMNS",
    "GEOMETRY_COLUMNS",
    "REGION_COLUMNS",
    "DiskGeometry",
    "SynthConfig",
    "SynthResult",
    "b0_angle",
    "disk_coordinates",
    "disk_geometry",
    "draw_flares",
    "earth_sun_distance",
    "flare_productivity",
    "format_goes_class",
    "generate",
    "helioviewer_header",
    "region_patches",
    "render_magnetogram",
    "simulate_regions",
    "synodic_rotation_rate",
    "to_uint8",
    "window_fraction",
]

#: Version of the generator's output; bumped whenever the same seed would give other files.
SYNTH_FORMAT = 2

#: The study's catalog schema.
CATALOG_COLUMNS = ("start_time", "goes_class", "fl_lon", "fl_lat")
#: Columns of ``geometry.csv``.
GEOMETRY_COLUMNS = (
    "path",
    "date_obs",
    "center_x",
    "center_y",
    "radius_px",
    "width",
    "height",
    "crota2",
    "rsun_obs",
    "b0_deg",
    "cdelt_arcsec",
    "dsun_m",
)
#: Columns of the table returned by :func:`simulate_regions` (and of ``regions.csv``).
REGION_COLUMNS = (
    "region",
    "emerge_time",
    "end_time",
    "lon0",
    "lat",
    "flux_max",
    "t_grow",
    "t_decay",
    "lifetime",
    "tilt",
    "separation",
    "complexity",
    "leading_sign",
    "anti_hale",
)

# Physical constants and HMI-like observer.
RSUN_REF_M = 696_000_000.0  # HMI's RSUN_REF
RSUN_CM = RSUN_REF_M * 100.0
AU_M = 149_597_870_700.0
HMI_CDELT_4096 = 0.504295  # arcsec per pixel of a 4096 x 4096 HMI image
EARTH_ORBIT_DEG_PER_DAY = 0.9856474  # mean, for the sidereal -> synodic rate
# Magnetic features, Snodgrass (1983): A, B, C in microrad/s (sunpy's "snodgrass" model).
SNODGRASS_MAGNETIC_URAD_S = (2.851, -0.343, -0.474)
_URAD_S_TO_DEG_DAY = 86400e-6 * 180.0 / math.pi

# Region model.
MAX_LIFETIME_DAYS = 60.0
_END_FRACTION = 0.05  # a region ends when its flux has decayed to this fraction of its peak
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
_PATCH_EXTENT_SIGMAS = 4.0
_PATCH_FLOOR_GAUSS = 0.5  # patches are cut where they fall below this

# Reference point of the internal day count, and RNG stream tags.
_EPOCH = np.datetime64("2000-01-01T00:00:00", "ms")
_MS_PER_DAY = 86_400_000
_DAY_OFFSET = 1_000_000  # keeps day numbers non-negative for SeedSequence
_STREAM_REGIONS, _STREAM_FLARES, _STREAM_NOISE, _STREAM_HASH = 1, 2, 3, 4
_HASH_DATE_OBS, _HASH_CENTER_X, _HASH_CENTER_Y, _HASH_MISSING, _HASH_UNLOCATED = 1, 2, 3, 4, 5

# Solar cycle minima (decimal years) that start cycles 23, 24 and 25; later and earlier
# cycles are extrapolated at 11 years.
_CYCLE_STARTS = ((23, 1996.6), (24, 2008.96), (25, 2019.96))
_CYCLE_LENGTH = 11.0


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic run; everything that changes the files written.

    Attributes:
        start: first image time (ISO 8601, UTC).
        end: last image time, inclusive; ``None`` means ``start`` + 28 days.
        cadence: image spacing (a pandas offset such as ``1h`` or ``12min``).
        size: width and height of the images in pixels.
        seed: the synthetic Sun; the same seed gives the same regions, flares and images.
        flare_rate: multiplies every region's flare rate (1 gives roughly 15-35 % of 24 h
            windows with a flare >= M1.0 over a year).
        region_rate: mean number of active regions emerging per day over the whole Sun
            (1.5 keeps a handful to about ten on the disk).
        fmt: image format, ``png`` (lossless) or ``jpg`` (quality 95, as the study's files).
        b0: heliographic latitude of the observer in degrees, or ``"auto"`` for the
            Earth's value at each date (between -7.25 and +7.25 deg).
        noise: standard deviation of the white noise, gauss per pixel.
        clip: field strength mapped to the ends of the 8-bit range, gauss.
        stretch: strength of the ``asinh`` stretch of the 8-bit scaling (see
            :func:`to_uint8`): fields well below ``clip / stretch`` are scaled linearly, about
            ``stretch / asinh(stretch)`` times brighter than a linear scale, stronger ones
            logarithmically; 0 gives Helioviewer's linear scaling.
        missing: fraction of image times left out, as data gaps (chosen per time, seeded).
        unlocated: fraction of catalog flares whose location is left empty, as in real
            catalogs (about 3 % there).
        jp2: also write Helioviewer-style JPEG 2000 files under ``jp2/``.
        jp2_size: width and height of the JPEG 2000 files.
    """

    start: str = "2011-01-01T00:00:00"
    end: str | None = None
    cadence: str = "1h"
    size: int = 512
    seed: int = 0
    flare_rate: float = 1.0
    region_rate: float = 1.5
    fmt: str = "png"
    b0: float | str = 0.0
    noise: float = 10.0
    clip: float = 1500.0
    stretch: float = 8.0
    missing: float = 0.0
    unlocated: float = 0.02
    jp2: bool = False
    jp2_size: int = 4096

    def resolved(self) -> SynthConfig:
        """Return the config validated, with times normalised and ``end`` filled in.

        Raises:
            InputError: a setting is invalid; ``field`` names it.
        """
        start = _parse_time(self.start, "start")
        end = start + pd.Timedelta(days=28) if self.end is None else _parse_time(self.end, "end")
        try:
            cadence = pd.Timedelta(str(self.cadence))
        except (ValueError, TypeError):
            raise InputError(
                f"cannot read cadence {self.cadence!r} (expected e.g. 1h, 12min, 1D)",
                field="cadence",
            ) from None
        if pd.isna(cadence) or cadence <= pd.Timedelta(0):
            raise InputError(f"cadence must be positive, got {self.cadence!r}", field="cadence")
        if cadence < pd.Timedelta(seconds=1) or cadence % pd.Timedelta(seconds=1):
            raise InputError(
                f"cadence must be a whole number of seconds, got {self.cadence!r}",
                field="cadence",
            )
        if end < start:
            raise InputError(f"end {end} is before start {start}", field="end")
        _check_int(self.size, "size", 16, 16384)
        _check_int(self.jp2_size, "jp2_size", 64, 16384)
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise InputError(f"seed must be an integer, got {self.seed!r}", field="seed")
        if not 0 <= int(self.seed) < 2**63:
            raise InputError(f"seed must be between 0 and 2**63 - 1, got {self.seed}", field="seed")
        for name in ("flare_rate", "region_rate", "noise"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise InputError(f"{name} must be a number >= 0, got {value!r}", field=name)
        if not _finite(self.clip) or self.clip <= 0:
            raise InputError(f"clip must be a positive number, got {self.clip!r}", field="clip")
        if not _finite(self.stretch) or not 0 <= self.stretch <= 1000:
            raise InputError(
                f"stretch must be a number in [0, 1000], got {self.stretch!r}", field="stretch"
            )
        for name in ("missing", "unlocated"):
            value = getattr(self, name)
            if not _finite(value) or not 0 <= value <= 1:
                raise InputError(f"{name} must be a fraction in [0, 1], got {value!r}", field=name)
        fmt = str(self.fmt).lower().lstrip(".")
        fmt = "jpg" if fmt == "jpeg" else fmt
        if fmt not in ("png", "jpg"):
            raise InputError(f"format must be png or jpg, got {self.fmt!r}", field="fmt")
        b0 = _parse_b0(self.b0)
        n_times = (end - start) // cadence + 1
        if n_times > 10_000_000:
            raise InputError(
                f"{n_times} image times from {start} to {end} every {cadence}: too many",
                field="cadence",
            )
        return dataclasses.replace(
            self,
            start=_iso(start),
            end=_iso(end),
            cadence=_timedelta_text(cadence),
            size=int(self.size),
            jp2_size=int(self.jp2_size),
            seed=int(self.seed),
            flare_rate=float(self.flare_rate),
            region_rate=float(self.region_rate),
            fmt=fmt,
            b0=b0,
            noise=float(self.noise),
            clip=float(self.clip),
            stretch=float(self.stretch),
            missing=float(self.missing),
            unlocated=float(self.unlocated),
            jp2=bool(self.jp2),
        )

    def times(self) -> pd.DatetimeIndex:
        """Return the requested image times (before leaving out ``missing`` ones)."""
        c = self.resolved()
        return pd.date_range(
            pd.Timestamp(c.start), pd.Timestamp(c.end), freq=pd.Timedelta(str(c.cadence))
        ).as_unit("ns")


@dataclass
class SynthResult:
    """What :func:`generate` wrote.

    Attributes:
        out: the output directory.
        config: the resolved settings (also saved as ``synth.json``).
        geometry: one row per image (the content of ``geometry.csv``).
        catalog: the flares (the content of ``catalog.csv``, times as datetimes).
        regions: the active regions (the content of ``regions.csv``).
        written: images written by this call (PNG/JPG and JPEG 2000).
        skipped: images already present from an earlier, identical run.
        missing: image times left out as data gaps.
        counts: flare counts by class letter, near-limb (``|lon| > 70``), behind the limb
            (``|lon| > 90``), unlocated; and hourly 24 h windows with a flare >= M1.0 / C1.0.
    """

    out: Path
    config: SynthConfig
    geometry: pd.DataFrame
    catalog: pd.DataFrame
    regions: pd.DataFrame
    written: int = 0
    skipped: int = 0
    missing: int = 0
    counts: dict[str, Any] = field(default_factory=dict)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _check_int(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}", field=name)
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be between {low} and {high} pixels, got {value}", field=name)


def _parse_time(value: Any, name: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError(
            f"cannot read {name} time {value!r} (expected ISO 8601, e.g. 2011-01-01T00:00)",
            field=name,
        ) from None
    if pd.isna(t):
        raise InputError(f"{name} time is empty", field=name)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    if not pd.Timestamp("1900-01-01") <= t <= pd.Timestamp("2200-01-01"):
        raise InputError(f"{name} time {t} is outside 1900 .. 2200", field=name)
    return t.as_unit("ns")


def _parse_b0(value: Any) -> float | str:
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"b0 must be degrees or 'auto', got {value!r}", field="b0") from None
    if not _finite(value) or abs(float(value)) > 90:
        raise InputError(f"b0 must be degrees in [-90, 90] or 'auto', got {value!r}", field="b0")
    return float(value)


def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def _timedelta_text(td: pd.Timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit, length in (("D", 86400), ("h", 3600), ("min", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


# --------------------------------------------------------------------------- time and observer


def _days(times: Any) -> np.ndarray:
    """Return days since 2000-01-01 00:00 UTC as float64 (millisecond resolution)."""
    if isinstance(times, (list, tuple)):
        times = [pd.Timestamp(t) for t in times]
    t = pd.DatetimeIndex(pd.to_datetime(times)).as_unit("ms").to_numpy()
    return (t - _EPOCH).astype(np.int64) / _MS_PER_DAY


def _from_days(days: np.ndarray) -> pd.DatetimeIndex:
    ms = np.rint(np.asarray(days, dtype=float) * _MS_PER_DAY).astype(np.int64)
    return pd.DatetimeIndex(_EPOCH + ms.astype("timedelta64[ms]")).as_unit("ns")


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


# --------------------------------------------------------------------------- hashing


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


# --------------------------------------------------------------------------- rendering


def render_magnetogram(
    patches: pd.DataFrame | Mapping[str, np.ndarray],
    geometry: DiskGeometry,
    *,
    noise: float = 10.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render the line-of-sight field (gauss) of flux patches on the visible disk.

    Each patch is a radial field ``B_r = flux / (2 pi sigma^2 R^2) exp(-d^2 / 2 sigma^2)``
    (``d`` the angle from its centre); the image shows ``B_los = B_r * mu``. Each pixel
    shows the field averaged over its area, as an image resampled with area interpolation
    would: ``sigma^2`` is widened by the pixel's footprint, ``1 / (12 radius_px^2)``
    (rad^2), keeping the flux, so small images keep the flux of compact spots instead of
    sampling or missing their peaks. Each patch is summed over a window around it, out to
    where it falls below 0.5 G (at most 4 sigma), so the cost grows with the regions' area,
    not with the image.

    Args:
        patches: from :func:`region_patches` (``lon``, ``lat``, ``flux``, ``sigma``).
        geometry: where the disk lies and the observer's B0.
        noise: white noise, gauss per pixel (needs ``rng`` when positive).
        rng: random generator of the noise.

    Returns:
        ``float32`` array ``(size, size)``, row 0 at the top (north up, west right), NaN
        outside the disk.
    """
    n = geometry.size
    cx, cy, rad = geometry.center_x, geometry.center_y, geometry.radius_px
    xs = ((np.arange(n) - cx) / rad).astype(np.float32)
    ys = ((cy - np.arange(n)) / rad).astype(np.float32)
    r2 = xs[None, :] ** 2 + ys[:, None] ** 2
    on = r2 <= 1.0
    z = np.sqrt(np.maximum(1.0 - r2, 0.0), dtype=np.float32)
    field = np.zeros((n, n), dtype=np.float32)
    flux = np.asarray(patches["flux"], dtype=float)
    if len(flux):
        px, py, pz = _observer_xyz(
            np.asarray(patches["lon"], dtype=float),
            np.asarray(patches["lat"], dtype=float),
            geometry.b0_deg,
        )
        # Each pixel shows the field averaged over its area (as an image resampled with
        # area interpolation): the Gaussian widened by the pixel's footprint, flux kept.
        sig = np.radians(np.asarray(patches["sigma"], dtype=float))
        sig = np.sqrt(sig * sig + 1.0 / (12.0 * rad * rad))
        amp = flux / (2 * np.pi * (sig * RSUN_CM) ** 2)
        # Out to where the patch falls below _PATCH_FLOOR_GAUSS, at most 4 sigma.
        ratio = np.maximum(np.abs(amp) / _PATCH_FLOOR_GAUSS, 1.0)
        extent = np.minimum(np.sqrt(2.0 * np.log(ratio)), _PATCH_EXTENT_SIGMAS) * sig
        half = np.ceil(extent * rad) + 1
        col, row = cx + px * rad, cy - py * rad
        # A point within angle `extent` of the centre projects within `extent * rad` pixels
        # of the projected centre; nothing shows when the patch lies wholly behind the limb.
        visible = (extent > 0) & (pz > -np.sin(extent))
        for i in np.flatnonzero(visible):
            c0, c1 = max(math.floor(col[i] - half[i]), 0), min(math.ceil(col[i] + half[i]) + 1, n)
            r0, r1 = max(math.floor(row[i] - half[i]), 0), min(math.ceil(row[i] + half[i]) + 1, n)
            if c0 >= c1 or r0 >= r1:
                continue
            zw = z[r0:r1, c0:c1]
            cosd = xs[None, c0:c1] * np.float32(px[i]) + ys[r0:r1, None] * np.float32(py[i])
            cosd += zw * np.float32(pz[i])
            # exp(-d^2 / 2 sigma^2) with d^2 ~ 2 (1 - cos d); off-disk pixels have zw = 0.
            np.minimum(cosd - np.float32(1.0), np.float32(0.0), out=cosd)
            cosd *= np.float32(1.0 / sig[i] ** 2)
            np.exp(cosd, out=cosd)
            cosd *= zw
            cosd *= np.float32(amp[i])
            field[r0:r1, c0:c1] += cosd
    if noise > 0:
        if rng is None:
            raise ValueError("render_magnetogram: noise > 0 needs an rng")
        field += rng.standard_normal((n, n), dtype=np.float32) * np.float32(noise)
    field[~on] = np.nan
    return field


def to_uint8(field: np.ndarray, clip: float = 1500.0, stretch: float = 8.0) -> np.ndarray:
    """Scale a field in gauss to 8 bits: 128 is 0 G, +-``clip`` and beyond are 255 and 1.

    With ``stretch`` 0 the scale is Helioviewer's linear one, ``128 + B * 127 / clip``. A
    positive ``stretch`` s gives ``128 + 127 asinh(s B / clip) / asinh(s)``: linear for
    fields well below ``clip / s`` (there about ``s / asinh(s)`` times brighter, 2.9x at the
    default 8), logarithmic above, so weak plage shows in small images while strong spots
    are still told apart instead of saturating. Values are rounded and clipped to 1..255 on
    the disk; pixels outside it (NaN in ``field``) are 0.
    """
    if stretch > 0:
        gain = np.float32(stretch / clip)
        v = np.rint(128.0 + np.arcsinh(field * gain) * np.float32(127.0 / math.asinh(stretch)))
    else:
        v = np.rint(128.0 + field * np.float32(127.0 / clip))
    out = np.clip(np.nan_to_num(v, nan=0.0), 1, 255).astype(np.uint8)
    out[np.isnan(field)] = 0
    return out


# --------------------------------------------------------------------------- flares


def format_goes_class(flux: np.ndarray) -> np.ndarray:
    """Return GOES class strings with one decimal (``M1.3``, ``X12.0``) for peak fluxes."""
    flux = np.asarray(flux, dtype=float)
    letters = np.array(["A", "B", "C", "M", "X"])
    base = np.array([LETTER_FLUX[k] for k in letters])
    idx = np.clip(np.floor(np.log10(flux / 1e-8) + 1e-12).astype(int), 0, 4)
    mant = np.round(flux / base[idx], 1)
    up = (mant >= 10.0) & (idx < 4)  # 9.96 rounds to 10.0: next letter
    idx = np.where(up, idx + 1, idx)
    mant = np.where(up, 1.0, mant)
    return np.char.add(letters[idx], np.char.mod("%.1f", mant)).astype(object)


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


# --------------------------------------------------------------------------- JPEG 2000 header


def helioviewer_header(row: pd.Series | dict[str, Any], size: int) -> dict[str, str | int | float]:
    """Return the FITS keywords of a Helioviewer HMI magnetogram JP2 for one geometry row.

    ``row`` is a row of :func:`disk_geometry` computed for ``size`` (``date_obs``,
    ``center_x``, ``center_y``, ``rsun_obs``, ``cdelt_arcsec``, ``dsun_m``, ``b0_deg``).
    ``CRPIX1/2`` are 1-based FITS pixels with row 1 at the bottom, so the stored (top-down)
    centre row ``center_y`` is ``CRPIX2 = size - center_y``.
    """
    t = pd.Timestamp(row["date_obs"])
    date_obs = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    tai = (t + pd.Timedelta(seconds=34)).strftime(
        "%Y.%m.%d_%H:%M:%S."
    ) + f"{t.microsecond // 1000:03d}_TAI"
    b0 = float(row["b0_deg"])
    return {
        "SIMPLE": 1,
        "BITPIX": 8,
        "NAXIS": 2,
        "NAXIS1": int(size),
        "NAXIS2": int(size),
        "DATE-OBS": date_obs,
        "DATE_OBS": date_obs,
        "T_OBS": tai,
        "TELESCOP": "SDO/HMI",
        "INSTRUME": "HMI_SIDE1",
        "WAVELNTH": 6173.0,
        "WAVEUNIT": "angstrom",
        "CONTENT": "MAGNETOGRAM",
        "BUNIT": "Mx/cm^2",
        "ORIGIN": "fdflare synth (synthetic data, not an observation)",
        "CTYPE1": "HPLN-TAN",
        "CTYPE2": "HPLT-TAN",
        "CRPIX1": float(row["center_x"]) + 1.0,
        "CRPIX2": float(size) - float(row["center_y"]),
        "CRVAL1": 0.0,
        "CRVAL2": 0.0,
        "CDELT1": float(row["cdelt_arcsec"]),
        "CDELT2": float(row["cdelt_arcsec"]),
        "CUNIT1": "arcsec",
        "CUNIT2": "arcsec",
        "CROTA2": 0.0,
        "DSUN_OBS": float(row["dsun_m"]),
        "DSUN_REF": AU_M,
        "RSUN_REF": RSUN_REF_M,
        "RSUN_OBS": float(row["rsun_obs"]),
        "HGLN_OBS": 0.0,
        "HGLT_OBS": b0,
        "CRLT_OBS": b0,
        "COMMENT": "Synthetic magnetogram made by fdflare synth for demos, tests and benchmarks.",
        "HV_SOURCE": "fdflare synth",
        "HV_ROTATION": 0.0,
    }


# --------------------------------------------------------------------------- the run


def _image_rng(seed: int, key: int, size: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, _STREAM_NOISE, int(key) + (1 << 40), size])
    )


def _write_raster(path: Path, data: np.ndarray, fmt: str) -> None:
    from PIL import Image

    image = Image.fromarray(data)
    with atomic_path(path) as tmp:
        if fmt == "png":
            image.save(tmp, format="PNG", compress_level=1)
        else:
            image.save(tmp, format="JPEG", quality=95)


def _render_row(
    r: dict[str, np.ndarray], row: pd.Series, size: int, config: SynthConfig, key: int
) -> np.ndarray:
    geometry = DiskGeometry(
        size,
        float(row["center_x"]),
        float(row["center_y"]),
        float(row["radius_px"]),
        float(row["b0_deg"]),
    )
    patches = _patch_arrays(r, float(_days([row["date_obs"]])[0]))
    rng = _image_rng(config.seed, key, size)
    field = render_magnetogram(patches, geometry, noise=config.noise, rng=rng)
    return to_uint8(field, config.clip, config.stretch)


def _check_previous(out: Path, config: SynthConfig) -> None:
    """Refuse to mix runs: ``out`` must be empty of synth output or hold the same settings."""
    marker = out / "synth.json"
    if not marker.exists():
        if (out / "images").exists() or (out / "jp2").exists():
            raise InputError(
                "the directory holds images but no synth.json; choose an empty --out directory",
                path=out,
            )
        return
    try:
        old = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the previous run's settings: {exc}", path=marker) from None
    new = _config_record(config)
    for key in sorted(set(old) | set(new)):
        if key == "fdflare_version":
            continue
        if old.get(key) != new.get(key):
            raise InputError(
                f"the directory holds a synth run with {key}={old.get(key)!r}, not "
                f"{new.get(key)!r}; use another --out directory (or delete this one) to "
                "change settings, or the same settings to resume",
                path=marker,
                field=key,
            )


def _config_record(config: SynthConfig) -> dict[str, Any]:
    record = dataclasses.asdict(config)
    record["synth_format"] = SYNTH_FORMAT
    record["fdflare_version"] = __version__
    return record


def _geometry_csv(geometry: pd.DataFrame) -> str:
    g = geometry.copy()
    t = pd.DatetimeIndex(g["date_obs"])
    g["date_obs"] = t.strftime("%Y-%m-%dT%H:%M:%S.") + pd.Index(t.microsecond // 1000).astype(
        str
    ).str.zfill(3)
    for c in ("center_x", "center_y", "radius_px"):
        g[c] = g[c].round(4)
    g["b0_deg"] = g["b0_deg"].round(5)
    g["rsun_obs"] = g["rsun_obs"].round(4)
    g["cdelt_arcsec"] = g["cdelt_arcsec"].round(6)
    g["dsun_m"] = g["dsun_m"].round(0)
    return g[list(GEOMETRY_COLUMNS)].to_csv(index=False, lineterminator="\n")


def _catalog_csv(catalog: pd.DataFrame) -> str:
    c = catalog[list(CATALOG_COLUMNS)].copy()
    c["start_time"] = pd.DatetimeIndex(c["start_time"]).strftime("%Y-%m-%d %H:%M:%S")
    return c.to_csv(index=False, lineterminator="\n", na_rep="")


def _regions_csv(regions: pd.DataFrame) -> str:
    r = regions.copy()
    for c in ("emerge_time", "end_time"):
        r[c] = pd.DatetimeIndex(r[c]).strftime("%Y-%m-%d %H:%M:%S")
    for c in ("lon0", "lat", "t_grow", "t_decay", "lifetime", "tilt", "separation", "complexity"):
        r[c] = r[c].round(4)
    r["flux_max"] = r["flux_max"].map(lambda v: f"{v:.4e}")
    return r.to_csv(index=False, lineterminator="\n")


def _flare_counts(catalog: pd.DataFrame) -> dict[str, int]:
    letters = catalog["goes_class"].astype("string").str[0]
    lon = catalog["fl_lon"].abs()
    return {
        "flares": len(catalog),
        "C": int((letters == "C").sum()),
        "M": int((letters == "M").sum()),
        "X": int((letters == "X").sum()),
        "near_limb": int((lon > 70).sum()),
        "behind_limb": int((lon > 90).sum()),
        "unlocated": int(lon.isna().sum()),
    }


def generate(
    out: str | os.PathLike[str],
    *,
    start: str = SynthConfig.start,
    end: str | None = None,
    cadence: str = SynthConfig.cadence,
    size: int = SynthConfig.size,
    seed: int = SynthConfig.seed,
    flare_rate: float = SynthConfig.flare_rate,
    region_rate: float = SynthConfig.region_rate,
    fmt: str = SynthConfig.fmt,
    b0: float | str = SynthConfig.b0,
    noise: float = SynthConfig.noise,
    clip: float = SynthConfig.clip,
    stretch: float = SynthConfig.stretch,
    missing: float = SynthConfig.missing,
    unlocated: float = SynthConfig.unlocated,
    jp2: bool = False,
    jp2_size: int = SynthConfig.jp2_size,
    workers: int | None = None,
    progress: bool | None = None,
    on_image: Callable[[Path], None] | None = None,
) -> SynthResult:
    """Write a synthetic data set to ``out``: images, geometry, flare catalog and regions.

    Output (see ``docs/synth.md``): ``images/YYYY/MM/DD/HMI.m....png`` (or ``.jpg``),
    ``geometry.csv``, ``catalog.csv`` (flares from ``start`` to ``end`` + 24 h, so every
    image has a complete 24 h window), ``regions.csv``, ``synth.json`` (the settings) and,
    with ``jp2``, ``jp2/YYYY/MM/DD/HMI.m....jp2``.

    Every file is written atomically. A run that stops can be resumed by running it again
    with the same settings: images already there are kept. ``geometry.csv`` is written
    last, so its presence means the run completed.

    Args:
        out: output directory (created).
        start: first image time.
        end: last image time, inclusive (default ``start`` + 28 days).
        cadence: image spacing.
        size: image width and height.
        seed: the synthetic Sun.
        flare_rate: multiplies every region's flare rate.
        region_rate: regions emerging per day.
        fmt: ``png`` or ``jpg``.
        b0: observer latitude in degrees, or ``"auto"``.
        noise: white noise, gauss per pixel.
        clip: gauss mapped to 1 and 255.
        stretch: ``asinh`` stretch of the 8-bit scaling (0: linear).
        missing: fraction of image times left out as data gaps.
        unlocated: fraction of flares without a location.
        jp2: also write Helioviewer-style JPEG 2000 files.
        jp2_size: their width and height.
        workers: threads rendering and encoding images (default: up to 4, by CPU count).
        progress: show a progress bar on stderr (default: when stderr is a terminal).
        on_image: called with each image path written (for tests and custom progress).

    Raises:
        InputError: a setting is invalid, or ``out`` holds a run made with other settings.
    """
    config = SynthConfig(
        start=start,
        end=end,
        cadence=cadence,
        size=size,
        seed=seed,
        flare_rate=flare_rate,
        region_rate=region_rate,
        fmt=fmt,
        b0=b0,
        noise=noise,
        clip=clip,
        stretch=stretch,
        missing=missing,
        unlocated=unlocated,
        jp2=jp2,
        jp2_size=jp2_size,
    ).resolved()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a directory", path=out)
    _check_previous(out, config)
    if config.jp2:
        try:
            from fdflare.prepare.jp2 import write_helioviewer_jp2  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the build
            raise InputError(
                f"--jp2 needs fdflare.prepare.jp2, which cannot be imported: {exc}", field="jp2"
            ) from None

    requested = config.times()
    keys = _time_keys(requested)
    gap = _hash_uniform(config.seed, _HASH_MISSING, keys) < config.missing
    times = requested[~gap]
    keys = keys[~gap]
    start_t, end_t = pd.Timestamp(config.start), pd.Timestamp(config.end)
    catalog_end = end_t + pd.Timedelta(days=1)
    regions = simulate_regions(
        start_t, catalog_end, seed=config.seed, region_rate=config.region_rate
    )
    catalog = draw_flares(
        regions,
        start_t,
        catalog_end,
        seed=config.seed,
        flare_rate=config.flare_rate,
        b0=config.b0,
        unlocated=config.unlocated,
    )
    geometry = disk_geometry(times, size=config.size, seed=config.seed, b0=config.b0)
    geometry.insert(0, "path", image_relpaths(times, ext=config.fmt))

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "synth.json", json.dumps(_config_record(config), indent=2) + "\n")
    write_text_atomic(out / "regions.csv", _regions_csv(regions))
    write_text_atomic(out / "catalog.csv", _catalog_csv(catalog))

    arrays = _region_arrays(regions)
    jobs: list[tuple[str, int]] = [("img", i) for i in range(len(times))]
    jp2_geometry = None
    jp2_paths: np.ndarray | None = None
    if config.jp2:
        jp2_geometry = disk_geometry(times, size=config.jp2_size, seed=config.seed, b0=config.b0)
        jp2_paths = image_relpaths(times, ext="jp2")
        jobs += [("jp2", i) for i in range(len(times))]

    def target(kind: str, i: int) -> Path:
        if kind == "img":
            return out / "images" / str(geometry["path"].iloc[i])
        assert jp2_paths is not None
        return out / "jp2" / str(jp2_paths[i])

    todo = [(kind, i) for kind, i in jobs if not target(kind, i).exists()]
    skipped = len(jobs) - len(todo)

    def work(job: tuple[str, int]) -> Path:
        kind, i = job
        path = target(kind, i)
        if kind == "img":
            data = _render_row(arrays, geometry.iloc[i], config.size, config, int(keys[i]))
            _write_raster(path, data, config.fmt)
        else:
            from fdflare.prepare.jp2 import write_helioviewer_jp2

            assert jp2_geometry is not None
            row = jp2_geometry.iloc[i]
            data = _render_row(arrays, row, config.jp2_size, config, int(keys[i]))
            write_helioviewer_jp2(path, data, helioviewer_header(row, config.jp2_size))
        return path

    written = _run_jobs(work, todo, workers=workers, progress=progress, on_done=on_image)

    write_text_atomic(out / "geometry.csv", _geometry_csv(geometry))
    counts: dict[str, Any] = _flare_counts(catalog)
    hourly = times[(times.minute == 0) & (times.second == 0)]
    counts["hourly_instances"] = len(hourly)
    counts["positive_M"] = window_fraction(hourly, catalog, 1e-5)[0]
    counts["positive_C"] = window_fraction(hourly, catalog, 1e-6)[0]
    return SynthResult(
        out=out,
        config=config,
        geometry=geometry,
        catalog=catalog,
        regions=regions,
        written=written,
        skipped=skipped,
        missing=int(gap.sum()),
        counts=counts,
    )


def _run_jobs(
    work: Callable[[tuple[str, int]], Path],
    jobs: Sequence[tuple[str, int]],
    *,
    workers: int | None,
    progress: bool | None,
    on_done: Callable[[Path], None] | None,
) -> int:
    """Run ``work`` over ``jobs`` on a bounded thread pool with a progress bar; return the count."""
    from tqdm import tqdm

    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    workers = max(1, int(workers))
    show = sys.stderr.isatty() if progress is None else progress
    done = 0
    lock = threading.Lock()
    with tqdm(total=len(jobs), unit="img", disable=not show, file=sys.stderr, desc="synth") as bar:

        def finish(path: Path) -> None:
            nonlocal done
            with lock:
                done += 1
                bar.update(1)
            if on_done is not None:
                on_done(path)

        if workers == 1:
            for job in jobs:
                finish(work(job))
            return done
        with cf.ThreadPoolExecutor(max_workers=workers) as pool:
            pending: set[cf.Future[Path]] = set()
            it = iter(jobs)
            try:
                for job in it:
                    pending.add(pool.submit(work, job))
                    if len(pending) >= 2 * workers:
                        finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                        for f in finished:
                            finish(f.result())
                for f in cf.as_completed(pending):
                    finish(f.result())
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
    return done
