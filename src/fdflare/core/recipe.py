"""What a model forecasts: the label recipe it was trained on, carried from label to forecast.

``fdflare label`` writes the recipe into ``summary.json`` (``"recipe": {...}``), ``train``
copies it into the run's ``config.json``, ``summary.json`` and checkpoint, ``cv`` into
``ensemble.json``; ``predict``, ``forecast``, ``verify`` and ``serve`` read it, so a
forecast states the event its members were trained for (``P(flare >= C1.0 in the next
12 h)``) and ``verify`` labels with the same event.

A model without a recipe (the study's released weights, a bare ``state_dict``, a checkpoint
of an older fdflare) is taken as the study's, ``>= M1.0`` in 24 h, and says so
(:attr:`Recipe.assumed`).

The fields:

``threshold``
    the GOES class at or above which a window is positive, written canonically (``M1.0``).
``window``
    the window length after the observation, as a duration (``24h``, ``12h``, ``90min``).
``cadence``, ``purge_hours``, ``split``
    how the instances were laid out and split (documentation of the training data; two
    models with other cadences or splits still forecast the same event).
``catalog``, ``catalog_sha256``
    the flare catalog's file name and content hash.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from fdflare.core.errors import InputError

#: the study's event: a flare of GOES class M1.0 or above
STUDY_THRESHOLD = "M1.0"
#: the study's window: the 24 hours after the observation
STUDY_WINDOW = "24h"

#: Peak flux (W/m^2) of class 1.0 of each GOES letter.
LETTER_FLUX = {"A": 1e-8, "B": 1e-7, "C": 1e-6, "M": 1e-5, "X": 1e-4}
#: A GOES class as written in catalogs: a letter and a number (``M1.3``, ``x10``, ``C 2``).
CLASS_PATTERN = r"^\s*([ABCMXabcmx])\s*(\d+(?:\.\d*)?|\.\d+)\s*$"
#: The lowest threshold: A1.0. Below it every window would be positive whatever it holds.
MIN_THRESHOLD_FLUX = LETTER_FLUX["A"]

_THRESHOLD = re.compile(r"^\s*([ABCMX])\s*(\d+(?:\.\d*)?|\.\d+)?\s*$", re.IGNORECASE)


def parse_threshold(
    text: object,
    *,
    what: str = "threshold",
    path: str | os.PathLike[str] | None = None,
    field: str | None = None,
) -> tuple[float, str]:
    """Read a GOES class threshold: ``M`` (= M1.0), ``c5`` or ``M1.0``, from A1.0 up.

    The one rule for every threshold (``label --mode``, ``baseline --mode``, ``catalog
    --min-class``, a recipe's ``threshold``): a letter A, B, C, M or X (either case),
    optionally followed by a number (spaces around are ignored); a letter alone means 1.0.
    A threshold below A1.0 (``M0``, ``A0.5``) is refused: every flare would pass it.

    Args:
        text: the threshold as written.
        what: how the message names it (``--mode``, ``--min-class``, ``threshold``).
        path: the file it came from, if any, for the message.
        field: the field it came from, if any, for the message.

    Returns:
        The threshold's peak flux in W/m^2 and its canonical spelling (``M1.0``, ``C5.0``).

    Raises:
        InputError: not a GOES class, or below A1.0; naming ``what`` (and file and field).
    """
    m = _THRESHOLD.match(str(text))
    if m is None:
        raise InputError(
            f"{what} {str(text)!r}: malformed GOES class (expected a letter A, B, C, M or X "
            "and an optional number, e.g. M, C5 or M1.0)",
            path=path,
            field=field,
        )
    letter, number = m.group(1).upper(), float(m.group(2)) if m.group(2) else 1.0
    flux = LETTER_FLUX[letter] * number
    if flux < MIN_THRESHOLD_FLUX * (1 - 1e-9):
        raise InputError(
            f"{what} {str(text).strip()}: the threshold is below A1.0, the smallest GOES class, "
            "so every flare would pass it; use A1.0 or above",
            path=path,
            field=field,
        )
    shown = f"{number:g}"
    return flux, f"{letter}{shown if '.' in shown or 'e' in shown else shown + '.0'}"


def canonical_threshold(text: str) -> str:
    """A GOES class threshold written canonically: ``M`` -> ``M1.0``, ``c5`` -> ``C5.0``.

    Raises:
        InputError: not a threshold of :func:`parse_threshold`.
    """
    return parse_threshold(text, field="threshold")[1]


def format_window(delta: pd.Timedelta) -> str:
    """A window length as people write it: ``24 h``, ``12 h``, ``90 min``, ``1 h 30 min``."""
    seconds = round(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if secs:
        parts.append(f"{secs} s")
    return " ".join(parts) or "0 s"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Recipe:
    """The event a model forecasts and how its training labels were made (see module doc)."""

    threshold: str = STUDY_THRESHOLD
    window: str = STUDY_WINDOW
    cadence: str | None = None
    purge_hours: float | None = None
    split: Any = None
    catalog: str | None = None
    catalog_sha256: str | None = None
    #: True when the model carried no recipe and the study's was assumed
    assumed: bool = field(default=False, compare=False)

    @property
    def window_delta(self) -> pd.Timedelta:
        """The window length."""
        return pd.Timedelta(self.window)

    @property
    def window_hours(self) -> float:
        """The window length in hours."""
        return self.window_delta.total_seconds() / 3600.0

    @property
    def event(self) -> str:
        """``flare >= M1.0 in the next 24 h``."""
        return f"flare >= {self.threshold} in the next {format_window(self.window_delta)}"

    def same_event(self, other: Recipe) -> bool:
        """Whether two recipes forecast the same event (threshold and window)."""
        return self.threshold == other.threshold and self.window_delta == other.window_delta

    def describe(self) -> str:
        """One line for people: the event, and where it was assumed."""
        text = f"P({self.event})"
        if self.assumed:
            text += " (no recipe recorded with the model: the study's is assumed)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written into ``summary.json``, checkpoints and ``ensemble.json``."""
        data = asdict(self)
        data.pop("assumed")
        return data

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        path: str | os.PathLike[str] | None = None,
        field: str = "recipe",
    ) -> Recipe:
        """A recipe read from a file, every field checked.

        Raises:
            InputError: not an object, or a field of the wrong kind (file and field named).
        """
        if not isinstance(data, Mapping):
            raise InputError(
                f"expected an object with threshold and window, got {type(data).__name__}",
                path=path,
                field=field,
            )
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__ if f != "assumed"})
        if unknown:
            raise InputError(
                f"unknown key {unknown[0]!r}", path=path, field=f"{field}.{unknown[0]}"
            )
        kw: dict[str, Any] = {}
        for key in ("threshold", "window"):
            value = data.get(key)
            if not isinstance(value, str):
                raise InputError(
                    f"{key} must be a string such as "
                    f"{STUDY_THRESHOLD if key == 'threshold' else STUDY_WINDOW!r}, got {value!r}",
                    path=path,
                    field=f"{field}.{key}",
                )
            kw[key] = value
        kw["threshold"] = parse_threshold(kw["threshold"], path=path, field=f"{field}.threshold")[1]
        try:
            window = pd.Timedelta(kw["window"])
        except (ValueError, TypeError):
            window = pd.NaT
        if window is pd.NaT or window <= pd.Timedelta(0):
            raise InputError(
                f"window {kw['window']!r} is not a positive duration (e.g. 24h)",
                path=path,
                field=f"{field}.window",
            )
        for key in ("cadence", "catalog", "catalog_sha256"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise InputError(
                    f"{key} must be a string or null, got {value!r}",
                    path=path,
                    field=f"{field}.{key}",
                )
            kw[key] = value
        purge = data.get("purge_hours")
        if purge is not None and (
            isinstance(purge, bool) or not isinstance(purge, (int, float)) or not purge >= 0
        ):
            raise InputError(
                f"purge_hours must be a number >= 0 or null, got {purge!r}",
                path=path,
                field=f"{field}.purge_hours",
            )
        kw["purge_hours"] = None if purge is None else float(purge)
        kw["split"] = data.get("split")
        return cls(**kw)


#: the study's recipe, assumed for a model that carries none
STUDY = Recipe(cadence="1h", split="quarters")


def assumed_study() -> Recipe:
    """The study's recipe, marked as assumed (for a model that records none)."""
    return replace(STUDY, assumed=True)


def recipe_or_study(
    data: Any, *, path: str | os.PathLike[str] | None = None, field: str = "recipe"
) -> Recipe:
    """The recipe in ``data`` (None: the study's, assumed)."""
    return assumed_study() if data is None else Recipe.from_dict(data, path=path, field=field)


def common_recipe(recipes: Iterable[tuple[str, Recipe]]) -> Recipe:
    """The one event that every member of an ensemble forecasts.

    Args:
        recipes: ``(member name, recipe)`` pairs.

    Raises:
        InputError: two members were trained for different events (both named).
    """
    items = list(recipes)
    if not items:
        return assumed_study()
    first_name, first = items[0]
    for name, r in items[1:]:
        if not r.same_event(first):
            raise InputError(
                f"the members forecast different events: {first_name} {first.event}, "
                f"{name} {r.event}; an ensemble averages one event"
            )
    stated = [r for _, r in items if not r.assumed]
    return stated[0] if stated else first


def read_summary_recipe(folder: str | os.PathLike[str]) -> Recipe | None:
    """The recipe in a label folder's ``summary.json`` (None when there is none).

    Raises:
        InputError: the summary is not JSON, or its recipe is malformed.
    """
    import json

    path = Path(folder) / "summary.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable JSON file ({exc})", path=path) from None
    if not isinstance(data, dict) or data.get("recipe") is None:
        return None
    return Recipe.from_dict(data["recipe"], path=path)


def labels_recipe(labels: str | os.PathLike[str]) -> Recipe:
    """The recipe of a label folder (or of the folder of a label table); assumed when none.

    Raises:
        InputError: the folder's ``summary.json`` is unreadable or its recipe malformed.
    """
    path = Path(labels)
    found = read_summary_recipe(path if path.is_dir() else path.parent)
    return assumed_study() if found is None else found
