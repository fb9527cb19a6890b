"""``fdflare bench``."""

from __future__ import annotations

import argparse

HELP = "bench (in development)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare bench``."""


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from fdflare.core.errors import UsageError

    raise UsageError("fdflare bench is not available in this build")
