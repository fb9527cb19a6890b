import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from fdflare.cli import main
from fdflare.reports.reproduce import find_models
from test_report import _assert_clean, open_in_browser


@pytest.fixture(scope="module")
def reproduction(reference_dir, tmp_path_factory) -> tuple[Path, str]:
    """``fdflare reproduce`` on the study's release, run once for the tests that read it."""
    out = tmp_path_factory.mktemp("reproduction") / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["reproduce", "--reference", str(reference_dir), "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.mark.reference
def test_reproduce_reference(reproduction):
    out, printed = reproduction
    assert "8/8 fold files rebuilt byte for byte" in printed
    report = (out / "report.md").read_text()
    for value in ("0.5621", "0.5010", "0.4722", "0.5683", "0.4385", "0.3379", "0.3241", "0.3890"):
        assert value in report
    assert "TSS 0.53 ± 0.04, HSS2 0.37 ± 0.05" in report
    # a bare | inside a markdown cell would split it: |lon| is escaped
    assert "| X | central \\|lon\\| <= 70 | 614 | 54 |" in report
    assert "| M | near-limb \\|lon\\| > 70 | 1276 | 1014 |" in report
    assert "mean HSS2 does NOT beat persistence" in report
    assert "BSS isotonic" in report and "calibration/alex/reliability.png" in report
    assert (
        "![AlexNet X heatmap](alex_heatmap_X.png)" in report
        and (out / "alex_heatmap_X.png").is_file()
    )
    res = json.loads((out / "results.json").read_text())
    assert res["labels"]["identical"] is True
    assert res["models"]["alex"]["evaluate"]["files"][0]["tp"] == 1729
    alex = res["models"]["alex"]
    assert alex["comparison"]["beats"]["persistence"] == {"tss": True, "hss2": False}
    assert [round(f["after"]["bss"], 2) for f in alex["calibration"]["files"]] == [
        0.26,
        0.17,
        0.14,
        0.28,
    ]
    assert (out / "baselines" / "fold1_persistence.csv").is_file()
    # the flare list read in full (the history baseline, from the full catalog, never the
    # partial one) beats the study's AlexNet on TSS, and the model's scores with the history
    # beat the history alone, a little: docs/skill.md
    assert res["baselines"]["history_catalog"].endswith("final_flare_list_sc24.csv")
    # persistence reads the same full list (the partial one drops past flares by what
    # followed them): docs/skill.md's table
    assert res["baselines"]["catalog"] == res["baselines"]["history_catalog"]
    pers = alex["baselines"]["persistence"]
    assert [round(f["tss"], 4) for f in pers["files"]] == [0.4695, 0.3262, 0.4114, 0.4392]
    assert "4099 of 63649 instances lie more than 72 h after" in res["baselines"]["notes"][0]
    hist = alex["baselines"]["history"]
    assert hist["mean"]["tss"] == pytest.approx(0.5825, abs=5e-4)
    assert alex["comparison"]["beats"]["history"]["tss"] is False
    assert alex["comparison"]["difference"]["history"]["tss"]["verdict"] == "worse"
    assert "mean TSS does NOT beat history (0.5259 vs 0.5825)" in report
    wh = alex["with_history"]
    assert wh["mean_tss_at_threshold"] == pytest.approx(0.6033, abs=5e-4)
    assert wh["difference_vs_persistence"]["verdict"] == "better"
    assert wh["difference_vs_history"]["verdict"] == "better"
    assert all(f["map"]["method"] == "history" for f in wh["files"])
    assert "### With the flare history" in report


@pytest.mark.reference
def test_reproduction_report_in_a_browser(reproduction, tmp_path):
    out, _ = reproduction
    html = out / "report.html"
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    found = open_in_browser(html, tmp_path / "shot.png")
    _assert_clean(found, html)
    body = found["text"]
    for expected in (
        "0.5621",  # fold 1 TSS
        "0.5259 ± 0.0407",
        "persistence",
        "climatology",
        "Mean HSS2 does NOT beat persistence",
        # how sure, beside it: the paired bootstrap over days (docs/skill.md)
        "The difference +0.114 (95 % interval over days +0.070 to +0.159): better",
        "Reliability diagram",
        # the catalog read in full beats AlexNet on TSS; with the history the scores tie it
        "Mean TSS does NOT beat history: 0.5259 vs 0.5825.",
        "With the flare history",
        "TSS history at threshold",
        "near-limb",
        "1276",  # M near-limb TP
    ):
        assert expected in body, expected
    assert (tmp_path / "shot.png").stat().st_size > 10_000
    # `fdflare report` on the same folder writes the same page
    assert main(["report", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").read_text() == text


def test_reproduce_on_a_subset_layout(reference_dir, tmp_path, capsys):
    # a folder with predictions of one model only, and no labels
    pred = tmp_path / "ref" / "predictions"
    pred.mkdir(parents=True)
    for k in (1, 2):
        shutil.copy(
            reference_dir / "predictions" / f"fold{k}_alex.csv", pred / f"fold{k}_mymodel.csv"
        )
    assert set(find_models(pred)) == {"mymodel"}
    out = tmp_path / "o"
    assert (
        main(["reproduce", "--reference", str(tmp_path / "ref"), "--out", str(out), "--json"]) == 0
    )
    report = (out / "report.md").read_text()
    assert "mymodel" in report and "0.5621" in report and "Labels" not in report
    printed = json.loads(capsys.readouterr().out)  # results.json, with the reports' paths
    assert printed["report"] == str(out / "report.md") and Path(printed["html"]).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) <= set(printed) and list(printed["models"]) == ["mymodel"]


def test_reproduce_without_reference_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FDFLARE_REFERENCE", raising=False)
    assert main(["reproduce"]) == 2
    err = capsys.readouterr().err
    assert "no reference data found" in err and "--reference" in err


# ---------------------------------------------------------------- issue 11: what is missing, nothing left behind


def test_reproduce_missing_reference_names_it_and_leaves_no_out(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["reproduce", "--reference", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reference" in err and "nope" in err
    assert not out.exists()


def test_reproduce_reference_with_nothing_usable_names_what_is_missing(tmp_path, capsys):
    ref = tmp_path / "ref"
    (ref / "labels").mkdir(parents=True)
    out = tmp_path / "o"
    assert main(["reproduce", "--reference", str(ref), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "predictions/ is missing" in err and "flare_catalog_partial.csv is missing" in err
    assert "Fold1_train.csv" in err
    assert not out.exists()


def test_reproduce_partial_reference_lists_each_missing_piece(reference_dir, tmp_path, capsys):
    ref = tmp_path / "ref"
    (ref / "labels").mkdir(parents=True)
    (ref / "predictions").mkdir()
    shutil.copy(reference_dir / "labels" / "Fold1_val.csv", ref / "labels")
    for k in (1, 2):
        shutil.copy(reference_dir / "predictions" / f"fold{k}_alex.csv", ref / "predictions")
    shutil.copy(reference_dir / "predictions" / "alex_x_class.csv", ref / "predictions")
    out = tmp_path / "o"
    assert main(["reproduce", "--reference", str(ref), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "missing: flare_catalog_partial.csv is missing, so the labels are not rebuilt" in printed
    assert "labels/ lacks Fold1_train.csv" in printed
    assert "alex: predictions/fold{3,4}_alex.csv missing; the mean covers folds 1, 2" in printed
    assert "alex: predictions/alex_m_class.csv missing" in printed
    report = (out / "report.md").read_text()
    assert "## Missing from the reference" in report and "alex_m_class.csv missing" in report
    res = json.loads((out / "results.json").read_text())
    assert len(res["missing"]) == 4


def test_reproduce_without_the_full_catalog_reads_persistence_from_the_partial_one(
    reference_dir, tmp_path, capsys
):
    ref = tmp_path / "ref"
    (ref / "labels").mkdir(parents=True)
    (ref / "predictions").mkdir()
    shutil.copy(reference_dir / "flare_catalog_partial.csv", ref)
    for k in (1, 2):  # two folds keep it quick
        for part in ("train", "val"):
            shutil.copy(reference_dir / "labels" / f"Fold{k}_{part}.csv", ref / "labels")
        shutil.copy(reference_dir / "predictions" / f"fold{k}_alex.csv", ref / "predictions")
    out = tmp_path / "o"
    assert main(["reproduce", "--reference", str(ref), "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert any(
        "final_flare_list_sc24.csv is missing, so there is no history baseline and persistence "
        "reads the partial catalog" in m
        for m in res["missing"]
    )
    assert res["baselines"]["catalog"].endswith("flare_catalog_partial.csv")
    assert res["baselines"]["history_catalog"] is None
    assert "persistence reads flare_catalog_partial.csv" in res["baselines"]["notes"][0]
    alex = res["models"]["alex"]
    assert "history" not in alex["baselines"] and "with_history" not in alex
    pers = alex["baselines"]["persistence"]
    assert [round(f["tss"], 4) for f in pers["files"]] == [0.4750, 0.3175]
    assert "from `flare_catalog_partial.csv`" in (out / "report.md").read_text()


def test_reproduce_out_is_a_file(reference_dir, tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("mine\n")
    assert main(["reproduce", "--reference", str(reference_dir), "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err
    assert target.read_text() == "mine\n"


def test_reproduce_failing_midway_leaves_no_out_folder(tmp_path, capsys):
    ref = tmp_path / "ref"
    (ref / "predictions").mkdir(parents=True)
    (ref / "predictions" / "fold1_m.csv").write_text(
        "timestamp,flare_prob,target\na,0.2,0\nb,oops,1\n"
    )
    out = tmp_path / "deep" / "o"
    assert main(["reproduce", "--reference", str(ref), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "fold1_m.csv, line 3, field 'flare_prob'" in err
    assert not out.exists() and not (tmp_path / "deep").exists()


def test_report_says_what_is_reproduced(tmp_path, reference_dir):
    pred = tmp_path / "ref" / "predictions"
    pred.mkdir(parents=True)
    shutil.copy(reference_dir / "predictions" / "fold1_alex.csv", pred)
    assert (
        main(["reproduce", "--reference", str(tmp_path / "ref"), "--out", str(tmp_path / "o")]) == 0
    )
    report = (tmp_path / "o" / "report.md").read_text()
    assert "rebuilt byte for byte" in report and "does not retrain" in report
