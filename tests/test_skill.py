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


def _days(tmp_path, name, prob, target, days=40, per_day=6):
    names = [
        f"2011/{1 + d // 28:02d}/{1 + d % 28:02d}/HMI.m2011.{1 + d // 28:02d}.{1 + d % 28:02d}_"
        f"{4 * h:02d}.00.00.png"
        for d in range(days)
        for h in range(per_day)
    ]
    path = tmp_path / name
    _write(path, names, prob, target)
    return path


def test_the_difference_from_a_baseline_is_paired_over_days_with_an_interval(tmp_path):
    from fdflare.analysis.skill import score_difference

    rng = np.random.default_rng(1)
    n = 40 * 6
    y = np.repeat(rng.random(40) < 0.3, 6).astype(int)  # flaring days
    noisy = np.where(rng.random(n) < 0.25, 1 - y, y).astype(float)  # wrong a quarter of the time
    perfect = _days(tmp_path, "fold1_perfect.csv", y.astype(float), y)
    same = _days(tmp_path, "fold1_same.csv", noisy, y)
    wrong = _days(tmp_path, "fold1_wrong.csv", 1.0 - y, y)
    base = _days(tmp_path, "fold1_persistence.csv", noisy, y)
    better = score_difference([perfect], [base])
    assert better["verdict"] == "better" and 0 < better["low"] < better["mean"] < better["high"]
    assert better["mean"] == pytest.approx(1.0 - (noisy[y == 1].mean() - noisy[y == 0].mean()))
    tie = score_difference([same], [base])  # the same forecasts: no difference at all
    assert tie["mean"] == 0 and tie["verdict"] == "within noise" and tie["se"] == 0
    assert score_difference([wrong], [base])["verdict"] == "worse"
    # the replicates resample days: one day's instances stay together, so a model that
    # differs only on a few days is not called better on the strength of many hours
    few = y.astype(float).copy()
    few[: 6 * 38] = noisy[: 6 * 38]
    close = score_difference([_days(tmp_path, "fold1_few.csv", few, y)], [base])
    assert close["verdict"] == "within noise" and close["low"] <= 0 < close["high"]
    # a fold with one class has no TSS: left out, and counted
    one = _days(tmp_path, "fold2_one.csv", noisy, np.zeros(n, int))
    base2 = _days(tmp_path, "fold2_persistence.csv", noisy, np.zeros(n, int))
    both = score_difference([perfect, one], [base, base2])
    assert both["folds"] == 1 and both["folds_left_out"] == 1
    assert both["mean"] == pytest.approx(better["mean"])
    assert score_difference([one], [base2])["verdict"] is None


def test_evaluate_states_how_sure_the_comparison_is(folds, capsys):
    models, base = folds
    files = [str(models / f"fold{k}_m.csv") for k in (1, 2)]
    assert main(["evaluate", *files, "--baseline", str(base), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    diff = res["comparison"]["difference"]["persistence"]["tss"]
    assert diff["mean"] == pytest.approx(
        res["mean"]["tss"] - res["baselines"]["persistence"]["mean"]["tss"]
    )
    assert diff["low"] <= diff["mean"] <= diff["high"] and diff["block"] == "day"
    assert main(["evaluate", *files, "--baseline", str(base)]) == 0
    text = capsys.readouterr().out
    assert "95 % interval over days" in text
