"""Running the real CLI in-process from tests."""

from __future__ import annotations

import pytest

from fdflare.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``fdflare ARGV`` in-process: (exit status, stderr), argparse's exits included."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err
