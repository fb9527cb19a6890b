import re

import numpy as np
import pandas as pd
import pytest

from clitools import run_cli
from fdflare.acquire.goes import class_flux, flux_letter
from fdflare.core.errors import InputError
from fdflare.core.paths import image_relpaths, parse_image_times, scan_images
from fdflare.core.recipe import parse_threshold


def test_class_flux_orders_by_peak_flux_not_string():
    flux = class_flux(["X10", "X9.3", "M1.0", "C9.9", "m2", "B5", "A1.0"])
    assert flux[0] > flux[1] > flux[2] > flux[3]
    assert flux[4] == pytest.approx(2e-5)
    assert flux[5] == pytest.approx(5e-7)
    assert sorted(["X10", "X9.3"])[-1] == "X9.3"  # the study's string sort would pick X9.3


@pytest.mark.parametrize("bad", ["Q1.0", "M", "", "1.0", "MM1", "X-1"])
def test_class_flux_rejects_malformed(bad):
    with pytest.raises(InputError) as err:
        class_flux(["C1.0", bad], path="cat.csv", field="goes_class")
    msg = str(err.value)
    assert "cat.csv" in msg and "line 3" in msg and "goes_class" in msg


def test_flux_letter_and_threshold():
    assert list(flux_letter(np.array([1e-5, 9.9e-6, 1e-4, np.nan]))) == ["M", "C", "X", ""]
    assert parse_threshold("M") == (1e-5, "M1.0")
    assert parse_threshold("c") == (1e-6, "C1.0")
    assert parse_threshold(" M 5 ")[0] == pytest.approx(5e-5)
    assert parse_threshold("A1")[0] == pytest.approx(1e-8)  # the lowest


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Q1.0", "malformed GOES class"),
        ("M-1", "malformed GOES class"),
        ("", "malformed GOES class"),
        ("M0", "below A1.0"),
        ("A0.5", "below A1.0"),
    ],
)
def test_threshold_rule_names_what_and_where(text, words):
    with pytest.raises(InputError, match=words) as err:
        parse_threshold(text, what="threshold", path="run.json", field="recipe.threshold")
    assert str(err.value).startswith("run.json, field 'recipe.threshold': threshold ")


@pytest.mark.parametrize(
    "argv",
    [
        ["catalog", "--source", "{cat}", "--out", "{out}/c.csv", "--min-class", "{cls}"],
        ["baseline", "--kind", "climatology", "--labels", "{out}", "--mode", "{cls}"],
        ["label", "--catalog", "{cat}", "--images", "{cat}", "--out", "{out}", "--mode", "{cls}"],
    ],
    ids=["catalog", "baseline", "label"],
)
@pytest.mark.parametrize("cls", ["M0", "A0.5", "Q1"])
def test_every_command_reads_a_threshold_by_one_rule(tmp_path, capsys, argv, cls):
    """catalog --min-class and baseline --mode once took M0 (every flare); label refused it.
    All three now refuse a threshold below A1.0, before any work, naming the option."""
    cat = tmp_path / "cat.csv"
    cat.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-01-01 05:00:00,C1.0,1,1\n")
    out = tmp_path / "o"
    args = [a.format(cat=cat, out=out, cls=cls) for a in argv]
    code, err = run_cli(args, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    option = "--min-class" if argv[0] == "catalog" else "--mode"
    assert re.match(rf"fdflare {argv[0]}: error: (argument )?{option}\b", line), line
    assert ("below A1.0" if cls != "Q1" else "malformed GOES class") in line
    assert not out.exists()


def test_image_names_round_trip():
    times = pd.date_range("2011-02-27 22:00", periods=5, freq="1h")
    names = image_relpaths(times, ext="png")
    assert names[0] == "2011/02/27/HMI.m2011.02.27_22.00.00.png"
    parsed, ext = parse_image_times(["/scratch/x/" + n for n in names])
    assert (parsed.to_numpy() == times.to_numpy()).all()
    assert set(ext) == {"png"}


def test_parse_image_times_rejects_bad_names():
    parsed, _ = parse_image_times(
        [
            "a/b.jpg",
            "2011/02/29/HMI.m2011.02.29_00.00.00.jpg",
            "HMI.m2011.13.01_00.00.00.jpg",
            "HMI.m2011.01.01_24.00.00.jpg",
        ]
    )
    assert parsed.isna().all()


def test_scan_images(tmp_path):
    for rel in [
        "2011/01/01/HMI.m2011.01.01_00.00.00.jpg",
        "2011/01/01/HMI.m2011.01.01_01.00.00.png",
        "2011/01/01/notes.txt",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert scan_images(tmp_path) == [
        "2011/01/01/HMI.m2011.01.01_00.00.00.jpg",
        "2011/01/01/HMI.m2011.01.01_01.00.00.png",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["forecast", "--checkpoint", "x.ckpt", "--time", "02/01/2011"],
        ["label", "--catalog", "c.csv", "--images", "i", "--out", "o", "--start", "13/01/2011"],
        ["synth", "--out", "o", "--start", "02/01/2011"],
        ["download", "--out", "o", "--start", "2011/01/02", "--end", "2011-01-03"],
        ["verify", "--history", "h.csv", "--catalog", "c.csv", "--end", "01-02-2011"],
    ],
)
def test_an_ambiguous_date_is_refused_in_one_line(argv, tmp_path, capsys, monkeypatch):
    from clitools import run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.ckpt").write_bytes(b"")  # the input files exist: the date is what is wrong
    code, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "not ISO 8601" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("2011-02-01", "2011-02-01 00:00:00"),
        ("2011-02-01T05:00+05:00", "2011-02-01 00:00:00"),
        ("2011-02-01 00:39:00", "2011-02-01 00:39:00"),
        ("20110201T003900", "2011-02-01 00:39:00"),
    ],
)
def test_iso_times_are_read_as_utc(text, expect):
    from fdflare.core.timeparse import parse_time

    assert str(parse_time(text)) == expect
