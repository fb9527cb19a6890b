import filecmp
import json

import numpy as np
import pandas as pd
import pytest

from fdflare.acquire.catalog import read_catalog
from fdflare.cli import main
from fdflare.core.errors import InputError
from fdflare.core.paths import image_relpaths
from fdflare.label import LabelConfig, assign_folds, label_windows, make_labels, purge_mask

FOLD_FILES = [f"Fold{k}_{s}.csv" for k in range(1, 5) for s in ("train", "val")]


def _catalog(rows):
    df = pd.DataFrame(rows, columns=["start_time", "goes_class", "fl_lon", "fl_lat"])
    from fdflare.acquire.goes import class_flux

    df["start_time"] = pd.to_datetime(df["start_time"])
    df["flux"] = class_flux(df["goes_class"])
    return df


# ---------------------------------------------------------------- the study's labels


@pytest.mark.reference
def test_rebuilds_reference_labels_byte_for_byte(reference_dir, tmp_path, capsys):
    labels = reference_dir / "labels"
    names = pd.concat(
        [pd.read_csv(labels / f, usecols=["label"]) for f in ("Fold1_train.csv", "Fold1_val.csv")]
    )
    image_list = tmp_path / "images.txt"
    image_list.write_text("\n".join(names["label"]) + "\n")
    out = tmp_path / "labels"
    rc = main(
        [
            "label",
            "--catalog",
            str(reference_dir / "flare_catalog_partial.csv"),
            "--images",
            str(image_list),
            "--mode",
            "M",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    for f in FOLD_FILES:
        assert filecmp.cmp(out / f, labels / f, shallow=False), f
    table = pd.read_csv(out / "labels.csv")
    assert len(table) == 63649 and int(table["target"].sum()) == 9000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["instances"] == 63649
    assert "63649 instances (9000 positive" in capsys.readouterr().out


@pytest.mark.reference
def test_c_mode_is_a_superset_of_m_mode(reference_dir):
    names = pd.read_csv(reference_dir / "labels" / "Fold2_val.csv")["label"].tolist()
    cat = read_catalog(reference_dir / "flare_catalog_partial.csv")
    m = make_labels(cat, names, LabelConfig(mode="M")).table
    c = make_labels(cat, names, LabelConfig(mode="C")).table
    assert (c["target"] >= m["target"]).all() and c["target"].sum() > m["target"].sum()
    # the reference's binary labels are exactly the M-mode targets
    ref = pd.read_csv(reference_dir / "labels" / "Fold2_val.csv")
    assert (ref["goes_class"].to_numpy() == m["target"].to_numpy()).all()


# ---------------------------------------------------------------- window semantics


def test_window_edges():
    t = pd.Timestamp("2012-03-01 10:00:00")
    cat = _catalog(
        [
            (t, "X5.0", 1, 1),  # exactly at t: not in (t, t+24h-1s]
            (t + pd.Timedelta("23:59:59"), "M2.0", 2, 2),  # last second: in
            (t + pd.Timedelta("24h"), "X9.0", 3, 3),  # t + 24 h: belongs to the next hour's window
        ]
    )
    out = label_windows(cat, pd.DatetimeIndex([t, t + pd.Timedelta("1h")]))
    assert (
        out.loc[0, "goes_class"] == "M2.0"
        and out.loc[0, "target"] == 1
        and out.loc[0, "n_flares"] == 1
    )
    assert out.loc[0, "fl_lon"] == 2
    assert out.loc[1, "goes_class"] == "X9.0" and out.loc[1, "n_flares"] == 2


def test_largest_by_peak_flux_x10_beats_x9_3_and_rest_lists():
    t = pd.Timestamp("2012-03-01 00:00:00")
    cat = _catalog(
        [
            (t + pd.Timedelta("1h"), "X9.3", -40, 10),
            (t + pd.Timedelta("2h"), "X10", 75.5, -12),
            (t + pd.Timedelta("3h"), "C1.0", np.nan, np.nan),
        ]
    )
    out = label_windows(cat, pd.DatetimeIndex([t]))
    row = out.iloc[0]
    assert row["goes_class"] == "X10" and row["fl_lon"] == 75.5 and row["fl_lat"] == -12
    assert row["fl_start"] == t + pd.Timedelta("2h")
    assert row["rest_fl"] == "X9.3;C1.0"
    assert row["rest_lon"] == "-40;nan"
    assert row["rest_start"] == "2012-03-01 01:00:00;2012-03-01 03:00:00"


def test_ties_go_to_the_earliest_flare():
    t = pd.Timestamp("2012-03-01 00:00:00")
    cat = _catalog([(t + pd.Timedelta("5h"), "M1.0", 5, 5), (t + pd.Timedelta("2h"), "M1.0", 2, 2)])
    out = label_windows(cat, pd.DatetimeIndex([t]))
    assert out.loc[0, "fl_lon"] == 2


def test_empty_windows_and_missing_locations():
    t = pd.Timestamp("2012-03-01 00:00:00")
    cat = _catalog([(t + pd.Timedelta("30h"), "M3.0", np.nan, np.nan)])
    out = label_windows(cat, pd.DatetimeIndex([t, t + pd.Timedelta("10h")]))
    assert (
        out.loc[0, "target"] == 0
        and pd.isna(out.loc[0, "goes_class"])
        and out.loc[0, "n_flares"] == 0
    )
    assert (
        pd.isna(out.loc[0, "fl_lon"])
        and pd.isna(out.loc[0, "fl_start"])
        and out.loc[0, "rest_fl"] == ""
    )
    assert out.loc[1, "target"] == 1 and np.isnan(
        out.loc[1, "fl_lon"]
    )  # known class, unknown place


def test_window_and_mode_options():
    t = pd.Timestamp("2012-03-01 00:00:00")
    cat = _catalog([(t + pd.Timedelta("13h"), "C5.0", 1, 1)])
    assert label_windows(cat, pd.DatetimeIndex([t]), window="12h").loc[0, "n_flares"] == 0
    assert label_windows(cat, pd.DatetimeIndex([t]), threshold=1e-6).loc[0, "target"] == 1
    assert label_windows(cat, pd.DatetimeIndex([t]), threshold=1e-5).loc[0, "target"] == 0


def test_vectorised_matches_brute_force():
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2011-01-01")
    n = 400
    starts = start + pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s")
    letters = rng.choice(list("CMX"), n)
    nums = rng.choice([1.0, 2.5, 9.3, 10.0], n)
    cat = _catalog(
        [(s, f"{c}{x:g}", 1.0, 2.0) for s, c, x in zip(starts, letters, nums, strict=False)]
    )
    times = pd.date_range(start, periods=24 * 30, freq="1h")
    out = label_windows(cat, times)
    for i in rng.choice(len(times), 60, replace=False):
        t = times[i]
        sel = cat[(cat.start_time > t) & (cat.start_time <= t + pd.Timedelta("23:59:59"))]
        assert out.loc[i, "n_flares"] == len(sel)
        if len(sel):
            assert out.loc[i, "flux"] == sel["flux"].max()


# ---------------------------------------------------------------- images and folds


def test_missing_images_are_dropped_and_counted():
    times = pd.date_range("2012-01-01", periods=48, freq="1h")
    names = list(image_relpaths(times[::2]))  # every other hour has an image
    names.append("2012/01/01/HMI.m2012.01.01_00.12.00.jpg")  # off the hourly grid
    names.append("2012/01/01/junk.jpg")
    cfg = LabelConfig(start="2012-01-01", end="2012-01-03")
    res = make_labels(_catalog([]), names, cfg)
    assert res.counts["instances"] == 24
    assert res.counts["instances_without_image"] == 24
    assert res.counts["images_off_grid"] == 1
    assert res.counts["images_unrecognised"] == 1
    assert len(res.notes) == 2


def test_folds_by_calendar_quarter():
    times = pd.DatetimeIndex(
        ["2011-01-31", "2011-03-31 23:00", "2011-04-01", "2012-09-30", "2012-10-01", "2013-12-31"]
    )
    assert assign_folds(times).tolist() == [1, 1, 2, 3, 4, 4]


def test_purge_drops_windows_reaching_into_validation():
    times = pd.date_range("2011-03-30 00:00", "2011-04-02 23:00", freq="1h")
    folds = assign_folds(times)
    # fold 2 validates on April: the last 24 March hours see into April
    drop = purge_mask(times, folds, 2, gap_hours=0)
    assert drop.sum() == 23  # t = 03-31 00:00 ends at 23:59:59 the same day
    assert times[drop].min() == pd.Timestamp("2011-03-31 01:00")
    # fold 1 validates on March: April hours within 24 h after March are purged with a gap
    drop1 = purge_mask(times, folds, 1, gap_hours=24)
    assert drop1.sum() == 24 and times[drop1].max() == pd.Timestamp("2011-04-01 23:00")
    assert purge_mask(times, folds, 1, gap_hours=0).sum() == 0


def test_cli_gap_hours_reports_purged(tmp_path, capsys):
    times = pd.date_range("2011-03-25", "2011-04-05", freq="1h", inclusive="left")
    (tmp_path / "list.txt").write_text("\n".join(image_relpaths(times)))
    (tmp_path / "cat.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n2011-03-31 12:00:00,M1.0,10,10\n"
    )
    rc = main(
        [
            "label",
            "--catalog",
            str(tmp_path / "cat.csv"),
            "--images",
            str(tmp_path / "list.txt"),
            "--out",
            str(tmp_path / "o"),
            "--start",
            "2011-03-01",
            "--end",
            "2011-05-01",
            "--gap-hours",
            "24",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert (
        "fold 2: train 145 (12 positive), val 96 (0 positive), 23 training instances purged" in out
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["folds"]["1"]["purged"] == 24 and summary["folds"]["2"]["purged"] == 23
    train2 = pd.read_csv(tmp_path / "o" / "Fold2_train.csv")
    assert len(train2) == 145


def test_label_from_directory_tree(tmp_path):
    times = pd.date_range("2011-05-01", periods=6, freq="1h")
    for rel in image_relpaths(times, ext="png"):
        (tmp_path / "img" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / rel).write_bytes(b"")
    (tmp_path / "cat.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n2011-05-01 03:30:00,X1.0,80,10\n"
    )
    assert (
        main(
            [
                "label",
                "--catalog",
                str(tmp_path / "cat.csv"),
                "--images",
                str(tmp_path / "img"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    val = pd.read_csv(tmp_path / "o" / "Fold2_val.csv")
    assert val["label"].str.endswith(".png").all()
    assert val["goes_class"].tolist() == [1, 1, 1, 1, 0, 0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("row", "field"),
    [("Q1.0", "goes_class"), ("M", "goes_class"), ("", "goes_class")],
)
def test_cli_bad_class_writes_nothing(tmp_path, capsys, row, field):
    (tmp_path / "cat.csv").write_text(
        f"start_time,goes_class,fl_lon,fl_lat\n2011-01-01 00:00:00,C1.0,1,1\n2011-01-01 01:00:00,{row},1,1\n"
    )
    (tmp_path / "list.txt").write_text("2011/01/01/HMI.m2011.01.01_00.00.00.jpg\n")
    out = tmp_path / "out"
    rc = main(
        [
            "label",
            "--catalog",
            str(tmp_path / "cat.csv"),
            "--images",
            str(tmp_path / "list.txt"),
            "--out",
            str(out),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "cat.csv" in err and "line 3" in err and field in err
    assert not out.exists()


def test_cli_bad_time_and_missing_column(tmp_path, capsys):
    (tmp_path / "list.txt").write_text("2011/01/01/HMI.m2011.01.01_00.00.00.jpg\n")
    (tmp_path / "a.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n2011-02-30 00:00:00,C1.0,1,1\n"
    )
    assert (
        main(
            [
                "label",
                "--catalog",
                str(tmp_path / "a.csv"),
                "--images",
                str(tmp_path / "list.txt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "line 2" in capsys.readouterr().err
    (tmp_path / "b.csv").write_text("start_time,fl_lon,fl_lat\n2011-01-01 00:00:00,1,1\n")
    assert (
        main(
            [
                "label",
                "--catalog",
                str(tmp_path / "b.csv"),
                "--images",
                str(tmp_path / "list.txt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "goes_class" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_no_matching_images_is_an_error(tmp_path, capsys):
    (tmp_path / "cat.csv").write_text("start_time,goes_class,fl_lon,fl_lat\n")
    (tmp_path / "list.txt").write_text("1999/01/01/HMI.m1999.01.01_00.00.00.jpg\n")
    argv = ["label", "--catalog", str(tmp_path / "cat.csv"), "--images"]
    assert main([*argv, str(tmp_path / "list.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "no image matches" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"field 'end': .* must be after start"):
        make_labels(_catalog([]), [], LabelConfig(start="2012-01-02", end="2012-01-01"))


# ---------------------------------------------------------------- issue 11: bad input, through the CLI


def _inputs(tmp_path, catalog_rows, hours=48, start="2011-01-01"):
    times = pd.date_range(start, periods=hours, freq="1h")
    (tmp_path / "list.txt").write_text("\n".join(image_relpaths(times)) + "\n")
    (tmp_path / "cat.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n" + "".join(r + "\n" for r in catalog_rows)
    )
    return str(tmp_path / "cat.csv"), str(tmp_path / "list.txt")


def _run_label(cat, images, out, *extra):
    """The real CLI's exit status (argparse's refusals included)."""
    try:
        return main(["label", "--catalog", cat, "--images", images, "--out", str(out), *extra])
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("mode", ["M0", "A0", "C0.0", "A0.5"])
def test_cli_mode_below_a1_is_refused(tmp_path, capsys, mode):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,C1.0,1,1"])
    out = tmp_path / "o"
    assert _run_label(cat, images, out, "--mode", mode) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mode" in err and "A1.0" in err
    assert not out.exists()


def test_cli_lowest_mode_marks_only_windows_with_a_flare(tmp_path, capsys):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,A1.0,1,1"], hours=48)
    out = tmp_path / "o"
    assert (
        _run_label(
            cat, images, out, "--mode", "A1.0", "--start", "2011-01-01", "--end", "2011-01-03"
        )
        == 0
    )
    table = pd.read_csv(out / "labels.csv")
    # the windows (t, t + 24 h) holding the 05:00 flare: t = 2010-12-31 05:00 .. 04:00
    assert table["target"].tolist() == [1] * 5 + [0] * 43
    assert (table.loc[table["n_flares"] == 0, "target"] == 0).all()


def test_cli_mode_q_names_the_option_and_no_line(tmp_path, capsys):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,C1.0,1,1"])
    assert _run_label(cat, images, tmp_path / "o", "--mode", "Q") == 2
    err = capsys.readouterr().err
    assert "argument --mode: 'Q': " in err and "line" not in err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--start", "garbage"), ("--end", "tomorrowish"), ("--cadence", "often"), ("--window", "0s")],
)
def test_cli_bad_time_options_name_the_option(tmp_path, capsys, option, value):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,C1.0,1,1"])
    assert _run_label(cat, images, tmp_path / "o", option, value) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdflare label: error: ") and f"{option}: {value!r}" in err
    assert not (tmp_path / "o").exists()


def test_cli_negative_gap_hours_is_refused(tmp_path, capsys):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,C1.0,1,1"])
    assert _run_label(cat, images, tmp_path / "o", "--gap-hours", "-5") == 2
    assert "--gap-hours: '-5': must be at least 0" in capsys.readouterr().err


def test_cli_duplicate_catalog_rows_are_dropped_and_counted(tmp_path, capsys):
    rows = [
        "2011-01-01 05:00:00,M2.0,10,10",
        "2011-01-01 06:00:00,C3.0,,",
        "2011-01-01 07:00:00,X1.0,-20,5",
    ]
    cat, images = _inputs(tmp_path, rows)
    assert (
        _run_label(cat, images, tmp_path / "once", "--start", "2011-01-01", "--end", "2011-01-03")
        == 0
    )
    once = capsys.readouterr().out
    assert "duplicate catalog rows" not in once
    (tmp_path / "twice.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n" + "".join(r + "\n" for r in rows + rows)
    )
    assert (
        _run_label(
            str(tmp_path / "twice.csv"),
            images,
            tmp_path / "twice",
            "--start",
            "2011-01-01",
            "--end",
            "2011-01-03",
        )
        == 0
    )
    assert "3 duplicate catalog rows dropped" in capsys.readouterr().out
    a = (tmp_path / "once" / "labels.csv").read_bytes()
    b = (tmp_path / "twice" / "labels.csv").read_bytes()
    assert a == b  # n_flares and the rest_* lists as for the catalog without repeats
    table = pd.read_csv(tmp_path / "twice" / "labels.csv")
    assert table["n_flares"].max() == 3 and table.loc[0, "rest_fl"] == "M2.0;C3.0"
    summary = json.loads((tmp_path / "twice" / "summary.json").read_text())
    assert summary["counts"]["duplicate_flares_dropped"] == 3
    assert summary["counts"]["flares_in_catalog"] == 3


def test_duplicates_already_dropped_by_the_reader_are_reported(tmp_path):
    cat = _catalog([(pd.Timestamp("2011-01-01 05:00"), "M2.0", 1, 1)])
    cat.attrs["duplicates_dropped"] = 4
    res = make_labels(
        cat,
        list(image_relpaths(pd.date_range("2011-01-01", periods=3, freq="1h"))),
        LabelConfig(start="2011-01-01", end="2011-01-02"),
    )
    assert res.counts["duplicate_flares_dropped"] == 4


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ("2011-01-01 06:00:00,M1.0,500,10", "fl_lon", "longitude 500"),
        ("2011-01-01 06:00:00,M1.0,inf,10", "fl_lon", "longitude inf"),
        ("2011-01-01 06:00:00,M1.0,-181,10", "fl_lon", "longitude -181"),
        ("2011-01-01 06:00:00,M1.0,10,95", "fl_lat", "latitude 95"),
        ("2011-01-01 06:00:00,M1.0,10,", "fl_lat", "without a latitude"),
        ("2011-01-01 06:00:00,M1.0,UNK,12", "fl_lon", "without a longitude"),
    ],
)
def test_cli_impossible_locations_name_file_line_field(tmp_path, capsys, row, field, words):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,C1.0,1,1", row])
    out = tmp_path / "o"
    assert _run_label(cat, images, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cat.csv" in err and "line 3" in err and f"field '{field}'" in err and words in err
    assert not out.exists()


def test_cli_short_range_warns_about_empty_folds(tmp_path, capsys):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,M1.0,1,1"])
    out = tmp_path / "o"
    assert _run_label(cat, images, out, "--start", "2011-01-01", "--end", "2011-01-03") == 0
    err = capsys.readouterr().err
    for k in (2, 3, 4):
        assert f"warning: fold {k} has no validation instances" in err
        assert f"Fold{k}_val.csv holds a header only" in err
    assert "fold 1 has no training instances" in err
    assert (out / "Fold3_val.csv").read_text() == "label,goes_class\n"
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["warnings"]) == 4 and any("fold 3" in w for w in summary["warnings"])


def test_cli_image_list_not_utf8_names_file_and_line(tmp_path, capsys):
    cat, _images = _inputs(tmp_path, ["2011-01-01 05:00:00,M1.0,1,1"])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"2011/01/01/HMI.m2011.01.01_00.00.00.jpg\n# caf\xe9\n")
    assert _run_label(cat, str(bad), tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "latin1.txt, line 2" in err and "UTF-8" in err
    assert "Traceback" not in err


def test_cli_out_is_an_existing_file(tmp_path, capsys):
    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,M1.0,1,1"])
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    assert _run_label(cat, images, target) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err and "--out" in err
    assert target.read_text() == "keep me\n"


def test_cli_second_run_into_a_locked_folder_refuses(tmp_path, capsys):
    from fdflare.core.outputs import output_lock

    cat, images = _inputs(tmp_path, ["2011-01-01 05:00:00,M1.0,1,1"])
    out = tmp_path / "o"
    with output_lock(out, command="label"):  # the first run, still writing
        assert _run_label(cat, images, out, "--mode", "C") == 2
        err = capsys.readouterr().err
        assert "in use" in err and "fdflare label" in err
        assert sorted(p.name for p in out.iterdir()) == [".fdflare.lock"]
    assert _run_label(cat, images, out, "--mode", "C") == 0  # free again
    assert (out / "Fold1_train.csv").is_file()
