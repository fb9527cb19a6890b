import json

import numpy as np
import pandas as pd
import pytest

from fdflare.analysis.metrics import (
    best_threshold,
    brier,
    confusion,
    evaluate_files,
    roc_auc,
    skill_scores,
)
from fdflare.cli import main
from fdflare.core.errors import InputError

PUBLISHED_TSS = [0.5621, 0.5010, 0.4722, 0.5683]
PUBLISHED_HSS2 = [0.4385, 0.3379, 0.3241, 0.3890]


@pytest.mark.reference
def test_alexnet_published_scores(reference_dir, capsys):
    files = [str(reference_dir / "predictions" / f"fold{k}_alex.csv") for k in range(1, 5)]
    assert main(["evaluate", "--json", *files]) == 0
    out = capsys.readouterr().out
    res = json.loads(out)  # exactly one JSON object
    assert [round(f["tss"], 4) for f in res["files"]] == PUBLISHED_TSS
    assert [round(f["hss2"], 4) for f in res["files"]] == PUBLISHED_HSS2
    f1 = res["files"][0]
    assert (f1["tp"], f1["fp"], f1["tn"], f1["fn"]) == (1729, 2225, 10229, 605)
    assert (round(res["mean"]["tss"], 2), round(res["std"]["tss"], 2)) == (0.53, 0.04)
    assert (round(res["mean"]["hss2"], 2), round(res["std"]["hss2"], 2)) == (0.37, 0.05)
    for key in ("path", "n", "tp", "fp", "tn", "fn", "tss", "hss2", "auc", "brier", "bss"):
        assert key in f1
    assert 0.5 < f1["auc"] < 1


@pytest.mark.reference
def test_human_table(reference_dir, capsys):
    assert main(["evaluate", str(reference_dir / "predictions" / "fold1_alex.csv")]) == 0
    out = capsys.readouterr().out
    assert "0.5621" in out and "0.4385" in out and "1729" in out


def test_scores_by_hand():
    tp, fp, tn, fn = 30, 20, 140, 10
    tss, hss2, notes = skill_scores(tp, fp, tn, fn)
    assert tss == pytest.approx(30 / 40 - 20 / 160)
    assert hss2 == pytest.approx(2 * (30 * 140 - 10 * 20) / (40 * 150 + 160 * 50))
    assert notes == []


def test_zero_denominators_are_reported_not_divided():
    tss, hss2, notes = skill_scores(0, 3, 7, 0)  # no positive instances
    assert tss is None and "P = 0" in notes[0]
    assert hss2 == pytest.approx(0.0)
    tss, hss2, notes = skill_scores(0, 0, 0, 0)
    assert tss is None and hss2 is None and len(notes) == 2


def test_all_negative_predictions(tmp_path):
    p = tmp_path / "p.csv"
    pd.DataFrame(
        {
            "timestamp": [f"t{i}" for i in range(6)],
            "flare_prob": [0.1] * 6,
            "target": [1, 0, 0, 1, 0, 0],
        }
    ).to_csv(p, index=False)
    res = evaluate_files([p])
    f = res["files"][0]
    assert (f["tp"], f["fp"], f["tn"], f["fn"]) == (0, 0, 4, 2)
    assert f["tss"] == 0.0 and f["hss2"] == 0.0
    assert f["auc"] == 0.5  # all ties


def test_confusion_threshold_is_inclusive():
    assert confusion(np.array([0.5, 0.49999]), np.array([1, 1])) == (1, 0, 0, 1)


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    p = rng.choice([0.1, 0.2, 0.5, 0.7, 0.9], 200)
    y = rng.integers(0, 2, 200)
    pos, neg = p[y == 1], p[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert roc_auc(p, y) == pytest.approx(brute)
    assert roc_auc(p, np.zeros(200)) is None


def test_brier_and_skill():
    p, y = np.array([1.0, 0.0, 0.5, 0.5]), np.array([1, 0, 1, 0])
    bs, bss = brier(p, y)
    assert bs == pytest.approx(0.125) and bss == pytest.approx(1 - 0.125 / 0.25)
    assert brier(np.array([0.2]), np.array([0]))[1] is None


def test_best_threshold_matches_scan():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    thr, tss = best_threshold(p, y)
    scan = max((np.mean(p[y == 1] >= t) - np.mean(p[y == 0] >= t), t) for t in np.unique(p))
    assert tss == pytest.approx(scan[0]) and thr == pytest.approx(scan[1])


@pytest.mark.parametrize(
    ("content", "field", "line"),
    [
        ("timestamp,flare_prob,target\na,0.2,0\nb,1.5,1\n", "flare_prob", 3),
        ("timestamp,flare_prob,target\na,0.2,2\n", "target", 2),
        ("timestamp,flare_prob,target\na,high,0\n", "flare_prob", 2),
        ("timestamp,prob,target\na,0.2,0\n", "flare_prob", None),
    ],
)
def test_bad_prediction_files(tmp_path, capsys, content, field, line):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError) as err:
        evaluate_files([p])
    assert f"field '{field}'" in str(err.value) and "bad.csv" in str(err.value)
    if line:
        assert f"line {line}" in str(err.value)
    assert main(["evaluate", str(p)]) == 2
    assert "bad.csv" in capsys.readouterr().err
