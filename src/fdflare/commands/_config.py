"""Command-line options generated from a config dataclass: the CLI grammar's side.

The options come from the fields (:mod:`fdflare.core.settings`: name, help with range and
default, a type that checks the value as it is read). This module adds what the CLI
grammar (``commands/_common.py``) says on top: ``--accelerator`` is the one accelerator
type of every command, and a field's old spellings (its ``aliases``) are deprecated
aliases, hidden from ``--help``, with one warning.

:func:`config_from_args` builds a command's config: the dataclass's defaults, then the
options given; a check across fields that names a field is reported naming its option.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from fdflare.commands._common import ACCELERATOR_CHOICES, accelerator, add_deprecated_alias
from fdflare.core.errors import InputError
from fdflare.core.settings import (
    config_argv,
    given_values,
    list_type,
    option_error,
    option_name,
    options,
)

__all__ = [
    "add_options",
    "config_argv",
    "config_from_args",
    "given_values",
    "list_type",
    "option_name",
]

#: the one --accelerator of every command
_ACCELERATOR = {
    "type": accelerator,
    "choices": ACCELERATOR_CHOICES,
    "metavar": "{" + ",".join(ACCELERATOR_CHOICES) + "}",
}


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
    made = options(cls, exclude=exclude, defaults=defaults, overrides={"accelerator": _ACCELERATOR})
    for opt in made:
        parser.add_argument(opt.flag, **opt.kwargs)
        for old in opt.aliases:
            add_deprecated_alias(
                parser,
                old,
                opt.flag,
                dest=opt.field,
                type=opt.kwargs.get("type"),
                flag=opt.kwargs.get("action") is argparse.BooleanOptionalAction,
            )
    return [opt.field for opt in made]


def config_from_args(args: argparse.Namespace, cls: type, names: Iterable[str]) -> Any:
    """The config of the options given over ``cls``'s defaults, checked as a whole.

    The config's ``checked()`` (checks across fields, normalised values) runs when it has
    one; an error naming a field names its option.

    Raises:
        UsageError: naming the option.
    """
    from fdflare.core.settings import updated

    try:
        cfg = updated(cls(), given_values(args, cls, names))
        check = getattr(cfg, "checked", None)
        return check() if check is not None else cfg
    except InputError as exc:
        raise option_error(exc, cls) from None
