"""``fdflare forecast``."""

from __future__ import annotations

import argparse

HELP = "forecast (in development)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare forecast``."""


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from fdflare.core.errors import UsageError

    raise UsageError("fdflare forecast is not available in this build")
