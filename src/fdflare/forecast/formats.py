"""How a forecast is written: text for people, the history table, the Flare Scoreboard file.

* :func:`format_text`: what ``fdflare forecast`` prints.
* :func:`stage_history`: one row added to the history table (``--history CSV``), which
  ``fdflare verify`` scores against a flare catalog once the windows have passed. Its first
  three columns are the study's prediction format (``timestamp,flare_prob,target``, with
  ``target`` empty until verified), so a verified history is scored by ``fdflare evaluate``.
  The table is append-only: a forecast re-issued for the same time is a new row, and the
  earlier rows are kept byte for byte.
* :func:`scoreboard_text`: the full-disk submission file of the CCMC Flare Scoreboard
  (the keyword header and data line of its text format, one bin of the recipe's threshold,
  the recipe's window).

The threshold and the window are the forecast's recipe's (``Forecast.recipe``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.io import StagedFiles
from fdflare.forecast.service import Forecast, format_age, iso

HISTORY_COLUMNS = (
    "timestamp",
    "flare_prob",
    "target",
    "requested_time",
    "issue_time",
    "observation_time",
    "window_start",
    "window_end",
    "image_id",
    "base_url",
    "calibrated",
    "spread",
    "member_probs",
    "checkpoints",
    "threshold",
    "window",
    "recipe",
)
#: the columns a history of an older fdflare lacks (its forecasts are the study's, assumed)
RECIPE_COLUMNS = ("threshold", "window", "recipe")
#: a method name the scoreboard file name can carry
METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def format_text(fc: Forecast) -> str:
    """The forecast as ``fdflare forecast`` prints it (several lines)."""
    n = len(fc.members)
    how = ("calibrated " if fc.calibrated else "") + (
        "mean of " + str(n) + " members" if n > 1 else "one model"
    )
    if fc.flare_history is not None:
        how += ", with the flare history"
    from fdflare.core.recipe import format_window

    lines = [
        f"P({fc.recipe.event}) = {fc.probability:.3f}  ({how})",
        f"window:      {iso(fc.window_start)} to {iso(fc.window_end)} "
        f"({format_window(fc.recipe.window_delta)} from the observation)",
        f"observation: {iso(fc.observation.time)}, SDO/HMI magnetogram {fc.observation.image_id} "
        f"from {fc.observation.source}",
        f"age:         {format_age(abs(fc.age))} "
        + ("old at" if fc.age >= pd.Timedelta(0) else "after")
        + f" the requested time {iso(fc.requested_time)}",
    ]
    if n > 1 or fc.calibrated:
        lines.append("members:")
        for m in fc.members:
            raw = (
                f" (raw {m.raw_probability:.3f})"
                if m.calibration is not None and m.raw_probability is not None
                else ""
            )
            lines.append(f"  {m.probability:.3f}{raw}  {m.loaded.model}  {m.checkpoint}")
        if n > 1:
            lines.append(f"spread (std of the members): {fc.spread:.3f}")
    lines += [f"note: {note}" for note in fc.observation.notes]
    if fc.recipe.assumed:
        lines.append("note: the members record no recipe: the study's event is assumed")
    return "\n".join(lines)


def history_row(fc: Forecast) -> dict[str, str]:
    """One row of the history table."""
    from fdflare.core.paths import image_relpaths

    name = str(image_relpaths(pd.DatetimeIndex([fc.observation.time]), ext="jp2")[0])
    return {
        "timestamp": name,
        "flare_prob": f"{fc.probability:.6f}",
        "target": "",
        "requested_time": iso(fc.requested_time),
        "issue_time": iso(fc.issue_time),
        "observation_time": iso(fc.observation.time),
        "window_start": iso(fc.window_start),
        "window_end": iso(fc.window_end),
        "image_id": str(fc.observation.image_id),
        "base_url": fc.observation.source,
        "calibrated": "1" if fc.calibrated else "0",
        "spread": f"{fc.spread:.6f}",
        "member_probs": ";".join(f"{m.probability:.6f}" for m in fc.members),
        "checkpoints": ";".join(m.checkpoint for m in fc.members),
        "threshold": fc.recipe.threshold,
        "window": fc.recipe.window,
        "recipe": "" if fc.recipe.assumed else json.dumps(fc.recipe.to_dict(), sort_keys=True),
    }


#: how long a forecast waits for another one to finish writing the history
LOCK_WAIT_S = 120.0


def history_target(path: str | os.PathLike[str]) -> Path:
    """The file a history path names (a link is followed: the table it points to is written)."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


@contextlib.contextmanager
def history_lock(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the history's lock and remove what a killed writer left (``.NAME.*.part*``)."""
    from fdflare.core.io import remove_stale_parts

    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, wait_s):
        remove_stale_parts(path)
        yield


@contextlib.contextmanager
def _locked(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``PATH.lock`` (concurrent forecasts append in turn).

    Raises:
        BusyError: another process held the lock for ``wait_s`` seconds.
    """
    import sys
    import time

    from fdflare.core.errors import BusyError
    from fdflare.core.locks import lock_file

    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while not lock_file(fd):
            if time.monotonic() >= deadline:
                raise BusyError(
                    f"{lock} is held by another process (a forecast writing {path.name}?) "
                    f"for over {wait_s:g} s; the forecast was not added"
                )
            if not told:
                print(f"fdflare: waiting for {lock} (held by another process)", file=sys.stderr)
                told = True
            time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def read_history(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The history table, every column as text.

    A history of an older fdflare (without the recipe columns) is read with them empty.

    Raises:
        InputError: not a history table (a column missing), a row with more fields than
            the header (a comma at the end of each line), or an empty file.
    """
    from fdflare.core.io import read_csv_table

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(
            "the forecast history is empty (not even a header): nothing to read", path=path
        )
    df = read_csv_table(path, what="forecast history", dtype=str, keep_default_na=False)
    missing = [c for c in HISTORY_COLUMNS if c not in df.columns and c not in RECIPE_COLUMNS]
    if missing:
        raise InputError(
            f"not a forecast history (`fdflare forecast --history`): missing column {missing[0]!r}",
            path=path,
            field=missing[0],
        )
    for c in RECIPE_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    return df


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def stage_history(staged: StagedFiles, path: Path, fc: Forecast) -> tuple[int, int]:
    """Prepare the history with the forecast added, in ``staged``; ``(rows, earlier)``.

    Call it holding :func:`history_lock`. The table is append-only: the existing bytes are
    kept as they are and the row is added at the end (a history of an older fdflare gets
    the recipe columns first, its rows' cells empty). ``earlier`` counts the rows already
    there for the same requested time (times compared parsed, never as text).
    """
    from fdflare.core.timeparse import parse_utc_series

    row = history_row(fc)
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    if path.exists() and path.stat().st_size > 0:
        df = read_history(path)
        old = path.read_bytes()
    else:
        df = pd.DataFrame(columns=list(HISTORY_COLUMNS), dtype=str)
        old = b""
    times = parse_utc_series(df["requested_time"])
    earlier = int((times == pd.Timestamp(fc.requested_time)).sum())
    header = old.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    if not old:
        text = _csv_line(list(HISTORY_COLUMNS)) + _csv_line([row[c] for c in HISTORY_COLUMNS])
        data = text.encode("utf-8")
    elif header == ",".join(df.columns):
        line = _csv_line([row.get(c, "") for c in df.columns]).encode("utf-8")
        data = old + (b"" if old.endswith(b"\n") else b"\n") + line
    else:  # an older header: rewrite with every column, the old rows' new cells empty
        columns = list(df.columns) + [c for c in HISTORY_COLUMNS if c not in df.columns]
        full = pd.concat([df.reindex(columns=columns, fill_value=""), pd.DataFrame([row])])
        buf = io.StringIO()
        full[columns].to_csv(buf, index=False, lineterminator="\n")
        data = buf.getvalue().encode("utf-8")
    staged.write(path, data, mode)
    return len(df) + 1, earlier


def check_method_name(name: str) -> str:
    """A method name for the scoreboard file (letters, digits, ``_ . -``).

    Raises:
        InputError: anything else (it becomes part of a file name).
    """
    if not METHOD_NAME.match(name):
        raise InputError(
            f"--method-name {name!r}: use letters, digits, '_', '.' and '-' (it names the file)",
            field="--method-name",
        )
    return name


def scoreboard_name(fc: Forecast, method: str) -> str:
    """``Flare_Forecast_<method>_yyyymmdd_hhmm.txt`` at the issue time, the scoreboard's rule.

    The issue time of a submission is the requested time: the moment of an operational
    forecast (``--time now``), and the moment a back-filled forecast stands for, so that a
    back-fill of many times writes one file per time.
    """
    return f"Flare_Forecast_{method}_{fc.requested_time.strftime('%Y%m%d_%H%M')}.txt"


def scoreboard_text(fc: Forecast, method: str) -> str:
    """The Flare Scoreboard's full-disk submission: keyword header, then the one bin's line.

    The bin is the recipe's threshold class and above (``M+`` for ``M1.0``, ``C+`` for
    ``C1.0``; another threshold such as ``M5.0`` is written ``M5.0+``), the window the
    recipe's. ``<bin>_uncert`` is the spread of the ensemble members (empty for one model).
    """

    def minute(t: pd.Timestamp) -> str:
        return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%MZ")

    uncert = f"{fc.spread:.4f}" if len(fc.members) > 1 else ""
    t = fc.recipe.threshold
    label = (t[0] if t.endswith("1.0") else t) + "+"
    return (
        f"Forecasting method: {method}\n"
        f"Issue Time: {minute(fc.requested_time)}\n"
        f"Prediction Window Start Time: {minute(fc.window_start)}\n"
        f"Prediction Window End Time: {minute(fc.window_end)}\n"
        f"Probability Bins: {label}\n"
        "Input data: SDO/HMI LOS_Magnetogram\n"
        f"Prediction window (hours): {fc.recipe.window_hours:g}\n"
        "#Full Disk Forecast\n"
        f"#{label}_prob {label}_uncert\n"
        f"{fc.probability:.4f} {uncert}".rstrip()
        + "\n"
    )
