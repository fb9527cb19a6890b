"""The ``fdflare`` command line: one subcommand per pipeline stage.

Each subcommand lives in ``fdflare.commands.<name>`` and provides ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import only light
modules at top level; the heavy work is imported inside ``run``. A command module that does
not import is a bug and fails loudly: no command is dropped from a build in silence.

Every error the user can mend is one line on stderr, ``fdflare COMMAND: error: ...``, with
the exit status of :mod:`fdflare.core.errors` (0 done, 1 some items failed, 2 bad arguments
or input, 3 a run failed, 130 interrupted).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from fdflare import __version__
from fdflare.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, FdflareError

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
    "forecast",
    "serve",
    "verify",
    "baseline",
    "evaluate",
    "calibrate",
    "spatial",
    "explain",
    "reproduce",
    "report",
    "demo",
    "bench",
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``fdflare COMMAND: error: ...``."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the command and the problem; exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand."""
    parser = Parser(
        prog="fdflare",
        description="Full-disk solar flare forecasting: one subcommand per pipeline stage.",
        epilog="exit status: 0 done, 1 done but some items failed, 2 bad arguments or input, "
        "3 a run failed, 4 no observation to forecast from (forecast), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"fdflare {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"fdflare.commands.{name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        if not any("--quiet" in a.option_strings for a in p._actions):
            # one grammar: every command takes --quiet; here it silences the command's
            # report on stdout (files are written as usual; errors and warnings still show)
            p.add_argument(
                "--quiet",
                action="store_true",
                dest="_silence_stdout",
                help="print no report on stdout (outputs are still written; --json still "
                "prints; errors and warnings still go to stderr)",
            )
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    import warnings

    shown = warnings.showwarning
    warnings.showwarning = _own_warnings_in_one_line(args.command, shown)
    try:
        return _run(args)
    finally:
        warnings.showwarning = shown


def _own_warnings_in_one_line(command: str, shown: Any) -> Any:
    """A ``warnings.showwarning`` that prints fdflare's own warnings as the CLI's one line.

    ``fdflare CMD: warning: ...`` like its errors; other libraries' warnings are shown as
    Python shows them.
    """

    def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if category.__module__.startswith("fdflare."):
            print(f"fdflare {command}: warning: {_one_line(str(message))}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    return show


def _run(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "_silence_stdout", False) and not getattr(args, "json", False):
            # --quiet silences the report; with --json the JSON is what was asked for
            import contextlib

            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                status = int(args._run(args) or 0)
        else:
            status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except FdflareError as exc:
        print(f"fdflare {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"fdflare {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (``fdflare evaluate ... | head``): stop quietly
        # and keep Python from complaining about the closed stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as the shell reports a process ended by a closed pipe
    except OSError as exc:
        # the system refused something the checks up front could not foresee (disk full,
        # permissions changed during the run): one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fdflare {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
