"""The flare history up to an instance, the history baseline and the history calibration map."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clitools import run_cli
from fdflare.acquire.catalog import read_catalog
from fdflare.analysis.calibration import Calibrator, cross_fold
from fdflare.analysis.history import FEATURES, flare_history
from fdflare.cli import main
from fdflare.core.errors import InputError


def _catalog(tmp_path, rows):
    path = tmp_path / "flares.csv"
    path.write_text(
        "start_time,goes_class,fl_lon,fl_lat\n" + "".join(f"{t},{c},0,0\n" for t, c in rows)
    )
    return read_catalog(path)


def test_history_reads_only_flares_started_in_each_window(tmp_path):
    cat = _catalog(
        tmp_path,
        [
            ("2011-01-03 12:00:00", "B5.0"),  # below C1.0: a peak, not counted
            ("2011-01-01 10:00:00", "M2.0"),  # listed out of order on purpose
            ("2011-01-02 10:00:00", "C3.0"),
            ("2011-01-04 12:00:00", "X1.0"),
        ],
    )
    times = pd.DatetimeIndex(
        [
            "2011-01-01 09:59:59",  # before every flare
            "2011-01-01 10:00:00",  # the M flare starts at t: (t - 24 h, t] holds it
            "2011-01-02 10:00:00",  # 24 h after M (out of 24 h, in 72 h), C at t
            "2011-01-04 10:00:00",  # 24 h: only the B flare; 72 h: C and B (M left 72 h ago)
            "2011-01-04 12:00:00",  # the X flare at t; the B flare left 24 h ago
        ]
    )
    h = flare_history(times, cat)
    assert h.shape == (5, len(FEATURES))
    peak24, peak72, n24, n72 = h.T
    assert np.allclose(10**peak24, [1e-7, 2e-5, 3e-6, 5e-7, 1e-4])
    assert np.allclose(10**peak72, [1e-7, 2e-5, 2e-5, 3e-6, 1e-4])
    assert np.allclose(np.expm1(n24), [0, 1, 1, 0, 1])
    assert np.allclose(np.expm1(n72), [0, 1, 2, 1, 2])


def test_history_matches_a_flare_by_flare_count_and_handles_edges(tmp_path):
    rng = np.random.default_rng(0)
    starts = pd.Timestamp("2011-01-01") + pd.to_timedelta(rng.uniform(0, 40 * 24, 300), "h")
    classes = [f"{c}{rng.uniform(1, 9.9):.1f}" for c in rng.choice(list("BCMX"), 300)]
    cat = _catalog(
        tmp_path,
        [(t.strftime("%Y-%m-%d %H:%M:%S"), c) for t, c in zip(starts, classes, strict=True)],
    )
    times = pd.date_range("2010-12-30", "2011-02-15", freq="5h")
    got = flare_history(times, cat)
    s, f = cat["start_time"].to_numpy(), cat["flux"].to_numpy()
    for i, t in enumerate(times):
        for j, hours in enumerate((24, 72)):
            inside = (s <= np.datetime64(t)) & (s > np.datetime64(t - pd.Timedelta(hours=hours)))
            peak = f[inside].max() if inside.any() else 1e-7
            assert got[i, j] == pytest.approx(np.log10(max(peak, 1e-7)))
            assert got[i, 2 + j] == pytest.approx(np.log1p((f[inside] >= 1e-6).sum()))
    # no instances, no flares, and aware times read as UTC
    assert flare_history(times[:0], cat).shape == (0, 4)
    empty = flare_history(times[:3], cat.iloc[:0])
    assert np.allclose(empty, [[-7, -7, 0, 0]] * 3)
    aware = flare_history(times.tz_localize("UTC").tz_convert("Europe/Paris"), cat)
    assert np.array_equal(aware, got)
    with pytest.raises(InputError, match="instance 1 has no time"):
        flare_history(pd.DatetimeIndex(["2011-01-01", None]), cat)


def _name(t: pd.Timestamp) -> str:
    return t.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S.png")


def _history_sun(tmp_path, folds=4, hours=6, days=60, seed=1):
    """Instances whose flares follow recent flares (as real ones do), a catalog, fold tables
    and a weak 'model' score for each instance."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2011-01-01")
    # active spells: each 5-day spell is quiet (0.2 flares a day) or active (4 a day), one
    # flare in three >= M1.0, so the flares of the last days tell the spell
    flares = []
    spell = start - pd.Timedelta(days=5)
    while spell < start + pd.Timedelta(days=folds * days + 1):
        rate = 4.0 if rng.random() < 0.4 else 0.2
        for _ in range(rng.poisson(rate * 5)):
            t = spell + pd.Timedelta(hours=float(rng.uniform(0, 120)))
            flares.append((t.floor("min"), f"{rng.choice(['C', 'C', 'M'])}{rng.uniform(1, 9):.1f}"))
        spell += pd.Timedelta(days=5)
    cat_path = tmp_path / "flares.csv"
    cat_path.write_text(
        "start_time,goes_class,fl_lon,fl_lat\n"
        + "".join(f"{t:%Y-%m-%d %H:%M:%S},{c},0,0\n" for t, c in flares)
    )
    cat = read_catalog(cat_path)
    m_starts = cat.loc[cat["flux"] >= 1e-5, "start_time"].to_numpy()
    labels, preds = tmp_path / "labels", tmp_path / "pred"
    labels.mkdir()
    preds.mkdir()
    files = []
    tables = []
    for k in range(1, folds + 1):
        times = pd.date_range(
            start + pd.Timedelta(days=(k - 1) * days), periods=days * 24 // hours, freq=f"{hours}h"
        )
        y = np.array(
            [
                int(
                    (
                        (m_starts > np.datetime64(t))
                        & (m_starts < np.datetime64(t + pd.Timedelta(hours=24)))
                    ).any()
                )
                for t in times
            ]
        )
        names = [_name(t) for t in times]
        score = np.clip(0.5 + 0.15 * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0.01, 0.99)
        f = preds / f"fold{k}_m.csv"
        pd.DataFrame({"timestamp": names, "flare_prob": score, "target": y}).to_csv(f, index=False)
        files.append(f)
        tables.append((names, y))
    for k in range(1, folds + 1):
        val = tables[k - 1]
        train = [
            (n, y)
            for j, (ns, ys) in enumerate(tables)
            if j != k - 1
            for n, y in zip(ns, ys, strict=True)
        ]
        pd.DataFrame({"label": val[0], "target": val[1]}).to_csv(
            labels / f"Fold{k}_val.csv", index=False
        )
        pd.DataFrame(train, columns=["label", "target"]).to_csv(
            labels / f"Fold{k}_train.csv", index=False
        )
    return cat_path, labels, files


def test_history_baseline_and_map_through_the_cli(tmp_path, capsys):
    cat, labels, files = _history_sun(tmp_path)
    out = tmp_path / "bl"
    assert (
        main(
            [
                "baseline",
                "--catalog",
                str(cat),
                "--labels",
                str(labels),
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    names = sorted(p.name for p in out.glob("fold1_*.csv"))
    assert names == ["fold1_climatology.csv", "fold1_history.csv", "fold1_persistence.csv"]
    by = {f["path"].split("/")[-1]: f for f in res["files"]}
    # where flares follow flares, reading the whole history beats the one yes/no question
    hist = np.mean([by[f"fold{k}_history.csv"]["tss"] for k in range(1, 5)])
    pers = np.mean([by[f"fold{k}_persistence.csv"]["tss"] for k in range(1, 5)])
    assert hist > pers + 0.05, (hist, pers)
    assert all(by[f"fold{k}_history.csv"]["auc"] > 0.7 for k in range(1, 5))

    cal = tmp_path / "cal"
    argv = ["calibrate", "--method", "history", "--catalog", str(cat), "--labels", str(labels)]
    assert main([*argv, "--cross-fold", *map(str, files), "--out", str(cal)]) == 0
    text = capsys.readouterr().out
    assert "TSS history at threshold" in text
    record = json.loads((cal / "calibration.json").read_text())
    for item, f in zip(record["files"], files, strict=True):
        m = item["map"]
        assert m["method"] == "history" and m["features"] == ["logit", *FEATURES]
        assert set(m) == {
            "method",
            "b",
            "features",
            "mean",
            "scale",
            "coef",
            "n",
            "positives",
            "sources",
        }
        assert str(f) not in m["sources"] and len(m["sources"]) == 3  # never its own fold
        # the written probabilities are the stored map applied to the score and the history
        table = pd.read_csv(f)
        times = pd.to_datetime(
            table["timestamp"].str.extract(r"HMI\.m(.{19})")[0], format="%Y.%m.%d_%H.%M.%S"
        )
        expected = Calibrator.from_dict(m)(
            table["flare_prob"].to_numpy(), flare_history(times, read_catalog(cat))
        )
        assert np.allclose(pd.read_csv(cal / f.name)["flare_prob"], expected, atol=1e-5)
        # the score and the history together forecast better probabilities than the score
        assert item["after"]["brier"] < item["before"]["brier"]


def test_history_map_needs_a_catalog_and_is_refused_where_none_is_read(tmp_path, capsys):
    cat, _labels, files = _history_sun(tmp_path, folds=2, days=30)
    cal = tmp_path / "cal"
    code, err = run_cli(
        ["calibrate", "--method", "history", "--cross-fold", *map(str, files), "--out", str(cal)],
        capsys,
    )
    assert code == 2 and "--method history needs --catalog FILE" in err
    code, err = run_cli(
        ["calibrate", "--catalog", str(cat), "--cross-fold", *map(str, files), "--out", str(cal)],
        capsys,
    )
    assert code == 2 and "--catalog is read only by --method history" in err
    assert not cal.exists()  # refused before any work
    # a prediction file whose names hold no time: one line naming the file, row and field
    bad = tmp_path / "fold3_m.csv"
    pd.read_csv(files[0]).assign(
        timestamp=lambda d: d["timestamp"].str.replace("HMI.m", "img_", regex=False)
    ).to_csv(bad, index=False)
    code, err = run_cli(
        [
            "calibrate",
            "--method",
            "history",
            "--catalog",
            str(cat),
            "--cross-fold",
            str(files[1]),
            str(bad),
            "--out",
            str(cal),
        ],
        capsys,
    )
    assert code == 2 and "fold3_m.csv" in err and "holds no time" in err and "Traceback" not in err
    # a history map applies only with the flare history ...
    res = cross_fold(files, "history", catalog=read_catalog(cat))
    with pytest.raises(InputError, match="needs the flare history"):
        res[0].calibrator(np.array([0.5]))
    # ... so predict's --calibration (which reads no catalog) refuses it in one line
    m = tmp_path / "map.json"
    m.write_text(json.dumps(res[0].calibrator.to_dict()))
    from fdflare.analysis.calibration import read_calibration_map

    with pytest.raises(InputError, match="a history map reads the flare history"):
        read_calibration_map(m)
    # a damaged history map is refused by field
    d = res[0].calibrator.to_dict()
    d["scale"][2] = 0
    with pytest.raises(InputError, match=r"scale\[2\]"):
        Calibrator.from_dict(d)
    d = res[0].calibrator.to_dict()
    d["features"] = ["logit"]
    with pytest.raises(InputError, match="features"):
        Calibrator.from_dict(d)


def test_history_left_out_with_a_note_where_a_fold_cannot_fit_it(tmp_path, capsys):
    """By default a fold whose training instances are all quiet has no history baseline (said
    in a note, nothing else lost); asked for by name, it is an error in one line."""
    t0 = pd.Timestamp("2011-01-01")
    rows = [(_name(t0 + pd.Timedelta(hours=6 * i)), 0) for i in range(8)]
    labels = tmp_path / "labels"
    labels.mkdir()
    pd.DataFrame(rows[:5], columns=["label", "goes_class"]).to_csv(
        labels / "Fold1_train.csv", index=False
    )
    pd.DataFrame(rows[5:], columns=["label", "goes_class"]).to_csv(
        labels / "Fold1_val.csv", index=False
    )
    cat = tmp_path / "flares.csv"
    cat.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-01-02 03:00:00,C2.0,0,0\n")
    out = tmp_path / "bl"
    argv = ["baseline", "--catalog", str(cat), "--labels", str(labels)]
    code, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 0
    assert "note: history baseline left out: fold 1's 5 training instances are all " in err
    assert sorted(p.name for p in out.glob("*.csv")) == [
        "fold1_climatology.csv",
        "fold1_persistence.csv",
    ]
    code, err = run_cli([*argv, "--kind", "history"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "history baseline needs flare and no-flare training instances" in err
    # a catalog without a flare: left out by default, refused when asked for by name
    cat.write_text("start_time,goes_class,fl_lon,fl_lat\n")
    code, err = run_cli(argv, capsys)
    assert code == 0 and "note: history baseline left out: the flare catalog lists no flare" in err
    code, err = run_cli([*argv, "--kind", "history"], capsys)
    assert code == 2 and "lists no flare" in err and len(err.strip().splitlines()) == 1


@pytest.mark.reference
def test_with_a_full_catalog_alexnet_adds_a_little_to_the_flare_history(reference_dir, tmp_path):
    """docs/skill.md: with final_flare_list_sc24.csv the history baseline beats AlexNet on TSS,
    and AlexNet's scores with the history beat the history alone, by the day bootstrap."""
    from fdflare.analysis.baselines import baseline_predictions, write_predictions
    from fdflare.analysis.calibration import training_rates
    from fdflare.analysis.skill import compare, with_history

    cat = read_catalog(reference_dir / "catalogs" / "final_flare_list_sc24.csv")
    labels = reference_dir / "labels"
    base = tmp_path / "baselines"
    kinds = ["persistence", "climatology", "history"]
    write_predictions(baseline_predictions(labels, kinds, catalog=cat), base)
    files = [reference_dir / "predictions" / f"fold{k}_alex.csv" for k in range(1, 5)]
    alone = compare(files, base)
    assert alone["baselines"]["history"]["mean"]["tss"] == pytest.approx(0.5825, abs=5e-4)
    assert alone["comparison"]["difference"]["history"]["tss"]["verdict"] == "worse"
    both = with_history(
        files, cat, tmp_path / "h", base, reference_rates=training_rates(labels, [1, 2, 3, 4])
    )
    assert both["mean_tss_at_threshold"] == pytest.approx(0.6033, abs=5e-4)
    assert both["difference_vs_history"]["verdict"] == "better"
    assert both["difference_vs_persistence"]["verdict"] == "better"


def test_history_map_fit_on_some_files_applies_to_others(tmp_path, capsys):
    cat, _labels, files = _history_sun(tmp_path, folds=3, days=40)
    out = tmp_path / "cal"
    argv = ["calibrate", "--method", "history", "--catalog", str(cat), "--fit", str(files[0])]
    assert main([*argv, str(files[1]), "--apply", str(files[2]), "--out", str(out)]) == 0
    capsys.readouterr()
    (item,) = json.loads((out / "calibration.json").read_text())["files"]
    assert item["file"] == "fold3_m.csv"
    assert item["map"]["sources"] == [str(files[0]), str(files[1])]
    # the same map, refitted by hand on the two files, gives the same probabilities
    from fdflare.analysis.calibration import fit_apply

    (again,) = fit_apply(files[:2], files[2:], "history", catalog=read_catalog(cat))
    got = pd.read_csv(out / "fold3_m.csv")["flare_prob"].to_numpy()
    assert np.allclose(got, again.table["flare_prob"], atol=1e-5)
    assert item["after"]["brier"] < item["before"]["brier"]


def test_calibrate_says_when_a_file_is_fitted_and_scored_and_when_the_catalog_ends(
    tmp_path, capsys
):
    _cat, _labels, files = _history_sun(tmp_path, folds=2, days=30)
    out = tmp_path / "cal"
    code, err = run_cli(
        ["calibrate", "--fit", str(files[0]), "--apply", str(files[0]), "--out", str(out)], capsys
    )
    assert code == 0 and "is in both --fit and --apply" in err and "in-sample" in err
    # a catalog that stops long before the instances: said, with the count
    short = tmp_path / "short.csv"
    short.write_text("start_time,goes_class,fl_lon,fl_lat\n2010-12-20 00:00:00,M1.0,0,0\n")
    argv = ["calibrate", "--method", "history", "--catalog", str(short)]
    code, err = run_cli([*argv, "--cross-fold", *map(str, files), "--out", str(out)], capsys)
    assert code == 0 and "note: --catalog: 240 of 240 instances lie more than 72 h after" in err
    # a catalog without a flare: refused in one line, nothing written
    empty = tmp_path / "empty.csv"
    empty.write_text("start_time,goes_class,fl_lon,fl_lat\n")
    argv = ["calibrate", "--method", "history", "--catalog", str(empty)]
    code, err = run_cli(
        [*argv, "--cross-fold", *map(str, files), "--out", str(tmp_path / "e")], capsys
    )
    assert code == 2 and "lists no flare" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e" / "calibration.json").exists()
