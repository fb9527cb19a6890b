"""Settings of a synthetic run, validated, and the column schemas of the files it writes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.prepare.geometry import SYNTH_GEOMETRY_COLUMNS

__all__ = [
    "GEOMETRY_COLUMNS",
    "REGION_COLUMNS",
    "SynthConfig",
    "last_image_time",
]

#: Columns of the ``geometry.csv`` that synth writes (its one schema is in prepare.geometry).
GEOMETRY_COLUMNS = SYNTH_GEOMETRY_COLUMNS
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
        cadence = _parse_cadence(self.cadence)
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
    from fdflare.core.timeparse import parse_time

    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{name} time is empty", field=name)
    try:
        t = parse_time(value, name=name, whole_seconds=False)
    except InputError as exc:
        raise InputError(f"cannot read {name} time: {exc.message}", field=name) from None
    if not pd.Timestamp("1900-01-01") <= t <= pd.Timestamp("2200-01-01"):
        raise InputError(f"{name} time {t} is outside 1900 .. 2200", field=name)
    return t.as_unit("ns")


def _parse_cadence(value: Any) -> pd.Timedelta:
    try:
        cadence = pd.Timedelta(str(value))
    except (ValueError, TypeError):
        raise InputError(
            f"cannot read cadence {value!r} (expected e.g. 1h, 12min, 1D)", field="cadence"
        ) from None
    if pd.isna(cadence) or cadence <= pd.Timedelta(0):
        raise InputError(f"cadence must be positive, got {value!r}", field="cadence")
    if cadence < pd.Timedelta(seconds=1) or cadence % pd.Timedelta(seconds=1):
        raise InputError(
            f"cadence must be a whole number of seconds, got {value!r}", field="cadence"
        )
    return cadence


def last_image_time(start: Any, until: Any = None, cadence: Any = "1h") -> str:
    """Return the last image time of the half-open range ``[start, until)`` every ``cadence``.

    This is how the CLI's ``--end`` (excluded, as everywhere in fdflare) becomes
    :attr:`SynthConfig.end` (the last image time, included): the last ``start + k cadence``
    before ``until``. ``until`` ``None`` means ``start`` + 28 days.

    Raises:
        InputError: a time or the cadence cannot be read, or the range holds no image time
            (``until`` is not after ``start``); ``field`` names the setting.
    """
    first = _parse_time(start, "start")
    step = _parse_cadence(cadence)
    stop = first + pd.Timedelta(days=28) if until is None else _parse_time(until, "end")
    if stop <= first:
        raise InputError(
            f"end {stop} is not after start {first}: the range start .. end (end excluded) "
            "holds no image time",
            field="end",
        )
    steps = (stop - first - pd.Timedelta(1, "ns")) // step
    return _iso(first + steps * step)


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
