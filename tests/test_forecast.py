"""``fdflare forecast`` against a loopback Helioviewer serving real JPEG 2000 magnetograms.

The magnetograms are the synthetic Sun's Helioviewer-style JP2 files (with the XML header
that gives the disk geometry) and sunpy's real Helioviewer HMI JP2; the models are real
networks trained for one epoch; every run goes through the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fdflare.cli import main
from helioviewer_server import CLOSEST, JP2, FakeHelioviewer, Fault, small_jp2
from test_data import fit_history_map, make_tiny_dataset

FAST = ["--no-pretrained", "--workers", "0", "--batch-size", "16", "--quiet"]
SIZE = 32


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``fdflare ARGV`` in-process: (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Two trained checkpoints and a synthetic Sun with its JP2 files, prepared too."""
    root = tmp_path_factory.mktemp("forecast")
    ds = make_tiny_dataset(root / "tiny", size=SIZE)
    ckpts = []
    for seed in (0, 1):
        run = root / f"run{seed}"
        argv = ["train", "--model", "resnet18", "--fold", "1", "--labels", str(ds["labels"]),
                "--images", str(ds["images"]), "--out", str(run), "--epochs", "1",
                "--image-size", str(SIZE), "--max-lr", "0.01", "--seed", str(seed), *FAST]  # fmt: skip
        assert main(argv) == 0
        ckpts.append(run / "last.ckpt")
    sun = root / "sun"
    assert main(["synth", "--out", str(sun), "--start", "2011-01-01", "--end", "2011-01-03",
                 "--cadence", "1h", "--image-size", str(SIZE), "--jp2", "--jp2-size", "256",
                 "--quiet"]) == 0  # fmt: skip
    prep = root / "prep"
    assert main(["prepare", "--source", str(sun / "jp2"), "--out", str(prep), "--image-size",
                 str(SIZE), "--format", "png", "--workers", "1", "--quiet"]) == 0  # fmt: skip
    return {"ckpt0": ckpts[0], "ckpt1": ckpts[1], "sun": sun, "prep": prep, "root": root}


def synth_jp2(world: dict[str, Path]):
    """The synthetic Sun's JP2 of the hour of an observation time."""

    def read(t: pd.Timestamp) -> bytes:
        h = pd.Timestamp(t).floor("h")
        return (
            world["sun"] / "jp2" / h.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S.jp2")
        ).read_bytes()

    return read


def server(world: dict[str, Path], **kwargs) -> FakeHelioviewer:
    kwargs.setdefault("jp2_for", synth_jp2(world))
    return FakeHelioviewer("2011-01-01T00:00", "2011-01-02T23:00", **kwargs)


def forecast_argv(url: str, *extra: str, time: str = "2011-01-01T10:00") -> list[str]:
    return ["forecast", "--time", time, "--base-url", url, "--retries", "1", "--read-timeout", "5",
            "--accelerator", "cpu", *extra]  # fmt: skip


def predicted(world: dict[str, Path], tmp: Path, relpath: str, ckpt: Path) -> float:
    """P(flare) of the prepared image of ``relpath`` through ``fdflare predict``."""
    listing = world["prep"] / f"one_{os.getpid()}_{ckpt.parent.name}.txt"
    listing.write_text(relpath + "\n")
    out = tmp / f"pred_{ckpt.parent.name}.csv"
    try:
        assert main(["predict", "--checkpoint", str(ckpt), "--images", str(listing), "--out",
                     str(out), "--workers", "0", "--quiet", "--accelerator", "cpu"]) == 0  # fmt: skip
    finally:
        listing.unlink()
    return float(pd.read_csv(out)["flare_prob"].iloc[0])


def test_a_forecast_is_the_model_on_the_closest_magnetogram(world, tmp_path, capsys):
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--json"), capsys)  # fmt: skip
        image_id = hv.image_id("2011-01-01T10:00")
        observed = hv.observation(image_id)
    assert code == 0, err
    fc = json.loads(out)
    assert {"probability", "requested_time", "observation_time", "window_start", "window_end",
            "members"} <= set(fc)  # fmt: skip
    assert fc["requested_time"] == "2011-01-01T10:00:00Z"
    assert (
        fc["observation_time"] == observed.strftime("%Y-%m-%dT%H:%M:%SZ") == "2011-01-01T10:00:42Z"
    )
    assert fc["window_start"] == fc["observation_time"]
    assert fc["window_end"] == "2011-01-02T10:00:42Z"
    assert fc["observation_age_s"] == -42
    assert fc["source"]["image_id"] == str(image_id)
    assert [m["checkpoint"] for m in fc["members"]] == [str(world["ckpt0"])]
    # the same magnetogram through prepare (a PNG on disk) and predict gives the same number
    expect = predicted(world, tmp_path, "2011/01/01/HMI.m2011.01.01_10.00.00.png", world["ckpt0"])
    assert fc["probability"] == pytest.approx(expect, abs=1e-6)
    assert fc["members"][0]["probability"] == pytest.approx(expect, abs=1e-6)


def test_text_output_shows_probability_window_age_and_members(world, capsys):
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           str(world["ckpt1"])), capsys)  # fmt: skip
    assert code == 0, err
    assert out.startswith("P(flare >= M1.0 in the next 24 h) = ")
    assert "mean of 2 members" in out
    assert "window:      2011-01-01T10:00:42Z to 2011-01-02T10:00:42Z" in out
    assert "observation: 2011-01-01T10:00:42Z" in out
    assert "age:         42 s after the requested time 2011-01-01T10:00:00Z" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert len(lines) == 2 and str(world["ckpt0"]) in lines[0] and str(world["ckpt1"]) in lines[1]
    probs = [float(ln.split()[0]) for ln in lines]
    shown = float(out.split(" = ")[1].split()[0])
    assert shown == pytest.approx(np.mean(probs), abs=1e-3)


def test_an_ensemble_file_maps_each_member_then_averages(world, tmp_path, capsys):
    from fdflare.analysis.calibration import Calibrator

    ens = tmp_path / "ensemble.json"
    maps = [{"method": "platt", "a": 2.0, "b": -1.0}, None]
    for k in (0, 1):  # the members lie inside the ensemble's folder, which moves whole
        shutil.copy(world[f"ckpt{k}"], tmp_path / f"fold{k + 1}.ckpt")
    ens.write_text(json.dumps({"format": 1, "members": [
        {"model": "resnet18", "fold": 1, "checkpoint": "fold1.ckpt", "calibration": maps[0]},
        {"model": "resnet18", "fold": 2, "checkpoint": "fold2.ckpt", "calibration": maps[1]},
    ]}))  # fmt: skip
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--ensemble", str(ens), "--json"), capsys)
    assert code == 0, err
    fc = json.loads(out)
    m0, m1 = fc["members"]
    cal = Calibrator.from_dict(maps[0])
    assert m0["calibrated"] and not m1["calibrated"]
    assert m0["probability"] == pytest.approx(
        float(cal(np.array([m0["raw_probability"]]))[0]), abs=1e-6
    )
    assert m1["probability"] == pytest.approx(m1["raw_probability"])
    assert fc["probability"] == pytest.approx((m0["probability"] + m1["probability"]) / 2, abs=1e-6)
    assert fc["calibrated"] is True
    assert fc["spread"] == pytest.approx(abs(m0["probability"] - m1["probability"]) / 2, abs=1e-6)


def test_time_now_uses_the_clock(world, capsys, monkeypatch):
    from fdflare.forecast import service

    monkeypatch.setattr(service, "utcnow", lambda: pd.Timestamp("2011-01-02T07:30:13.5"))
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--json",
                                           time="now"), capsys)  # fmt: skip
    assert code == 0, err
    fc = json.loads(out)
    assert fc["requested_time"] == "2011-01-02T07:30:13Z"
    assert fc["issue_time"] == "2011-01-02T07:30:13Z"
    assert fc["observation_time"] == "2011-01-02T07:24:42Z"  # the 12-minute grid's closest
    assert fc["observation_age_s"] == 331
    # an observation the service dates after the clock is not believed
    monkeypatch.setattr(service, "utcnow", lambda: pd.Timestamp("2011-01-02T07:20:13"))
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           time="now"), capsys)  # fmt: skip
        assert hv.count(JP2) == 0
    assert code == 3 and "after the clock" in err and err.count("\n") == 1


def test_a_time_in_the_future_is_refused_before_any_request(world, capsys, monkeypatch):
    from fdflare.forecast import service

    monkeypatch.setattr(service, "utcnow", lambda: pd.Timestamp("2011-01-02T07:20:00"))
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           time="2011-01-02T09:00"), capsys)  # fmt: skip
        assert hv.count() == 0
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "in the future" in err and "2011-01-02T07:20:00Z" in err


def test_no_image_within_the_tolerance_names_the_closest(world, capsys):
    with server(world, gaps=[("2011-01-01T08:00", "2011-01-01T11:30")]) as hv:
        code, out, err = cli(
            forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"])), capsys
        )
        assert hv.count(JP2) == 0
    assert code == 4 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "closest is 2011-01-01T11:36:42Z, 1 h 36 min after" in err
    assert "--tolerance" in err
    with server(world, gaps=[("2011-01-01T08:00", "2011-01-01T11:30")]) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           "--tolerance", "3h", "--json"), capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["observation_time"] == "2011-01-01T11:36:42Z"


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v2/"


def test_a_service_down_is_status_3_and_a_mirror_takes_over(world, capsys):
    down = _closed_port_url()
    code, out, err = cli(forecast_argv(down, "--checkpoint", str(world["ckpt0"]), "--retries", "0"), capsys)  # fmt: skip
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and down in err and "Traceback" not in err
    with server(world) as hv:
        argv = forecast_argv(down, "--checkpoint", str(world["ckpt0"]), "--retries", "0",
                             "--base-url", hv.base_url, "--json")  # fmt: skip
        code, out, err = cli(argv, capsys)
    assert code == 0, err
    assert json.loads(out)["source"]["base_url"] == hv.base_url


def test_garbage_answers_are_retried_then_status_3(world, capsys):
    with server(world) as hv:
        hv.inject(CLOSEST, "2011-01-01T10:00", Fault("html"))
        code, out, err = cli(
            forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"])), capsys
        )
        assert hv.count(CLOSEST) == 2  # an HTML page, then the answer
    assert code == 0, err
    with server(world) as hv:
        hv.inject(CLOSEST, "2011-01-01T10:00", Fault("html"), Fault("503"), Fault("html"))
        code, out, err = cli(
            forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"])), capsys
        )
        assert hv.count(CLOSEST) == 2  # the first try and one retry (--retries 1)
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "503" in err and "Traceback" not in err
    with server(world, jp2_for=lambda t: b"<html>busy</html>") as hv:
        code, out, err = cli(
            forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"])), capsys
        )
    assert code == 3 and "not a JPEG 2000 file" in err


def test_a_checkpoint_that_does_not_load_fails_before_any_request(world, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(bad)), capsys)
        assert hv.count() == 0
    assert code == 2 and out == "" and err.count("\n") == 1 and str(bad) in err


def test_a_real_helioviewer_hmi_file_and_one_without_geometry(world, sunpy_test_data, capsys):
    real = sunpy_test_data / "2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2"
    with server(world, jp2_file=real) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--json"), capsys)  # fmt: skip
    assert code == 0, err
    fc = json.loads(out)
    assert 0.0 <= fc["probability"] <= 1.0 and fc["notes"] == []
    with server(world, jp2_for=lambda t: small_jp2(7, size=64)) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--json"), capsys)  # fmt: skip
    assert code == 0, err
    notes = json.loads(out)["notes"]
    assert len(notes) == 1 and "no disk geometry" in notes[0]


def test_history_appends_and_a_rerun_keeps_the_earlier_row(world, tmp_path, capsys):
    hist = tmp_path / "forecasts.csv"
    with server(world) as hv:
        for t in ("2011-01-01T10:00", "2011-01-01T11:00", "2011-01-01T10:00"):
            code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                               "--history", str(hist), time=t), capsys)  # fmt: skip
            assert code == 0, err
    assert "a re-issue: 1 earlier row(s) of this time kept" in out
    df = pd.read_csv(hist, keep_default_na=False)
    assert list(df["requested_time"]) == [
        "2011-01-01T10:00:00Z",
        "2011-01-01T11:00:00Z",
        "2011-01-01T10:00:00Z",
    ]
    assert list(df.columns[:3]) == ["timestamp", "flare_prob", "target"]
    assert df["timestamp"].iloc[0] == "2011/01/01/HMI.m2011.01.01_10.00.42.jp2"
    assert (df["target"] == "").all()
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*part*"))


def test_scoreboard_file(world, tmp_path, capsys, monkeypatch):
    from fdflare.forecast import service

    monkeypatch.setattr(service, "utcnow", lambda: pd.Timestamp("2011-01-05T00:00:00"))
    out_dir = tmp_path / "sb"
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), str(world["ckpt1"]),
                                           "--scoreboard", str(out_dir), "--method-name", "fdflare_test"), capsys)  # fmt: skip
    assert code == 0, err
    files = list(out_dir.iterdir())
    assert [f.name for f in files] == ["Flare_Forecast_fdflare_test_20110101_1000.txt"]
    lines = files[0].read_text().splitlines()
    assert lines[:8] == [
        "Forecasting method: fdflare_test",
        "Issue Time: 2011-01-01T10:00Z",
        "Prediction Window Start Time: 2011-01-01T10:00Z",
        "Prediction Window End Time: 2011-01-02T10:00Z",
        "Probability Bins: M+",
        "Input data: SDO/HMI LOS_Magnetogram",
        "Prediction window (hours): 24",
        "#Full Disk Forecast",
    ]
    prob, uncert = (float(v) for v in lines[9].split())
    shown = float(out.split(" = ")[1].split()[0])
    assert prob == pytest.approx(shown, abs=1e-3) and uncert >= 0


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([], "--checkpoint FILE... or --ensemble FILE"),
        (["--checkpoint", "x", "--ensemble", "y"], "one of them"),
        (["--checkpoint", "x", "--tolerance", "soon"], "--tolerance"),
        (["--checkpoint", "x", "--base-url", "ftp://x/"], "--base-url"),
        (["--checkpoint", "x", "--scoreboard", "sb", "--method-name", "../evil"], "--method-name"),
        (["--checkpoint", "x", "--method-name", "ok"], "--scoreboard DIR too"),
        (["--checkpoint", "x", "--explain", "e.jpg"], "PNG"),
        (["--checkpoint", "x", "--time", "yesterday-ish"], "--time"),
    ],
)
def test_bad_arguments_are_one_line_before_any_request(world, tmp_path, capsys, extra, words):
    extra = [str(world["ckpt0"]) if a == "x" else a for a in extra]  # a checkpoint that exists
    with server(world) as hv:
        argv = ["forecast", "--base-url", hv.base_url, *extra]
        if "--base-url" in extra:
            argv = ["forecast", *extra]
        code, out, err = cli(argv, capsys)
        assert hv.count() == 0
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


# ------------------------------------------------------------------------------- verify


@pytest.fixture(scope="module")
def history(world, tmp_path_factory) -> Path:
    """A forecast history of every fourth hour of the synthetic Sun's two days."""
    hist = tmp_path_factory.mktemp("hist") / "forecasts.csv"
    with server(world) as hv:
        for t in pd.date_range("2011-01-01T01:00", "2011-01-02T23:00", freq="4h"):
            argv = forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--history",
                                 str(hist), time=t.isoformat())  # fmt: skip
            assert main(argv) == 0
    return hist


def _flare_times(world) -> np.ndarray:
    from fdflare.acquire.goes import class_flux

    cat = pd.read_csv(world["sun"] / "catalog.csv")
    strong = class_flux(cat["goes_class"].tolist()) >= 1e-5
    return pd.to_datetime(cat.loc[strong, "start_time"]).to_numpy()


def test_verify_labels_each_window_and_scores_beside_the_baselines(
    world, history, tmp_path, capsys
):
    out = tmp_path / "verified.csv"
    argv = ["verify", "--history", str(history), "--catalog", str(world["sun"] / "catalog.csv"),
            "--start", "2011-01-01", "--end", "2011-01-04T00:00", "--out", str(out)]  # fmt: skip
    code, text, err = cli(argv, capsys)
    assert code == 0, err
    assert "12 forecast(s) of P(flare >= M1.0 in the next 24 h), 12 verified" in text
    assert "0 pending" in text
    for kind in ("model", "persistence", "climatology"):
        assert any(line.split()[:1] == [kind] for line in text.splitlines()), text
    assert "persistence (" in text and "climatology (BSS" in text
    table = pd.read_csv(out, keep_default_na=False)
    flares = _flare_times(world)
    for _, row in table.iterrows():
        t = pd.Timestamp(row["window_start"]).tz_localize(None).to_datetime64()
        expect = int(((flares > t) & (flares < t + np.timedelta64(24, "h"))).any())
        before = int(((flares > t - np.timedelta64(24, "h")) & (flares <= t)).any())
        assert row["target"] == expect, row["window_start"]
        assert row["persistence"] == before, row["window_start"]
    code, js, err = cli([*argv[:-2], "--json"], capsys)
    assert code == 0, err
    result = json.loads(js)
    assert result["events"] == int(table["target"].sum())
    # the verified table is a prediction file: fdflare evaluate scores it the same way
    code, ev, err = cli(["evaluate", "--json", str(out)], capsys)
    assert code == 0, err
    scored = json.loads(ev)["files"][0]
    model = result["scores"]["model"]
    for key in ("tp", "fp", "tn", "fn", "tss", "hss2"):
        assert scored[key] == model[key], key
    clim = result["climatology"]
    brier_clim = float(np.mean((clim - table["target"]) ** 2))
    assert model["bss"] == pytest.approx(1 - model["brier"] / brier_clim)


def test_verify_counts_pending_windows(world, history, capsys):
    from fdflare.acquire.catalog import read_catalog

    last = read_catalog(world["sun"] / "catalog.csv")["start_time"].max()
    starts = pd.to_datetime(pd.read_csv(history)["window_start"]).dt.tz_localize(None)
    pending = int((starts + pd.Timedelta(hours=24) > last).sum())
    assert 0 < pending < len(starts)
    code, js, err = cli(["verify", "--history", str(history), "--catalog", str(world["sun"] / "catalog.csv"),
                         "--start", "2011-01-01", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(js)
    assert result["pending"] == pending and result["verified"] == len(starts) - pending
    code, text, err = cli(["verify", "--history", str(history), "--catalog", str(world["sun"] / "catalog.csv"),
                           "--start", "2011-01-01", "--end", "2011-01-01T12:00"], capsys)  # fmt: skip
    assert code == 1 and "nothing to verify yet" in text and "12 pending" in text


def test_verify_bad_history_names_line_and_field(world, history, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    lines = history.read_text().splitlines()
    cells = lines[3].split(",")
    cells[6] = "soon"  # window_start
    lines[3] = ",".join(cells)
    bad.write_text("\n".join(lines) + "\n")
    code, out, err = cli(["verify", "--history", str(bad), "--catalog", str(world["sun"] / "catalog.csv")], capsys)  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "line 4" in err and "window_start" in err and str(bad) in err
    other = tmp_path / "preds.csv"
    other.write_text("timestamp,flare_prob,target\na.jpg,0.5,1\n")
    code, out, err = cli(["verify", "--history", str(other), "--catalog", str(world["sun"] / "catalog.csv")], capsys)  # fmt: skip
    assert code == 2 and "not a forecast history" in err


def test_prior_climatology_is_the_catalogs_rate_before_the_first_forecast():
    from fdflare.forecast.verify import prior_climatology

    # an M flare at noon every fourth day, 60 days before the first forecast
    starts = pd.date_range("2011-01-01T12:00", "2011-03-01", freq="4D")
    cat = pd.DataFrame({"start_time": starts, "flux": 2e-5, "goes_class": "M2.0",
                        "fl_lon": 0.0, "fl_lat": 0.0})  # fmt: skip
    first = pd.Timestamp("2011-03-02T00:00")
    rate, why = prior_climatology(cat, first, 1e-5)
    hours = pd.date_range(
        "2011-01-01T12:00", first - pd.Timedelta(hours=24), freq="h", inclusive="left"
    )
    expect = np.mean([((starts > h) & (starts < h + pd.Timedelta(hours=24))).any() for h in hours])
    assert rate == pytest.approx(expect) and 0.2 < rate < 0.3
    assert str(len(hours)) in why
    assert prior_climatology(cat, pd.Timestamp("2011-01-20"), 1e-5)[0] is None


def test_calibration_of_the_mean_and_a_file_of_several_maps(world, tmp_path, capsys):
    from fdflare.analysis.calibration import Calibrator

    one = {"method": "platt", "a": 3.0, "b": 0.5}
    same = tmp_path / "same.json"
    same.write_text(json.dumps({"files": [{"map": one}, {"map": one}]}))
    differ = tmp_path / "differ.json"
    differ.write_text(json.dumps({"files": [{"map": one}, {"map": {**one, "a": 1.0}}]}))
    with server(world) as hv:
        base = forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), str(world["ckpt1"]), "--json")  # fmt: skip
        code, out, err = cli([*base, "--calibration", str(same)], capsys)
        assert code == 0, err
        fc = json.loads(out)
        mean = np.mean([m["probability"] for m in fc["members"]])
        assert fc["probability"] == pytest.approx(
            float(Calibrator.from_dict(one)(np.array([mean]))[0]), abs=1e-6
        )
        assert fc["calibrated"] is True
        n = hv.count()
        code, out, err = cli([*base, "--calibration", str(differ)], capsys)
        assert hv.count() == n  # refused before any request
    assert code == 2 and "2 different maps" in err and err.count("\n") == 1


def test_verify_refuses_an_impossible_flare_location(world, history, tmp_path, capsys):
    cat = tmp_path / "cat.csv"
    cat.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-01-01 02:10:00,M1.2,30,-15\n"
                   "2011-01-01 05:00:00,M3.0,500,10\n")  # fmt: skip
    code, out, err = cli(["verify", "--history", str(history), "--catalog", str(cat)], capsys)
    assert code == 2 and out == ""
    assert "line 3" in err and "fl_lon" in err and "longitude 500" in err


def test_explain_writes_the_forecast_magnetograms_map(world, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "now.png"
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           "--explain", str(png), "--explain-method", "gradcam"), capsys)  # fmt: skip
    assert code == 0, err
    assert f"wrote {png}: explanation (gradcam" in out
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and min(im.size) >= 300
    bare = tmp_path / "bare.png"
    with server(world, jp2_for=lambda t: small_jp2(3, size=64)) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           "--explain", str(bare)), capsys)  # fmt: skip
    assert code == 0 and bare.is_file()
    assert "warning:" in err and "circle" in err and "no disk geometry" in out
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           "--explain", str(world["ckpt0"])), capsys)  # fmt: skip
        assert hv.count() == 0
    assert code == 2 and "--explain" in err


def test_verify_leaves_out_windows_before_the_catalog_and_counts_reissues(
    world, history, tmp_path, capsys
):
    cat = world["sun"] / "catalog.csv"
    first = pd.Timestamp(pd.read_csv(cat)["start_time"].min()).floor("D")
    starts = pd.to_datetime(pd.read_csv(history)["window_start"]).dt.tz_localize(None)
    before = int((starts < first).sum())
    assert 0 < before < len(starts)
    code, js, err = cli(["verify", "--history", str(history), "--catalog", str(cat), "--json",
                         "--end", "2011-01-04"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(js)
    assert result["before_catalog"] == before and result["verified"] == len(starts) - before
    note = next(n for n in result["notes"] if "before the catalog" in n)
    assert f"the first at {starts.min():%Y-%m-%dT%H:%M:%SZ}" in note and "--start" in note
    # a second row for a window (a re-issue) is counted and left out, never scored
    dup = tmp_path / "dup.csv"
    lines = history.read_text().splitlines()
    cells = lines[-1].split(",")
    cells[1] = "0.999999"
    cells[4] = "2031-01-01T00:00:00Z"  # issued later
    dup.write_text("\n".join([*lines, ",".join(cells)]) + "\n")
    code, js2, err = cli(["verify", "--history", str(dup), "--catalog", str(cat), "--json",
                          "--end", "2011-01-04"], capsys)  # fmt: skip
    assert code == 0, err
    again = json.loads(js2)
    assert again["reissues"] == 1 and again["scores"] == result["scores"]


def test_outputs_are_checked_before_any_request_and_nothing_is_left(world, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    png, sb = tmp_path / "e.png", tmp_path / "sb"
    with server(world) as hv:
        code, out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--history", str(bad),
                                           "--explain", str(png), "--scoreboard", str(sb)), capsys)  # fmt: skip
        assert hv.count() == 0
    assert code == 2 and out == "" and "not a forecast history" in err
    assert bad.read_text() == "a,b\n1,2\n" and not png.exists() and not sb.exists()
    with server(world) as hv:
        code, _out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                           "--history", str(png), "--explain", str(png)), capsys)  # fmt: skip
        assert hv.count() == 0
    assert code == 2 and "--explain" in err


def test_history_keeps_its_mode_and_its_link_and_waits_for_its_lock(world, tmp_path, capsys):
    import fcntl
    import stat

    from fdflare.core.errors import BusyError
    from fdflare.forecast.formats import _locked

    real = tmp_path / "real.csv"
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    with server(world) as hv:
        for t in ("2011-01-01T10:00", "2011-01-01T11:00"):
            code, _out, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]),
                                               "--history", str(link), time=t), capsys)  # fmt: skip
            assert code == 0, err
            real.chmod(0o600)
    assert link.is_symlink() and len(pd.read_csv(real)) == 2
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    with open(tmp_path / "held.csv.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with (
            pytest.raises(BusyError, match="held by another process"),
            _locked(tmp_path / "held.csv", wait_s=0),
        ):
            pass


def test_bad_ensemble_fields_are_one_line(world, tmp_path, capsys):
    rel = "member.ckpt"
    shutil.copy(world["ckpt0"], tmp_path / rel)
    cases = [
        ({"format": 1, "members": [{"checkpoint": rel, "calibration": "cal.json"}]}, "calibration must be a map"),
        ({"format": 99, "members": [{"checkpoint": rel}]}, "format 99"),
        ({"format": 1, "members": [{"checkpoint": rel, "fold": "x"}]}, "fold 'x'"),
        ({"format": 1, "members": [{"checkpoint": rel, "model": "alexnet"}]}, "not alexnet"),
    ]  # fmt: skip
    for i, (data, words) in enumerate(cases):
        ens = tmp_path / f"e{i}.json"
        ens.write_text(json.dumps(data))
        code, out, err = cli(forecast_argv(_closed_port_url(), "--ensemble", str(ens)), capsys)
        assert code == 2 and out == "" and words in err and err.count("\n") == 1, (words, err)
    ens = tmp_path / "mismatch.json"
    ens.write_text(json.dumps({"format": 1, "members": [{"checkpoint": rel, "model": "resnet18"}]}))
    code, _out, err = cli(forecast_argv(_closed_port_url(), "--ensemble", str(ens), "--model", "alexnet"), capsys)  # fmt: skip
    assert code == 2 and "--model alexnet" in err


def test_an_oversized_jp2_is_refused(world, capsys, monkeypatch):
    from fdflare.acquire.helioviewer import client

    monkeypatch.setattr(client, "MAX_JP2_BYTES", 1000)
    with server(world) as hv:
        code, _out, err = cli(
            forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"])), capsys
        )
        assert hv.count(JP2) == 1  # not retried
    assert code == 3 and "more than any HMI JPEG 2000 file" in err


def _history_map(world: dict[str, Path], tmp_path: Path) -> tuple[Path, object]:
    """A history map fitted on the synthetic Sun's two days."""
    return fit_history_map(world["sun"] / "catalog.csv", "2011-01-01T00:00", "2011-01-02T23:00",
                           tmp_path / "history_map.json")  # fmt: skip


def test_a_history_map_reads_the_flares_up_to_the_observation(world, tmp_path, capsys):
    import sqlite3

    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.history import FEATURES, flare_history

    path, cal = _history_map(world, tmp_path)
    catalog = world["sun"] / "catalog.csv"
    store = tmp_path / "store.sqlite"
    with server(world) as hv:
        argv = forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--calibration",
                             str(path), "--catalog", str(catalog), time="2011-01-02T10:00")  # fmt: skip
        code, out, err = cli([*argv, "--json", "--store", str(store)], capsys)
        assert code == 0, err
        fc = json.loads(out)
        code, text, err = cli(argv, capsys)
    assert code == 0, err
    # the map applied to the model's score and the flares that started up to the observation
    obs = pd.Timestamp(fc["observation_time"]).tz_localize(None)
    row = flare_history(pd.DatetimeIndex([obs]), read_catalog(catalog))
    raw = fc["members"][0]["probability"]
    # (the JSON rounds both probabilities to 6 decimals)
    assert fc["probability"] == pytest.approx(float(cal(np.array([raw]), row)[0]), abs=1e-5)
    assert fc["calibrated"] is True
    assert list(fc["flare_history"]) == list(FEATURES)
    assert np.allclose(list(fc["flare_history"].values()), row[0], atol=1e-6)
    # said in words, in the text, the JSON and the store
    said = [n for n in fc["notes"] if n.startswith("flare history up to the observation: ")]
    assert len(said) == 1 and "flares >= C1.0: " in said[0]
    assert "(calibrated one model, with the flare history)" in text.splitlines()[0]
    assert f"note: {said[0]}" in text
    with sqlite3.connect(store) as db:
        (notes,) = db.execute("SELECT notes FROM forecasts").fetchone()
    assert said[0] in json.loads(notes)
    # a flare that starts after the observation changes nothing; one before it does
    later = tmp_path / "later.csv"
    extra = "\n2011-01-02 10:30:00,X9.0,0,0\n"
    later.write_text(catalog.read_text().rstrip("\n") + extra)
    before = tmp_path / "before.csv"
    before.write_text(catalog.read_text().rstrip("\n") + extra.replace("10:30", "09:30"))
    with server(world) as hv:
        probs = []
        for cat in (later, before):
            argv = forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--calibration",
                                 str(path), "--catalog", str(cat), "--json", time="2011-01-02T10:00")  # fmt: skip
            code, out, err = cli(argv, capsys)
            assert code == 0, err
            probs.append(json.loads(out))
    assert probs[0]["probability"] == fc["probability"]
    assert probs[1]["flare_history"]["peak_24h"] == pytest.approx(np.log10(9e-4))
    assert probs[1]["probability"] != fc["probability"]


def test_a_history_map_says_where_the_catalog_does_not_reach(world, tmp_path, capsys):
    path, _ = _history_map(world, tmp_path)

    def notes_with(catalog_row: str) -> list[str]:
        cat = tmp_path / "cat.csv"
        cat.write_text("start_time,goes_class,fl_lon,fl_lat\n" + catalog_row + "\n")
        with server(world) as hv:
            argv = forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--calibration",
                                 str(path), "--catalog", str(cat), "--json")  # fmt: skip
            code, out, err = cli(argv, capsys)
        assert code == 0, err
        return json.loads(out)["notes"]

    # a catalog that ends long before the observation
    notes = notes_with("2010-12-20 04:00:00,M2.0,10,10")
    assert any(
        "the catalog's last flare (2010-12-20 04:00) lies more than 72 h before the observation"
        in n
        for n in notes
    )
    assert any(
        "largest flare none in 24 h, none in 72 h; flares >= C1.0: 0 in 24 h" in n for n in notes
    )
    assert not any("first flare" in n for n in notes)
    # a catalog that starts after the observation (or within its 72 h)
    notes = notes_with("2011-06-01 04:00:00,X5.0,10,10")
    assert any(
        "the catalog's first flare (2011-06-01 04:00) lies less than 72 h before the "
        "observation, or after it" in n
        for n in notes
    )


def test_a_history_map_and_a_catalog_go_together(world, tmp_path, capsys):
    path, _ = _history_map(world, tmp_path)
    iso = tmp_path / "iso.json"
    iso.write_text(json.dumps({"method": "platt", "a": 1.0, "b": 0.0}))
    empty = tmp_path / "empty.csv"
    empty.write_text("start_time,goes_class,fl_lon,fl_lat\n")
    catalog = str(world["sun"] / "catalog.csv")
    cases = [
        (
            ["--calibration", str(path)],
            "a history map reads the flare history: give --catalog FILE",
        ),
        (["--catalog", catalog], "--catalog is read only by a history map: give --calibration"),
        (
            ["--calibration", str(iso), "--catalog", catalog],
            "--catalog is read only by a history map",
        ),
        (["--calibration", str(path), "--catalog", str(empty)], "lists no flare"),
        (["--calibration", str(path), "--catalog", str(tmp_path / "nope.csv")], "--catalog"),
    ]
    # a checkpoint that does not load: each refusal comes first, before any model loads
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with server(world) as hv:
        for extra, message in cases:
            for ckpt in (world["ckpt0"], garbage):
                argv = forecast_argv(hv.base_url, "--checkpoint", str(ckpt), *extra)
                code, out, err = cli(argv, capsys)
                assert code == 2 and out == "" and message in err, (extra, err)
                assert err.count("\n") == 1 and "Traceback" not in err
        assert hv.count() == 0  # every refusal before any request
    assert "empty.csv" in cli([*argv[:-2], "--catalog", str(empty)], capsys)[2]
