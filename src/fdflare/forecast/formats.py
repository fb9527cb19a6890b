"""How a forecast is written: text for people, the history table, the Flare Scoreboard file.

* :func:`format_text`: what ``fdflare forecast`` prints.
* :func:`append_history`: one row of the history table (``--history CSV``), which
  ``fdflare verify`` scores against a flare catalog once the windows have passed. Its first
  three columns are the study's prediction format (``timestamp,flare_prob,target``, with
  ``target`` empty until verified), so a verified history is scored by ``fdflare evaluate``.
* :func:`scoreboard_text`: the full-disk submission file of the CCMC Flare Scoreboard
  (the keyword header and data line of its text format, one ``M+`` bin, 24 h window).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from fdflare.core.errors import InputError
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
)
#: a method name the scoreboard file name can carry
METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def format_text(fc: Forecast) -> str:
    """The forecast as ``fdflare forecast`` prints it (several lines)."""
    n = len(fc.members)
    how = ("calibrated " if fc.calibrated else "") + (
        "mean of " + str(n) + " members" if n > 1 else "one model"
    )
    lines = [
        f"P(flare >= M1.0 in the next 24 h) = {fc.probability:.3f}  ({how})",
        f"window:      {iso(fc.window_start)} to {iso(fc.window_end)} (24 h from the observation)",
        f"observation: {iso(fc.observation.time)}, SDO/HMI magnetogram {fc.observation.image_id} "
        f"from {fc.observation.base_url}",
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
        "base_url": fc.observation.base_url,
        "calibrated": "1" if fc.calibrated else "0",
        "spread": f"{fc.spread:.6f}",
        "member_probs": ";".join(f"{m.probability:.6f}" for m in fc.members),
        "checkpoints": ";".join(m.checkpoint for m in fc.members),
    }


#: how long a forecast waits for another one to finish writing the history
LOCK_WAIT_S = 120.0


@contextlib.contextmanager
def _locked(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``PATH.lock`` (concurrent forecasts append in turn).

    Raises:
        BusyError: another process held the lock for ``wait_s`` seconds.
    """
    import sys
    import time

    from fdflare.core.errors import BusyError

    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError(
                        f"{lock} is held by another process (a forecast writing {path.name}?) "
                        f"for over {wait_s:g} s; the forecast was not added"
                    ) from None
                if not told:
                    print(f"fdflare: waiting for {lock} (held by another process)", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def read_history(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The history table, every column as text.

    Raises:
        InputError: not a history table (its header is not :data:`HISTORY_COLUMNS`' start).
    """
    from fdflare.core.io import read_csv_table

    path = Path(path)
    df = read_csv_table(path, what="forecast history", dtype=str, keep_default_na=False)
    missing = [c for c in HISTORY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"not a forecast history (`fdflare forecast --history`): missing column {missing[0]!r}",
            path=path,
            field=missing[0],
        )
    return df


def append_history(path: str | os.PathLike[str], fc: Forecast) -> tuple[int, bool]:
    """Add the forecast to the history table (created when missing); ``(rows, replaced)``.

    A forecast for a requested time already in the table replaces that row (a rerun), so
    each requested time is verified once. The table is rewritten atomically under a lock:
    a crash leaves the old table, two forecasts at once both land.
    """
    from fdflare.core.io import atomic_path

    path = Path(path)
    if path.is_symlink():
        path = path.resolve()  # write the table the link points to, keep the link
    path.parent.mkdir(parents=True, exist_ok=True)
    row = history_row(fc)
    with _locked(path):
        mode = path.stat().st_mode & 0o7777 if path.exists() else None
        if path.exists() and path.stat().st_size > 0:
            df = read_history(path)
        else:
            df = pd.DataFrame(columns=list(HISTORY_COLUMNS), dtype=str)
        same = df["requested_time"] == row["requested_time"]
        replaced = bool(same.any())
        df = pd.concat([df[~same], pd.DataFrame([row])], ignore_index=True)
        df = df.sort_values("requested_time", kind="stable")
        buf = io.StringIO()
        df.to_csv(buf, index=False, lineterminator="\n")
        with atomic_path(path) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
            if mode is not None:
                os.chmod(tmp, mode)  # the rewrite keeps the table's permissions
    return len(df), replaced


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
    """The Flare Scoreboard's full-disk submission: keyword header, then the ``M+`` line.

    ``M+_uncert`` is the spread of the ensemble members (left empty for one model).
    """

    def minute(t: pd.Timestamp) -> str:
        return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%MZ")

    uncert = f"{fc.spread:.4f}" if len(fc.members) > 1 else ""
    return (
        f"Forecasting method: {method}\n"
        f"Issue Time: {minute(fc.requested_time)}\n"
        f"Prediction Window Start Time: {minute(fc.window_start)}\n"
        f"Prediction Window End Time: {minute(fc.window_end)}\n"
        "Probability Bins: M+\n"
        "Input data: SDO/HMI LOS_Magnetogram\n"
        "Prediction window (hours): 24\n"
        "#Full Disk Forecast\n"
        "#M+_prob M+_uncert\n"
        f"{fc.probability:.4f} {uncert}".rstrip()
        + "\n"
    )
