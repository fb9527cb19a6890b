"""Settings of a synthetic run (each written once, as a field), and the schemas of its files."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.settings import setting, validate
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


def _problem(parse: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A field check from a parser that raises :class:`InputError`: its message, or None."""

    def check(value: Any) -> str | None:
        try:
            parse(value)
        except InputError as exc:
            return exc.message
        return None

    return check


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic run; everything that changes the files written.

    Each field carries its help, range and option (:func:`fdflare.core.settings.setting`):
    ``fdflare synth`` generates its options from them and :meth:`resolved` checks them.

    Attributes:
        start: first image time (ISO 8601, UTC).
        end: last image time, inclusive; ``None`` means ``start`` + 28 days (the CLI's
            ``--end`` is excluded, as everywhere in fdflare: :func:`last_image_time`).
        cadence: image spacing (a pandas offset such as ``1h`` or ``12min``).
        size: width and height of the images in pixels.
        seed: the synthetic Sun; the same seed gives the same regions, flares and images.
        flare_rate: multiplies every region's flare rate.
        region_rate: mean number of active regions emerging per day over the whole Sun.
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

    start: str = setting(
        "2011-01-01T00:00:00",
        "first image time, UTC",
        metavar="TIME",
        check=_problem(lambda v: _parse_time(v, "start")),
    )
    end: str | None = setting(
        None,
        "last image time, included (none: start + 28 days)",
        metavar="TIME",
        check=_problem(lambda v: _parse_time(v, "end")),
    )
    cadence: str = setting(
        "1h",
        "image spacing, e.g. 1h, 12min",
        metavar="DURATION",
        check=_problem(lambda v: _parse_cadence(v)),
    )
    size: int = setting(
        512,
        "image width and height in pixels",
        low=16,
        high=16384,
        flag="--image-size",
        aliases=("--size",),
        metavar="N",
    )
    seed: int = setting(
        0,
        "the synthetic Sun: the same seed, the same regions, flares and images",
        low=0,
        check=lambda v: None if v < 2**63 else "must be below 2**63",
        metavar="N",
    )
    flare_rate: float = setting(
        1.0,
        "multiplies every region's flare rate; 1 gives about a quarter of 24 h windows with "
        "a flare >= M1.0 (about 12-37 % by year and seed, docs/synth.md); 0 an empty catalog",
        low=0,
        metavar="X",
    )
    region_rate: float = setting(
        1.5,
        "active regions emerging per day over the whole Sun (1.5 keeps a handful to about "
        "ten on the disk)",
        low=0,
        metavar="X",
    )
    fmt: str = setting(
        "png",
        "image format (jpg is lossy, quality 95, as the study's files)",
        choices=("png", "jpg"),
        flag="--format",
    )
    b0: float | str = setting(
        0.0,
        "observer's heliographic latitude in degrees, or auto for the Earth's at each date",
        choices=("auto",),
        low=-90,
        high=90,
        metavar="DEG|auto",
    )
    noise: float = setting(10.0, "white noise, gauss per pixel", low=0, metavar="G")
    clip: float = setting(1500.0, "gauss mapped to 1 and 255", low=0, low_open=True, metavar="G")
    stretch: float = setting(
        8.0,
        "asinh stretch of the 8-bit scale, 0 = Helioviewer's linear scale",
        low=0,
        high=1000,
        metavar="S",
    )
    missing: float = setting(
        0.0, "fraction of image times left out, as data gaps", low=0, high=1, metavar="FRACTION"
    )
    unlocated: float = setting(
        0.02,
        "fraction of catalog flares without a location, as in real catalogs",
        low=0,
        high=1,
        metavar="FRACTION",
    )
    jp2: bool = setting(
        False,
        "also write Helioviewer-style JPEG 2000 files with the XML header under DIR/jp2/",
    )
    jp2_size: int = setting(4096, "JPEG 2000 width and height", low=64, high=16384, metavar="N")

    def resolved(self) -> SynthConfig:
        """Return the config validated, with times normalised and ``end`` filled in.

        Raises:
            InputError: a setting is invalid; ``field`` names it.
        """
        typed = dataclasses.replace(self, **_typed(self))
        validate(typed)
        start = _parse_time(typed.start, "start")
        end = start + pd.Timedelta(days=28) if typed.end is None else _parse_time(typed.end, "end")
        cadence = _parse_cadence(typed.cadence)
        if end < start:
            raise InputError(f"end {end} is before start {start}", field="end")
        n_times = (end - start) // cadence + 1
        if n_times > 10_000_000:
            raise InputError(
                f"{n_times} image times from {start} to {end} every {cadence}: too many",
                field="cadence",
            )
        return dataclasses.replace(
            typed, start=_iso(start), end=_iso(end), cadence=_timedelta_text(cadence)
        )

    #: the name every config's whole check goes by (:func:`fdflare.commands._config.config_from_args`)
    checked = resolved

    def times(self) -> pd.DatetimeIndex:
        """Return the requested image times (before leaving out ``missing`` ones)."""
        c = self.resolved()
        return pd.date_range(
            pd.Timestamp(c.start), pd.Timestamp(c.end), freq=pd.Timedelta(str(c.cadence))
        ).as_unit("ns")


def _typed(c: SynthConfig) -> dict[str, Any]:
    """The fields as their types (numpy numbers, ``jpeg``, ``" Auto "`` normalised).

    Raises:
        InputError: a value of the wrong type, naming the field.
    """
    values: dict[str, Any] = {}
    for name in ("size", "jp2_size", "seed"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"{value!r}: must be a whole number", field=name)
        values[name] = int(value)
    for name in ("flare_rate", "region_rate", "noise", "clip", "stretch", "missing", "unlocated"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise InputError(f"{value!r}: must be a number", field=name)
        values[name] = float(value)
    fmt = str(c.fmt).lower().lstrip(".")
    values["fmt"] = "jpg" if fmt == "jpeg" else fmt
    values["b0"] = _b0_value(c.b0)
    values["jp2"] = bool(c.jp2)
    return values


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


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


def _b0_value(value: Any) -> Any:
    """``b0`` as a float, or ``"auto"``; anything else is left for the field's check."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            return float(text)
        except ValueError:
            return value
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return value


def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def _timedelta_text(td: pd.Timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit, length in (("D", 86400), ("h", 3600), ("min", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"
