"""Progress output read in a log: plain lines when stderr is not a terminal, numbered steps."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from fdflare.core.progress import LineProgress, progress_bar
from fdflare.reports.demo import STEPS

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path) -> tuple[int, bytes, bytes]:
    """Run the CLI in a child process with stdout and stderr written to files (no terminal)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with out.open("wb") as fo, err.open("wb") as fe:
        rc = subprocess.run(
            [sys.executable, "-m", "fdflare", *args],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            check=False,
            timeout=120,
        ).returncode
    return rc, out.read_bytes(), err.read_bytes()


def test_synth_to_a_file_writes_plain_progress_lines(tmp_path):
    rc, _, err = _run(
        [
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--start",
            "2011-01-01",
            "--end",
            "2011-01-02",
            "--cadence",
            "1h",
            "--image-size",
            "32",
            "--workers",
            "1",
        ],
        tmp_path,
    )
    assert rc == 0, err
    assert b"\r" not in err and b"\x1b" not in err, err
    lines = err.decode().splitlines()
    progress = [line for line in lines if line.startswith("synth: ")]
    # one line per tenth of the work, ending at all of it, each a whole line
    assert 5 <= len(progress) <= 10, lines
    assert progress[-1] == "synth: 100% (24/24 img)"
    done = [int(re.match(r"synth: \d+% \((\d+)/24 img\)", p).group(1)) for p in progress]
    assert done == sorted(done) and len(set(done)) == len(done)


def test_quiet_synth_writes_no_progress(tmp_path):
    args = ["synth", "--out", str(tmp_path / "s"), "--start", "2011-01-01", "--end"]
    args += ["2011-01-01T04:00", "--image-size", "32", "--workers", "1", "--quiet"]
    rc, _, err = _run(args, tmp_path)
    assert rc == 0 and b"synth:" not in err, err


def test_line_progress_prints_each_tenth_once(monkeypatch):
    buf = io.StringIO()
    bar = LineProgress(range(25), desc="predict", unit="batch", file=buf)
    assert list(bar) == list(range(25))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in buf.getvalue()
    assert lines[0] == "predict: 12% (3/25 batch)" and lines[-1] == "predict: 100% (25/25 batch)"
    # counts after the fraction, as tqdm's postfix
    buf = io.StringIO()
    bar = LineProgress(total=4, desc="download", unit="img", initial=1, file=buf)
    bar.set_postfix({"ok": 1, "gap": 1}, refresh=False)
    bar.update(3)
    assert buf.getvalue() == "download: 100% (4/4 img), ok 1, gap 1\n"
    # off (--quiet): nothing at all, but it still counts and iterates
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet = progress_bar(range(3), desc="x", enabled=False)
    assert list(quiet) == [0, 1, 2] and sys.stderr.getvalue() == ""
    # enabled, stderr not a terminal: plain lines, never a tqdm bar
    assert isinstance(progress_bar(total=3, desc="x"), LineProgress)


def test_demo_steps_are_the_steps_the_docs_list():
    text = (ROOT / "docs" / "demo.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `fdflare (\w+)", text, flags=re.M)
    assert [int(n) for n, _ in rows] == list(range(1, len(rows) + 1))
    assert tuple(stage for _, stage in rows) == STEPS


def test_synth_on_a_terminal_draws_a_bar(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    args = ["synth", "--out", str(tmp_path / "s"), "--start", "2011-01-01", "--end"]
    args += ["2011-01-01T04:00", "--image-size", "32", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "fdflare", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child_fd,
        env=env,
        check=False,
        timeout=120,
    )
    os.close(child_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the terminal closed: all read
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    assert proc.returncode == 0, shown
    # tqdm's bar, redrawn in place, not the plain lines of a log
    assert b"\r" in shown and b"4/4" in shown and b"synth: 100% (4/4 img)" not in shown
