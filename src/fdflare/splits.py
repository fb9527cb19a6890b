"""Chronological splits: which instances train, which select the epoch, which test.

The study's split (``quarters``, :func:`fdflare.label.assign_folds`) pools calendar quarters
across years, so a training instance of 2014-03-31 sits beside a validation instance of
2014-04-01 showing the same active regions. The splits here keep time in order:

``chronological``
    train before ``select_from``, select on ``[select_from, test_from)``, test from
    ``test_from`` (``fdflare label --split chronological --select-from A --test-from B``).
``suryabench``
    the rules of SuryaBench's flare task (``flare/flare_split.py`` of
    github.com/NASA-IMPACT/SuryaBench): test from 2020-01-01; up to 2010 train; in
    2011-2019, select on 15-31 January, leave out 1-14 January and 1-14 February (its
    "leaky validation" days, a buffer on either side of the selection days), train on the
    rest.
a split file
    JSON, ``{"intervals": [{"role": "train", "start": null, "end": "2019-01-01"}, ...]}``:
    every interval is half-open ``[start, end)`` (``null``: unbounded), its role one of
    ``train``, ``select``, ``test``; intervals may not overlap; instances in none are left out.

Every boundary is purged by the label window: a training instance whose window
``(t, t + window - 1 s]`` reaches into a selection or test interval is dropped, and so is a
selection instance whose window reaches into a test interval; with ``gap_hours``, training
instances less than that many hours after the end of a selection or test interval are
dropped too. So no training target is a selection or test target, and selection never sees
a test flare.

A split is recorded as a JSON-ready dict (:meth:`Split.to_dict`) in the label recipe
(``summary.json["recipe"]["split"]``) and can be written back as a split file.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError, UsageError

#: the roles an interval may have
ROLES = ("train", "select", "test")
#: the split kinds ``fdflare label --split`` names (or a split file)
KINDS = ("quarters", "chronological", "suryabench")
#: what labels.csv's ``split`` column holds for instances of no role and purged ones
EXCLUDED, PURGED = "excluded", "purged"

#: SuryaBench's flare task: the first test day, and its selection and buffer days
SURYABENCH_TEST_FROM = "2020-01-01"
SURYABENCH_FIRST_SELECT_YEAR = 2011


@dataclass(frozen=True)
class Interval:
    """``[start, end)`` with a role; ``None`` is unbounded."""

    role: str
    start: pd.Timestamp | None
    end: pd.Timestamp | None

    def to_dict(self) -> dict[str, Any]:
        """``{"role", "start", "end"}`` with times as ``YYYY-MM-DD HH:MM:SS`` or null."""

        def fmt(t: pd.Timestamp | None) -> str | None:
            return None if t is None else t.strftime("%Y-%m-%d %H:%M:%S")

        return {"role": self.role, "start": fmt(self.start), "end": fmt(self.end)}


@dataclass(frozen=True)
class Split:
    """A chronological split: its kind, its intervals, where it came from."""

    kind: str
    intervals: tuple[Interval, ...]
    source: str | None = None

    def roles(self, times: pd.DatetimeIndex | pd.Series) -> np.ndarray:
        """Role of each time (``excluded`` where no interval holds it)."""
        t = pd.DatetimeIndex(times).as_unit("ns").asi8
        out = np.full(len(t), EXCLUDED, dtype=object)
        for iv in self.intervals:
            inside = np.ones(len(t), dtype=bool)
            if iv.start is not None:
                inside &= t >= iv.start.as_unit("ns").value
            if iv.end is not None:
                inside &= t < iv.end.as_unit("ns").value
            out[inside] = iv.role
        return out

    def purge(
        self,
        times: pd.DatetimeIndex | pd.Series,
        roles: np.ndarray,
        *,
        window: str | pd.Timedelta,
        gap_hours: float | None = None,
    ) -> np.ndarray:
        """Instances to drop so no window reaches across a guarded boundary (see module doc)."""
        t = pd.DatetimeIndex(times).as_unit("ns").asi8
        w = (pd.Timedelta(window) - pd.Timedelta(seconds=1)).value
        drop = np.zeros(len(t), dtype=bool)
        for who, guarded in (("train", ("select", "test")), ("select", ("test",))):
            ivs = [iv for iv in self.intervals if iv.role in guarded]
            mine = roles == who
            starts = np.sort([iv.start.as_unit("ns").value for iv in ivs if iv.start is not None])
            if len(starts):
                nxt = np.searchsorted(starts, t, side="right")
                has = nxt < len(starts)
                s_next = starts[np.minimum(nxt, len(starts) - 1)]
                drop |= mine & has & (s_next - t <= w)
            if who == "train" and gap_hours:
                ends = np.sort([iv.end.as_unit("ns").value for iv in ivs if iv.end is not None])
                if len(ends):
                    prev = np.searchsorted(ends, t, side="right") - 1
                    has = prev >= 0
                    e_prev = ends[np.maximum(prev, 0)]
                    gap = pd.Timedelta(hours=gap_hours).value
                    drop |= mine & has & (t - e_prev < gap)
        return drop

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record of the split (a split file holds the same)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.source:
            out["source"] = self.source
        out["intervals"] = [iv.to_dict() for iv in self.intervals]
        return out


def _time(value: Any, what: str, path: str | None = None) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        t = pd.NaT
    if t is pd.NaT or not isinstance(value, (str, pd.Timestamp)):
        message = f"{value!r} is not a time such as 2020-01-01 (or null: unbounded)"
        if path is None:
            raise UsageError(f"{what} {message}")
        raise InputError(message, path=path, field=what)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


def _checked(kind: str, intervals: list[Interval], source: str | None, path: str | None) -> Split:
    where = path or "the split"

    def fail(message: str, field: str | None = None) -> None:
        if path is None:
            raise UsageError(f"{where}: {message}")
        raise InputError(message, path=path, field=field)

    lo = pd.Timestamp.min.as_unit("ns")
    hi = pd.Timestamp.max.as_unit("ns")
    for i, iv in enumerate(intervals):
        if iv.role not in ROLES:
            fail(f"role {iv.role!r}: choose one of {', '.join(ROLES)}", f"intervals[{i}].role")
        if iv.start is not None and iv.end is not None and iv.end <= iv.start:
            fail(
                f"end {iv.end} is not after start {iv.start} (intervals are [start, end))",
                f"intervals[{i}].end",
            )
    order = sorted(range(len(intervals)), key=lambda i: intervals[i].start or lo)
    for a, b in itertools.pairwise(order):
        end_a, start_b = intervals[a].end or hi, intervals[b].start or lo
        if start_b < end_a:
            fail(
                f"intervals {a} ({intervals[a].role}) and {b} ({intervals[b].role}) overlap",
                f"intervals[{b}].start",
            )
    for role in ("train", "test"):
        if not any(iv.role == role for iv in intervals):
            fail(f"no {role} interval: a split needs train and test intervals", "intervals")
    return Split(kind, tuple(intervals[i] for i in order), source)


def chronological(select_from: str, test_from: str) -> Split:
    """Train before ``select_from``, select on ``[select_from, test_from)``, test from ``test_from``.

    Raises:
        UsageError: a time that cannot be read, or ``test_from`` not after ``select_from``.
    """
    a = _time(select_from, "--select-from")
    b = _time(test_from, "--test-from")
    assert a is not None and b is not None
    if b <= a:
        raise UsageError(f"--test-from ({b}) must be after --select-from ({a})")
    return Split(
        "chronological",
        (Interval("train", None, a), Interval("select", a, b), Interval("test", b, None)),
    )


def suryabench(last_select_year: int = 2019) -> Split:
    """SuryaBench's flare split (``flare/flare_split.py``, its ``assign_split``), as intervals.

    Its rules: from 2020-01-01 test; years up to 2010 train; in 2011-2019, 1-14 January and
    1-14 February are "leaky validation" (left out here: no interval holds them), 15-31
    January is validation (here: select), the rest train.
    """
    ts = pd.Timestamp
    ivs = [Interval("train", None, ts(f"{SURYABENCH_FIRST_SELECT_YEAR}-01-01"))]
    for y in range(SURYABENCH_FIRST_SELECT_YEAR, last_select_year + 1):
        ivs.append(Interval("select", ts(f"{y}-01-15"), ts(f"{y}-02-01")))
        ivs.append(Interval("train", ts(f"{y}-02-15"), ts(f"{y + 1}-01-01")))
    ivs.append(Interval("test", ts(SURYABENCH_TEST_FROM), None))
    return Split("suryabench", tuple(ivs), "github.com/NASA-IMPACT/SuryaBench flare/flare_split.py")


def read_split_file(path: str | os.PathLike[str]) -> Split:
    """Read a split file (see module doc); the record of :meth:`Split.to_dict` is one too.

    Raises:
        InputError: unreadable, not JSON, or a bad interval (file and field named).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("no such split file (JSON with train, select and test intervals)", path=p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path=p) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=p, line=exc.lineno) from None
    return split_from_dict(data, path=str(p))


def split_from_dict(data: Any, *, path: str | None = None) -> Split:
    """A split from its JSON record (a split file's content).

    Raises:
        InputError: a malformed record, naming the field.
    """
    where = path or "split"
    if not isinstance(data, dict) or not isinstance(data.get("intervals"), list):
        raise InputError(
            'expected an object {"intervals": [{"role": "train", "start": null, "end": '
            '"2019-01-01"}, ...]}',
            path=where,
            field="intervals",
        )
    ivs = []
    for i, item in enumerate(data["intervals"]):
        if not isinstance(item, dict) or set(item) - {"role", "start", "end"}:
            extra = sorted(set(item) - {"role", "start", "end"}) if isinstance(item, dict) else []
            raise InputError(
                f"unknown key {extra[0]!r}" if extra else "expected {role, start, end}",
                path=where,
                field=f"intervals[{i}]",
            )
        role = item.get("role")
        start = _time(item.get("start"), f"intervals[{i}].start", where)
        end = _time(item.get("end"), f"intervals[{i}].end", where)
        ivs.append(Interval(str(role), start, end))
    kind = data.get("kind", "file")
    kind = kind if kind in KINDS[1:] else "file"
    source = data.get("source") if isinstance(data.get("source"), str) else path
    return _checked(kind, ivs, source, where)


def make_split(
    name: str, *, select_from: str | None = None, test_from: str | None = None
) -> Split | None:
    """The split that ``--split NAME`` names (None: the study's quarters).

    Raises:
        UsageError: ``--select-from``/``--test-from`` missing for ``chronological`` or
            given with another split.
        InputError: a bad split file.
    """
    given = [o for o, v in (("--select-from", select_from), ("--test-from", test_from)) if v]
    if name == "chronological":
        if len(given) < 2:
            raise UsageError(
                "--split chronological needs --select-from A --test-from B (train before A, "
                "select on [A, B), test from B)"
            )
        assert select_from is not None and test_from is not None
        return chronological(select_from, test_from)
    if given:
        raise UsageError(f"{given[0]} belongs to --split chronological, not --split {name}")
    if name == "quarters":
        return None
    if name == "suryabench":
        return suryabench()
    return read_split_file(name)


@dataclass
class SplitTables:
    """A split applied to a label table: the one fold's train, select and test rows."""

    roles: np.ndarray  # per row: train, select, test, purged or excluded
    train: pd.DataFrame
    select: pd.DataFrame
    test: pd.DataFrame
    purged: int
    excluded: int


def apply_split(
    table: pd.DataFrame,
    split: Split,
    *,
    window: str | pd.Timedelta,
    gap_hours: float | None = None,
) -> SplitTables:
    """Assign each row of a label table (``time`` column) its role, purging every boundary."""
    roles = split.roles(table["time"])
    drop = split.purge(table["time"], roles, window=window, gap_hours=gap_hours)
    excluded = int((roles == EXCLUDED).sum())
    roles = np.where(drop, PURGED, roles)
    return SplitTables(
        roles=roles,
        train=table[roles == "train"],
        select=table[roles == "select"],
        test=table[roles == "test"],
        purged=int(drop.sum()),
        excluded=excluded,
    )


def split_record(cfg: Any) -> dict[str, Any]:
    """The split of a :class:`~fdflare.label.LabelConfig` as the recipe records it."""
    split = make_split(cfg.split, select_from=cfg.select_from, test_from=cfg.test_from)
    if split is None:
        return {"kind": "quarters", "folds": cfg.n_folds}
    return {**split.to_dict(), "purge": {"window": cfg.window, "gap_hours": cfg.gap_hours}}


def split_table(
    table: pd.DataFrame,
    split: Split,
    window: str,
    gap_hours: float | None,
    counts: dict[str, int],
) -> tuple[pd.DataFrame, SplitTables, list[str]]:
    """Apply ``split`` to a label table: the table with its ``split`` column, the parts, warnings.

    The table's ``fold`` is 1 for test rows and 0 for the others; ``counts`` gains
    ``split_excluded`` and ``split_purged``.
    """
    parts = apply_split(table, split, window=window, gap_hours=gap_hours)
    table = table.copy()
    table["fold"] = np.where(parts.roles == "test", 1, 0)
    table.insert(3, "split", pd.array(parts.roles, dtype="string"))
    counts["split_excluded"] = parts.excluded
    counts["split_purged"] = parts.purged
    warnings = [
        f"the {name} interval holds no instance of the labelled range; "
        f"Fold1_{file}.csv holds a header only"
        for name, file, rows in (
            ("train", "train", parts.train),
            ("select", "select", parts.select),
            ("test", "val", parts.test),
        )
        if len(rows) == 0
    ]
    return table, parts, warnings


def select_counts(select: pd.DataFrame | None) -> dict[str, int]:
    """``{"select", "select_positive"}`` of a fold's selection rows (none: an empty dict)."""
    if select is None:
        return {}
    return {"select": len(select), "select_positive": int(select["target"].sum())}
