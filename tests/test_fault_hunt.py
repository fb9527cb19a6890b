"""Faults found by users on the synthetic Sun: linked folders, full disks, stale temporaries,
contradicting label files, calibration maps, bad JP2 headers, shifted CSV rows.

Every case runs the real CLI. The synthetic data are made once per module.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from clitools import run_cli as cli
from fdflare.cli import main


@pytest.fixture(scope="module")
def jp2_sun(tmp_path_factory) -> Path:
    """Two months of a synthetic Sun as Helioviewer-style JP2 files (daily, 64 px)."""
    root = tmp_path_factory.mktemp("jp2_sun")
    argv = ["synth", "--out", str(root), "--start", "2011-01-01", "--end", "2011-03-01",
            "--cadence", "24h", "--image-size", "32", "--jp2", "--jp2-size", "64", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return root / "jp2"


def _linked_tree(jp2_sun: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A source tree whose February is a link to a folder kept elsewhere."""
    src, elsewhere = tmp_path / "src", tmp_path / "other_disk"
    shutil.copytree(jp2_sun / "2011" / "01", src / "2011" / "01")
    shutil.copytree(jp2_sun / "2011" / "02", elsewhere / "02")
    (src / "2011" / "02").symlink_to(elsewhere / "02", target_is_directory=True)
    return src, elsewhere


# --------------------------------------------------------------------------- linked folders


def test_prepare_follows_a_linked_month(jp2_sun, tmp_path, capsys):
    src, _ = _linked_tree(jp2_sun, tmp_path)
    out = tmp_path / "out"
    code, err = cli(["prepare", "--source", str(src), "--out", str(out), "--image-size", "32",
                     "--workers", "1", "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    geometry = pd.read_csv(out / "geometry.csv")
    assert len(geometry) == 31 + 28
    assert geometry["path"].str.startswith("2011/02/").sum() == 28
    assert (out / "2011" / "02" / "14" / "HMI.m2011.02.14_00.00.00.png").is_file()


def test_prepare_reports_a_link_that_loops(jp2_sun, tmp_path, capsys):
    src, _ = _linked_tree(jp2_sun, tmp_path)
    (src / "2011" / "01" / "01" / "back").symlink_to(src / "2011", target_is_directory=True)
    (src / "2011" / "01" / "02" / "gone").symlink_to(tmp_path / "nowhere")
    out = tmp_path / "out"
    code, err = cli(["prepare", "--source", str(src), "--out", str(out), "--image-size", "32",
                     "--workers", "1", "--quiet"], capsys)  # fmt: skip
    assert code == 1, err  # done, but something was skipped
    assert "Traceback" not in err
    assert "2 folder(s) or link(s) under" in err and "2011/01/01/back/" in err
    bad = pd.read_csv(out / "bad_files.csv")
    reasons = dict(zip(bad["path"], bad["reason"], strict=True))
    assert "loop" in reasons["2011/01/01/back/"]
    assert "points nowhere" in reasons["2011/01/02/gone"]
    assert len(pd.read_csv(out / "geometry.csv")) == 31 + 28


def test_label_follows_a_linked_month_and_reports_a_loop(jp2_sun, tmp_path, capsys):
    src, _ = _linked_tree(jp2_sun, tmp_path)
    (src / "2011" / "01" / "01" / "back").symlink_to(src, target_is_directory=True)
    catalog = jp2_sun.parent / "catalog.csv"
    code, err = cli(["label", "--catalog", str(catalog), "--images", str(src), "--out",
                     str(tmp_path / "labels")], capsys)  # fmt: skip
    assert code == 0, err
    labels = pd.read_csv(tmp_path / "labels" / "labels.csv")
    assert len(labels) == 31 + 28
    assert "skipped 1 folder(s) or link(s)" in err and "2011/01/01/back/" in err
    assert "loop" in err
