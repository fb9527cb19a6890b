"""One guard for every output path, and one lock for every output folder.

Every command checks its outputs before it does any work:

* :func:`check_output_file` and :func:`check_output_dir` refuse an output that resolves to
  one of the command's inputs (so ``predict --out run/last.ckpt`` or ``catalog --source c.csv
  --out c.csv`` cannot destroy the input), an output of the wrong kind (a folder where a file
  is written, or the reverse), and an output whose folder cannot be written;
* :func:`output_lock` takes an exclusive advisory lock on the output folder for the length of
  the run, so two runs writing into one folder cannot mix their files: the second refuses.

The lock lives on a hidden file, ``.fdflare.lock``, which is left in place (deleting a lock
file that another process may be opening is a race); a folder that the run itself created
and that holds nothing else when the run fails is removed again, so a failed run leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from fdflare.core.errors import BusyError, OutputError
from fdflare.core.locks import lock_file

LOCK_NAME = ".fdflare.lock"

PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inputs(inputs: Iterable[PathLike | None]) -> list[tuple[str, Path]]:
    return [(str(p), _resolved(p)) for p in inputs if p is not None and str(p) != ""]


def _nearest_existing(path: Path) -> Path:
    cur = path
    while not cur.exists():
        if cur.parent == cur:
            break
        cur = cur.parent
    return cur


def _check_writable_parent(path: Path, shown: str, option: str) -> None:
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise OutputError(f"{option} {shown}: {anchor} is a file, so no folder can be made there")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {shown}: {anchor} is not writable")


def check_output_file(
    path: PathLike,
    *,
    inputs: Iterable[PathLike | None] = (),
    option: str = "--out",
) -> Path:
    """Check that ``path`` can be written as an output file; return it resolved.

    Args:
        path: the output file.
        inputs: every path the command reads (files or folders; ``None`` is skipped).
        option: the option that named ``path``, for the message.

    Raises:
        OutputError: ``path`` is a folder, resolves to an input, or its folder is not writable.
    """
    shown = str(path)
    out = _resolved(path)
    if out.is_dir():
        raise OutputError(f"{option} {shown} is a folder; expected the path of a file to write")
    for given, inp in _inputs(inputs):
        if _same(out, inp):
            raise OutputError(
                f"{option} {shown} is the input {given}; refusing to overwrite an input"
            )
    if out.exists() and not os.access(out, os.W_OK):
        raise OutputError(f"{option} {shown} is not writable")
    _check_writable_parent(out.parent, shown, option)
    return out


def check_output_dir(
    path: PathLike,
    *,
    inputs: Iterable[PathLike | None] = (),
    writes: Iterable[str] = (),
    option: str = "--out",
) -> Path:
    """Check that ``path`` can be used as an output folder; return it resolved.

    Args:
        path: the output folder (it may not exist yet).
        inputs: every path the command reads (files or folders; ``None`` is skipped).
        writes: names of the files the command writes inside ``path`` (relative paths), so
            that an input at one of them is refused too.
        option: the option that named ``path``, for the message.

    Raises:
        OutputError: ``path`` is a file, is (or would overwrite) an input, or is not writable.
    """
    shown = str(path)
    out = _resolved(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {shown} is a file; expected a folder to write into")
    targets = [out] + [out / name for name in writes]
    for given, inp in _inputs(inputs):
        for target in targets:
            if _same(target, inp):
                what = "is" if target == out else f"would overwrite ({target.name})"
                raise OutputError(
                    f"{option} {shown} {what} the input {given}; choose another {option}"
                )
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise OutputError(f"{option} {shown} is not writable")
    else:
        _check_writable_parent(out, shown, option)
    return out


@contextlib.contextmanager
def output_lock(folder: PathLike, *, command: str, option: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) while the block runs.

    A second fdflare run that asks for the same folder raises :class:`BusyError` at once.
    If this call created the folder and the block fails leaving it empty but for the lock,
    the folder is removed.

    Args:
        folder: the output folder.
        command: the running command, recorded in the lock file for the other run's message.
        option: the option that named ``folder``, for the message.
    """
    path = Path(folder)
    created: list[Path] = []
    cur = path.resolve()
    while not cur.exists():
        created.append(cur)
        cur = cur.parent
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_NAME
    fh = open(lock_path, "a+", encoding="utf-8")
    try:
        if not lock_file(fh):
            fh.seek(0)
            holder = fh.read().strip() or "another fdflare run"
            raise BusyError(
                f"{option} {folder} is in use by {holder}; wait for it to finish or "
                f"choose another {option}"
            )
        fh.seek(0)
        fh.truncate()
        fh.write(f"`fdflare {command}` (pid {os.getpid()})\n")
        fh.flush()
        try:
            yield path
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    if [p.name for p in path.iterdir()] == [LOCK_NAME]:
                        lock_path.unlink()
                        for p in created:  # innermost first
                            p.rmdir()
            raise
    finally:
        fh.close()
