"""The one CLI grammar: argument types that validate before any work, and deprecated aliases.

Every command uses these, so that one name means one thing everywhere:

* ``--out``: where the command writes (a folder, or a file where it writes one).
* ``--images``: an image folder (or array store, or a text file listing images).
* ``--image-size``: image width = height in pixels (``--size``: deprecated alias).
* ``--start/--end``: a half-open time range, ``--start`` included, ``--end`` excluded
  (``verify --since/--until``: deprecated aliases).
* ``--workers``: worker processes (decode, render, data loading).
* ``--concurrency``: requests in flight (download, HEK).
* ``--accelerator``: where the work runs, ``auto``, ``cpu``, ``gpu`` (= ``cuda``), ``mps``
  or ``tpu`` (:func:`accelerator`: one set of choices everywhere, an accelerator this
  machine lacks refused as the option is read; only training runs on ``tpu``);
  ``--devices`` how many.
* ``--quiet``: no progress bars or per-item lines; the final summary still prints.
* ``--json``: print one JSON object (what the text report says: counts, output paths,
  notes) on stdout instead of the text report; a flag in every command that has it
  (``bench --json FILE``: deprecated, use ``--out FILE``).
* ``--catalog-format``: the format of a flare catalog file (``catalog --source-format``:
  deprecated alias).
* ``--base-url``: the address of the server a command asks (``catalog --hek-url``:
  deprecated alias).
* ``--connect-timeout/--read-timeout``: seconds to wait for a connection / for each read
  (``catalog --timeout``: deprecated alias that sets both); ``--retries``: retries per
  request.
* ``--backoff/--backoff-max``: seconds before the first retry, doubled for each further
  one, and the longest wait (``catalog --retry-wait``: deprecated alias).
* ``--explain-method``: the attribution method (``explain --method``: deprecated alias;
  ``--method`` is ``calibrate``'s calibration method).
* ``--holdout-fraction``: the share of training held out for selection, the config key
  ``holdout_fraction`` (``--holdout``: deprecated alias).

Old spellings stay for one release as deprecated aliases (:func:`add_deprecated_alias`):
they work, print one warning line on stderr, and are hidden from ``--help``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fdflare.training.runtime import ACCELERATORS


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
        if getattr(self, "_warned", False):  # warn once, however often it is given
            setattr(namespace, self.dest, True if self.inner == "store_true" else values)
            return
        self._warned = True
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
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
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


#: what every ``--accelerator`` takes: the one list, :data:`fdflare.training.runtime.ACCELERATORS`
ACCELERATOR_CHOICES = ACCELERATORS


def accelerator(text: str) -> str:
    """An ``--accelerator`` value that this machine has (``auto`` and ``cpu`` always).

    Raises:
        argparse.ArgumentTypeError: an unknown name, or an accelerator this machine lacks
            (:func:`fdflare.training.config.accelerator_problem`).
    """
    value = text.strip().lower()
    if value not in ACCELERATOR_CHOICES:
        raise argparse.ArgumentTypeError(
            f"expected auto, cpu, gpu (= cuda), mps or tpu, got {text!r}"
        )
    if value not in ("auto", "cpu"):
        from fdflare.training.runtime import accelerator_problem

        problem = accelerator_problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
    return value


def add_accelerator_option(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str | None = "auto",
    help: str = "where the work runs",
) -> None:
    """The one ``--accelerator`` option (see :func:`accelerator`)."""
    shown = f" (default {default})" if default is not None else ""
    p.add_argument(
        "--accelerator",
        type=accelerator,
        choices=ACCELERATOR_CHOICES,
        default=default,
        metavar="{" + ",".join(ACCELERATOR_CHOICES) + "}",
        help=f"{help}: auto, cpu, gpu (= cuda), mps or tpu{shown}",
    )


def add_json_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The one ``--json`` flag: one JSON object on stdout instead of the text report."""
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (counts, output paths, notes) instead of the text report",
    )


def _plain(value: Any) -> Any:
    """``value`` as plain JSON: paths as strings, times in ISO 8601, nan and inf ``None``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "isoformat"):  # datetime, pandas Timestamp
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist())
    return str(value)


class _JsonFlag(argparse.Action):
    """``--json``: the flag; ``--json FILE`` (the old ``bench`` spelling): ``--out FILE``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values is None:
            namespace.json = True
            return
        print(
            f"{parser.prog}: warning: --json FILE is deprecated and will be removed in the next "
            "release; use --out FILE (--json now prints the result on stdout)",
            file=sys.stderr,
        )
        namespace.out = values


def add_json_flag_or_legacy_file(p: argparse.ArgumentParser) -> None:
    """``--json`` of a command whose ``--json FILE`` wrote a file (now ``--out FILE``).

    ``--json`` alone is the flag of every command; ``--json FILE`` still works for one
    release, with a warning, as ``--out FILE``.
    """
    p.add_argument(
        "--json",
        action=_JsonFlag,
        nargs="?",
        default=False,
        metavar="FILE",
        help="print one JSON object instead of the text report (--json FILE: deprecated, "
        "use --out FILE)",
    )


def print_json(result: dict[str, Any]) -> None:
    """Print ``result`` as one JSON object on one line of stdout.

    Paths and times become strings, nan and inf ``null``.
    """
    import json

    print(json.dumps(_plain(result), allow_nan=False))


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


def add_http_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, *, retries: int) -> None:
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


def read_history_catalog(args: argparse.Namespace) -> Any:
    """The ``--catalog`` of a history map (``forecast``, ``predict``), or None when not given.

    Raises:
        UsageError: ``--catalog`` without ``--calibration``.
        InputError: the catalog cannot be read, or lists no flare (naming the file).
    """
    from fdflare.core.errors import InputError, UsageError

    if not args.catalog:
        return None
    if not args.calibration:
        raise UsageError(
            "--catalog is read only by a history map: give --calibration FILE of `fdflare "
            "calibrate --method history` too"
        )
    require_inputs(catalog=args.catalog)
    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.history import check_catalog

    catalog = read_catalog(args.catalog, fmt=args.catalog_format)
    try:
        check_catalog(catalog, what="the flare history of a history map")
    except InputError as exc:
        raise InputError(exc.message, path=args.catalog) from None
    return catalog


def load_members_and_map(
    args: argparse.Namespace, *, history_from: str | None = None
) -> tuple[list[Any], Any]:
    """The members of ``--checkpoint``/``--ensemble`` and the ``--calibration`` map (or None).

    What ``predict``, ``forecast`` and ``serve`` load, by the one set of rules of
    :func:`fdflare.forecast.ensemble.load_checkpoints_or_ensemble`; the map is read first,
    so a bad map is refused before any model loads. ``history_from`` says where a command
    reads the flare history a ``history`` map needs: ``"--catalog"`` (``forecast``: the map
    and the option go together both ways), ``"the flare list"`` (``serve``), or None (the
    command reads none, and refuses such a map).
    """
    cal = None
    if args.calibration:
        from fdflare.analysis.calibration import METHODS, MONOTONE, read_calibration_map

        cal = read_calibration_map(args.calibration, methods=METHODS if history_from else MONOTONE)
    if history_from == "--catalog":
        from fdflare.core.errors import InputError, UsageError

        history = cal is not None and cal.method == "history"
        if history and not args.catalog:
            raise InputError(
                "calibration map: a history map reads the flare history: give --catalog FILE "
                "(the flares up to the observation)",
                path=args.calibration,
                field="method",
            )
        if args.catalog and not history:
            raise UsageError(
                "--catalog is read only by a history map (--calibration of `fdflare calibrate "
                "--method history`)"
            )
    from fdflare.forecast.ensemble import load_checkpoints_or_ensemble

    members = load_checkpoints_or_ensemble(
        checkpoints=args.checkpoint,
        ensemble=args.ensemble,
        model=args.model,
        image_size=args.image_size,
    )
    return members, cal


#: JSOC's binning factors, as ``fdflare.acquire.jsoc.client.REBIN_FACTORS`` (not imported
#: here: that module loads the HTTP stack, and ``--help`` should not)
REBIN_CHOICES = (1, 2, 4, 8, 16)


def add_rebin_option(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, *, goes_with: str, what: str
) -> None:
    """``--rebin N`` (or serve's ``--jsoc-rebin N``): JSOC bins ``what`` N x N before sending it."""
    p.add_argument(
        flag,
        type=int,
        choices=REBIN_CHOICES,
        default=None,
        metavar="N",
        help=f"have JSOC bin {what} N x N before sending it ({goes_with}; 1, 2, 4, 8 or 16; "
        "default 1, the 4096 x 4096 record of about 14 MB; 8 sends the study's 512 x 512 in "
        "about 0.3 MB)",
    )
