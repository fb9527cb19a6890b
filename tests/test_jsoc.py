"""``download --source jsoc``: the real drms-based downloader against a loopback JSOC stand-in."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clitools import run_cli
from fdflare.acquire.helioviewer import read_manifest
from fdflare.acquire.jsoc import SERIES, download_jsoc
from fdflare.acquire.jsoc.client import t_rec_to_utc
from fdflare.core.errors import InputError
from fdflare.core.http import HttpPolicy
from fdflare.prepare.fits import read_fits
from fdflare.prepare.pipeline import prepare
from jsoc_server import REGISTERED, FakeJsoc

START, END = "2020-01-01T00:00", "2020-01-01T08:00"


class Waits(list):
    """An injected sleep that records what it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run(fake: FakeJsoc, out: Path, waits: Waits | None = None, **kw):
    waits = Waits() if waits is None else waits
    policy = HttpPolicy(retries=kw.pop("retries", 3), backoff=0.01, sleep=waits)
    kw.setdefault("chunk", 3)
    return download_jsoc(
        kw.pop("start", START),
        kw.pop("end", END),
        out,
        email=REGISTERED,
        base_url=fake.url,
        policy=policy,
        poll_sleep=waits,
        **kw,
    )


@pytest.fixture
def fake():
    with FakeJsoc(
        bad_quality=("2020-01-01T03:00:00",),
        gaps=(("2020-01-01T05:30:00", "2020-01-01T06:30:00"),),
    ) as server:
        yield server


def test_t_rec_is_tai():
    utc = t_rec_to_utc(["2020.01.01_00:00:00_TAI", "2011.06.30_12:00:34_TAI", "junk"])
    assert utc[0] == pd.Timestamp("2019-12-31T23:59:23")  # TAI - UTC = 37 s
    assert utc[1] == pd.Timestamp("2011-06-30T12:00:00")  # 34 s then
    assert pd.isna(utc[2])


def test_records_chosen_quality_checked_pending_exports_polled(fake, tmp_path):
    waits = Waits()
    summary = run(fake, tmp_path, waits)
    assert (summary.requested, summary.downloaded, summary.gaps, summary.failed) == (8, 6, 2, 0)
    assert summary.bad_quality == 1 and summary.exports == 3
    # each export: pending when made, then "not found yet", processing twice, done: 4 polls,
    # each after the wait the server suggests
    assert summary.pending_polls == 12 and fake.hits["exp_status"] == 12
    assert waits.count(1.0) == 12
    m = read_manifest(tmp_path / "manifest.csv")
    assert (m["source_id"] == SERIES["hmi.M_720s"]).all()
    bad = m[m["requested_time"] == pd.Timestamp("2020-01-01T03:00")].iloc[0]
    assert bad["status"] == "gap" and "QUALITY=0x80000000" in bad["reason"]
    far = m[m["requested_time"] == pd.Timestamp("2020-01-01T06:00")].iloc[0]
    assert far["status"] == "gap" and "tolerance" in far["reason"]
    ok = m[m["status"] == "ok"]
    assert ok["path"].iloc[0] == "2020/01/01/HMI.m2020.01.01_00.00.00.fits"
    # the record is the one of T_REC 00:00:00_TAI, 37 s before the requested UTC time
    assert ok["observation_time"].iloc[0] == pd.Timestamp("2019-12-31T23:59:23")
    data, header = read_fits(tmp_path / ok["path"].iloc[0])
    assert data.shape == (64, 64) and header["T_REC"] == "2020.01.01_00:00:00_TAI"
    assert not list(tmp_path.rglob("*.part"))
    # the tree prepares like a Helioviewer tree, with B0 from the FITS headers
    result = prepare(tmp_path, tmp_path / "img", size=32, workers=1, progress=False)
    assert result.prepared == 6 and result.failed == 0
    assert result.geometry["b0_deg"].round(4).unique().tolist() == [-7.2267]


def test_rerun_resumes_without_new_exports(fake, tmp_path):
    run(fake, tmp_path)
    before = dict(fake.hits)
    first = tmp_path / "2020/01/01/HMI.m2020.01.01_01.00.00.fits"
    first.write_bytes(first.read_bytes()[:100])  # a damaged file is fetched again
    summary = run(fake, tmp_path)
    assert (summary.skipped, summary.downloaded, summary.gaps) == (5, 1, 2)
    assert fake.hits["exp_request"] == before["exp_request"] + 1
    assert fake.hits["jsoc_info"] == before["jsoc_info"] + 1
    assert read_fits(first)[0].shape == (64, 64)


@pytest.mark.parametrize(
    ("endpoint", "kinds"),
    [
        ("jsoc_info", ("503", "html")),  # JSOC's outage page, as an error and as a 200
        ("exp_request", ("429", "limit", "limit")),  # per-user limit of pending exports
        ("exp_status", ("503",)),
        ("file", ("html", "429")),
    ],
)
def test_outages_and_limits_are_waited_out(fake, tmp_path, endpoint, kinds):
    fake.fault(endpoint, *kinds)
    summary = run(fake, tmp_path, start=START, end="2020-01-01T02:00")
    assert (summary.downloaded, summary.failed) == (2, 0)
    assert not fake.faults[endpoint]


def test_failed_export_fails_its_chunk_and_rerun_mends_it(fake, tmp_path):
    fake.fault("exp_status", "export-fail")
    summary = run(fake, tmp_path)
    assert summary.failed == 3 and summary.downloaded == 3
    assert all("Cant save new export-request hash" in r for _, r in summary.failures)
    m = read_manifest(tmp_path / "manifest.csv")
    assert (m["status"] == "failed").sum() == 3
    again = run(fake, tmp_path)
    assert (again.downloaded, again.failed, again.skipped) == (3, 0, 3)


def test_limits_that_do_not_end_are_failures(fake, tmp_path):
    fake.fault("exp_request", *["limit"] * 10)
    summary = run(fake, tmp_path, start=START, end="2020-01-01T01:00", retries=2)
    assert summary.failed == 1 and "per-user limit" in summary.failures[0][1]


def test_email_is_required_and_checked(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("JSOC_EMAIL", raising=False)
    with pytest.raises(InputError, match="JSOC_EMAIL"):
        download_jsoc(START, END, tmp_path, base_url=fake.url)
    with pytest.raises(InputError, match="does not know"):
        download_jsoc(START, END, tmp_path, base_url=fake.url, email="nobody@example.org")
    assert fake.hits["exp_request"] == 0


def test_manifest_of_another_series_is_refused(fake, tmp_path):
    run(fake, tmp_path, start=START, end="2020-01-01T01:00")
    with pytest.raises(InputError, match="720720"):
        run(fake, tmp_path, start=START, end="2020-01-01T01:00", series="hmi.M_720s_nrt")


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_cli(fake, tmp_path, capsys, monkeypatch):
    fake.pending_polls, fake.not_found_first = 0, False
    monkeypatch.setenv("JSOC_EMAIL", REGISTERED)
    out = tmp_path / "fits"
    argv = ["download", "--source", "jsoc", "--start", START, "--end", "2020-01-01T01:00"]
    argv += ["--out", str(out), "--base-url", fake.url, "--quiet", "--series", "hmi.M_720s_nrt"]
    code = run_cli(argv, capsys)[0]
    assert code == 0, capsys.readouterr()
    assert (out / "2020/01/01/HMI.m2020.01.01_00.00.00.fits").is_file()
    assert read_manifest(out / "manifest.csv")["source_id"].iloc[0] == SERIES["hmi.M_720s_nrt"]
    # options of the other source are refused before any work
    code, err = run_cli([*argv[:-1], "hmi.M_720s", "--source-id", "19"], capsys)
    assert code == 2 and "--source-id" in err and err.count("\n") == 1
    code, err = run_cli(["download", *argv[3:9], "--series", "hmi.M_720s"], capsys)
    assert code == 2 and "for --source jsoc only" in err
    monkeypatch.delenv("JSOC_EMAIL")
    code, err = run_cli(argv, capsys)
    assert code == 2 and "--email" in err and err.count("\n") == 1
    # JSOC unreachable: exit 3, nothing recorded
    code, err = run_cli(
        [*argv[:7], "--out", str(tmp_path / "none"), "--base-url", _closed_port(), "--retries", "0",
         "--email", REGISTERED, "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 3 and "cannot be reached" in err, err
    assert (
        not (tmp_path / "none" / "manifest.csv").exists()
        or read_manifest(tmp_path / "none" / "manifest.csv").empty
    )


# ---------------------------------------------------------------- forecast --source jsoc-nrt


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real model trained for one epoch on tiny images (32 px)."""
    from fdflare.cli import main
    from test_data import make_tiny_dataset

    root = tmp_path_factory.mktemp("jsoc-forecast")
    ds = make_tiny_dataset(root / "tiny", size=32)
    argv = ["train", "--model", "smallcnn", "--fold", "1", "--labels", str(ds["labels"]),
            "--images", str(ds["images"]), "--out", str(root / "run"), "--epochs", "1",
            "--image-size", "32", "--no-pretrained", "--workers", "0", "--batch-size", "16",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return root / "run" / "last.ckpt"


def _forecast(fake: FakeJsoc, checkpoint: Path, *extra: str) -> list[str]:
    return ["forecast", "--source", "jsoc-nrt", "--base-url", fake.url, "--email", REGISTERED,
            "--checkpoint", str(checkpoint), "--json", *extra]  # fmt: skip


@pytest.mark.slow  # the fixture trains a model (about 25 s on 2 cores)
def test_forecast_from_the_nrt_series_passes_over_bad_records(fake, checkpoint, capsys):
    import json

    fake.pending_polls, fake.not_found_first = 0, False
    argv = _forecast(fake, checkpoint, "--time", "2020-01-01T03:00", "--tolerance", "30min")
    from fdflare.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    fc = json.loads(out)
    # 03:00 TAI is bad; 03:12 TAI (03:11:23 UTC) is nearer than 02:48 TAI (02:47:23 UTC)
    assert fc["observation_time"].startswith("2020-01-01T03:11:23")
    assert fc["source"]["name"] == f"jsoc:hmi.M_720s_nrt@{fake.url}"
    assert fc["source"]["image_id"] == "2020.01.01_03:12:00_TAI"
    assert any("QUALITY=0x80000000" in n for n in fc["notes"])
    assert 0.0 <= fc["probability"] <= 1.0
    assert fake.hits["exp_request"] == 1 and fake.hits["file"] == 1


@pytest.mark.slow
def test_forecast_from_jsoc_statuses(fake, checkpoint, capsys):
    fake.pending_polls, fake.not_found_first = 0, False
    # only the bad record lies within 5 minutes: no observation, status 4
    code, err = run_cli(_forecast(fake, checkpoint, "--time", "2020-01-01T03:00", "--tolerance", "5min"), capsys)  # fmt: skip
    assert code == 4 and "no good record" in err and "QUALITY" in err
    # a failed export is the service failing: status 3
    fake.fault("exp_status", "export-fail")
    code, err = run_cli(_forecast(fake, checkpoint, "--time", "2020-01-01T01:00"), capsys)
    assert code == 3 and "Cant save" in err
    down = _forecast(fake, checkpoint, "--time", "2020-01-01T01:00", "--retries", "0")
    down[down.index("--base-url") + 1] = _closed_port()
    code, err = run_cli(down, capsys)
    assert code == 3 and "JSOC" in err
    # sources are one at a time, and JSOC needs its e-mail
    code, err = run_cli([*_forecast(fake, checkpoint, "--time", "2020-01-01T01:00"), "--archive", "x"], capsys)  # fmt: skip
    assert code == 2 and "one source" in err
    argv = _forecast(fake, checkpoint, "--time", "2020-01-01T01:00")
    del argv[argv.index("--email") : argv.index("--email") + 2]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "--email" in err


@pytest.mark.slow  # the fixture trains a model
def test_serve_falls_back_to_jsoc_when_helioviewer_fails(fake, checkpoint):
    """A service cycle with every Helioviewer URL down takes JSOC's NRT record instead."""
    from fdflare.core.recipe import assumed_study
    from fdflare.forecast.jsoc_source import JsocSource
    from fdflare.forecast.service import ServiceError, load_members
    from fdflare.serve.run import make_forecaster

    fake.pending_polls, fake.not_found_first = 0, False
    members = load_members([checkpoint])
    clock = lambda: pd.Timestamp("2020-01-02T00:00")  # noqa: E731  (an injected clock)
    quick = HttpPolicy(retries=0, backoff=0.01, concurrency=1)
    common = {"recipe": assumed_study(), "tolerance": pd.Timedelta("30min"), "clock": clock,
              "base_urls": [_closed_port() + "v2/"], "policy": quick}  # fmt: skip
    jsoc = JsocSource(base_url=fake.url, email=REGISTERED, tolerance=pd.Timedelta("30min"))
    fc = make_forecaster(members, fallback=jsoc, **common)(pd.Timestamp("2020-01-01T01:00"))
    assert fc.observation.source == jsoc.source
    assert abs(fc.observation.time - pd.Timestamp("2020-01-01T01:00")) <= pd.Timedelta("30min")
    assert 0.0 <= fc.probability <= 1.0
    # without the fallback the cycle fails; with a fallback that fails too, both reasons show
    with pytest.raises(ServiceError):
        make_forecaster(members, **common)(pd.Timestamp("2020-01-01T01:00"))
    down = JsocSource(base_url=_closed_port(), email=REGISTERED, tolerance=pd.Timedelta("30min"),
                      policy=quick)  # fmt: skip
    with pytest.raises(ServiceError) as info:
        make_forecaster(members, fallback=down, **common)(pd.Timestamp("2020-01-01T01:00"))
    assert "then jsoc:hmi.M_720s_nrt@" in str(info.value)
    # a history map whose flare list fails after the fallback's record: the cycle's kind is
    # the flare list's, with both reasons
    from fdflare.analysis.calibration import fit_calibrator
    from fdflare.core.errors import DownloadError
    from fdflare.serve.scheduler import failure_kind

    rng = np.random.default_rng(0)
    cal = fit_calibrator(rng.random(40), np.arange(40) % 2, "history", history=rng.random((40, 4)))

    def no_list(_t: pd.Timestamp) -> tuple[pd.DataFrame, list[str]]:
        raise DownloadError("the flare history needs the flare list: cannot connect")

    with pytest.raises(DownloadError) as info:
        make_forecaster(members, fallback=jsoc, calibration=cal, flares_up_to=no_list,
                        **common)(pd.Timestamp("2020-01-01T01:00"))  # fmt: skip
    assert failure_kind(info.value) == "flare_list"
    assert "then jsoc:hmi.M_720s_nrt@" in str(info.value) and "needs the flare list" in str(
        info.value
    )


def test_serve_jsoc_fallback_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JSOC_EMAIL", raising=False)
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    base = ["serve", "--checkpoint", str(ckpt), "--store", str(tmp_path / "s.sqlite")]
    for extra, words in (
        (["--jsoc-fallback"], "--email"),
        (["--jsoc-fallback", "--email", REGISTERED, "--jsoc-url", "ftp://x"], "--jsoc-url"),
        (["--email", REGISTERED], "go with --jsoc-fallback"),
        (
            ["--jsoc-fallback", "--email", REGISTERED, "--archive", str(tmp_path)],
            "not with --archive",
        ),
    ):
        code, err = run_cli([*base, *extra], capsys)
        assert code == 2 and words in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]
