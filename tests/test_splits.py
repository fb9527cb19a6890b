"""Chronological splits through the real CLI: roles, the purge at every boundary, the record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clitools import run_cli as cli
from fdflare.core.paths import image_relpaths
from fdflare.data.tables import fold_tables, read_label_csv, select_table
from fdflare.splits import Split, read_split_file, suryabench

WINDOW = pd.Timedelta(hours=24) - pd.Timedelta(seconds=1)


def _inputs(root: Path, start: str, end: str, flares: list[str], cadence: str = "1h") -> None:
    times = pd.date_range(start, end, freq=cadence, inclusive="left")
    (root / "list.txt").write_text("\n".join(image_relpaths(times)) + "\n")
    (root / "cat.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n" + "".join(f"{t},M1.5,10,10\n" for t in flares)
    )


def _label(root: Path, out: str, *extra: str, capsys) -> tuple[int, str]:
    argv = ["label", "--catalog", str(root / "cat.csv"), "--images", str(root / "list.txt")]
    return cli([*argv, "--out", str(root / out), *extra], capsys)


def _times(path: Path) -> pd.DatetimeIndex:
    from fdflare.core.paths import parse_image_times

    t, _ = parse_image_times(read_label_csv(path, allow_empty=True)["label"])
    return pd.DatetimeIndex(t)


def _check_purged(folder: Path, intervals: list[tuple[str, str | None, str | None]]) -> None:
    """No training window reaches a select or test interval; no select window a test one."""
    guarded = {
        "train": [pd.Timestamp(s) for r, s, _ in intervals if r in ("select", "test") and s],
        "select": [pd.Timestamp(s) for r, s, _ in intervals if r == "test" and s],
    }
    for part, file in (("train", "Fold1_train.csv"), ("select", "Fold1_select.csv")):
        t = _times(folder / file)
        for start in guarded[part]:
            before = t[t < start]
            assert len(before) == 0 or (before + WINDOW).max() < start, (part, start)


def test_chronological_split_through_the_cli(tmp_path, capsys):
    flares = ["2011-01-05 03:00", "2011-01-20 10:00", "2011-01-25 12:00", "2011-02-02 05:00"]
    _inputs(tmp_path, "2011-01-01", "2011-02-10", flares)
    code, err = _label(
        tmp_path, "o", "--start", "2011-01-01", "--end", "2011-02-10",
        "--split", "chronological", "--select-from", "2011-01-15", "--test-from", "2011-02-01",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    out = tmp_path / "o"
    train, select, test = (_times(out / f"Fold1_{p}.csv") for p in ("train", "select", "val"))
    a, b = pd.Timestamp("2011-01-15"), pd.Timestamp("2011-02-01")
    assert train.max() < a and select.min() >= a and select.max() < b
    assert test.min() == b  # every test instance at or after the test start
    # hourly instances: the 23 before each boundary have windows reaching across it
    assert train.max() == a - pd.Timedelta(hours=24)
    assert select.max() == b - pd.Timedelta(hours=24)
    _check_purged(out, [("train", None, "2011-01-15"), ("select", "2011-01-15", "2011-02-01"),
                        ("test", "2011-02-01", None)])  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    split = summary["recipe"]["split"]
    assert split["kind"] == "chronological"
    assert split["intervals"] == [
        {"role": "train", "start": None, "end": "2011-01-15 00:00:00"},
        {"role": "select", "start": "2011-01-15 00:00:00", "end": "2011-02-01 00:00:00"},
        {"role": "test", "start": "2011-02-01 00:00:00", "end": None},
    ]
    assert split["purge"] == {"window": "24h", "gap_hours": None}
    fold = summary["folds"]["1"]
    assert fold["purged"] == 46 == summary["counts"]["split_purged"]
    assert (fold["train"], fold["select"], fold["val"]) == (len(train), len(select), len(test))
    assert fold["train"] + fold["select"] + fold["val"] + 46 == summary["counts"]["instances"]
    # the fold files keep the study's format; labels.csv says each row's role
    assert (out / "Fold1_train.csv").read_text().startswith("label,goes_class\n")
    table = pd.read_csv(out / "labels.csv")
    assert table["split"].value_counts().to_dict() == {
        "train": len(train), "select": len(select), "test": len(test), "purged": 46,
    }  # fmt: skip
    # the stages downstream read the fold as before, and the selection set beside it
    tables = fold_tables(out, 1)
    assert len(tables.train) == len(train) and len(tables.val) == len(test)
    assert len(select_table(out, 1)[0]) == len(select)
    from_table = fold_tables(out / "labels.csv", 1)
    assert list(from_table.val["label"]) == list(tables.val["label"])
    assert list(select_table(out / "labels.csv", 1)[0]["label"]) == list(
        select_table(out, 1)[0]["label"]
    )
    # a quarterly folder has no selection set
    code, err = _label(tmp_path, "q", "--start", "2011-01-01", "--end", "2011-02-10", capsys=capsys)
    assert code == 0 and select_table(tmp_path / "q", 1) is None


def test_gap_hours_also_purge_after_each_held_interval(tmp_path, capsys):
    _inputs(tmp_path, "2011-01-01", "2011-03-01", ["2011-01-05 03:00", "2011-02-20 03:00"])
    split = {
        "intervals": [
            {"role": "train", "start": None, "end": "2011-01-20"},
            {"role": "select", "start": "2011-01-20", "end": "2011-01-25"},
            {"role": "train", "start": "2011-01-25", "end": "2011-02-10"},
            {"role": "test", "start": "2011-02-10", "end": None},
        ]
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    code, err = _label(
        tmp_path, "o", "--start", "2011-01-01", "--end", "2011-03-01",
        "--split", str(tmp_path / "split.json"), "--gap-hours", "12", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    train = _times(tmp_path / "o" / "Fold1_train.csv")
    # the training instances of 2011-01-25 00:00 .. 11:00 follow the selection too closely
    after = train[train >= pd.Timestamp("2011-01-25")]
    assert after.min() == pd.Timestamp("2011-01-25 12:00")
    _check_purged(
        tmp_path / "o", [(iv["role"], iv["start"], iv["end"]) for iv in split["intervals"]]
    )
    # before 2011-01-20 and before 2011-02-10: 23 each by the window; after the select: 12
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["folds"]["1"]["purged"] == 58


def test_split_file_round_trips_and_leaves_gaps_out(tmp_path, capsys):
    _inputs(tmp_path, "2011-01-01", "2011-03-01", ["2011-01-05 03:00"], cadence="6h")
    split = {
        "intervals": [
            {"role": "train", "start": "2011-01-01", "end": "2011-01-20"},
            {"role": "select", "start": "2011-01-22", "end": "2011-02-01"},
            {"role": "test", "start": "2011-02-05T00:00:00Z", "end": "2011-02-20"},
        ]
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    code, err = _label(
        tmp_path, "o", "--start", "2011-01-01", "--end", "2011-03-01", "--cadence", "6h",
        "--split", str(tmp_path / "split.json"), capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    record = summary["recipe"]["split"]
    assert record["kind"] == "file" and record["source"] == str(tmp_path / "split.json")
    # the gaps (20-22 January, 1-5 February, from 20 February) belong to nothing
    test = _times(tmp_path / "o" / "Fold1_val.csv")
    assert test.min() == pd.Timestamp("2011-02-05") and test.max() < pd.Timestamp("2011-02-20")
    assert summary["counts"]["split_excluded"] == 4 * (2 + 4 + 9)
    # nothing reaches across a gap into the next interval: no purge was needed
    assert summary["folds"]["1"]["purged"] == 0
    # the recorded split, written back as a file, is the same split
    (tmp_path / "again.json").write_text(json.dumps(record))
    again = read_split_file(tmp_path / "again.json")
    assert [iv.to_dict() for iv in again.intervals] == record["intervals"]


@pytest.mark.parametrize(
    ("intervals", "words"),
    [
        ([{"role": "train", "start": None, "end": "2011-02-01"},
          {"role": "test", "start": "2011-01-15", "end": None}], r"intervals\[1\].*overlap"),
        ([{"role": "training", "start": None, "end": "2011-02-01"},
          {"role": "test", "start": "2011-02-01", "end": None}], r"intervals\[0\]\.role.*training"),
        ([{"role": "train", "start": None, "end": "2011-02-01"},
          {"role": "test", "start": "2011-03-01", "end": "2011-02-01"}], r"intervals\[1\]\.end"),
        ([{"role": "train", "start": None, "end": "2011-02-01"}], "no test interval"),
        ([{"role": "train", "start": "Monday", "end": "2011-02-01"},
          {"role": "test", "start": "2011-02-01", "end": None}], r"intervals\[0\]\.start"),
    ],
)  # fmt: skip
def test_bad_split_files_name_file_and_field(tmp_path, capsys, intervals, words):
    _inputs(tmp_path, "2011-01-01", "2011-01-03", [])
    (tmp_path / "split.json").write_text(json.dumps({"intervals": intervals}))
    code, err = _label(tmp_path, "o", "--split", str(tmp_path / "split.json"), capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("fdflare label: error: ") and "split.json" in err
    assert re.search(words, err), err
    assert not (tmp_path / "o").exists()


def _suryabench_reference(t: pd.Timestamp) -> str:
    """``assign_split`` of SuryaBench's flare/flare_split.py, written out from its rules."""
    if t >= pd.Timestamp("2020-01-01"):
        return "test"
    if t.year <= 2010:
        return "training"
    m, d = t.month, t.day
    if (m == 1 and 1 <= d <= 14) or (m == 2 and 1 <= d <= 14):
        return "leaky_validation"
    if m == 1 and 15 <= d <= 31:
        return "validation"
    return "training"


def test_suryabench_rules_on_every_hour_of_2010_to_2024():
    times = pd.date_range("2010-01-01", "2025-01-01", freq="1h", inclusive="left")
    ours = suryabench().roles(times)
    name = {"training": "train", "validation": "select", "test": "test",
            "leaky_validation": "excluded"}  # fmt: skip
    # the reference rule depends on the day only: check each day, then every hour
    days = pd.date_range("2010-01-01", "2024-12-31", freq="1D")
    expected_day = {d: name[_suryabench_reference(d)] for d in days}
    expected = np.array([expected_day[t.normalize()] for t in times], dtype=object)
    assert (ours == expected).all()
    counts = pd.Series(ours).value_counts().to_dict()
    assert counts["select"] == 9 * 17 * 24 and counts["excluded"] == 9 * 28 * 24


def test_suryabench_through_the_cli_purges_the_test_boundary(tmp_path, capsys):
    _inputs(tmp_path, "2019-01-10", "2020-01-03", ["2019-12-31 20:00", "2019-01-31 23:30"])
    code, err = _label(
        tmp_path, "o", "--start", "2019-01-10", "--end", "2020-01-03", "--split", "suryabench",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    out = tmp_path / "o"
    train, select, test = (_times(out / f"Fold1_{p}.csv") for p in ("train", "select", "val"))
    assert test.min() == pd.Timestamp("2020-01-01")
    assert select.min() == pd.Timestamp("2019-01-15") and select.max() < pd.Timestamp("2019-02-01")
    assert train.min() == pd.Timestamp("2019-02-15")
    # training stops 24 h before the test start: no training window reaches into it
    assert train.max() == pd.Timestamp("2019-12-31 00:00")
    record = json.loads((out / "summary.json").read_text())["recipe"]["split"]
    assert record["kind"] == "suryabench" and "flare_split.py" in record["source"]
    assert Split("suryabench", suryabench().intervals).to_dict()["intervals"] == record["intervals"]
