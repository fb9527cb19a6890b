"""Crash-safe file writing: a file appears under its final name only when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    A crash or exception inside the block leaves no file at ``path`` (and removes the
    temporary one), so readers never see a partial file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give files the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
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


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


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
                    hint = " (a trailing comma?)" if len(row) == n + 1 else ""
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
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(f"not a readable CSV table ({text})", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read this {what} ({exc.strerror or exc})", path=path) from None


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
