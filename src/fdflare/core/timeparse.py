"""Times and durations as users write them, parsed once for every stage.

* :func:`parse_time`: ISO 8601 (``2011-01-01T00:00``, ``2011-01-01 00:00:00``, with or
  without a zone) as a naive UTC :class:`pandas.Timestamp`;
* :func:`parse_duration`: ``1h``, ``12min``, ``30s``, ``1h30min``;
* :func:`parse_utc_series`: a column of times in which notations may be mixed
  (``2011-02-01 00:39:00`` beside ``2011-02-01T00:40:00Z``), all read as UTC;
* :func:`option_time` / :func:`option_duration`: the same for a command-line option, with
  the option named in the error.

Times without a zone are taken as UTC; times with one are converted to UTC. Errors are
:class:`~fdflare.core.errors.InputError` (a value in a file) or
:class:`~fdflare.core.errors.UsageError` (a command-line option).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pandas as pd

from fdflare.core.errors import InputError, UsageError

__all__ = [
    "option_duration",
    "option_time",
    "parse_duration",
    "parse_time",
    "parse_utc_series",
]

_DURATION_UNITS = {
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 0.001,
}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)"
_DURATION_RE = re.compile(rf"\s*(?:{_DURATION_PART}\s*)+")
_TIME_HINT = "expected ISO 8601 such as 2011-01-01T00:00"
#: the start of an ISO 8601 date: YYYY-MM-DD (or YYYYMMDD)
_ISO_START = re.compile(r"^\s*[+-]?\d{4}(-\d{2}-\d{2}|\d{4})(?!\d)")


def parse_duration(text: str | timedelta | pd.Timedelta, *, name: str = "duration") -> timedelta:
    """Parse a duration such as ``1h``, ``12min``, ``30s`` or ``1h30min``.

    Units: ``d``, ``h``, ``min`` (or ``m``), ``s``, ``ms`` and their spelled-out forms. A
    number needs a unit (``12`` alone is ambiguous). :class:`datetime.timedelta` and
    :class:`pandas.Timedelta` values pass through.

    Args:
        text: the duration.
        name: the field it came from, for the error message.

    Raises:
        InputError: the text is not a duration.
    """
    if isinstance(text, pd.Timedelta):
        return text.to_pytimedelta()
    if isinstance(text, timedelta):
        return text
    hint = (
        "expected a number and a unit such as 1h, 12min, 30s or 1h30min (units: d, h, min, s, ms)"
    )
    if not isinstance(text, str) or not _DURATION_RE.fullmatch(text):
        raise InputError(f"invalid duration {text!r}: {hint}", field=name)
    seconds = 0.0
    for number, unit in re.findall(_DURATION_PART, text):
        factor = _DURATION_UNITS.get(unit.lower())
        if factor is None:
            raise InputError(
                f"invalid duration {text!r}: unknown unit {unit!r}; {hint}", field=name
            )
        seconds += float(number) * factor
    return timedelta(seconds=seconds)


def parse_time(
    value: str | pd.Timestamp | Any, *, name: str = "time", whole_seconds: bool = True
) -> pd.Timestamp:
    """Parse a time (ISO 8601, e.g. ``2011-01-01T00:00``) as a naive UTC timestamp.

    Times with a zone are converted to UTC; times without one are taken as UTC. Text must be
    ISO 8601 (``YYYY-MM-DD`` first): ``02/01/2011`` is 1 February in one country and 2 January
    in another, so such orders are refused rather than guessed.

    Args:
        value: the time.
        name: the field it came from, for the error message.
        whole_seconds: refuse sub-second precision (image names hold whole seconds).

    Raises:
        InputError: the value is not a time, or has sub-second precision.
    """
    if isinstance(value, str) and not _ISO_START.match(value):
        raise InputError(
            f"invalid time {value!r}: not ISO 8601 (a day/month order such as 02/01/2011 is "
            f"ambiguous); {_TIME_HINT}",
            field=name,
        )
    try:
        if isinstance(value, str):
            ts = pd.to_datetime(value.strip(), format="ISO8601")
        else:
            ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"invalid time {value!r} ({exc}); {_TIME_HINT}", field=name) from None
    if ts is pd.NaT or pd.isna(ts):
        raise InputError(f"invalid time {value!r}: {_TIME_HINT}", field=name)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if whole_seconds and ts != ts.floor("s"):
        raise InputError(
            f"time {value!r} has sub-second precision; image names hold whole seconds", field=name
        )
    return ts


def parse_utc_series(values: pd.Series, *, fmt: str | None = None) -> pd.Series:
    """Parse a column of times to naive UTC ``datetime64[ns]``; unparsable values give NaT.

    Notations may be mixed in one column: ``2011-02-01 00:39:00`` (no zone, taken as UTC),
    ``2011-02-01T00:40:00Z`` and ``2011-02-01T05:41:00+05:00`` all parse.

    Args:
        values: the text of the times.
        fmt: a :func:`~datetime.datetime.strptime` format; default ISO 8601.
    """
    s = values.astype("string").str.strip()
    times = pd.to_datetime(s, format=fmt or "ISO8601", errors="coerce", utc=True)
    return times.dt.tz_localize(None).astype("datetime64[ns]")


def _as_usage(exc: InputError, option: str) -> UsageError:
    return UsageError(f"{option}: {exc.message}")


def option_time(value: str, option: str, *, whole_seconds: bool = True) -> pd.Timestamp:
    """Parse the time given to a command-line option.

    Raises:
        UsageError: naming ``option``.
    """
    try:
        return parse_time(value, name=option, whole_seconds=whole_seconds)
    except InputError as exc:
        raise _as_usage(exc, option) from None


def option_duration(value: str, option: str) -> timedelta:
    """Parse the duration given to a command-line option.

    Raises:
        UsageError: naming ``option``.
    """
    try:
        return parse_duration(value, name=option)
    except InputError as exc:
        raise _as_usage(exc, option) from None
