"""Settings written once: a dataclass field carries its default, help, choices and range.

A config dataclass (``TrainConfig``, ``DemoConfig``, ``SynthConfig``, ``LabelConfig``,
``SpatialConfig``) declares each setting with :func:`setting`. From that one declaration

* :func:`validate` checks a config, one message naming the field (:func:`field_problem`);
* :func:`updated` applies a mapping (a YAML or JSON file read by :func:`read_settings`),
  refusing unknown keys and values of the wrong type, naming the file and the key;
* :func:`add_options` generates the command-line options: ``--field-name`` (or the field's
  ``flag``), the help with the default and the range from the field's own bounds, a type
  that parses and checks the value as the option is read (``--lr nan`` is a one-line
  usage error naming the option); :func:`given_values` returns what was typed and
  :func:`config_argv` goes the other way (the options that rebuild a config);
* :func:`option_error` turns an error found later, by a check across fields that names
  a field, into one naming the option.

:func:`check_time` and :func:`check_duration` are the checks of time and duration settings.
Only the standard library is imported up front (PyYAML when a YAML file is read, pandas
when a time or duration is checked): building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from fdflare.core.errors import FdflareError, InputError, UsageError

__all__ = [
    "add_options",
    "check_duration",
    "check_time",
    "coerce",
    "config_argv",
    "default_of",
    "field_problem",
    "given_values",
    "option_error",
    "option_name",
    "read_settings",
    "setting",
    "updated",
    "validate",
]

_YAML_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    metavar: str | None = None,
    path: bool = False,
    runtime: bool = False,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A config field with its help, choices and range (read by validation and the CLI).

    Args:
        default: the default value.
        help: one line for ``--help`` and the docs (the range and default are added).
        choices: the allowed values.
        low: smallest allowed value (``low_open``: excluded).
        high: largest allowed value (``high_open``: excluded).
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
        flag: the command-line option, when not ``--field-name``.
        aliases: old spellings of the option, accepted with a deprecation warning.
        metavar: the value's name in ``--help``.
        path: the value is a file or folder (made absolute on the command line).
        runtime: free to change when a run is resumed (hardware, paths, loading).
        check: a further check of one value (a time, a duration, a class): returns what
            is wrong, or ``None``.
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "flag": flag,
        "aliases": tuple(aliases),
        "metavar": metavar,
        "path": path,
        "runtime": runtime,
        "check": check,
    }
    return field(default=default, metadata=meta)


def field_problem(f: Field[Any], value: Any) -> str | None:
    """Return what is wrong with ``value`` for the field ``f`` (``None``: nothing).

    Checks the field's choices and range, that numbers are finite, and its own ``check``.
    """
    m = f.metadata
    if value is None:
        return None
    choices = m.get("choices")
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if choices is not None and value not in choices and not isinstance(value, bool):
        if m.get("low") is not None and not is_number:  # a number or "auto"
            words = range_words(m)
            words = f"of {words}" if words.startswith("at ") else words
            return f"must be {' or '.join(map(str, choices))} or a number {words}"
        if m.get("low") is None:
            return f"choose one of {', '.join(map(str, choices))}"
    if is_number:
        low, high = m.get("low"), m.get("high")
        if low is not None and (value < low or (m.get("low_open") and value == low)):
            return _range_problem(m)
        if high is not None and (value > high or (m.get("high_open") and value == high)):
            return _range_problem(m)
    check = m.get("check")
    if check is not None:
        return check(value)
    return None


def _range_problem(m: Mapping[str, Any]) -> str:
    words = range_words(m)
    return f"must lie {words}" if words.startswith("in ") else f"must be {words}"


def range_words(m: Mapping[str, Any]) -> str:
    """A field's bounds in words: ``in [0, 1]``, ``at least 1``, ``above 0``."""
    low, high = m.get("low"), m.get("high")
    if low is None and high is None:
        return ""
    if high is None:
        return f"{'above' if m.get('low_open') else 'at least'} {_num(low)}"
    if low is None:
        return f"{'below' if m.get('high_open') else 'at most'} {_num(high)}"
    left = "(" if m.get("low_open") else "["
    right = ")" if m.get("high_open") else "]"
    return f"in {left}{_num(low)}, {_num(high)}{right}"


def _num(x: Any) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def default_of(f: Field[Any]) -> Any:
    """A field's default value."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ValueError(f"field {f.name} has no default")


# --------------------------------------------------------------------------- checks


def check_time(value: Any) -> str | None:
    """The check of a time setting: ISO 8601 (:func:`fdflare.core.timeparse.parse_time`)."""
    import pandas as pd

    from fdflare.core.timeparse import parse_time

    try:
        t = parse_time(value, whole_seconds=False)
    except InputError as exc:
        return exc.message
    except (ValueError, TypeError, OverflowError):
        return "expected an ISO 8601 time such as 2011-01-01 00:00:00"
    return "expected a time, not NaT" if pd.isna(t) else None


def check_duration(above: str) -> Callable[[Any], str | None]:
    """The check of a duration setting (``1h``, ``24h``) longer than ``above`` (``"0s"``)."""

    def check(value: Any) -> str | None:
        import pandas as pd

        try:
            d = pd.Timedelta(value)
        except (ValueError, TypeError, OverflowError):
            return "expected a duration such as 1h or 24h"
        if pd.isna(d) or d <= pd.Timedelta(above):
            return f"expected a duration above {above}"
        return None

    return check


def validate(obj: Any, *, path: str | os.PathLike[str] | None = None) -> None:
    """Check each field of the dataclass ``obj`` against its metadata.

    Raises:
        InputError: naming the first bad field and its value.
    """
    for f in fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, (tuple, list)) else [value]
        for v in values:
            problem = field_problem(f, v)
            if problem:
                raise InputError(f"{v!r}: {problem}", path=path, field=f.name)


def updated(obj: Any, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None) -> Any:
    """Return a copy of the dataclass ``obj`` with ``values`` applied and checked.

    Raises:
        InputError: an unknown name, a value of the wrong type or out of range, naming the field.
    """
    hints = typing.get_type_hints(type(obj))
    known = {f.name: f for f in fields(obj) if f.init}
    new = {name: getattr(obj, name) for name in known}
    for key, value in values.items():
        if key not in known:
            raise InputError(
                f"unknown setting (known: {', '.join(sorted(known))})", path=path, field=key
            )
        new[key] = coerce(value, hints[key], key, path)
    cfg = type(obj)(**new)
    validate(cfg, path=path)
    return cfg


def coerce(value: Any, hint: Any, key: str, path: str | os.PathLike[str] | None) -> Any:
    """Check ``value`` against a field's type hint; ints are accepted for floats.

    Raises:
        InputError: a value of another type, naming the field.
    """
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{value!r} is not a mapping", path=path, field=key)
        return dict(value)
    if origin in (tuple, list):
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{value!r} is not a list", path=path, field=key)
        return tuple(coerce(v, item, key, path) for v in value)
    args = typing.get_args(hint) or (hint,)
    if value is None and type(None) in args:
        return None
    for t in args:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str) and _YAML_FLOAT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        if t is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in args)
    raise InputError(f"{value!r} is not a valid value (expected {names})", path=path, field=key)


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config file: one YAML or JSON mapping of settings (``.json``: JSON, else YAML).

    Raises:
        InputError: a missing or unreadable file, bad syntax (with its line), or no mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such config file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a UTF-8 text file ({exc})", path=path) from exc
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from exc
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InputError(f"not valid YAML: {problem}", path=path, line=line) from exc
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InputError("a config file holds one mapping of settings (name: value)", path=path)
    return values


# --------------------------------------------------------------------------- command line


def option_name(f: Field[Any]) -> str:
    """The option of a config field: its ``flag`` metadata, else ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def option_error(exc: InputError, cls: type) -> FdflareError:
    """``exc`` naming the option of its field, when it names a field of ``cls`` and no file.

    A check across fields (an end before its start, a bin that does not divide the limb
    longitude) names a field; on the command line the user typed an option.
    """
    if exc.path is None and exc.field is not None:
        by_name = {f.name: f for f in fields(cls) if "help" in f.metadata}
        if exc.field in by_name:
            return UsageError(f"{option_name(by_name[exc.field])}: {exc.message}")
    return exc


def _is_bool(hint: Any) -> bool:
    args = set(typing.get_args(hint)) or {hint}
    return bool in args and args <= {bool, type(None)}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if value is None or value == "":
        return "none"
    return str(value)


def value_type(f: Field[Any], hint: Any) -> Callable[[str], Any]:
    """An argparse type for one value of the field ``f``, checked by the field's own rules."""
    args = [a for a in (typing.get_args(hint) or (hint,)) if a is not type(None)]
    if typing.get_origin(hint) in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]

    def parse(text: str) -> Any:
        value: Any = text
        number = int if int in args else float if float in args else None
        if number is not None:
            try:
                value = number(text)
            except ValueError:
                choices = f.metadata.get("choices") or ()
                folded = text.strip().lower()
                if choices and folded in choices:  # `--b0 AUTO` as `--b0 auto`
                    text = value = folded
                if str not in args or (choices and text not in choices):
                    problem = field_problem(f, text) if str in args else None
                    what = "a whole number" if number is int else "a number"
                    raise argparse.ArgumentTypeError(
                        f"{text!r}: {problem}" if problem else f"expected {what}, got {text!r}"
                    ) from None
        problem = field_problem(f, value)
        if problem:
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
        return value

    parse.__name__ = f.name  # argparse names the type in some messages
    return parse


def list_type(f: Field[Any], hint: Any) -> Callable[[str], tuple[Any, ...]]:
    """An argparse type for a comma-separated list of the field's values (duplicates refused)."""
    one = value_type(f, hint)

    def parse(text: str) -> tuple[Any, ...]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        values = tuple(one(t) for t in items)
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:
            raise argparse.ArgumentTypeError(f"{', '.join(dup)} given more than once in {text!r}")
        return values

    return parse


def help_text(f: Field[Any], default: Any) -> str:
    """A field's help with its range (from its bounds) and its default."""
    m = f.metadata
    bounds = range_words(m)
    extra = f"{bounds}; " if bounds else ""
    text = f"{m['help']} ({extra}default {_show(default)})"
    return text.replace("%", "%%")  # argparse formats the help with %


@dataclass(frozen=True)
class Option:
    """An option generated from a field: its name, its argparse keywords, its old spellings."""

    field: str
    flag: str
    kwargs: dict[str, Any]
    aliases: tuple[str, ...]


def options(
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: Any = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Option]:
    """The options of the fields of the dataclass ``cls`` (see :func:`add_options`)."""
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    result = []
    for f in fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        m = f.metadata
        hint = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else default_of(f)
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text(f, default)}
        if _is_bool(hint):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) in (tuple, list):
            kwargs["type"] = list_type(f, hint)
            kwargs["metavar"] = m.get("metavar") or "LIST"
        else:
            kwargs["type"] = value_type(f, hint)
            choices = m.get("choices")
            if choices is not None and m.get("low") is None:
                kwargs["metavar"] = m.get("metavar") or "{" + ",".join(map(str, choices)) + "}"
            else:
                kwargs["metavar"] = m.get("metavar") or f.name.upper()
        kwargs.update((overrides or {}).get(f.name, {}))
        result.append(Option(f.name, option_name(f), kwargs, tuple(m.get("aliases") or ())))
    return result


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: Any = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Option]:
    """Add one option per field of the dataclass ``cls``; return them.

    * ``field_name`` -> ``--field-name`` (or the field's ``flag``), ``metavar`` from the field;
    * booleans -> ``--name`` / ``--no-name`` (``argparse.BooleanOptionalAction``);
    * the value is parsed and checked by :func:`field_problem`;
    * every default is ``None`` ("not given"), so :func:`given_values` returns only what
      was typed; the help shows the real default and the field's range.

    The fields' old spellings (``aliases``) are the caller's to add (the CLI's deprecated
    aliases print a warning).

    Args:
        parser: the parser or argument group.
        cls: the config dataclass.
        exclude: fields that get no option (the command sets them otherwise).
        defaults: an instance whose values the help shows as defaults (else the fields').
        overrides: field name -> argparse keywords replacing the generated ones.
    """
    made = options(cls, exclude=exclude, defaults=defaults, overrides=overrides)
    for opt in made:
        parser.add_argument(opt.flag, **opt.kwargs)
    return made


def given_values(args: argparse.Namespace, cls: type, names: Iterable[str]) -> dict[str, Any]:
    """The values of the options that were given (paths made absolute)."""
    by_name = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        if by_name[name].metadata.get("path") and isinstance(value, str) and value:
            value = str(Path(value).expanduser().resolve())
        values[name] = value
    return values


def config_argv(config: Any, *, exclude: Iterable[str] = ()) -> list[str]:
    """The options that rebuild ``config`` from the defaults: one per field that differs."""
    skip = set(exclude)
    argv: list[str] = []
    for f in fields(config):
        if f.name in skip or "help" not in f.metadata:
            continue
        value = getattr(config, f.name)
        if value == default_of(f) or value is None:
            continue
        opt = option_name(f)
        if isinstance(value, bool):
            argv.append(opt if value else "--no-" + opt[2:])
        elif isinstance(value, (tuple, list)):
            argv += [opt, ",".join(map(str, value))]
        else:
            argv += [opt, repr(value) if isinstance(value, float) else str(value)]
    return argv
