"""Tests of the synthetic magnetogram benchmark (``fdflare synth``)."""

from __future__ import annotations

import filecmp
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fdflare.acquire.catalog import read_catalog
from fdflare.acquire.goes import class_flux
from fdflare.analysis.metrics import roc_auc
from fdflare.cli import main
from fdflare.core.errors import InputError
from fdflare.core.paths import image_relpaths, scan_images
from fdflare.label import LabelConfig, make_labels, read_image_list
from fdflare.prepare.geometry import disk_geometry
from fdflare.prepare.jp2 import read_jp2_header
from fdflare.synth.config import GEOMETRY_COLUMNS, SynthConfig
from fdflare.synth.flares import draw_flares, flare_productivity, window_fraction
from fdflare.synth.regions import region_patches, simulate_regions
from fdflare.synth.render import render_magnetogram, to_uint8
from fdflare.synth.sun import (
    EARTH_ORBIT_DEG_PER_DAY,
    DiskGeometry,
    b0_angle,
    disk_coordinates,
    earth_sun_distance,
    synodic_rotation_rate,
)
from fdflare.synth.writer import SynthResult, generate


def gen(
    out: Path,
    *,
    workers: int | None = None,
    progress: bool = False,
    on_image: Any = None,
    **settings: Any,
) -> SynthResult:
    """``generate`` with its settings (a :class:`SynthConfig`) as keywords."""
    config = SynthConfig(**settings)
    return generate(out, config, workers=workers, progress=progress, on_image=on_image)


SMALL = {
    "start": "2011-02-01T00:00",
    "end": "2011-02-02T12:00",
    "cadence": "6h",
    "size": 64,
    "progress": False,
    "workers": 2,
}


def tree_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_same_tree(a: Path, b: Path) -> None:
    files = tree_files(a)
    assert files == tree_files(b)
    for name in files:
        if name == "synth.json":
            continue
        assert filecmp.cmp(a / name, b / name, shallow=False), name


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return gen(tmp_path_factory.mktemp("synth") / "run", seed=5, **SMALL)


@pytest.fixture(scope="module")
def disk_run(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """A few 256-pixel images of an active Sun, for the image checks."""
    return gen(
        tmp_path_factory.mktemp("synth") / "disk",
        start="2011-01-24T00:00",
        end="2011-01-24T12:00",
        cadence="12h",
        size=256,
        seed=0,
        progress=False,
    )


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(tmp_path: Path, small_run: SynthResult) -> None:
    again = gen(tmp_path / "again", seed=5, **{**SMALL, "workers": 1})
    assert again.written == len(again.geometry) == 7
    assert_same_tree(small_run.out, again.out)


def test_other_seed_differs(tmp_path: Path, small_run: SynthResult) -> None:
    other = gen(tmp_path / "other", seed=2, **SMALL)
    assert (other.out / "catalog.csv").read_bytes() != (small_run.out / "catalog.csv").read_bytes()
    assert (other.out / "regions.csv").read_bytes() != (small_run.out / "regions.csv").read_bytes()
    for rel in small_run.geometry["path"]:
        a = np.asarray(Image.open(small_run.out / "images" / rel))
        b = np.asarray(Image.open(other.out / "images" / rel))
        assert (a != b).any(), rel


def test_a_seed_is_one_history_whatever_the_window() -> None:
    long = simulate_regions("2011-03-01", "2011-05-01", seed=9)
    short = simulate_regions("2011-04-01", "2011-04-10", seed=9)
    assert set(short["region"]) <= set(long["region"])
    joined = short.merge(long, on="region", suffixes=("", "_long"))
    for col in ("lon0", "lat", "flux_max", "complexity", "leading_sign"):
        np.testing.assert_array_equal(joined[col], joined[f"{col}_long"])
    flares_long = draw_flares(long, "2011-04-01", "2011-04-10", seed=9)
    flares_short = draw_flares(short, "2011-04-01", "2011-04-10", seed=9)
    assert len(flares_short) > 0
    pd.testing.assert_frame_equal(flares_long, flares_short)


# --------------------------------------------------------------------------- layout


def test_layout_of_images_geometry_and_catalog(small_run: SynthResult) -> None:
    out = small_run.out
    assert {"images", "geometry.csv", "catalog.csv", "regions.csv", "synth.json"} <= {
        p.name for p in out.iterdir()
    }
    times = pd.date_range("2011-02-01", "2011-02-02 12:00", freq="6h")
    expected = list(image_relpaths(times, ext="png"))
    assert scan_images(out / "images") == expected
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]

    geometry = pd.read_csv(out / "geometry.csv")
    assert list(geometry.columns[:5]) == ["path", "date_obs", "center_x", "center_y", "radius_px"]
    assert list(geometry.columns) == list(GEOMETRY_COLUMNS)
    assert list(geometry["path"]) == expected
    obs = pd.to_datetime(geometry["date_obs"], format="ISO8601")
    assert (abs(obs - times) <= pd.Timedelta(seconds=23)).all()
    assert ((geometry["width"] == 64) & (geometry["height"] == 64)).all()
    np.testing.assert_allclose(geometry["center_x"], 31.5, atol=0.1)
    # 4096-pixel HMI scale resampled to 64 pixels, Earth near perihelion in February
    np.testing.assert_allclose(geometry["radius_px"], 64 * 1900 / 4096, rtol=0.03)

    text = (out / "catalog.csv").read_text()
    assert text.splitlines()[0] == "start_time,goes_class,fl_lon,fl_lat"
    catalog = pd.read_csv(out / "catalog.csv")
    assert len(catalog) > 0
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:00", s) for s in catalog["start_time"])
    starts = pd.to_datetime(catalog["start_time"])
    assert starts.is_monotonic_increasing
    assert starts.min() >= pd.Timestamp("2011-02-01") and starts.max() <= pd.Timestamp(
        "2011-02-03 12:00"
    )
    assert (class_flux(catalog["goes_class"]) >= 1e-6).all()
    assert catalog["goes_class"].str.fullmatch(r"[CMX]\d+\.\d").all()


def test_catalog_reads_with_the_catalog_stage(small_run: SynthResult) -> None:
    read = read_catalog(small_run.out / "catalog.csv")
    assert len(read) == len(small_run.catalog)
    np.testing.assert_allclose(read["flux"], class_flux(small_run.catalog["goes_class"]))


def test_flare_population_over_a_year() -> None:
    regions = simulate_regions("2012-01-01", "2012-12-31", seed=5)
    flares = draw_flares(regions, "2012-01-01", "2012-12-31", seed=5, truth=True)
    letters = flares["goes_class"].str[0]
    n_c, n_m, n_x = (int((letters == k).sum()) for k in "CMX")
    assert n_c > 300 and n_m > 20 and n_x > 0
    # dN/dF ~ F^-2: about a tenth of the flares >= C1.0 are >= M1.0
    assert 0.04 < (n_m + n_x) / len(flares) < 0.2
    lat = flares["fl_lat"].abs()
    assert lat.max() < 45 and lat.median() > 5
    lon = flares["fl_lon"].abs()
    assert lon.max() <= 120
    assert (lon > 70).sum() > 0.1 * len(flares)
    behind = flares[lon > 90]
    assert len(behind) > 0, "regions just behind the limb should flare into the catalog"
    assert (behind["behind_limb_deg"] > 0).all()
    assert (behind["flux"] < behind["true_flux"]).all()
    assert (flares.loc[lon < 80, "flux"] == flares.loc[lon < 80, "true_flux"]).all()
    # the default rate gives a useful share of positive 24 h windows (>= M1.0)
    times = pd.date_range("2012-01-01", "2012-12-30", freq="1h")
    pos, total = window_fraction(times, flares, 1e-5)
    assert 0.12 < pos / total < 0.45


def test_unlocated_flares_are_written_empty(tmp_path: Path) -> None:
    result = gen(tmp_path / "u", seed=5, unlocated=0.5, **{**SMALL, "size": 32})
    catalog = pd.read_csv(result.out / "catalog.csv", keep_default_na=False)
    empty = catalog["fl_lon"] == ""
    assert empty.any() and (~empty).any()
    assert (catalog.loc[empty, "fl_lat"] == "").all()
    assert result.counts["unlocated"] == int(empty.sum())


def test_missing_times_are_left_out(tmp_path: Path) -> None:
    result = gen(tmp_path / "m", seed=1, missing=0.5, **{**SMALL, "size": 32})
    assert 0 < result.missing < 7
    assert len(result.geometry) + result.missing == 7
    assert scan_images(result.out / "images") == list(result.geometry["path"])


# --------------------------------------------------------------------------- the Sun


def test_regions_follow_hale_joy_and_the_activity_belts() -> None:
    cycle24 = simulate_regions("2011-01-01", "2014-12-31", seed=2)
    normal = cycle24[~cycle24["anti_hale"]]
    north = normal["lat"] > 0
    assert north.any() and (~north).any()
    assert (normal.loc[north, "leading_sign"] == -1).all()
    assert (normal.loc[~north, "leading_sign"] == 1).all()
    assert 0 < cycle24["anti_hale"].mean() < 0.12
    assert cycle24["lat"].abs().between(4, 38).all()
    assert cycle24["tilt"].mean() > 3  # Joy: leading polarity nearer the equator
    cycle25 = simulate_regions("2021-01-01", "2022-12-31", seed=2)
    normal25 = cycle25[~cycle25["anti_hale"]]
    assert (normal25.loc[normal25["lat"] > 0, "leading_sign"] == 1).all()
    # Spörer: early-cycle regions lie at higher latitudes than late-cycle ones
    early = simulate_regions("2009-06-01", "2010-12-31", seed=2)["lat"].abs().mean()
    late = simulate_regions("2017-01-01", "2018-06-30", seed=2)["lat"].abs().mean()
    assert early > late + 8


def test_regions_rotate_differentially() -> None:
    regions = simulate_regions("2011-06-01", "2011-06-02", seed=0)
    t0 = pd.Timestamp("2011-06-01")
    a = region_patches(regions, t0).groupby("region")["lon"].first()
    b = region_patches(regions, t0 + pd.Timedelta(days=1)).groupby("region")["lon"].first()
    common = a.index.intersection(b.index)
    lat = regions.set_index("region").loc[common, "lat"]
    step = ((b[common] - a[common] + 180) % 360) - 180
    # patches also move as the bipole separates; centres move at the synodic rate
    assert ((step > 9) & (step < 15)).mean() > 0.8
    fast, slow = synodic_rotation_rate(0.0), synodic_rotation_rate(35.0)
    assert fast - slow > 0.5
    assert np.corrcoef(np.abs(lat), step)[0, 1] < 0


def test_rotation_and_observer_agree_with_sunpy() -> None:
    pytest.importorskip("sunpy", reason="sunpy (the 'solar' extra) is not installed")
    import astropy.units as u
    from astropy.time import Time
    from sunpy.coordinates import sun
    from sunpy.sun.models import differential_rotation

    lat = np.array([0.0, 15.0, 30.0, 45.0])
    sidereal = (synodic_rotation_rate(lat) + EARTH_ORBIT_DEG_PER_DAY) * 5
    ref = differential_rotation(5 * u.day, lat * u.deg, model="snodgrass").to_value(u.deg)
    np.testing.assert_allclose(sidereal, ref, rtol=1e-9)
    ref_syn = differential_rotation(
        5 * u.day, lat * u.deg, model="snodgrass", frame_time="synodic"
    ).to_value(u.deg)
    np.testing.assert_allclose(synodic_rotation_rate(lat) * 5, ref_syn, atol=0.2)

    times = pd.date_range("2010-01-01", "2019-01-01", periods=40)
    astro = Time(list(times.to_pydatetime()))
    np.testing.assert_allclose(b0_angle(times), sun.B0(astro).to_value(u.deg), atol=0.02)
    np.testing.assert_allclose(
        earth_sun_distance(times), sun.earth_distance(astro).to_value(u.m), rtol=2e-4
    )


def test_disk_coordinates() -> None:
    g = DiskGeometry(101, 50.0, 50.0, 40.0, b0_deg=7.0)
    mu, lon, lat = disk_coordinates(g)
    assert mu[50, 50] == pytest.approx(1.0)
    assert lon[50, 50] == pytest.approx(0.0, abs=1e-9)
    assert lat[50, 50] == pytest.approx(7.0)  # the sub-observer point
    assert np.isnan(mu[0, 0]) and np.isnan(lon[0, 0])
    assert lon[50, 89] > 70 and lon[50, 11] < -70  # west is to the right
    assert lat[11, 50] > 60  # north is up
    on = ~np.isnan(mu)
    assert on.sum() == pytest.approx(np.pi * 40**2, rel=0.02)


# --------------------------------------------------------------------------- rendering


def test_to_uint8_scaling() -> None:
    field = np.array([[0.0, 1500.0, -1500.0, 5000.0, -5000.0, np.nan, 11.8]], dtype=np.float32)
    # stretch 0: Helioviewer's linear scale
    linear = to_uint8(field, 1500.0, stretch=0)
    np.testing.assert_array_equal(linear, [[128, 255, 1, 255, 1, 0, 129]])
    # the default asinh stretch keeps 0 G, the ends and the outside of the disk
    np.testing.assert_array_equal(to_uint8(field)[0, :6], [128, 255, 1, 255, 1, 0])
    b = np.linspace(-1500, 1500, 3001, dtype=np.float32)[None]
    v = to_uint8(b).astype(int)[0]
    assert (np.diff(v) >= 0).all() and (v + v[::-1] == 256).all()  # monotonic, odd about 0 G
    # weak fields about 8 / asinh(8) = 2.9 times brighter than linear, strong ones not clipped
    weak = to_uint8(np.array([[40.0]], dtype=np.float32))[0, 0] - 128
    assert weak == round(40 * 127 / 1500 * 8 / np.arcsinh(8))
    strong = to_uint8(np.array([[700.0, 1000.0, 1300.0]], dtype=np.float32))[0]
    assert 128 < strong[0] < strong[1] < strong[2] < 255


def test_flux_is_foreshortened_towards_the_limb() -> None:
    g = DiskGeometry.centred(512)
    peaks = []
    for lon in (0.0, 45.0, 75.0):
        patch = pd.DataFrame({"lon": [lon], "lat": [0.0], "flux": [1e21], "sigma": [1.0]})
        field = render_magnetogram(patch, g, noise=0.0)
        peaks.append(np.nanmax(field))
        assert np.nanmin(field) >= 0
    expected = peaks[0] * np.cos(np.radians([0.0, 45.0, 75.0]))
    np.testing.assert_allclose(peaks, expected, rtol=0.1)
    # a patch wholly behind the limb does not show; one just behind shows a little
    hidden = pd.DataFrame({"lon": [120.0], "lat": [0.0], "flux": [1e22], "sigma": [1.0]})
    assert np.nanmax(np.abs(render_magnetogram(hidden, g, noise=0.0))) == 0


def test_images_are_8bit_disks(disk_run: SynthResult) -> None:
    geometry = pd.read_csv(disk_run.out / "geometry.csv")
    for _, row in geometry.iterrows():
        image = Image.open(disk_run.out / "images" / row["path"])
        assert image.mode == "L" and image.size == (256, 256)
        a = np.asarray(image)
        yy, xx = np.mgrid[:256, :256]
        r = np.hypot(xx - row["center_x"], yy - row["center_y"])
        outside = a[r > row["radius_px"] + 0.75]
        inside = a[r < row["radius_px"] - 0.75]
        assert (outside == 0).all()
        assert (inside > 0).all()
        assert abs(np.median(inside) - 128) <= 1
        # 10 G of noise is about 2.4 levels with the default scaling
        assert np.mean(np.abs(inside.astype(int) - 128) <= 8) > 0.95


def test_flux_is_visible_at_active_regions(disk_run: SynthResult) -> None:
    row = disk_run.geometry.iloc[0]
    g = DiskGeometry(256, row["center_x"], row["center_y"], row["radius_px"], row["b0_deg"])
    a = np.asarray(Image.open(disk_run.out / "images" / row["path"])).astype(int) - 128
    patches = region_patches(disk_run.regions, row["date_obs"])
    _mu, lon, lat = disk_coordinates(g)
    strong = patches[
        (np.abs(patches["flux"]) > 2e21) & (patches["sigma"] < 1) & (patches["lon"].abs() < 60)
    ]
    assert len(strong) >= 2
    for _, p in strong.iterrows():
        # the pixel on a spot's centre is well away from grey, with the spot's polarity
        dist = np.nan_to_num((lon - p["lon"]) ** 2 + (lat - p["lat"]) ** 2, nan=np.inf)
        value = a[np.unravel_index(np.argmin(dist), dist.shape)]
        assert abs(value) > 15 and np.sign(value) == np.sign(p["flux"])
    # far from every region the disk is quiet
    lon_r = patches["lon"].to_numpy()[:, None, None]
    lat_r = patches["lat"].to_numpy()[:, None, None]
    far = ((np.abs(lon[None] - lon_r) > 20) | (np.abs(lat[None] - lat_r) > 20)).all(axis=0)
    assert far.sum() > 1000
    # only the noise: 10 G, 127 / 1500 levels per gauss times 8 / asinh(8)
    noise = 10.0 * 127 / 1500 * 8 / np.arcsinh(8)
    assert np.std(a[far]) == pytest.approx(noise, rel=0.15)
    assert np.abs(a[far]).max() <= 6 * noise


# --------------------------------------------------------------------------- resuming


def test_resume_keeps_existing_images(tmp_path: Path, small_run: SynthResult) -> None:
    out = tmp_path / "resume"
    seen: list[Path] = []

    def stop_after_three(path: Path) -> None:
        seen.append(path)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gen(out, seed=5, on_image=stop_after_three, **{**SMALL, "workers": 1})
    assert not (out / "geometry.csv").exists()
    assert len(scan_images(out / "images")) == 3
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    result = gen(out, seed=5, **SMALL)
    assert (result.written, result.skipped) == (4, 3)
    assert_same_tree(small_run.out, out)


def test_other_settings_in_the_same_directory_are_refused(small_run: SynthResult) -> None:
    with pytest.raises(InputError) as info:
        gen(small_run.out, seed=4, **SMALL)
    assert info.value.field == "seed"
    assert "synth.json" in str(info.value)


# --------------------------------------------------------------------------- JPEG 2000


def test_jp2_files_carry_the_helioviewer_header(tmp_path: Path) -> None:
    result = gen(
        tmp_path / "j",
        start="2011-01-24T00:00",
        end="2011-01-24T06:00",
        cadence="6h",
        size=64,
        seed=0,
        jp2=True,
        jp2_size=256,
        progress=False,
    )
    names = scan_images(result.out / "jp2", extensions=["jp2"])
    assert names == list(
        image_relpaths(pd.date_range("2011-01-24", periods=2, freq="6h"), ext="jp2")
    )
    assert result.written == 4
    for name, (_, row) in zip(names, result.geometry.iterrows(), strict=True):
        path = result.out / "jp2" / name
        assert path.read_bytes()[4:8] == b"jP  "
        image = Image.open(path)
        assert image.size == (256, 256) and image.mode == "L"
        header = read_jp2_header(path)
        assert header["INSTRUME"].startswith("HMI") and float(header["WAVELNTH"]) == 6173.0
        assert header["CONTENT"] == "MAGNETOGRAM"
        geo = disk_geometry(header, (256, 256), (64, 64))
        assert geo["date_obs"] == pd.Timestamp(row["date_obs"]).isoformat(timespec="milliseconds")
        assert geo["center_x"] == pytest.approx(row["center_x"], abs=1e-6)
        assert geo["center_y"] == pytest.approx(row["center_y"], abs=1e-6)
        assert geo["radius_px"] == pytest.approx(row["radius_px"], rel=1e-9)
        # decoded at 4x reduced resolution: black off the disk, grey on it
        image = Image.open(path)
        image.reduce = 2
        a = np.asarray(image)
        assert a.shape == (64, 64)
        small = disk_geometry(header, (256, 256), (64, 64), reduce=2)
        yy, xx = np.mgrid[:64, :64]
        r = np.hypot(xx - small["center_x"], yy - small["center_y"])
        assert (a[r > small["radius_px"] + 2] == 0).all()
        assert abs(np.median(a[r < small["radius_px"] - 2]) - 128) <= 1


def test_synth_label_prepare_print_one_json_object_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    data, labels, prepared = tmp_path / "data", tmp_path / "labels", tmp_path / "prepared"
    argv = ["synth", "--out", str(data), "--start", "2011-01-24T00:00", "--end", "2011-01-24T03:00"]
    assert main([*argv, "--image-size", "64", "--jp2", "--jp2-size", "128", "--json"]) == 0
    synth = json.loads(capsys.readouterr().out)
    assert synth["out"] == str(data) and synth["images"] == len(pd.read_csv(data / "geometry.csv"))
    assert synth["written"] == 2 * synth["images"] and synth["skipped"] == synth["missing"] == 0
    assert synth["counts"]["flares"] == len(read_catalog(data / "catalog.csv"))
    argv = ["label", "--catalog", str(data / "catalog.csv"), "--images", str(data / "images"),
            "--start", "2011-01-24T00:00", "--end", "2011-01-24T03:00", "--out", str(labels)]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    label = json.loads(capsys.readouterr().out)
    summary = json.loads((labels / "summary.json").read_text())
    assert label["counts"]["instances"] == summary["counts"]["instances"] == 3
    assert (
        all(Path(f).is_file() for f in label["files"])
        and str(labels / "labels.csv") in label["files"]
    )
    assert sum(f["val"] for f in label["folds"].values()) <= 3
    argv = ["prepare", "--source", str(data / "jp2"), "--out", str(prepared), "--image-size", "32"]
    assert main([*argv, "--workers", "1", "--json"]) == 0
    prep = json.loads(capsys.readouterr().out)
    assert prep["geometry"] == str(prepared / "geometry.csv")
    assert prep["prepared"] == prep["files"] == prep["images"] == synth["images"]
    assert prep["failed"] == 0 and prep["bad_files"] is None and prep["unreadable"] == []


def test_prepare_runs_on_the_jp2_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, prepared = tmp_path / "data", tmp_path / "prepared"
    argv = ["synth", "--out", str(data), "--start", "2011-01-24T00:00", "--end", "2011-01-24T02:00"]
    argv += ["--image-size", "64", "--jp2", "--jp2-size", "512", "--b0", "auto", "--quiet"]
    assert main(argv) == 0
    argv = ["prepare", "--source", str(data / "jp2"), "--out", str(prepared), "--image-size", "64"]
    assert main([*argv, "--workers", "1", "--quiet"]) == 0, capsys.readouterr().err
    ours = pd.read_csv(data / "geometry.csv")
    theirs = pd.read_csv(prepared / "geometry.csv")
    assert list(theirs["path"]) == list(ours["path"])
    assert list(theirs["date_obs"]) == list(ours["date_obs"])
    np.testing.assert_allclose(theirs["radius_px"], ours["radius_px"], rtol=1e-5)
    np.testing.assert_allclose(theirs["rsun_obs"], ours["rsun_obs"], rtol=1e-6)
    # centres agree up to how each resampling places the reduced pixels (< 1/2 pixel)
    np.testing.assert_allclose(theirs["center_x"], ours["center_x"], atol=0.5)
    np.testing.assert_allclose(theirs["center_y"], ours["center_y"], atol=0.5)
    for rel in ours["path"]:
        a = np.asarray(Image.open(prepared / rel), dtype=float)
        b = np.asarray(Image.open(data / "images" / rel), dtype=float)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


# --------------------------------------------------------------------------- CLI


def test_cli_writes_a_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--start", "2011-02-01T00:00", "--end", "2011-02-02T00:00"]
    argv += ["--cadence", "6h", "--image-size", "48", "--seed", "2", "--format", "jpg", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 image(s)" in printed and "flares" in printed
    names = scan_images(out / "images")
    assert len(names) == 4 and all(n.endswith(".jpg") for n in names)
    assert Image.open(out / "images" / names[0]).format == "JPEG"
    assert (out / "catalog.csv").is_file() and (out / "geometry.csv").is_file()
    assert main(argv) == 0  # same settings: resumes, nothing to do
    assert "0 written, 4 already there" in capsys.readouterr().out


def cli(argv: list[str]) -> int:
    """Run the real CLI; an argparse error (SystemExit) gives its status like any other."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--start", "2011-02-05", "--end", "2011-02-01"],
            "--end: end 2011-02-01 00:00:00 is not after start",
        ),
        (["--start", "2011-02-01", "--end", "2011-02-01"], "holds no image time"),
        (["--image-size", "0"], "--image-size: '0': must lie in [16, 16384]"),
        (["--image-size", "-5"], "--image-size: '-5': must lie in [16, 16384]"),
        (["--image-size", "8"], "--image-size: '8': must lie in [16, 16384]"),
        (["--image-size", "big"], "--image-size: expected a whole number"),
        (["--cadence=-1h"], "--cadence: '-1h': cadence must be positive"),
        (["--cadence", "0min"], "--cadence: '0min': cadence must be positive"),
        (["--cadence", "soon"], "--cadence: 'soon': cannot read cadence"),
        (["--start", "yesterday-ish"], "--start: 'yesterday-ish': cannot read start"),
        (["--end", "soon"], "--end: cannot read end"),
        (["--b0", "north"], "--b0: 'north': must be auto or a number in [-90, 90]"),
        (["--b0", "100"], "--b0: '100': must lie in [-90, 90]"),
        (["--flare-rate", "-1"], "--flare-rate: '-1': must be at least 0"),
        (["--region-rate", "nan"], "--region-rate: 'nan': must be a finite number"),
        (["--noise", "-0.5"], "--noise: '-0.5': must be at least 0"),
        (["--clip", "0"], "--clip: '0': must be above 0"),
        (["--stretch", "2000"], "--stretch: '2000': must lie in [0, 1000]"),
        (["--missing", "2"], "--missing: '2': must lie in [0, 1]"),
        (["--unlocated", "-0.1"], "--unlocated: '-0.1': must lie in [0, 1]"),
        (["--seed", "-1"], "--seed: '-1': must be at least 0"),
        (["--workers", "0"], "--workers: expected 1 or more"),
        (["--jp2", "--jp2-size", "10"], "--jp2-size: '10': must lie in [64, 16384]"),
    ],
)
def test_cli_rejects_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "bad"
    assert cli(["synth", "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdflare synth: error:") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_end_is_excluded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["synth", "--start", "2011-01-01T00:00", "--cadence", "1h", "--image-size", "16"]
    assert main([*base, "--end", "2011-01-01T03:00", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert "3 image(s) 2011-01-01T00:00:00 .. 2011-01-01T02:00:00" in capsys.readouterr().out
    names = scan_images(tmp_path / "a" / "images")
    assert names == list(image_relpaths(pd.date_range("2011-01-01", periods=3, freq="1h"), "png"))
    # an --end between two image times: the images before it
    assert main([*base, "--end", "2011-01-01T02:30", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert len(scan_images(tmp_path / "b" / "images")) == 3
    # the default --end is START + 28 days, excluded: 28 x 24 hourly images
    assert _config_of(["--start", "2011-01-01T00:00"]).end == "2011-01-28T23:00:00"


def _config_of(extra: list[str]) -> SynthConfig:
    import argparse

    from fdflare.commands import synth as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command._config(parser.parse_args(["--out", "x", *extra]))


def test_cli_old_size_spelling_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--out", str(tmp_path / "s"), "--end", "2011-01-01T01:00", "--size", "32"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "--size is deprecated" in captured.err and "--image-size" in captured.err
    image = scan_images(tmp_path / "s" / "images")[0]
    assert Image.open(tmp_path / "s" / "images" / image).size == (32, 32)


def test_cli_quiet_keeps_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--out", str(tmp_path / "q"), "--end", "2011-01-01T02:00", "--image-size"]
    assert main([*argv, "16", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "synthetic data in" in captured.out and "catalog:" in captured.out
    assert captured.err == ""


def test_cli_read_only_out_is_one_line_up_front(
    capsys: pytest.CaptureFixture[str], read_only_dir: Path
) -> None:
    argv = ["synth", "--end", "2011-01-01T01:00", "--image-size", "16", "--quiet"]
    assert main([*argv, "--out", str(read_only_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err
    assert list(read_only_dir.iterdir()) == []


def test_cli_output_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fdflare.core.outputs import output_lock

    base = ["synth", "--end", "2011-01-01T01:00", "--image-size", "16", "--quiet"]
    (tmp_path / "file.txt").write_text("x")
    assert main([*base, "--out", str(tmp_path / "file.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err
    assert (tmp_path / "file.txt").read_text() == "x"
    busy = tmp_path / "busy"
    with output_lock(busy, command="synth"):
        assert main([*base, "--out", str(busy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err
    assert not (busy / "synth.json").exists()


def test_cli_rejects_unknown_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["synth", "--out", str(tmp_path / "x"), "--format", "gif"])
    assert info.value.code == 2
    assert "--format: 'gif': choose one of png, jpg" in capsys.readouterr().err


def test_synth_then_label_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, labels = tmp_path / "data", tmp_path / "labels"
    argv = ["synth", "--out", str(data), "--start", "2011-01-01T00:00", "--end", "2012-01-01T00:00"]
    assert main([*argv, "--cadence", "12h", "--image-size", "16", "--quiet"]) == 0
    argv = ["label", "--catalog", str(data / "catalog.csv"), "--images", str(data / "images")]
    argv += ["--out", str(labels), "--start", "2011-01-01", "--end", "2012-01-01"]
    assert main(argv) == 0, capsys.readouterr().err
    total = 0
    for k in range(1, 5):
        for part in ("train", "val"):
            fold = pd.read_csv(labels / f"Fold{k}_{part}.csv")
            assert list(fold.columns) == ["label", "goes_class"]
            assert set(fold["goes_class"]) == {0, 1}, (k, part)
            assert fold["label"].str.endswith(".png").all()
            total += len(fold) if part == "val" else 0
    assert total == 730


# --------------------------------------------------------------------------- what the images tell


def opposite_polarities_in_contact(b: np.ndarray, level: int) -> np.ndarray:
    """Pixels beyond ``level`` with a pixel of the other polarity beyond it next to them."""
    pos, neg = b > level, b < -level

    def grow(m: np.ndarray) -> np.ndarray:
        g = m.copy()
        g[..., 1:, :] |= m[..., :-1, :]
        g[..., :-1, :] |= m[..., 1:, :]
        g[..., :, 1:] |= m[..., :, :-1]
        g[..., :, :-1] |= m[..., :, 1:]
        return g

    return (pos & grow(neg)) | (neg & grow(pos))


@pytest.fixture(scope="module")
def year_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[SynthResult, pd.DataFrame, np.ndarray]:
    """The demo's data: a year of 64-pixel images every 12 h, labelled >= M1.0 in 24 h."""
    out = tmp_path_factory.mktemp("synth") / "year"
    result = gen(
        out,
        start="2011-01-01T00:00",
        end="2011-12-31T12:00",
        cadence="12h",
        size=64,
        seed=0,
        progress=False,
    )
    config = LabelConfig(start="2011-01-01", end="2012-01-01", cadence="12h")
    labels = make_labels(read_catalog(out / "catalog.csv"), read_image_list(out / "images"), config)
    table = labels.table
    images = np.stack([np.asarray(Image.open(out / "images" / p)) for p in table["label"]])
    return result, table, images


def test_simple_image_statistics_predict_the_flare_label(
    year_run: tuple[SynthResult, pd.DataFrame, np.ndarray],
) -> None:
    _result, table, images = year_run
    assert len(table) == 730
    target = table["target"].to_numpy().astype(bool)
    assert 0.15 <= target.mean() <= 0.35  # not trivially constant, the default's share
    b = np.where(images > 0, images.astype(np.int16) - 128, 0)  # signed levels on the disk
    strong = np.abs(b) > 20  # about 80 G with the default scaling
    statistics = {
        "strong-field flux": np.where(strong, np.abs(b), 0).sum(axis=(1, 2)),
        "strong-field area": strong.sum(axis=(1, 2)),
        "largest |B|": np.abs(b).max(axis=(1, 2)),
    }
    for name, values in statistics.items():
        auc = roc_auc(values, target)
        assert auc is not None and auc >= 0.70, (name, auc)
    # intensity carries information: most images have no saturated pixel, and the
    # strongest field differs from image to image
    saturated = ((images == 1) | (images == 255)).any(axis=(1, 2))
    assert saturated.mean() < 0.2
    largest = statistics["largest |B|"]
    assert np.percentile(largest, 90) - np.percentile(largest, 10) > 30


def test_complexity_shows_in_the_image() -> None:
    """A complex region shows opposite polarities in contact; a simple one of equal flux not."""
    rate = float(synodic_rotation_rate(15.0))
    rows = []
    for region, (lon, complexity) in enumerate([(-25.0, 0.0), (25.0, 1.0)]):
        rows.append(
            {
                "region": region,
                "emerge_time": pd.Timestamp("2011-01-01"),
                "end_time": pd.Timestamp("2011-02-10"),
                "lon0": lon - 2.0 * rate,  # at `lon` when fully grown, 2 days later
                "lat": 15.0,
                "flux_max": 3e22,
                "t_grow": 2.0,
                "t_decay": 10.0,
                "lifetime": 32.0,
                "tilt": 8.0,
                "separation": 10.0,
                "complexity": complexity,
                "leading_sign": 1,
                "anti_hale": False,
            }
        )
    regions = pd.DataFrame(rows)
    patches = region_patches(regions, "2011-01-03")
    for size, level in ((512, 20), (64, 10)):
        g = DiskGeometry.centred(size)
        b = to_uint8(render_magnetogram(patches, g, noise=0.0)).astype(int) - 128
        _mu, lon, _lat = disk_coordinates(g)
        contact = opposite_polarities_in_contact(np.where(np.isnan(lon), 0, b), level)
        simple = int((contact & (lon < 0)).sum())
        complex_ = int((contact & (lon > 0)).sum())
        assert complex_ >= 4 and complex_ > 3 * simple, (size, simple, complex_)
        # and stronger fields: more of its flux sits in compact spots
        assert np.abs(b[lon > 0]).max() > np.abs(b[lon < 0]).max(), size


def test_flare_productivity_is_super_linear_in_flux_and_rises_with_complexity() -> None:
    flux = np.array([3e21, 1e22, 2e22, 2e22])
    rate, cap = flare_productivity(flux, [0, 0, 0, 1.0])
    raw = 1.2 * (flux / 1e22) ** 2.5 * np.array([1, 1, 1, 4])
    np.testing.assert_allclose(rate, raw / (1 + raw / 20))
    assert rate[2] / rate[1] > 4 and rate[1] / rate[0] > 15  # twice the flux, 4.5x the flares
    assert rate[3] / rate[2] > 2
    assert 19 < flare_productivity(1e23, 1.0)[0] < 20  # levels off
    assert cap[0] < 5e-6 and cap[1] == pytest.approx(3e-5)  # C5 at most, M3 at most
    assert cap[3] >= 1e-4 > cap[2]  # X flares need size and complexity
    _, small = flare_productivity(1e20, 0.0)
    _, huge = flare_productivity(1e24, 1.0)
    assert small == pytest.approx(1.5e-6) and huge == pytest.approx(2e-3)


def test_big_complex_regions_dominate_big_flares() -> None:
    regions = simulate_regions("2011-01-01", "2012-01-01", seed=0)
    flares = draw_flares(regions, "2011-01-01", "2012-01-01", seed=0, truth=True)
    big = flares[flares["flux"] >= 1e-5].merge(regions[["region", "complexity"]], on="region")
    assert len(big) > 50
    complex_regions = (regions["complexity"] > 0).mean()
    assert complex_regions < 0.3
    assert (big["complexity"] > 0).mean() > 0.7  # a minority of regions, most big flares
    assert (big["region_flux"] >= 1e22).mean() > 0.75
    assert (big["region_flux"] < 3e21).mean() < 0.02
    behind = (big["fl_lon"].abs() > 90).mean()
    assert 0 < behind < 0.1  # flares from behind the limb occur, a minority


def test_quiet_days_rarely_have_big_flares() -> None:
    regions = simulate_regions("2011-01-01", "2012-01-02", seed=0)
    flares = draw_flares(regions, "2011-01-01", "2012-01-02", seed=0)
    complexity = regions.set_index("region")["complexity"]
    times = pd.date_range("2011-01-01", "2011-12-31 12:00", freq="12h")
    largest, big_complex, on_disk = [], [], []
    for t in times:
        p = region_patches(regions, t)
        p = p[p["lon"].abs() < 80]
        flux = p["flux"].abs().groupby(p["region"]).sum()
        largest.append(flux.max() if len(flux) else 0.0)
        big_complex.append(bool(((flux > 2e22) & (complexity[flux.index] > 0)).any()))
        on_disk.append(int((flux > 1e21).sum()))
    largest_a, big_complex_a = np.array(largest), np.array(big_complex)
    starts = np.sort(flares.loc[class_flux(flares["goes_class"]) >= 1e-5, "start_time"])
    t = times.to_numpy()
    after = np.searchsorted(starts, t, side="right")
    positive = np.searchsorted(starts, t + np.timedelta64(86399, "s"), side="right") > after
    quiet = largest_a < 5e21  # only small regions on the disk
    assert quiet.mean() > 0.1 and big_complex_a.mean() > 0.03
    assert positive[quiet].mean() < 0.1
    assert positive[big_complex_a].mean() > 0.5  # 0.25 on average
    # a handful of regions at a time, about ten at most
    assert 3 <= np.median(on_disk) <= 8 and np.percentile(on_disk, 90) <= 12


def test_cli_stretch_option(tmp_path, capsys):
    from fdflare.cli import main as cli_main

    base = ["synth", "--end", "2011-01-01T01:00", "--image-size", "64", "--quiet"]
    assert cli_main([*base, "--out", str(tmp_path / "lin"), "--stretch", "0"]) == 0
    assert cli_main([*base, "--out", str(tmp_path / "asinh")]) == 0
    rel = "images/2011/01/01/HMI.m2011.01.01_00.00.00.png"
    assert (tmp_path / "lin" / rel).read_bytes() != (tmp_path / "asinh" / rel).read_bytes()
    assert cli([*base, "--out", str(tmp_path / "bad"), "--stretch", "-1"]) == 2
    assert "stretch" in capsys.readouterr().err


def test_default_workers_grow_with_the_work() -> None:
    from fdflare.synth.config import SynthConfig
    from fdflare.synth.writer import default_workers, estimated_seconds

    config = SynthConfig().resolved()
    small = estimated_seconds([("img", i) for i in range(30)], config)
    assert default_workers(small) == 1  # a few seconds: rendered in this process
    year = estimated_seconds([("img", i) for i in range(8760)], config)
    assert 1 <= default_workers(year) <= min(4, len(os.sched_getaffinity(0)))
    assert year > 100 * small / 30
