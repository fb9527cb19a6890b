import json
import shutil

import pytest

from fdflare.cli import main
from fdflare.reports.reproduce import find_models


@pytest.mark.reference
def test_reproduce_reference(reference_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["reproduce", "--reference", str(reference_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8/8 fold files rebuilt byte for byte" in printed
    report = (out / "report.md").read_text()
    for value in ("0.5621", "0.5010", "0.4722", "0.5683", "0.4385", "0.3379", "0.3241", "0.3890"):
        assert value in report
    assert "TSS 0.53 ± 0.04, HSS2 0.37 ± 0.05" in report
    assert "| X | central |lon| <= 70 | 614 | 54 |" in report
    assert "| M | near-limb |lon| > 70 | 1276 | 1014 |" in report
    assert (
        "![AlexNet X heatmap](alex_heatmap_X.png)" in report
        and (out / "alex_heatmap_X.png").is_file()
    )
    res = json.loads((out / "results.json").read_text())
    assert res["labels"]["identical"] is True
    assert res["models"]["alex"]["evaluate"]["files"][0]["tp"] == 1729


def test_reproduce_on_a_subset_layout(reference_dir, tmp_path):
    # a folder with predictions of one model only, and no labels
    pred = tmp_path / "ref" / "predictions"
    pred.mkdir(parents=True)
    for k in (1, 2):
        shutil.copy(
            reference_dir / "predictions" / f"fold{k}_alex.csv", pred / f"fold{k}_mymodel.csv"
        )
    assert set(find_models(pred)) == {"mymodel"}
    assert (
        main(["reproduce", "--reference", str(tmp_path / "ref"), "--out", str(tmp_path / "o")]) == 0
    )
    report = (tmp_path / "o" / "report.md").read_text()
    assert "mymodel" in report and "0.5621" in report and "Labels" not in report


def test_reproduce_without_reference_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FDFLARE_REFERENCE", raising=False)
    assert main(["reproduce"]) == 2
    err = capsys.readouterr().err
    assert "no reference data found" in err and "--reference" in err
