"""Scores beside the baselines: evaluate --baseline and --std."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fdflare.cli import main


def _write(path, names, prob, target):
    pd.DataFrame({"timestamp": names, "flare_prob": prob, "target": target}).to_csv(
        path, index=False
    )


@pytest.fixture
def folds(tmp_path):
    rng = np.random.default_rng(0)
    models, base = tmp_path / "pred", tmp_path / "base"
    models.mkdir()
    base.mkdir()
    for k in (1, 2):
        names = [f"/cluster/x/2011/0{k}/01/HMI.m2011.0{k}.01_{h:02d}.00.00.jpg" for h in range(24)]
        y = (rng.random(24) < 0.4).astype(int)
        y[:2] = [0, 1]
        model = np.clip(y * 0.6 + rng.random(24) * 0.5, 0, 1)
        pers = np.roll(y, 1).astype(float)
        rel = [n.split("/x/")[1] for n in names]
        _write(models / f"fold{k}_m.csv", names, model, y)
        _write(base / f"fold{k}_persistence.csv", rel, pers, y)
        _write(base / f"fold{k}_climatology.csv", rel, np.full(24, 0.4), y)
    return models, base


def test_evaluate_beside_baselines(folds, capsys):
    models, base = folds
    files = [str(models / f"fold{k}_m.csv") for k in (1, 2)]
    assert main(["evaluate", *files, "--baseline", str(base), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["baselines"]) == {"persistence", "climatology"}
    for i, row in enumerate(res["comparison"]["files"]):
        m, p = res["files"][i], res["baselines"]["persistence"]["files"][i]
        c = res["baselines"]["climatology"]["files"][i]
        assert row["tss_skill_vs_persistence"] == pytest.approx(
            (m["tss"] - p["tss"]) / (1 - p["tss"])
        )
        assert row["bss_vs_climatology"] == pytest.approx(1 - m["brier"] / c["brier"])
    beats = res["comparison"]["beats"]["persistence"]["tss"]
    assert beats == (res["mean"]["tss"] > res["baselines"]["persistence"]["mean"]["tss"])
    assert main(["evaluate", *files, "--baseline", str(base)]) == 0
    text = capsys.readouterr().out
    assert "  persistence" in text and "  climatology" in text
    assert ("mean TSS beats persistence" in text) == beats
    assert ("mean TSS does NOT beat persistence" in text) == (not beats)


def test_a_model_that_loses_is_reported_as_losing(folds, capsys):
    models, base = folds
    for k in (1, 2):
        df = pd.read_csv(models / f"fold{k}_m.csv")
        df["flare_prob"] = 1 - df["target"]  # always wrong
        df.to_csv(models / f"fold{k}_m.csv", index=False)
    files = [str(models / f"fold{k}_m.csv") for k in (1, 2)]
    assert main(["evaluate", *files, "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "mean TSS does NOT beat persistence" in out
    assert "mean TSS does NOT beat climatology" in out


def test_baselines_must_forecast_the_same_instances(folds, capsys):
    models, base = folds
    df = pd.read_csv(base / "fold2_climatology.csv").iloc[:-1]
    df.to_csv(base / "fold2_climatology.csv", index=False)
    files = [str(models / f"fold{k}_m.csv") for k in (1, 2)]
    assert main(["evaluate", *files, "--baseline", str(base)]) == 2
    assert "forecasts other instances" in capsys.readouterr().err
    (base / "fold2_climatology.csv").unlink()
    assert main(["evaluate", *files, "--baseline", str(base)]) == 2
    assert "fold2_climatology.csv" in capsys.readouterr().err


def test_std_population_or_sample(folds, capsys):
    models, _ = folds
    files = [str(models / f"fold{k}_m.csv") for k in (1, 2)]
    main(["evaluate", *files, "--json"])
    pop = json.loads(capsys.readouterr().out)
    main(["evaluate", *files, "--json", "--std", "sample"])
    sample = json.loads(capsys.readouterr().out)
    tss = [f["tss"] for f in pop["files"]]
    assert pop["std"]["tss"] == pytest.approx(np.std(tss, ddof=0))
    assert sample["std"]["tss"] == pytest.approx(np.std(tss, ddof=1))
    assert pop["std_kind"] == "population" and sample["std_kind"] == "sample"
    with pytest.raises(SystemExit):
        main(["evaluate", *files, "--std", "bogus"])


@pytest.mark.reference
def test_study_alexnet_beside_persistence(reference_dir, tmp_path, capsys):
    base = tmp_path / "base"
    rc = main(
        [
            "baseline",
            "--catalog",
            str(reference_dir / "flare_catalog_partial.csv"),
            "--labels",
            str(reference_dir / "labels"),
            "--out",
            str(base),
        ]
    )
    assert rc == 0
    capsys.readouterr()
    files = [str(reference_dir / "predictions" / f"fold{k}_alex.csv") for k in range(1, 5)]
    assert main(["evaluate", *files, "--baseline", str(base), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mean"]["tss"] == pytest.approx(0.5259, abs=1e-4)
    beats = res["comparison"]["beats"]["persistence"]
    assert beats == {"tss": True, "hss2": False}  # the study's HSS2 loses to persistence
    bss = [r["bss_vs_climatology"] for r in res["comparison"]["files"]]
    assert bss == pytest.approx([0.063, -0.308, -0.321, -0.148], abs=1e-3)


def test_markdown_tables_escape_bars_inside_cells():
    from fdflare.core.table import render_table

    text = render_table(["class", "location"], [["X", "central |lon| <= 70"]], markdown=True)
    rows = text.splitlines()
    assert rows[2] == "| X | central \\|lon\\| <= 70 |"
    # every row has as many cell separators as the header: the table is not broken
    assert all(r.replace("\\|", "").count("|") == rows[0].count("|") for r in rows)


def _day_times(days=40, per_day=6):
    return pd.DatetimeIndex(
        [pd.Timestamp("2011-01-01") + pd.Timedelta(days=d, hours=4 * h)
         for d in range(days) for h in range(per_day)]
    )  # fmt: skip


def test_the_difference_from_a_baseline_is_paired_over_days_with_an_interval():
    from fdflare.analysis.skill import MIN_DAYS, paired_difference

    rng = np.random.default_rng(1)
    times = _day_times()
    n = len(times)
    y = np.repeat(rng.random(40) < 0.3, 6).astype(int)  # flaring days
    noisy = np.where(rng.random(n) < 0.25, 1 - y, y).astype(float)  # wrong a quarter of the time

    def diff(model, base=noisy, target=y, t=times, score="tss"):
        return paired_difference([(model, base, target, t)])[score]

    better = diff(y.astype(float))
    assert better["verdict"] == "better" and 0 < better["low"] < better["mean"] < better["high"]
    assert better["mean"] == pytest.approx(1.0 - (noisy[y == 1].mean() - noisy[y == 0].mean()))
    assert better["days"] == 40 and better["reason"] is None
    tie = diff(noisy)  # the same forecasts: no difference at all
    assert tie["mean"] == 0 and tie["verdict"] == "within noise" and tie["se"] == 0
    assert diff(1.0 - y)["verdict"] == "worse"
    assert diff(1.0 - y, score="hss2")["verdict"] == "worse"
    # the replicates resample days: one day's instances stay together, so a model that
    # differs only on a few days is not called better on the strength of many hours
    few = y.astype(float).copy()
    few[: 6 * 38] = noisy[: 6 * 38]
    close = diff(few)
    assert close["verdict"] == "within noise" and close["low"] <= 0 < close["high"]
    # too few days to say: the difference, no interval, and why
    short = slice(0, 6 * (MIN_DAYS - 1))
    little = diff(y[short].astype(float), noisy[short], y[short], times[short])
    assert little["mean"] > 0 and little["verdict"] is None and little["low"] is None
    assert "too few days" in little["reason"]
    # image names without a time: no days to group the instances in, so no interval
    untimed = diff(y.astype(float), t=pd.DatetimeIndex([pd.NaT] * n))
    assert untimed["verdict"] is None and "without a time" in untimed["reason"]
    # a fold with one class has no TSS: left out, and counted
    zeros = np.zeros(n, int)
    both = paired_difference([(y.astype(float), noisy, y, times), (noisy, noisy, zeros, times)])
    assert both["tss"]["folds"] == 1 and both["tss"]["folds_left_out"] == 1
    assert both["tss"]["mean"] == pytest.approx(better["mean"])
    alone = paired_difference([(noisy, noisy, zeros, times)])["tss"]
    assert alone["mean"] is None and alone["verdict"] is None


def test_baselines_with_other_targets_or_doubled_names_are_refused(folds, capsys):
    models, base = folds
    files = [str(models / f"fold{k}_m.csv") for k in (1, 2)]
    pers = pd.read_csv(base / "fold2_persistence.csv")
    pers.loc[5, "target"] = 1 - pers.loc[5, "target"]
    pers.to_csv(base / "fold2_persistence.csv", index=False)
    assert main(["evaluate", *files, "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert "fold2_persistence.csv" in err and "targets differ" in err and err.count("\n") == 1
    pers.loc[5, "target"] = 1 - pers.loc[5, "target"]
    pers.to_csv(base / "fold2_persistence.csv", index=False)
    model = pd.read_csv(models / "fold1_m.csv")
    model.loc[3, "timestamp"] = model.loc[2, "timestamp"].replace("/cluster/x/", "/other/")
    model.to_csv(models / "fold1_m.csv", index=False)
    assert main(["evaluate", *files, "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert "two rows name the image" in err and "fold1_m.csv" in err and "Traceback" not in err


def test_evaluate_states_how_sure_the_comparison_is(folds, capsys):
    models, base = folds
    files = [str(models / f"fold{k}_m.csv") for k in (1, 2)]
    assert main(["evaluate", *files, "--baseline", str(base), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    diff = res["comparison"]["difference"]["persistence"]["tss"]
    assert diff["mean"] == pytest.approx(
        res["mean"]["tss"] - res["baselines"]["persistence"]["mean"]["tss"]
    )
    # one day per fold: too few to say how sure (the study's release has an interval:
    # test_report.py)
    assert diff["days"] == 2 and diff["verdict"] is None and diff["low"] is None
    assert main(["evaluate", *files, "--baseline", str(base)]) == 0
    text = capsys.readouterr().out
    assert "(too few days to say how sure (2; 10 needed))" in text
