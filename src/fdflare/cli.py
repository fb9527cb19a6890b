"""The ``fdflare`` command line: one subcommand per pipeline stage.

Each subcommand lives in ``fdflare.commands.<name>`` and provides ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import only light
modules at top level; the heavy work is imported inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fdflare import __version__
from fdflare.errors import FdflareError

# Pipeline order; this is also the order of ``fdflare --help``.
COMMANDS = (
    "download",
    "catalog",
    "synth",
    "prepare",
    "label",
    "train",
    "cv",
    "predict",
    "evaluate",
    "spatial",
    "reproduce",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="fdflare",
        description="Full-disk solar flare forecasting: one subcommand per pipeline stage.",
    )
    parser.add_argument("--version", action="version", version=f"fdflare {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"fdflare.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fdflare.commands.{name}":
                continue  # stage not part of this build
            raise
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except FdflareError as exc:
        print(f"fdflare {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fdflare {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
