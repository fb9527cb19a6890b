"""Calibration maps, cross-fold calibration and the reliability diagram (fdflare calibrate)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fdflare.analysis.calibration import Calibrator, cross_fold, fit_calibrator
from fdflare.analysis.reliability import reliability_table
from fdflare.cli import main
from fdflare.core.errors import InputError


def _scores(rng, n, *, skew=3.0):
    """Outcomes drawn from a true probability, and an overconfident score of it."""
    true_p = rng.beta(1, 5, n)
    y = (rng.random(n) < true_p).astype(int)
    score = true_p ** (1 / skew)  # monotone, far from calibrated
    return score, y, true_p


def _write(path, prob, y):
    times = pd.date_range("2011-01-01", periods=len(y), freq="h")  # one row per image
    names = [t.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S.jpg") for t in times]
    pd.DataFrame({"timestamp": names, "flare_prob": prob, "target": y}).to_csv(path, index=False)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_maps_are_monotone_and_improve_brier(method):
    rng = np.random.default_rng(0)
    s, y, _ = _scores(rng, 20000)
    cal = fit_calibrator(s, y, method)
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(cal(grid)) >= -1e-12)
    s2, y2, _ = _scores(rng, 20000)
    assert np.mean((cal(s2) - y2) ** 2) < np.mean((s2 - y2) ** 2) - 0.01
    # a map round-trips through JSON and applies without scikit-learn
    again = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert np.array_equal(again(s2), cal(s2))


def test_platt_leaves_calibrated_scores_alone():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.01, 0.99, 50000)
    y = (rng.random(len(p)) < p).astype(int)
    cal = fit_calibrator(p, y, "platt")
    assert cal.a == pytest.approx(1.0, abs=0.05) and cal.b == pytest.approx(0.0, abs=0.05)


def test_one_class_cannot_be_calibrated():
    with pytest.raises(InputError, match="flare and no-flare"):
        fit_calibrator(np.array([0.2, 0.3]), np.array([0, 0]), "isotonic")


def test_bad_map_files_are_refused():
    with pytest.raises(InputError, match="non-decreasing"):
        Calibrator.from_dict({"method": "isotonic", "x": [0.1, 0.05], "y": [0, 1]})
    with pytest.raises(InputError, match="not one of"):
        Calibrator.from_dict({"method": "magic"})


def test_reliability_table_counts_every_instance():
    p = np.array([0.0, 0.05, 0.1, 0.55, 0.999, 1.0])
    y = np.array([0, 0, 1, 1, 1, 0])
    t = reliability_table(p, y, 10)
    assert t["count"].sum() == len(p)
    assert t.loc[0, "count"] == 2 and t.loc[1, "count"] == 1 and t.loc[9, "count"] == 2
    assert t.loc[9, "observed"] == 0.5


def test_cross_fold_never_fits_on_the_fold_it_calibrates(tmp_path):
    rng = np.random.default_rng(3)
    files = []
    for k in range(1, 4):
        s, y, _ = _scores(rng, 3000)
        f = tmp_path / f"fold{k}_m.csv"
        _write(f, s, y)
        files.append(f)
    res = cross_fold(files, "isotonic")
    for r in res:
        assert str(r.source) not in r.calibrator.sources
        assert len(r.calibrator.sources) == 2
    # changing fold 1's own outcomes does not change the map fold 1 gets
    df = pd.read_csv(files[0])
    df["target"] = 1 - df["target"]
    df.to_csv(files[0], index=False)
    res2 = cross_fold(files, "isotonic")
    assert res2[0].calibrator.to_dict() == res[0].calibrator.to_dict()
    assert res2[1].calibrator.to_dict() != res[1].calibrator.to_dict()


def test_calibrate_cli_fit_apply(tmp_path, capsys):
    rng = np.random.default_rng(4)
    s, y, _ = _scores(rng, 5000)
    _write(tmp_path / "holdout.csv", s, y)
    s2, y2, _ = _scores(rng, 4000)
    _write(tmp_path / "fold1_m.csv", s2, y2)
    out = tmp_path / "cal"
    rc = main(
        [
            "calibrate",
            "--method",
            "platt",
            "--fit",
            str(tmp_path / "holdout.csv"),
            "--apply",
            str(tmp_path / "fold1_m.csv"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "fold1_m.csv" in text and "BSS platt" in text
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "calibration.json",
        "fold1_m.csv",
        "reliability.png",
        "reliability.svg",
    ]
    rec = json.loads((out / "calibration.json").read_text())
    (item,) = rec["files"]
    assert item["after"]["brier"] < item["before"]["brier"]
    got = pd.read_csv(out / "fold1_m.csv")
    cal = Calibrator.from_dict(item["map"])
    assert np.allclose(got["flare_prob"], cal(s2), atol=1e-5)
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "reliability.svg").read_bytes()[:400]


def test_calibrate_cli_refuses_to_overwrite_its_input(tmp_path, capsys):
    rng = np.random.default_rng(5)
    for k in (1, 2):
        s, y, _ = _scores(rng, 500)
        _write(tmp_path / f"fold{k}_m.csv", s, y)
    before = (tmp_path / "fold1_m.csv").read_bytes()
    rc = main(
        [
            "calibrate",
            "--cross-fold",
            str(tmp_path / "fold1_m.csv"),
            str(tmp_path / "fold2_m.csv"),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 2
    assert "would overwrite" in capsys.readouterr().err
    assert (tmp_path / "fold1_m.csv").read_bytes() == before
    assert (
        main(["calibrate", "--fit", str(tmp_path / "fold1_m.csv"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "--apply" in capsys.readouterr().err


@pytest.mark.reference
def test_cross_fold_isotonic_gives_the_study_positive_brier_skill(reference_dir, tmp_path, capsys):
    pred = reference_dir / "predictions"
    files = [str(pred / f"fold{k}_alex.csv") for k in range(1, 5)]
    rc = main(
        [
            "calibrate",
            "--cross-fold",
            *files,
            "--labels",
            str(reference_dir / "labels"),
            "--out",
            str(tmp_path / "cal"),
            "--json",
        ]
    )
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)
    before = [f["before"]["bss"] for f in rec["files"]]
    after = [f["after"]["bss"] for f in rec["files"]]
    assert before == pytest.approx([0.063, -0.308, -0.321, -0.148], abs=1e-3)
    assert after == pytest.approx([0.264, 0.169, 0.142, 0.284], abs=1e-3)
    # at the threshold chosen on the other folds, TSS stays where it was at 0.5
    tss_raw = [f["before"]["at_0.5"]["tss"] for f in rec["files"]]
    tss_cal = [f["after"]["at_threshold"]["tss"] for f in rec["files"]]
    assert np.allclose(tss_cal, tss_raw, atol=0.02)
