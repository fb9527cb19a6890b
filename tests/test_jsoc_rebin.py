"""``download --source jsoc --rebin N``: images binned on JSOC's side, downloaded and prepared.

The stand-in bins as JSOC's ``jsoc_rebin`` does (``hmi_fits.jsoc_rebin``, from the module's
published source) full-size (4096 x 4096) records, so the size check and the prepared
images are those of real exports.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clitools import run_cli
from fdflare.acquire.helioviewer import read_manifest
from fdflare.acquire.jsoc import SERIES
from fdflare.acquire.jsoc.client import source_id
from fdflare.core.errors import InputError
from fdflare.prepare.fits import binned_by, decode_fits_with_geometry, read_fits
from fdflare.prepare.pipeline import prepare
from hmi_fits import hmi_field, hmi_header, jsoc_rebin, write_hmi_fits
from jsoc_server import REGISTERED, FakeJsoc
from test_jsoc import Waits, run

START, END = "2020-01-01T00:00", "2020-01-01T02:00"


def test_the_stand_in_bins_as_jsoc_rebin_does():
    header = hmi_header(64, "2020.01.01_00:00:00_TAI")
    # HMI's pixel size (so the centre may move: under 20"), the centre off by a few pixels
    header.update(CRPIX1=30.5, CRPIX2=35.0, CDELT1=0.5, CDELT2=0.5)
    field = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    field[-2:, -4:] = np.nan  # no data: left out of its block's mean
    out, h = jsoc_rebin(field, header, 4)
    # turned by 180 deg: CRPIX (30.5, 35) becomes (34.5, 30); then shifted by round(1.5)=2
    # columns and round(-2.5)=-3 rows (halves away from zero) so the centre is mid-image
    turned = field[::-1, ::-1]
    shifted = np.full_like(turned, np.nan)
    shifted[3:, : 64 - 2] = turned[:-3, 2:]
    assert (h["CRPIX1"], h["CRPIX2"]) == ((34.5 - 2 - 0.5) / 4 + 0.5, (30 + 3 - 0.5) / 4 + 0.5)
    assert h["CROTA2"] == pytest.approx(header["CROTA2"] - 180)
    assert h["CDELT1"] == header["CDELT1"] * 4 and "Boxcar bin by 4" in h["HISTORY"]
    blocks = shifted.reshape(16, 4, 16, 4)
    assert out.shape == (16, 16)
    assert np.allclose(out, np.nanmean(blocks, axis=(1, 3)))
    # the block of the turned, shifted NaN corner: the mean of its 8 pixels with data
    assert out[0, 0] == pytest.approx(np.nanmean(shifted[:4, :4])) and np.isnan(shifted[3, 0])


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """One 4096 x 4096 record with a strong bipole, as recorded and as JSOC bins it by 8.

    Its disk is centred (JSOC does not move it) and it has data up to the limb circle, so
    the two images differ only by where the clip at +-250 G is applied.
    """
    root = tmp_path_factory.mktemp("binned")
    header = hmi_header(4096, "2020.01.01_00:00:00_TAI")
    header.update(CRPIX1=2048.5, CRPIX2=2048.5)
    blobs = ((0.0, 600.0, 1200.0), (600.0, 0.0, -900.0), (-300.0, -300.0, 2500.0),
             (-260.0, -300.0, -2500.0))  # fmt: skip
    field = hmi_field(4096, header, blobs=blobs, sky=1.0)
    full = write_hmi_fits(root / "full.fits", field, header, integer=True)
    binned, binned_header = jsoc_rebin(field, header, 8)
    return full, write_hmi_fits(root / "binned.fits", binned, binned_header, integer=True)


def test_a_binned_image_prepares_like_the_full_record(record):
    full, binned = record
    assert binned_by(read_fits(binned)[1]) == 8 and binned_by(read_fits(full)[1]) == 1
    for size in (512, 64):
        a, ga = decode_fits_with_geometry(full, size)
        b, gb = decode_fits_with_geometry(binned, size)
        # fdflare's row reader and astropy's whole-image read give the same image
        assert (decode_fits_with_geometry(binned, size, full_decode=True)[0] == b).all()
        assert gb["radius_px"] == pytest.approx(ga["radius_px"], abs=1e-9)
        assert gb["b0_deg"] == ga["b0_deg"]
        assert (gb["center_x"], gb["center_y"]) == pytest.approx((ga["center_x"], ga["center_y"]))
        diff = np.abs(a.astype(int) - b.astype(int))
        on_disk = (a > 0) | (b > 0)
        # the field is averaged before the clip at +-250 G: the bipole's edges differ
        assert diff[on_disk].mean() < 1.0, (size, diff[on_disk].mean())
        # the limb is grey by each pixel's on-disk share, as the full image's block mean
        rows, cols = np.indices(a.shape)
        r = np.hypot(cols - ga["center_x"], rows - ga["center_y"])
        ring = np.abs(r - ga["radius_px"]) < 1
        assert diff[ring].max() <= 1, (size, np.bincount(diff[ring]))


@pytest.fixture
def fake():
    with FakeJsoc(START, END, size=4096, pending_polls=0, not_found_first=False) as server:
        yield server


def test_download_binned_then_prepare(fake, tmp_path):
    fake.fault("exp_request", "unprocessed")  # JSOC drops the processing without a word
    out = tmp_path / "binned"
    summary = run(fake, out, start=START, end=END, chunk=1, rebin=8)
    assert (summary.downloaded, summary.failed) == (1, 1)
    assert "not the 512 x 512 of --rebin 8" in summary.failures[0][1]
    assert "4096 x 4096" in summary.failures[0][1]
    assert not list(out.rglob("*.part")) and len(list(out.rglob("*.fits"))) == 1
    again = run(fake, out, start=START, end=END, chunk=1, rebin=8)
    assert (again.downloaded, again.failed, again.skipped) == (1, 0, 1)
    m = read_manifest(out / "manifest.csv")
    assert (m.loc[m["status"] == "ok", "source_id"] == 8_000_000 + SERIES["hmi.M_720s"]).all()
    assert source_id("hmi.M_720s", 8) == 8720720
    for path in out.rglob("*.fits"):
        data, header = read_fits(path)
        assert data.shape == (512, 512) and binned_by(header) == 8
        assert abs(header["CROTA2"]) < 1  # north up already
    result = prepare(out, tmp_path / "img", size=64, workers=1, progress=False)
    assert result.prepared == 2 and result.failed == 0
    assert result.geometry["b0_deg"].round(4).unique().tolist() == [-7.2267]
    # the same directory never takes another resolution
    with pytest.raises(InputError, match="8720720") as refused:
        run(fake, out, start=START, end=END, chunk=1, rebin=1)
    assert "it holds hmi.M_720s binned 8 x 8: rerun with --rebin 8" in str(refused.value)
    with pytest.raises(InputError, match="rebin must be one of 1, 2, 4, 8, 16"):
        run(fake, tmp_path / "x", rebin=3)


def test_cli_rebin_is_for_jsoc_and_one_of_the_factors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JSOC_EMAIL", REGISTERED)
    argv = ["download", "--start", START, "--end", END, "--out", str(tmp_path / "o")]
    code, err = run_cli([*argv, "--rebin", "8"], capsys)
    assert code == 2 and "--rebin: for --source jsoc only" in err and err.count("\n") == 1
    code, err = run_cli([*argv, "--source", "jsoc", "--rebin", "3"], capsys)
    assert code == 2 and "--rebin" in err and "invalid choice" in err
    assert not (tmp_path / "o").exists()


def test_waits_are_injected_not_slept(fake, tmp_path):
    waits = Waits()
    run(fake, tmp_path, waits, start=START, end="2020-01-01T01:00", rebin=8)
    assert pd.Series(waits).le(1.0).all()


@pytest.mark.filterwarnings("ignore:Invalid 'BLANK' keyword")
def test_a_real_hmi_header_keeps_its_history_and_is_not_binned(sunpy_test_data):
    # sunpy's real HMI file, resampled to 100 x 100 outside JSOC: HMI's own HISTORY lines
    # are read, and no binning by jsoc_rebin is read into them
    header = read_fits(sunpy_test_data / "resampled_hmi.fits")[1]
    assert "Doppler velocity correction" in header["HISTORY"]
    assert binned_by(header) == 1
    assert binned_by({"HISTORY": "Polynomial ...\nBoxcar bin by 4, North is up"}) == 4


# ---------------------------------------------------------------- forecast --rebin, serve --jsoc-rebin


def _forecast(fake, checkpoint, *extra: str) -> list[str]:
    return ["forecast", "--source", "jsoc-nrt", "--base-url", fake.url, "--email", REGISTERED,
            "--checkpoint", str(checkpoint), "--time", "2020-01-01T01:00", "--tolerance",
            "30min", "--accelerator", "cpu", "--json", *extra]  # fmt: skip


def test_a_forecast_from_a_binned_nrt_record_is_the_full_records(fake, synthetic_set, capsys):
    import json

    from fdflare.cli import main

    ckpt = synthetic_set["checkpoint"]
    assert main(_forecast(fake, ckpt, "--rebin", "8")) == 0
    binned = json.loads(capsys.readouterr().out)
    assert [e["rebin"] for e in fake.exports.values()] == [8]  # JSOC binned it
    assert binned["source"]["name"] == f"jsoc:hmi.M_720s_nrt/rebin8@{fake.url}"
    assert main(_forecast(fake, ckpt)) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["source"]["name"] == f"jsoc:hmi.M_720s_nrt@{fake.url}"
    assert binned["observation_time"] == full["observation_time"]
    assert binned["source"]["image_id"] == full["source"]["image_id"]
    # the same record, binned before or after the transfer: the same forecast
    assert abs(binned["probability"] - full["probability"]) < 0.02, (binned, full)


def test_a_forecast_refuses_a_record_jsoc_did_not_bin(fake, synthetic_set, capsys):
    fake.fault("exp_request", "unprocessed")  # JSOC drops the processing without a word
    code, err = run_cli(_forecast(fake, synthetic_set["checkpoint"], "--rebin", "8"), capsys)
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "a 4096 x 4096 image, not the 512 x 512 of --rebin 8" in err
    assert "the next forecast asks again, or drop --rebin" in err


def test_rebin_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JSOC_EMAIL", REGISTERED)
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    forecast = ["forecast", "--checkpoint", str(ckpt), "--time", "2020-01-01T01:00"]
    code, err = run_cli([*forecast, "--rebin", "8"], capsys)
    assert code == 2 and "--rebin is for --source jsoc-nrt" in err and err.count("\n") == 1
    code, err = run_cli([*forecast, "--source", "jsoc-nrt", "--rebin", "3"], capsys)
    assert code == 2 and "--rebin" in err and "invalid choice" in err
    serve = ["serve", "--checkpoint", str(ckpt), "--store", str(tmp_path / "s.sqlite")]
    code, err = run_cli([*serve, "--jsoc-rebin", "8"], capsys)
    assert code == 2 and "go with --jsoc-fallback" in err and err.count("\n") == 1
    code, err = run_cli([*serve, "--jsoc-fallback", "--jsoc-rebin", "5"], capsys)
    assert code == 2 and "--jsoc-rebin" in err and "invalid choice" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


def test_the_service_fallback_takes_the_binned_record(fake, synthetic_set):
    from fdflare.core.http import HttpPolicy
    from fdflare.core.recipe import assumed_study
    from fdflare.forecast.jsoc_source import JsocSource
    from fdflare.forecast.service import ServiceError, load_members
    from fdflare.serve.run import make_forecaster
    from test_jsoc import Waits, _closed_port

    members = load_members([synthetic_set["checkpoint"]])
    jsoc = JsocSource(base_url=fake.url, email=REGISTERED, tolerance=pd.Timedelta("30min"),
                      rebin=8, poll_sleep=Waits(), rebin_option="--jsoc-rebin")  # fmt: skip
    quick = HttpPolicy(retries=0, backoff=0.01, concurrency=1)
    forecaster = make_forecaster(
        members, recipe=assumed_study(), tolerance=pd.Timedelta("30min"),
        clock=lambda: pd.Timestamp("2020-01-02T00:00"), base_urls=[_closed_port() + "v2/"],
        policy=quick, fallback=jsoc,
    )  # fmt: skip
    fc = forecaster(pd.Timestamp("2020-01-01T01:00"))
    assert fc.observation.source == f"jsoc:hmi.M_720s_nrt/rebin8@{fake.url}"
    assert [e["rebin"] for e in fake.exports.values()] == [8]
    # a record JSOC did not bin fails the cycle, naming serve's option
    fake.fault("exp_request", "unprocessed")
    with pytest.raises(ServiceError, match="not the 512 x 512 of --jsoc-rebin 8") as failed:
        forecaster(pd.Timestamp("2020-01-01T01:30"))
    assert "drop --jsoc-rebin" in str(failed.value)
    with pytest.raises(InputError, match="rebin must be one of 1, 2, 4, 8, 16"):
        JsocSource(base_url=fake.url, email=REGISTERED, tolerance=pd.Timedelta("1h"), rebin=3)


def test_the_cli_offers_the_factors_jsoc_bins_by():
    from fdflare.acquire.jsoc.client import REBIN_FACTORS
    from fdflare.commands._common import REBIN_CHOICES

    assert REBIN_CHOICES == REBIN_FACTORS
