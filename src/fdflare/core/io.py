"""Crash-safe file writing: a file appears under its final name only when complete."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask() sets the process-wide mask, so reading it from worker
# threads would briefly make other threads create world-writable files.
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


#: This machine, in temporary names: a pid means something only on the host that made it.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"

#: ``.<name>.<host>.<pid>.<random>.part``: the temporary file of an unfinished atomic write.
TEMPORARY_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[A-Za-z0-9_]+\.part$"
)

# folders whose stale temporaries this process has removed already (once each)
_swept: set[str] = set()
_swept_lock = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process: leave its file alone
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of atomic writes in ``folder`` whose writer has died.

    Only files named as :func:`atomic_path` names them, made on this host, by a process that
    no longer exists, are removed (a run killed mid-write leaves one); an in-flight write of a
    live process, or one made on another host sharing the folder, is never touched.

    Returns:
        The files removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = TEMPORARY_NAME.match(entry.name)
        if m is None or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale_temporaries(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    A crash or exception inside the block leaves no file at ``path`` (and removes the
    temporary one), so readers never see a partial file. The temporary file is named
    ``.<name>.<host>.<pid>.<random>.part``; the first write into a folder removes the
    temporaries that dead processes of this host left there (a killed run). A failed write
    (a full disk) is reported as an ``OSError`` naming ``path``, not the temporary file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(final.parent)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.name}.{_HOST}.{os.getpid()}.", suffix=".part", dir=final.parent
        )
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give files the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if (
            isinstance(exc, OSError)
            and exc.errno is not None
            and exc.filename in (None, tmp, str(tmp_path))
        ):
            # the write itself failed (ENOSPC, EFBIG, EIO): name the file the user asked for
            raise OSError(exc.errno, exc.strerror or str(exc), str(final)) from exc
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` atomically on success."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


class StagedFiles:
    """The outputs of one command, all written or none.

    Each output is prepared in a temporary file beside its final path
    (``.NAME.XXXX.part.EXT``); :meth:`commit` renames them all onto their final names, and
    any failure before that (or :meth:`discard`) removes every temporary file, so a full
    disk leaves no output half-written and no output without the others. An ``OSError``
    while preparing a file becomes an :class:`~fdflare.core.errors.OutputError` naming it.
    """

    def __init__(self) -> None:
        self._items: list[tuple[Path, Path]] = []
        self._made: list[Path] = []

    def path(self, final: str | os.PathLike[str]) -> Path:
        """A new temporary path for ``final`` (same folder, same extension)."""
        final = Path(final)
        try:
            missing = [d for d in (final.parent, *final.parent.parents) if not d.exists()]
            final.parent.mkdir(parents=True, exist_ok=True)
            self._made.extend(missing)  # deepest first: removed on discard when still empty
            fd, tmp = tempfile.mkstemp(
                prefix=f".{final.name}.", suffix=".part" + final.suffix, dir=final.parent
            )
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError as exc:
            raise self.error(final, exc) from None
        self._items.append((Path(tmp), final))
        return Path(tmp)

    def write(
        self, final: str | os.PathLike[str], data: str | bytes, mode: int | None = None
    ) -> None:
        """Prepare ``final`` with ``data`` (text as UTF-8), optionally with file mode ``mode``."""
        tmp = self.path(final)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
        except OSError as exc:
            raise self.error(Path(final), exc) from None

    @staticmethod
    def error(final: Path, exc: OSError) -> Exception:
        """An ``OutputError`` naming the file that could not be written."""
        from fdflare.core.errors import OutputError

        why = exc.strerror or type(exc).__name__
        return OutputError(f"{final}: cannot write ({why}); no output was written")

    def commit(self) -> list[Path]:
        """Rename every prepared file onto its final name; return the final paths."""
        done = []
        try:
            for tmp, final in self._items:
                os.replace(tmp, final)
                done.append(final)
        except OSError as exc:
            self.discard()
            raise self.error(self._items[len(done)][1], exc) from None
        self._items, self._made = [], []
        return done

    def discard(self) -> None:
        """Remove every prepared file not yet renamed."""
        for tmp, _final in self._items:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._items = []
        for folder in self._made:  # the folders made for the outputs, when left empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made = []

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.discard()


def remove_stale_parts(final: str | os.PathLike[str]) -> int:
    """Remove the temporary files a killed writer of ``final`` left (``.NAME.*.part*``).

    Only call it while holding the lock that every writer of ``final`` holds.
    """
    final = Path(final)
    n = 0
    for stale in final.parent.glob(f".{glob_escape(final.name)}.*.part*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            n += 1
    return n


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters escaped."""
    import glob

    return glob.escape(name)


def check_field_counts(path: str | os.PathLike[str]) -> None:
    """Refuse a CSV file in which a row has more or fewer fields than its header.

    pandas takes a table whose rows all have one field more than the header (a trailing
    comma on every row: ``sed -i '2,$ s/$/,/' f.csv``) to have an index column, and shifts
    every column by one without a word; a single longer row is an error deep inside pandas.
    Blank lines are skipped, as pandas does.

    Raises:
        InputError: naming the file and the line of the first such row.
    """
    import csv

    from fdflare.core.errors import InputError

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return
            n = len(header)
            for row in reader:
                if row and len(row) != n:
                    hint = (
                        " (a trailing comma: a comma at the end of the line, as spreadsheets write?)"
                        if len(row) == n + 1
                        else ""
                    )
                    names = header if n <= 6 else [*header[:5], "..."]
                    raise InputError(
                        f"{len(row)} fields, but the header has {n} ({', '.join(names)}){hint}",
                        path=path,
                        line=reader.line_num,
                    )
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"not a readable CSV table ({exc})", path=path) from None


def read_csv_table(path: str | os.PathLike[str], *, what: str = "file", **kwargs: Any) -> Any:
    """Read a CSV table with pandas, turning a missing or unreadable file into an ``InputError``.

    Every row must have as many fields as the header (:func:`check_field_counts`); no column
    is ever taken as the index.

    Args:
        path: the CSV file.
        what: what the file is, for the "no such ..." message.
        **kwargs: passed to :func:`pandas.read_csv`.
    """
    import pandas as pd

    from fdflare.core.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"is a folder; expected a {what} (a CSV file)", path=path)
    if not path.is_file():
        raise InputError(f"no such {what}", path=path)
    check_field_counts(path)
    kwargs.setdefault("index_col", False)
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(f"not a readable CSV table ({text})", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read this {what} ({exc.strerror or exc})", path=path) from None
    return df


def read_json(path: str | os.PathLike[str], *, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing or unreadable file into an ``InputError``.

    Args:
        path: the file.
        what: what the file is, for the "no such ..." message.
    """
    import json

    from fdflare.core.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"is a folder; expected a {what}", path=path)
    if not path.is_file():
        raise InputError(f"no such {what}", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable JSON file ({exc})", path=path) from None


def refuse_first(
    bad: Any,
    message: Callable[[int], str],
    *,
    path: str | os.PathLike[str] | None,
    field: str | None,
    first_line: int = 2,
) -> None:
    """Raise an ``InputError`` for the first row where ``bad`` is true, if any.

    Every table reader checks a whole column at once and reports the first bad row by its
    line in the file (``first_line`` is the line of row 0: 2 below a header) and field.

    Args:
        bad: a boolean mask over the rows.
        message: the message for row ``i`` (it may count ``bad`` for "... in all").
        path: the file.
        field: the column.
        first_line: the file line of row 0.
    """
    import numpy as np

    from fdflare.core.errors import InputError

    mask = np.asarray(bad, dtype=bool)
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise InputError(message(i), path=path, line=first_line + i, field=field)


def parse_probabilities(
    values: Any, *, path: str | os.PathLike[str] | None, field: str = "flare_prob"
) -> Any:
    """A text column of probabilities as floats.

    Raises:
        InputError: a value that is not a number in [0, 1], naming the file, line and field.
    """
    import pandas as pd

    s = pd.Series(values).astype("string").str.strip()
    prob = pd.to_numeric(s, errors="coerce")
    refuse_first(
        (prob.isna() | (prob < 0) | (prob > 1)).to_numpy(dtype=bool),
        lambda i: f"probability {shown_cell(s.iloc[i])} is not a number in [0, 1]",
        path=path,
        field=field,
    )
    return prob.astype(float)


def shown_cell(raw: Any) -> str:
    """A cell of a CSV table as written, for a message (``'high'``, ``1.5``, ``empty``)."""
    import math

    from fdflare.core.table import plain

    raw = plain(raw)
    if raw is None or str(raw) == "<NA>":
        return "empty"
    if (isinstance(raw, float) and math.isnan(raw)) or str(raw).strip() == "":
        return "empty"
    if isinstance(raw, str):
        try:
            float(raw)
        except ValueError:
            return repr(raw)
        return raw.strip()
    return str(raw)
