"""The selection protocols through the real CLI: study (select on the scored fold) vs honest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clitools import run_cli as cli
from fdflare.core.scores import confusion, skill_scores
from test_data import make_tiny_dataset

FAST = ["--model", "smallcnn", "--no-pretrained", "--image-size", "32", "--workers", "0",
        "--batch-size", "16", "--quiet"]  # fmt: skip
#: the tiny dataset's images lie on the 3rd and 10th of each month of 2011 (00:00, 01:00);
#: a flare on the 3rd at noon makes that day's two images positive
FLARE_MONTHS = (1, 2, 4, 5, 7, 8, 10, 11)


@pytest.fixture(scope="module")
def chrono(tmp_path_factory) -> dict[str, Path]:
    """Tiny images labelled with a chronological split: train H1, select Q3, test Q4."""
    root = tmp_path_factory.mktemp("chrono")
    ds = make_tiny_dataset(root / "tiny", size=32)
    cat = root / "cat.csv"
    cat.write_text(
        "start_time,goes_class,fl_lon,fl_lat\n"
        + "".join(f"2011-{m:02d}-03 12:00:00,M1.5,10,10\n" for m in FLARE_MONTHS)
    )
    argv = ["label", "--catalog", str(cat), "--images", str(ds["images"]), "--out",
            str(root / "labels"), "--start", "2011-01-01", "--end", "2012-01-01",
            "--split", "chronological", "--select-from", "2011-07-01", "--test-from", "2011-10-01"]  # fmt: skip
    from fdflare.cli import main

    assert main(argv) == 0
    return {"root": root, "images": ds["images"], "labels": root / "labels", "catalog": cat}


def _train(chrono, out: Path, *extra: str, capsys) -> dict:
    argv = ["train", "--labels", str(chrono["labels"]), "--images", str(chrono["images"]),
            "--out", str(out), "--epochs", "2", "--max-lr", "0.003", *FAST, *extra]  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 0, err
    return json.loads((out / "summary.json").read_text())


def test_honest_selects_on_the_select_interval_study_on_the_test(chrono, tmp_path, capsys):
    honest = _train(chrono, tmp_path / "honest", "--protocol", "honest", capsys=capsys)
    assert (honest["protocol"], honest["selected_on"], honest["selection_rule"]) == (
        "honest", "select", "loss",
    )  # fmt: skip
    assert honest["counts"]["select"] == 12 and honest["counts"]["holdout"] == 0
    assert honest["counts"]["train"] == 24 and honest["counts"]["val"] == 12
    m = pd.read_csv(tmp_path / "honest" / "metrics.csv")
    assert {"select_loss", "select_tss", "select_hss2", "val_tss"} <= set(m.columns)
    assert "holdout_tss" not in m.columns
    # the loss rule keeps the epoch of the lowest selection loss, whatever the test fold says
    assert honest["best_epoch"] == int(m.loc[m["select_loss"].idxmin(), "epoch"])
    assert list(m["selected"]) == [1, int(m["select_loss"][1] < m["select_loss"][0])]

    study = _train(chrono, tmp_path / "study", capsys=capsys)
    assert (study["protocol"], study["selected_on"], study["selection_rule"]) == (
        "study", "val", "study",
    )  # fmt: skip
    assert "select_tss" not in pd.read_csv(tmp_path / "study" / "metrics.csv").columns


def test_ema_checkpoint_holds_the_scored_average(chrono, tmp_path, capsys):
    out = tmp_path / "ema"
    summary = _train(chrono, out, "--protocol", "honest", "--average", "ema", capsys=capsys)
    assert summary["average"] == "ema"
    ckpt = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    # the averaged weights are the checkpoint's model; the raw ones are kept to resume
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)
    # predict scores exactly what training scored: the averaged weights
    pred = tmp_path / "pred.csv"
    code, err = cli(
        ["predict", "--checkpoint", str(out / "last.ckpt"), "--labels",
         str(chrono["labels"] / "Fold1_val.csv"), "--images", str(chrono["images"]),
         "--out", str(pred), "--batch-size", "16"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    p = pd.read_csv(pred)
    tss, _, _ = skill_scores(*confusion(p["flare_prob"].to_numpy(), p["target"].to_numpy(), 0.5))
    last = pd.read_csv(out / "metrics.csv").iloc[-1]
    assert tss == pytest.approx(last["val_tss"], abs=1e-9)


def test_cv_honest_on_a_chronological_split(chrono, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = ["cv", "--models", "smallcnn", "--labels", str(chrono["labels"]), "--images",
            str(chrono["images"]), "--out", str(out), "--epochs", "1", "--protocol", "honest",
            "--catalog", str(chrono["catalog"]), *FAST[2:]]  # fmt: skip
    from fdflare.cli import main

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "protocol honest" in printed and "selected on select" in printed
    summary = pd.read_csv(out / "cv_summary.csv")
    assert list(summary["fold"]) == [1]  # a chronological split has one fold
    assert list(summary["protocol"]) == ["honest"] and list(summary["selected_on"]) == ["select"]
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "honest" and results["selection_rule"] == "loss"
    # persistence forecast the same test instances
    pers = pd.read_csv(out / "baselines" / "fold1_persistence.csv")
    assert len(pers) == summary["n"][0] == 12
    # one fold, calibrated all the same: the map is fitted on the selection interval
    cal = results["models"]["smallcnn"]["calibration"]
    assert cal["fitted_on"] == "select", cal
    fitted = pd.read_csv(out / "predictions" / "select" / "fold1_smallcnn.csv")
    select = pd.read_csv(chrono["labels"] / "Fold1_select.csv")
    assert list(fitted["timestamp"]) == list(select["label"])
    assert (out / "calibration" / "smallcnn" / "fold1_smallcnn.csv").is_file()
    ensemble = json.loads((out / "ensemble.json").read_text())
    assert all(m["calibration"] is not None for m in ensemble["members"]), ensemble


def test_expected_best_of_n_and_the_day_bootstrap():
    from fdflare.analysis.selection import expected_max_normal, tss_standard_error

    assert expected_max_normal(1) == pytest.approx(0.0, abs=1e-9)
    assert expected_max_normal(2) == pytest.approx(1 / np.sqrt(np.pi), rel=1e-6)
    assert expected_max_normal(50) == pytest.approx(2.2491, abs=1e-3)
    # one instance a day, independent: the bootstrap SE is the binomial one
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.random(n) < 0.3
    pred = np.where(y, rng.random(n) < 0.7, rng.random(n) < 0.2)
    times = pd.date_range("2011-01-01", periods=n, freq="1D")
    se = tss_standard_error(pred.astype(float), y, times)
    p1, p0 = pred[y].mean(), pred[~y].mean()
    binomial = np.sqrt(p1 * (1 - p1) / y.sum() + p0 * (1 - p0) / (~y).sum())
    assert se == pytest.approx(binomial, rel=0.15)
    # the same instances repeated 24 times within each day are one draw, not 24
    hourly = pd.DatetimeIndex(np.repeat(times.values, 24)) + pd.to_timedelta(
        np.tile(np.arange(24), n), unit="h"
    )
    se24 = tss_standard_error(np.repeat(pred, 24).astype(float), np.repeat(y, 24), hourly)
    assert se24 == pytest.approx(se, rel=0.15)


def test_the_demo_is_honest_and_the_study_one_option_away():
    from fdflare.reports.demo import DemoConfig
    from fdflare.training.config import TrainConfig
    from fdflare.training.protocol import selection_rule, selection_set

    honest = DemoConfig().train_config(1, "labels", "images")
    assert honest.protocol == "honest" and TrainConfig().protocol == "study"
    assert selection_set(honest, has_select=False) != "val"
    study = DemoConfig().updated({"protocol": "study"})
    tcfg = study.train_config(1, "labels", "images")
    assert selection_set(tcfg, has_select=False) == "val" and selection_rule(tcfg) == "study"


def test_honest_without_a_selection_set_keeps_the_last_epoch(tmp_path, capsys):
    ds = make_tiny_dataset(tmp_path / "tiny", size=32)  # quarterly folds, no Fold1_select.csv
    out = tmp_path / "run"
    argv = ["train", "--labels", str(ds["labels"]), "--images", str(ds["images"]), "--out",
            str(out), "--epochs", "2", "--protocol", "honest", *FAST]  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["protocol"], summary["selected_on"], summary["selection_rule"]) == (
        "honest", "none", "last",
    )  # fmt: skip
    # nothing held out: every training instance trains
    assert summary["counts"]["holdout"] == 0 and summary["counts"]["train"] == 36
    assert summary["best_epoch"] == 2
    assert list(pd.read_csv(out / "metrics.csv")["selected"]) == [1, 1]
    # --holdout asks for a selection set: the latest quarter, by the lowest loss
    held = tmp_path / "held"
    argv = ["train", "--labels", str(ds["labels"]), "--images", str(ds["images"]), "--out",
            str(held), "--epochs", "2", "--protocol", "honest", "--holdout", "0.25", *FAST]  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 0, err
    summary = json.loads((held / "summary.json").read_text())
    assert (summary["selected_on"], summary["selection_rule"]) == ("holdout", "loss")
    assert summary["counts"]["holdout"] == 9


def test_a_selection_set_of_one_class_prints_an_undefined_score(chrono, tmp_path, capsys):
    labels = tmp_path / "labels"
    shutil.copytree(chrono["labels"], labels)
    select = pd.read_csv(labels / "Fold1_select.csv")
    select[select["goes_class"] == 0].to_csv(labels / "Fold1_select.csv", index=False)
    out = tmp_path / "one-class"
    argv = ["train", "--labels", str(labels), "--images", str(chrono["images"]), "--out",
            str(out), "--epochs", "1", "--protocol", "honest", *FAST]  # fmt: skip
    from fdflare.cli import main

    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_tss"] is None and summary["selection_rule"] == "loss"
    assert "TSS undefined (one class in the selection set)" in printed, printed
