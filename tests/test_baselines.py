"""Reference forecasts: persistence, climatology and flux (fdflare baseline)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fdflare.acquire.catalog import read_catalog
from fdflare.analysis.baselines import disk_features, persistence
from fdflare.cli import main


def _write_labels(folder, rows_by_fold):
    folder.mkdir(parents=True, exist_ok=True)
    for k, (train, val) in rows_by_fold.items():
        for name, rows in (("train", train), ("val", val)):
            text = "label,goes_class\n" + "".join(f"{r},{y}\n" for r, y in rows)
            (folder / f"Fold{k}_{name}.csv").write_text(text)


def _name(t: pd.Timestamp) -> str:
    return t.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S.png")


def test_persistence_window_is_the_past_24_hours_on_flare_start(tmp_path):
    cat = tmp_path / "c.csv"
    cat.write_text(
        "start_time,goes_class,fl_lon,fl_lat\n"
        "2011-01-01 10:00:00,M1.0,0,0\n"  # exactly at an instance time: included
        "2011-01-03 09:59:59,C9.9,0,0\n"  # below M: ignored
        "2011-01-05 00:00:01,X1.0,0,0\n"
    )
    catalog = read_catalog(cat)
    times = pd.DatetimeIndex(
        [
            "2011-01-01 09:00",  # before the flare
            "2011-01-01 10:00",  # (t - 24 h, t] holds 10:00
            "2011-01-02 09:59",  # 23 h 59 min after
            "2011-01-02 10:00",  # 24 h after: the window (t - 24 h, t] excludes it
            "2011-01-03 12:00",  # only a C flare before
            "2011-01-05 00:00",  # one second before the X flare
            "2011-01-06 00:00",  # 23 h 59 min 59 s after it
        ]
    )
    got = persistence(times, catalog, threshold=1e-5)
    assert got.tolist() == [0, 1, 1, 0, 0, 0, 1]
    assert persistence(times, catalog, threshold=1e-6).tolist() == [0, 1, 1, 0, 1, 0, 1]


def test_baseline_cli_writes_study_format_and_prints_evaluate(tmp_path, capsys):
    t0 = pd.Timestamp("2011-01-01 00:00")
    hours = [t0 + pd.Timedelta(hours=6 * i) for i in range(16)]
    cat = tmp_path / "c.csv"
    cat.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-01-02 03:00:00,M2.0,10,10\n")
    target = [
        1 if pd.Timestamp("2011-01-01 03:00") < h <= pd.Timestamp("2011-01-02 03:00") else 0
        for h in hours
    ]
    train = [(_name(h), y) for h, y in zip(hours[:8], target[:8], strict=True)]
    val = [(_name(h), y) for h, y in zip(hours[8:], target[8:], strict=True)]
    _write_labels(tmp_path / "labels", {1: (train, val)})
    out = tmp_path / "bl"
    rc = main(
        [
            "baseline",
            "--catalog",
            str(cat),
            "--labels",
            str(tmp_path / "labels"),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.glob("*.csv")) == [
        "fold1_climatology.csv",
        "fold1_history.csv",
        "fold1_persistence.csv",
    ]
    pers = pd.read_csv(out / "fold1_persistence.csv")
    assert list(pers.columns) == ["timestamp", "flare_prob", "target"]
    expected = persistence(pd.DatetimeIndex(hours[8:]), read_catalog(cat), threshold=1e-5)
    assert pers["flare_prob"].tolist() == expected.tolist()
    clim = pd.read_csv(out / "fold1_climatology.csv")
    assert np.allclose(clim["flare_prob"], np.mean(target[:8]))
    # the same JSON that `fdflare evaluate --json` prints for these files
    assert (
        main(
            [
                "evaluate",
                "--json",
                str(out / "fold1_persistence.csv"),
                str(out / "fold1_climatology.csv"),
                str(out / "fold1_history.csv"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == res


def _magnetogram(rng, strong: int, size: int = 64) -> np.ndarray:
    img = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    disk = (xx - 31.5) ** 2 + (yy - 31.5) ** 2 <= (0.47 * size) ** 2
    img[disk] = 128 + rng.integers(-4, 5, disk.sum())
    for _ in range(strong):
        y, x = rng.integers(20, 44, 2)
        img[y - 2 : y + 2, x - 2 : x + 2] = 250
        img[y - 2 : y + 2, x + 2 : x + 6] = 5
    return img


def test_disk_features_measure_strong_field():
    rng = np.random.default_rng(1)
    quiet, active = _magnetogram(rng, 0), _magnetogram(rng, 6)
    f = disk_features(np.stack([quiet, active]))
    assert f[1, 0] > 3 * f[0, 0]
    assert f[0, 1] == 0 and f[1, 1] > 0.01


def test_flux_baseline_learns_from_images(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2011-01-01")
    rows = []
    for i in range(80):
        t = t0 + pd.Timedelta(hours=i)
        y = int(rng.random() < 0.4)
        img = _magnetogram(rng, int(rng.integers(3, 7)) if y else int(rng.integers(0, 3)))
        path = tmp_path / "images" / _name(t)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        rows.append((_name(t), y))
    _write_labels(tmp_path / "labels", {1: (rows[:50], rows[50:])})
    out = tmp_path / "bl"
    argv = [
        "baseline",
        "--labels",
        str(tmp_path / "labels"),
        "--images",
        str(tmp_path / "images"),
        "--kind",
        "flux",
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    (scores,) = res["files"]
    assert scores["auc"] > 0.9
    assert (out / "fold1_flux.csv").is_file()


def test_baseline_needs_what_each_kind_uses(tmp_path, capsys):
    _write_labels(tmp_path / "labels", {1: ([("2011/01/01/HMI.m2011.01.01_00.00.00.png", 0)], [])})
    assert main(["baseline", "--labels", str(tmp_path / "labels"), "--kind", "persistence"]) == 2
    assert "--catalog" in capsys.readouterr().err
    assert main(["baseline", "--labels", str(tmp_path / "labels"), "--kind", "flux"]) == 2
    assert "--images" in capsys.readouterr().err
    assert main(["baseline", "--labels", str(tmp_path / "labels"), "--kind", "history"]) == 2
    assert "--kind history needs --catalog" in capsys.readouterr().err


@pytest.mark.reference
def test_persistence_on_the_study_instances_beats_the_study_on_hss2(
    reference_dir, tmp_path, capsys
):
    rc = main(
        [
            "baseline",
            "--catalog",
            str(reference_dir / "catalogs" / "final_flare_list_sc24.csv"),
            "--labels",
            str(reference_dir / "labels"),
            "--kind",
            "persistence",
            "--json",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    hss2 = [f["hss2"] for f in res["files"]]
    assert [f["n"] for f in res["files"]] == [14788, 15467, 16672, 16722]
    assert hss2 == pytest.approx([0.4660, 0.3279, 0.4134, 0.4404], abs=5e-4)
    assert res["mean"]["hss2"] == pytest.approx(0.412, abs=1e-3)  # the study's AlexNet: 0.37
