"""``fdflare verify`` on small written histories and stores: one forecast per window, times
compared parsed, the recipe's event, the messages, and nothing changed on failure.

Every run goes through the real CLI; the stores are real SQLite files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fdflare.cli import main

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2011-06-01T00:00:00")


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def row(start: pd.Timestamp, prob: float, *, issued: pd.Timestamp | None = None,
        fmt=_iso, threshold: str = "", window: str = "", recipe: bool = True) -> dict[str, str]:  # fmt: skip
    """One history row for a window starting at ``start`` (requested at the same time)."""
    length = pd.Timedelta(window or "24h")
    r = {
        "timestamp": start.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S.jp2"),
        "flare_prob": f"{prob:.6f}",
        "target": "",
        "requested_time": fmt(start),
        "issue_time": fmt(issued if issued is not None else start),
        "observation_time": fmt(start),
        "window_start": fmt(start),
        "window_end": fmt(start + length),
        "image_id": "1",
        "base_url": "http://127.0.0.1:9/v2/",
        "calibrated": "0",
        "spread": "0.000000",
        "member_probs": f"{prob:.6f}",
        "checkpoints": "a.ckpt",
    }
    if recipe:
        r.update(threshold=threshold, window=window, recipe="")
    return r


def write_history(path: Path, rows: list[dict[str, str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, lineterminator="\n")
    return path


@pytest.fixture
def catalog(tmp_path) -> Path:
    """M flares at noon of days 2 and 4 (from T0), a C5 flare at day 6 10:00."""
    path = tmp_path / "flares.csv"
    path.write_text(
        "start_time,goes_class,fl_lon,fl_lat\n"
        "2011-06-02 12:00:00,M2.0,10.0,10.0\n"
        "2011-06-04 12:00:00,M1.5,-20.0,5.0\n"
        "2011-06-07 10:00:00,C5.0,0.0,0.0\n"
    )
    return path


def verify(tmp_path, capsys, *extra: str, history: Path | None = None, catalog: Path) -> tuple:
    argv = ["verify", "--catalog", str(catalog), "--start", "2011-06-01", "--end",
            "2011-06-12", *extra]  # fmt: skip
    if history is not None:
        argv += ["--history", str(history)]
    return cli(argv, capsys)


def six_days(probs=(0.9, 0.1, 0.1, 0.1, 0.1, 0.1)) -> list[dict[str, str]]:
    return [row(T0 + i * DAY, p) for i, p in enumerate(probs)]


def test_one_forecast_written_in_two_notations_is_counted_once(tmp_path, capsys, catalog):
    rows = six_days()
    rows.append(row(T0, 0.2, fmt=lambda t: t.strftime("%Y-%m-%d %H:%M:%S")))  # the same window
    hist = write_history(tmp_path / "h.csv", rows)
    code, out, err = verify(tmp_path, capsys, "--json", history=hist, catalog=catalog)
    assert code == 0, err
    result = json.loads(out)
    assert result["forecasts"] == 7 and result["verified"] == 6 and result["reissues"] == 1
    assert result["scores"]["model"]["n"] == 6


def test_the_first_forecast_issued_is_scored_and_reissues_are_counted(tmp_path, capsys, catalog):
    rows = six_days()
    # day 2's flare, forecast again after it happened with a perfect probability: left out
    rows.append(row(T0 + DAY, 1.0, issued=T0 + 2 * DAY))
    hist = write_history(tmp_path / "h.csv", rows)
    out_csv = tmp_path / "verified.csv"
    code, out, err = verify(tmp_path, capsys, "--out", str(out_csv), history=hist, catalog=catalog)
    assert code == 0, err
    assert "1 re-issue(s) left out" in out
    table = pd.read_csv(out_csv, keep_default_na=False)
    day2 = table[table["window_start"] == _iso(T0 + DAY)]
    assert len(day2) == 1 and day2["flare_prob"].iloc[0] == pytest.approx(0.1)
    # the export is a prediction file: fdflare evaluate reads it
    code, ev, err = cli(["evaluate", "--json", str(out_csv)], capsys)
    assert code == 0, err
    assert json.loads(ev)["files"][0]["tp"] + json.loads(ev)["files"][0]["fn"] == 2


def test_mixed_time_notations_are_all_times(tmp_path, capsys, catalog):
    rows = six_days()
    rows[0] = row(T0 + pd.Timedelta(seconds=42), 0.9, fmt=lambda t: t.strftime("%Y-%m-%d %H:%M:%S"))
    rows[1] = row(T0 + DAY + pd.Timedelta(hours=12, seconds=42), 0.1)
    hist = write_history(tmp_path / "h.csv", rows)
    code, out, err = verify(tmp_path, capsys, "--json", history=hist, catalog=catalog)
    assert code == 0, err
    assert json.loads(out)["verified"] == 6


def test_both_below_zero_is_said_worse_than_climatology(tmp_path, capsys, catalog):
    hist = write_history(tmp_path / "h.csv", six_days())
    code, out, err = verify(tmp_path, capsys, history=hist, catalog=catalog)
    assert code == 0, err
    tss = next(line for line in out.splitlines() if line.startswith("TSS:"))
    assert "beats persistence (-0.2500 vs -0.5000)" in tss
    assert "both are below 0: worse than climatology's 0" in tss
    # how sure: six days are too few to say
    assert "difference +0.250 (too few days to say how sure (6; 10 needed))" in tss
    code, out, err = verify(tmp_path, capsys, "--json", history=hist, catalog=catalog)
    diff = json.loads(out)["difference_vs_persistence"]["tss"]
    assert diff["mean"] == pytest.approx(0.25) and diff["verdict"] is None and diff["days"] == 6


def test_before_the_catalog_names_the_first_left_out_and_the_option(tmp_path, capsys, catalog):
    hist = write_history(tmp_path / "h.csv", six_days())
    code, out, err = cli(["verify", "--history", str(hist), "--catalog", str(catalog), "--end",
                          "2011-06-12"], capsys)  # fmt: skip
    assert code == 0, err
    assert "1 forecast(s) before the catalog" in out
    assert "the first at 2011-06-01T00:00:00Z" in out and "--start 2011-06-01T00:00:00Z" in out


def test_the_recipes_threshold_and_window_label_the_forecasts(tmp_path, capsys, catalog):
    # >= C1.0 in 12 h: day 7's C5 at 10:00 is in the window of 00:00 and of 06:00, not 12:00
    rows = [row(T0 + 6 * DAY + pd.Timedelta(hours=h), 0.5, threshold="C1.0", window="12h")
            for h in (0, 6, 12)]  # fmt: skip
    hist = write_history(tmp_path / "h.csv", rows)
    out_csv = tmp_path / "v.csv"
    code, out, err = verify(tmp_path, capsys, "--out", str(out_csv), history=hist, catalog=catalog)
    assert code == 0, err
    assert "P(flare >= C1.0 in the next 12 h)" in out
    assert list(pd.read_csv(out_csv)["target"]) == [1, 1, 0]
    # a history of the study's columns only: the study's event, assumed and said
    old = [row(T0 + i * DAY, 0.5, recipe=False) for i in range(3)]
    hist2 = write_history(tmp_path / "old.csv", old)
    code, out, err = verify(tmp_path, capsys, history=hist2, catalog=catalog)
    assert code == 0, err
    assert "flare >= M1.0 in the next 24 h" in out and "assumed" in out
    # two events in one history are refused
    mixed = write_history(tmp_path / "mixed.csv", [*rows, row(T0, 0.5, threshold="M1.0", window="24h")])  # fmt: skip
    code, out, err = verify(tmp_path, capsys, history=mixed, catalog=catalog)
    assert code == 2 and "2 events" in err and err.count("\n") == 1


def test_a_store_verifies_as_its_history_and_imports_once(tmp_path, capsys, catalog):
    rows = six_days()
    rows.append(row(T0 + DAY, 1.0, issued=T0 + 2 * DAY))
    hist = write_history(tmp_path / "h.csv", rows)
    db = tmp_path / "s.sqlite"
    code, out, err = cli(["verify", "--store", str(db), "--import-history", str(hist)], capsys)
    assert code == 0, err
    assert f"imported 7 forecast(s) from {hist} into {db}" in out
    code, out, err = cli(["verify", "--store", str(db), "--import-history", str(hist)], capsys)
    assert code == 0 and "imported 0 forecast(s)" in out and "7 already there" in out
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    code, js_h, err = verify(tmp_path, capsys, "--json", "--out", str(a), history=hist, catalog=catalog)  # fmt: skip
    assert code == 0, err
    code, js_s, err = verify(tmp_path, capsys, "--json", "--store", str(db), "--out", str(b), catalog=catalog)  # fmt: skip
    assert code == 0, err
    h, s = json.loads(js_h), json.loads(js_s)
    assert h["scores"] == s["scores"] and s["reissues"] == 1
    ta, tb = pd.read_csv(a), pd.read_csv(b)
    assert list(ta["target"]) == list(tb["target"]) and list(ta["flare_prob"]) == list(tb["flare_prob"])  # fmt: skip


def test_empty_histories_and_stores_say_so(tmp_path, capsys, catalog):
    from fdflare.forecast.formats import HISTORY_COLUMNS
    from fdflare.forecast.store import ForecastStore

    header = tmp_path / "header.csv"
    header.write_text(",".join(HISTORY_COLUMNS) + "\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    db = tmp_path / "s.sqlite"
    ForecastStore.open(db).close()
    for argv in (["--history", str(header)], ["--history", str(empty)], ["--store", str(db)]):
        code, out, err = cli(["verify", "--catalog", str(catalog), *argv], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and "empty" in err, err


def test_scoreboard_file_carries_the_recipes_window_and_bin():
    import types

    from fdflare.core.recipe import Recipe
    from fdflare.forecast.formats import scoreboard_text
    from fdflare.forecast.service import Forecast, Member, Observation

    obs = Observation("archive:/x", "a.jp2", pd.Timestamp("2011-01-01T10:00:42"))
    member = Member("a.ckpt", types.SimpleNamespace(model="alexnet"), None, 0.3, 0.3)
    fc = Forecast(0.3, pd.Timestamp("2011-01-01T10:00"), obs, [member], False,
                  pd.Timestamp("2011-01-01T10:01"), Recipe(threshold="C1.0", window="12h"))  # fmt: skip
    lines = scoreboard_text(fc, "m").splitlines()
    assert "Prediction Window End Time: 2011-01-01T22:00Z" in lines
    assert "Prediction window (hours): 12" in lines and "Probability Bins: C+" in lines
    assert "#C+_prob C+_uncert" in lines
