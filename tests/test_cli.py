import subprocess
import sys

from fdflare import __version__
from fdflare.cli import COMMANDS, build_parser, main


def test_help_lists_the_stages(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in ("label", "evaluate", "spatial", "reproduce"):
        assert name in out


def test_every_listed_command_builds():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) <= set(COMMANDS)
    assert {"label", "evaluate", "spatial", "reproduce"} <= set(sub.choices)


def test_python_dash_m_and_version():
    res = subprocess.run(
        [sys.executable, "-m", "fdflare", "--version"], capture_output=True, text=True, check=True
    )
    assert res.stdout.strip() == f"fdflare {__version__}"


def test_cli_import_stays_light():
    code = "import sys, fdflare.cli; fdflare.cli.build_parser(); print(sorted(m for m in ('torch', 'sunpy', 'captum', 'lightning', 'matplotlib') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_atomic_write_leaves_nothing_on_failure_and_normal_mode(tmp_path):
    import os

    import pytest

    from fdflare.core.io import atomic_open, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "b.txt") as fh:
        fh.write("partial")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
