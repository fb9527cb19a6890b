"""Command-line options generated from a config dataclass: one source for every setting.

Each field of a config dataclass (:class:`fdflare.training.config.TrainConfig`, the demo's
:class:`fdflare.reports.demo.DemoConfig`) carries its help text, choices and range as field
metadata (:func:`fdflare.training.config.setting`). :func:`add_options` turns every field
into an option:

* ``field_name`` -> ``--field-name`` (or the field's ``flag``), ``metavar`` from the field;
* booleans -> ``--name`` / ``--no-name`` (``argparse.BooleanOptionalAction``);
* the value is parsed and checked by the field's own check
  (:func:`fdflare.training.config.field_problem`), so ``--lr nan`` or ``--batch-size 0``
  is a one-line usage error naming the option, before any work;
* every default is ``None`` ("not given"), so :func:`given_values` returns only what was
  typed; the help shows the real default.

:func:`config_argv` goes the other way: the options that rebuild a config (for ``cv``'s
per-run ``fdflare train`` processes and SLURM scripts).
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Iterable
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from fdflare.commands._common import ACCELERATOR_CHOICES, accelerator, add_deprecated_alias
from fdflare.training.config import default_of, field_problem

#: old option names of config fields, accepted for one release with a warning
DEPRECATED_FLAGS = {"holdout_fraction": ("--holdout",)}


def option_name(f: Field[Any]) -> str:
    """The option of a config field: its ``flag`` metadata, else ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


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
        if int in args:
            try:
                value = int(text)
            except ValueError:
                if str not in args:
                    raise argparse.ArgumentTypeError(
                        f"expected a whole number, got {text!r}"
                    ) from None
        elif float in args:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
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


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: Any = None,
) -> list[str]:
    """Add one option per field of the dataclass ``cls``; return the field names added.

    Args:
        parser: the parser or argument group.
        cls: the config dataclass.
        exclude: fields that get no option (the command sets them otherwise).
        defaults: an instance whose values the help shows as defaults (else the fields').
    """
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    added = []
    for f in fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        m = f.metadata
        hint = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else default_of(f)
        help_text = f"{m['help']} (default {_show(default)})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if _is_bool(hint):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "accelerator":  # the one --accelerator of every command
            kwargs["type"] = accelerator
            kwargs["choices"] = ACCELERATOR_CHOICES
            kwargs["metavar"] = "{" + ",".join(ACCELERATOR_CHOICES) + "}"
        else:
            if typing.get_origin(hint) in (tuple, list):
                kwargs["type"] = list_type(f, hint)
                kwargs["metavar"] = m.get("metavar") or "LIST"
            else:
                kwargs["type"] = value_type(f, hint)
                choices = m.get("choices")
                if choices is not None and m.get("low") is None:
                    kwargs["metavar"] = m.get("metavar") or "{" + ",".join(map(str, choices)) + "}"
                else:
                    kwargs["metavar"] = m.get("metavar") or f.name.upper()
        parser.add_argument(option_name(f), **kwargs)
        for old in DEPRECATED_FLAGS.get(f.name, ()):
            add_deprecated_alias(
                parser,
                old,
                option_name(f),
                dest=f.name,
                type=kwargs.get("type"),
            )
        added.append(f.name)
    return added


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
