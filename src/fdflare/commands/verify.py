"""``fdflare verify``."""

from __future__ import annotations

import argparse

HELP = "verify (in development)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare verify``."""


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from fdflare.core.errors import UsageError

    raise UsageError("fdflare verify is not available in this build")
