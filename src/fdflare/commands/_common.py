"""The one CLI grammar: argument types that validate before any work, and deprecated aliases.

Every command uses these, so that one name means one thing everywhere:

==================  ==================================================================
``--out``           where the command writes (a folder, or a file where it writes one)
``--images``        an image folder (or array store, or a text file listing images)
``--image-size``    image width = height in pixels (``--size``: deprecated alias)
``--start/--end``   a half-open time range: ``--start`` included, ``--end`` excluded
``--workers``       worker processes (decode, render, data loading)
``--concurrency``   requests in flight (download, HEK)
``--accelerator``   ``auto``, ``cpu``, ``gpu`` or ``mps``; ``--devices`` how many
``--quiet``         no progress bars or per-item lines; the final summary still prints
``--json``          print the result as JSON instead of a table
==================  ==================================================================

Old spellings stay for one release as deprecated aliases (:func:`add_deprecated_alias`):
they work, print one warning line on stderr, and are hidden from ``--help``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {low} or more, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0)


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan or inf)."""
    return _finite(text)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = _finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _finite(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction from 0 up to (not including) 1, got {text}"
        )
    return value


class _Deprecated(argparse.Action):
    """Store like the new option, after one warning line naming it."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.new = kwargs.pop("new")
        self.inner = kwargs.pop("inner")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        prog = parser.prog
        print(
            f"{prog}: warning: {option_string} is deprecated and will be removed in the next "
            f"release; use {self.new}",
            file=sys.stderr,
        )
        if self.inner == "store_true":
            setattr(namespace, self.dest, True)
        else:
            setattr(namespace, self.dest, values)


def add_deprecated_alias(
    parser: argparse.ArgumentParser,
    old: str,
    new: str,
    *,
    dest: str,
    type: Callable[[str], Any] | None = None,
    flag: bool = False,
    nargs: str | int | None = None,
) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of the option ``new``.

    Args:
        parser: the command's parser.
        old: the old option string, e.g. ``"--size"``.
        new: the option that replaces it, named in the warning.
        dest: the destination shared with ``new``.
        type: the argument type of ``new``.
        flag: ``new`` is a ``store_true`` flag.
        nargs: as for :meth:`argparse.ArgumentParser.add_argument`.
    """
    kwargs: dict[str, Any] = {
        "dest": dest,
        "action": _Deprecated,
        "new": new,
        "inner": "store_true" if flag else "store",
        "help": argparse.SUPPRESS,
        "default": argparse.SUPPRESS,
    }
    if flag:
        kwargs["nargs"] = 0
    else:
        if type is not None:
            kwargs["type"] = type
        if nargs is not None:
            kwargs["nargs"] = nargs
    parser.add_argument(old, **kwargs)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--image-size`` of a command that loads checkpoints.

    A checkpoint of ``fdflare train`` records both (``--model`` is then checked against
    it); a bare ``state_dict`` file needs ``--model``, and ``--image-size`` when not 512.
    """
    from fdflare.models.registry import list_models

    p.add_argument(
        "--model",
        choices=list_models(),
        help="architecture: checked against the checkpoint; required for a bare state_dict",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        metavar="PX",
        help="image size of a bare state_dict (default 512)",
    )


def add_http_options(p: argparse.ArgumentParser, *, retries: int) -> None:
    """``--connect-timeout``, ``--read-timeout`` and ``--retries`` of a command that asks a service."""
    p.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="default %(default)s",
    )
    p.add_argument(
        "--read-timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="longest wait for each read from the server (default %(default)s)",
    )
    p.add_argument(
        "--retries",
        type=nonnegative_int,
        default=retries,
        metavar="N",
        help="retries per request on timeouts, HTTP 429/5xx, broken connections, truncated "
        "bodies and garbage answers (HTML instead of JSON or an image) (default %(default)s)",
    )


def require_inputs(**options: Any) -> None:
    """Refuse, before any heavy import or work, input paths that do not exist.

    Args:
        options: option name (``checkpoint`` for ``--checkpoint``) -> a path, a list of
            paths or None (not given). A path must exist (a file or a folder, as the
            option takes it).

    Raises:
        MissingDataError: naming the option and the path.
    """
    from pathlib import Path

    from fdflare.core.errors import MissingDataError

    for name, value in options.items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path is not None and not Path(path).exists():
                flag = "--" + name.replace("_", "-")
                raise MissingDataError(f"{flag} {path}: no such file or folder")
