"""The one file lock (fdflare.core.locks): refuses a second holder, and fdflare imports without fcntl."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fdflare
from fdflare.core.locks import LOCKING, lock_file, unlock_file

PACKAGE = Path(fdflare.__file__).parent
posix = pytest.mark.skipif(LOCKING != "fcntl", reason="POSIX locks (fcntl) only")


@posix
def test_lock_refuses_a_second_holder_until_released(tmp_path):
    path = tmp_path / "x.lock"
    with open(path, "a+") as first, open(path, "a+") as second:
        assert lock_file(first)
        assert not lock_file(second)  # another open of the file: refused at once
        assert not lock_file(second.fileno())
        unlock_file(first)
        assert lock_file(second)
        assert not lock_file(first)
    with open(path, "a+") as third:  # closing released it
        assert lock_file(third, blocking=True)


@posix
def test_lock_refuses_a_holder_in_another_process(tmp_path):
    path = tmp_path / "x.lock"
    child = textwrap.dedent(
        f"""
        import sys
        from fdflare.core.locks import lock_file
        fh = open({str(path)!r}, "a+")
        print("held" if lock_file(fh) else "refused", flush=True)
        sys.stdin.read()  # hold it until the parent closes our stdin
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "held"
        with open(path, "a+") as fh:
            assert not lock_file(fh)
            proc.stdin.close()
            assert proc.wait() == 0
            assert lock_file(fh, blocking=True)  # the holder exited: free again
    finally:
        if proc.poll() is None:  # pragma: no cover - only when an assertion failed
            proc.kill()
            proc.wait()


def test_fdflare_imports_and_locks_without_fcntl(tmp_path):
    """With ``fcntl`` unimportable (as on Windows), every locking module imports, the CLI
    parser builds, and a lock is taken with one warning instead of failing."""
    code = textwrap.dedent(
        f"""
        import sys
        import warnings
        sys.modules["fcntl"] = None  # import fcntl now raises ImportError
        import fdflare.acquire.helioviewer.manifest
        import fdflare.core.outputs
        import fdflare.forecast.formats
        import fdflare.reports.cv
        import fdflare.serve.run
        from fdflare.cli import build_parser
        from fdflare.core.locks import LOCKING, LockUnavailableWarning, lock_file
        from fdflare.core.outputs import output_lock
        build_parser()
        assert LOCKING == "none", LOCKING
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with output_lock({str(tmp_path / "out")!r}, command="label"):
                pass
            with open({str(tmp_path / "x.lock")!r}, "a+") as fh:
                assert lock_file(fh)
        kinds = [w.category for w in caught]
        assert kinds == [LockUnavailableWarning], kinds
        print("ok")
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_only_core_locks_imports_fcntl():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if {"fcntl", "msvcrt"} & set(names):
                rel = path.relative_to(PACKAGE).as_posix()
                assert rel == "core/locks.py", f"{rel}:{node.lineno} imports a lock module"


@posix
def test_every_caller_refuses_a_second_holder(tmp_path):
    """The service's store lock and the cv merge lock go through the same helper."""
    from fdflare.core.errors import BusyError
    from fdflare.reports.cv import _merge_lock
    from fdflare.serve.run import service_lock

    store = tmp_path / "forecasts.sqlite"
    with service_lock(store):
        with pytest.raises(BusyError, match="another `fdflare serve` runs on"):
            with service_lock(store):
                pass  # pragma: no cover - never entered
    with service_lock(store):  # released
        pass
    with _merge_lock(tmp_path):  # blocking: taken at once when free
        with open(tmp_path / ".cv_summary.lock", "a+") as fh:
            assert not lock_file(fh)
    with open(tmp_path / ".cv_summary.lock", "a+") as fh:
        assert lock_file(fh)


def test_a_platform_without_locks_is_one_warning_line_from_the_cli(tmp_path):
    """The warning reads as the CLI's own lines do, not as a Python warning with its source."""
    out = tmp_path / "s"
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["fcntl"] = None
        sys.modules["msvcrt"] = None
        from fdflare.cli import main
        sys.exit(main(["synth", "--out", {str(out)!r}, "--end", "2011-01-01T01:00",
                       "--image-size", "16", "--quiet"]))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fdflare synth: warning: no file locking on this platform"), lines
    assert (out / "synth.json").is_file()


@posix
def test_the_store_lock_of_a_failed_start_is_removed_and_never_shared(tmp_path, monkeypatch):
    """A start that made no store leaves no lock file; a lock file removed while another
    start waited on it is not taken: the waiter takes the file that the path names."""
    import os
    import threading

    from fdflare.serve.run import service_lock

    store = tmp_path / "forecasts.sqlite"
    lock = tmp_path / "forecasts.sqlite.serve.lock"
    with service_lock(store):
        assert lock.is_file()
    assert not lock.exists()  # no store was made: nothing is left
    with service_lock(store):
        store.write_bytes(b"")  # the service made its store: the lock file stays
    assert lock.is_file()
    store.unlink()
    lock.unlink()

    # A holds a new lock; B opens the same file, and A fails and removes it before B locks
    import fdflare.serve.run as run_module

    entered, go_on, done = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with service_lock(store):
            entered.set()
            go_on.wait(10)
        done.set()

    real = run_module.lock_file
    calls = []

    def between_open_and_lock(fd):  # B's first lock: A goes away first
        calls.append(fd)
        if len(calls) == 1:
            go_on.set()
            assert done.wait(10)
        return real(fd)

    thread = threading.Thread(target=a)
    thread.start()
    assert entered.wait(10)
    monkeypatch.setattr(run_module, "lock_file", between_open_and_lock)
    with service_lock(store):
        # B locked the removed file first, saw that the path no longer names it, and took
        # the file the path names now: the one any later start will find
        assert len(calls) == 2 and lock.is_file()
        other = os.open(lock, os.O_RDWR)
        assert not real(other)  # held
        os.close(other)
    thread.join(10)
    assert not lock.exists()
