"""``fdflare explain``."""

from __future__ import annotations

import argparse

HELP = "explain (in development)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare explain``."""


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from fdflare.core.errors import UsageError

    raise UsageError("fdflare explain is not available in this build")
