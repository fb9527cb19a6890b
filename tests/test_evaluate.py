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


# ---------------------------------------------------------------- issue 7 and 11, through the CLI


def _preds(tmp_path, name, probs, targets):
    p = tmp_path / name
    p.write_text(
        "timestamp,flare_prob,target\n"
        + "".join(f"t{i},{q},{y}\n" for i, (q, y) in enumerate(zip(probs, targets, strict=True)))
    )
    return str(p)


@pytest.mark.parametrize(
    ("content", "shown"),
    [
        ("timestamp,flare_prob,target\na,0.2,2\n", "target 2 is not 0 or 1"),
        ("timestamp,flare_prob,target\na,nan,1\n", "probability nan is not"),
        ("timestamp,flare_prob,target\na,1.5,1\n", "probability 1.5 is not"),
        ("timestamp,flare_prob,target\na,,1\n", "probability empty is not"),
        ("timestamp,flare_prob,target\na,0.3,yes\n", "target 'yes' is not"),
    ],
)
def test_cli_messages_show_plain_numbers(tmp_path, capsys, content, shown):
    p = tmp_path / "p.csv"
    p.write_text(content)
    assert main(["evaluate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and shown in err
    assert "np." not in err


def test_cli_a_folder_is_named_as_a_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path) + "/"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a folder" in err and "prediction CSV" in err and "no such" not in err


def test_cli_header_only_file_warns_and_exits_1(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,flare_prob,target\n")
    good = _preds(tmp_path, "good.csv", [0.9, 0.1, 0.8, 0.2], [1, 0, 1, 0])
    assert main(["evaluate", str(empty)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"fdflare evaluate: warning: {empty} holds a header and no predictions (n = 0)"
    ]
    assert main(["evaluate", "--json", str(empty), good]) == 1
    res = json.loads(capsys.readouterr().out)
    assert [f["n"] for f in res["files"]] == [0, 4] and res["empty"] == [str(empty)]


def test_cli_table_says_how_many_files_a_mean_covers(tmp_path, capsys):
    a = _preds(tmp_path, "fold1.csv", [0.9, 0.1, 0.8, 0.2], [1, 0, 1, 0])
    b = _preds(tmp_path, "fold2.csv", [0.9, 0.4, 0.3, 0.2], [1, 0, 1, 0])
    c = _preds(tmp_path, "fold3.csv", [0.9, 0.1, 0.3], [0, 0, 0])  # no positives: TSS undefined
    assert main(["evaluate", a, b, c]) == 0
    out = capsys.readouterr().out
    mean_row = next(line for line in out.splitlines() if line.startswith("mean ± std"))
    assert "0.7500 ± 0.2500 (2 of 3)" in mean_row  # TSS of folds 1 and 2 only
    assert "(2 of 3)" in mean_row
    assert "mean ± std of TSS covers 2 of 3 files (TSS is undefined in fold3.csv)" in out
    assert main(["evaluate", "--json", a, b, c]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["covered"] == {"tss": 2, "hss2": 3}
    assert main(["evaluate", a, b]) == 0
    assert "of 2)" not in capsys.readouterr().out  # all defined: no count shown


def test_cli_threshold_outside_0_1_names_the_option(tmp_path, capsys):
    a = _preds(tmp_path, "fold1.csv", [0.9, 0.1], [1, 0])
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--threshold", "2", a])
    assert exc.value.code == 2 and "--threshold" in capsys.readouterr().err
