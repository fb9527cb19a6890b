"""One exclusive lock on a file, on every platform: output folders, manifests, stores, merges.

:func:`lock_file` takes an exclusive advisory lock on an open file, at once or not at all
(``blocking=False``, the default: it returns ``False`` while another process holds it) or
waiting for it (``blocking=True``); :func:`unlock_file` releases it, and so does closing the
file. Every lock of fdflare goes through these two functions:

* on POSIX, ``fcntl.flock`` (the lock belongs to the open file, so a second open of the same
  file, in this process or another, is refused until the first is closed);
* on Windows, ``msvcrt.locking`` of one byte far beyond any content the lock file holds
  (so the holder's name written into the file stays readable by the refused run);
* elsewhere (no ``fcntl`` and no ``msvcrt``), and on a file system without locks (``flock``
  failing with ``ENOLCK``, ``EOPNOTSUPP``...), no lock at all: the call succeeds and warns
  once (:class:`LockUnavailableWarning`) that two runs on one file are not detected.

``fcntl`` and ``msvcrt`` are imported here only, and only where they exist, so fdflare
imports on every platform.
"""

from __future__ import annotations

import errno
import os
import sys
import time
import warnings
from typing import IO, Any

__all__ = ["LOCKING", "LockUnavailableWarning", "lock_file", "unlock_file"]

if sys.platform == "win32":  # pragma: no cover - Windows
    import msvcrt

    LOCKING = "msvcrt"
else:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - a POSIX without fcntl: tested by a subprocess
        fcntl = None  # type: ignore[assignment]
    LOCKING = "fcntl" if fcntl is not None else "none"

# errors of flock that mean "no locks here", not "locked by another"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
# msvcrt.locking locks a byte range from the file position; this one lies past any lock file
_WINDOWS_LOCK_OFFSET = 1 << 30
_warned = False


class LockUnavailableWarning(RuntimeWarning):
    """This platform offers no file lock: two runs on one file are not detected."""


def _fd(file: int | IO[Any]) -> int:
    return file if isinstance(file, int) else file.fileno()


def _no_lock(why: str = "no file locking on this platform (neither fcntl nor msvcrt)") -> bool:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"{why}: two fdflare runs writing the same files are not detected",
            LockUnavailableWarning,
            stacklevel=3,
        )
    return True


def lock_file(file: int | IO[Any], *, blocking: bool = False) -> bool:
    """Take an exclusive lock on an open file (a descriptor or a file object).

    Args:
        file: the open lock file.
        blocking: wait until the lock is free; otherwise return at once.

    Returns:
        ``True`` once the lock is held; ``False`` (only with ``blocking=False``) when another
        open of the file holds it. Without any locking on the platform, ``True`` and a
        :class:`LockUnavailableWarning` (once per process).
    """
    fd = _fd(file)
    if sys.platform == "win32":  # pragma: no cover - Windows
        while True:
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
            finally:
                os.lseek(fd, pos, os.SEEK_SET)
            time.sleep(0.05)
    if fcntl is None:
        return _no_lock()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:  # a file system without locks (some network mounts)
            return _no_lock(f"the file system of this file has no locks ({exc.strerror})")
        raise
    return True


def unlock_file(file: int | IO[Any]) -> None:
    """Release a lock taken by :func:`lock_file` (closing the file releases it too)."""
    fd = _fd(file)
    if sys.platform == "win32":  # pragma: no cover - Windows
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.lseek(fd, pos, os.SEEK_SET)
        return
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
