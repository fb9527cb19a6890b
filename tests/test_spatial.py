import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fdflare.analysis.figures import disk_figure
from fdflare.analysis.spatial import (
    SpatialConfig,
    analyse,
    bin_indices,
    location_recall,
    recall_grid,
    wilson_interval,
)
from fdflare.cli import main
from fdflare.core.errors import InputError


@pytest.mark.reference
def test_alexnet_published_location_counts(reference_dir, tmp_path, capsys):
    pred = reference_dir / "predictions"
    rc = main(
        [
            "spatial",
            "--json",
            "--out",
            str(tmp_path),
            "--name",
            "alex",
            str(pred / "alex_x_class.csv"),
            str(pred / "alex_m_class.csv"),
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    x, m = res["classes"]["X"], res["classes"]["M"]
    assert (x["central"]["tp"], x["central"]["fn"], x["limb"]["tp"], x["limb"]["fn"]) == (
        614,
        54,
        138,
        74,
    )
    assert (m["central"]["tp"], m["central"]["fn"], m["limb"]["tp"], m["limb"]["fn"]) == (
        4645,
        1185,
        1276,
        1014,
    )
    xm = res["classes"]["X+M"]
    assert xm["central"]["tp"] == 614 + 4645 and xm["limb"]["fn"] == 74 + 1014
    assert x["unknown"] == 0 and round(x["central"]["recall"], 4) == round(614 / 668, 4)
    for cls in ("X", "M", "XM"):
        for ext in ("png", "svg"):
            assert (tmp_path / f"alex_heatmap_{cls}.{ext}").stat().st_size > 1000
        bins = pd.read_csv(tmp_path / f"alex_bins_{cls}.csv")
        assert bins["tp"].sum() + bins["fn"].sum() > 0
    with Image.open(tmp_path / "alex_heatmap_X.png") as im:
        assert im.size[0] > 500


def _table(rows):
    return pd.DataFrame(rows, columns=["id", "flare_prob", "goes_class", "lon", "lat"])


def test_limb_boundary_rounding_and_unknowns():
    df = _table(
        [
            ("a", 0.9, "X1.0", 70.0, 0),  # central (<= 70)
            ("b", 0.9, "X1.0", 70.004, 0),  # rounds to 70.00 -> central, as the study
            ("c", 0.1, "X1.0", 70.01, 0),  # near-limb FN
            ("d", 0.9, "M1.0", -70.0, 0),
            ("e", 0.2, "M5.0", -85.0, 0),
            ("f", 0.9, "M5.0", np.nan, np.nan),  # unknown location: counted, left out
            ("g", 0.9, "C5.0", 10, 0),  # not X or M
        ]
    )
    res = location_recall(df)
    assert res["X"]["central"]["tp"] == 2 and res["X"]["limb"]["fn"] == 1
    assert (
        res["M"]["central"]["tp"] == 1 and res["M"]["limb"]["fn"] == 1 and res["M"]["unknown"] == 1
    )
    assert res["X+M"]["unknown"] == 1 and res["X+M"]["n"] == 6
    assert res["M"]["limb"]["recall"] == 0.0
    empty = location_recall(df.iloc[:0])
    assert empty["X"]["central"]["recall"] is None


def test_wilson_interval():
    lo, hi = wilson_interval(614, 668)
    assert lo == pytest.approx(0.8962, abs=5e-4) and hi == pytest.approx(0.9378, abs=5e-4)
    assert wilson_interval(0, 0) == (None, None)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35


def test_heatmap_bins_follow_the_study_edges():
    lon = np.array([70.0, 90.0, -90.0, -70.0, 69.99, 0.0, 12.0, 95.0])
    lat = np.array([0.0, 35.0, -35.0, 0.0, 0.0, 40.0, -0.5, 0.0])
    ix, iy, inside = bin_indices(lon, lat, SpatialConfig())
    assert ix[0] == ix[4] == 31  # 70 goes into [65, 70)
    assert ix[1] == 35 and iy[1] == 13  # 90 -> [85, 90], 35 -> [30, 35]
    assert ix[2] == 0 and iy[2] == 0
    assert ix[3] == 4  # -70 -> [-70, -65)
    assert not inside[5] and not inside[7] and inside[6] and iy[6] == 6


def test_grid_counts_and_red_marks(tmp_path):
    df = _table(
        [
            ("a", 0.9, "X1", 12, 3),
            ("b", 0.1, "X1", 13, 4),
            ("c", 0.2, "M1", -80, -20),
            ("d", 0.9, "M1", 0, 50),
        ]
    )
    grid = recall_grid(df, np.ones(4, bool))
    assert grid["tp"].sum() == 1 and grid["fn"].sum() == 2 and grid["outside"] == 1
    res = analyse(df, out=tmp_path, name="t")
    assert res["classes"]["M"]["outside_grid"] == 1
    assert (tmp_path / "t_heatmap_M.png").is_file() and (tmp_path / "t_heatmap_XM.svg").is_file()


def test_reads_fdflare_joined_table(tmp_path, capsys):
    p = tmp_path / "joined.csv"
    pd.DataFrame(
        {
            "label": ["a", "b", "c"],
            "flare_prob": [0.8, 0.3, 0.6],
            "target": [1, 1, 1],
            "goes_class": ["X2.0", "M1.0", "M3.0"],
            "fl_lon": [80.0, 10.0, np.nan],
            "fl_lat": [5.0, -10.0, np.nan],
        }
    ).to_csv(p, index=False)
    assert main(["spatial", "--json", str(p)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["classes"]["X"]["limb"] == {
        "tp": 1,
        "fn": 0,
        "n": 1,
        "recall": 1.0,
        "recall_ci95": res["classes"]["X"]["limb"]["recall_ci95"],
    }
    assert res["classes"]["M"]["central"]["fn"] == 1 and res["classes"]["M"]["unknown"] == 1


def test_bad_location(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text(
        'timestamp,flare_prob,goes_class,fl_location,flare_start\na,0.5,X1.0,"(east, 10)",2011-01-01\n'
    )
    with pytest.raises(InputError, match=r"line 2.*fl_location"):
        from fdflare.analysis.spatial import read_spatial_table

        read_spatial_table(p)


def test_disk_figure_from_real_hmi_fits(sunpy_test_data, tmp_path):
    from astropy.io import fits

    path = sunpy_test_data / "resampled_hmi.fits"
    hdr = fits.getheader(path)
    res = disk_figure(path, tmp_path / "disk", limb_deg=70)
    radius = hdr["RSUN_OBS"] / hdr["CDELT1"]
    assert res["radius_px"] == pytest.approx(radius, rel=1e-6)
    assert res["circle_radius_px"] == pytest.approx(radius * math.sin(math.radians(70)), rel=1e-6)
    # disk centre from the header's reference pixel, offset and CROTA2 rotation (0-based pixels)
    a = math.radians(hdr["CROTA2"])
    wx, wy = -hdr["CRVAL1"] / hdr["CDELT1"], -hdr["CRVAL2"] / hdr["CDELT2"]
    px = math.cos(a) * wx + math.sin(a) * wy
    py = -math.sin(a) * wx + math.cos(a) * wy
    assert res["center_x"] == pytest.approx(hdr["CRPIX1"] - 1 + px, abs=0.05)
    assert res["center_y"] == pytest.approx(hdr["CRPIX2"] - 1 + py, abs=0.05)
    with Image.open(tmp_path / "disk.png") as im:
        assert im.size[0] > 300
    assert (tmp_path / "disk.svg").stat().st_size > 1000


def test_disk_figure_on_prepared_png_needs_geometry(tmp_path, capsys):
    img = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    img[(xx - 32) ** 2 + (yy - 30) ** 2 < 25**2] = 128
    Image.fromarray(img).save(tmp_path / "m.png")
    with pytest.raises(InputError, match="geometry"):
        disk_figure(tmp_path / "m.png", tmp_path / "d")
    (tmp_path / "geometry.csv").write_text(
        "path,date_obs,center_x,center_y,radius_px\nm.png,2011-01-01T00:00:00,32,30,25\n"
    )
    rc = main(
        [
            "spatial",
            "--out",
            str(tmp_path),
            "--disk-image",
            str(tmp_path / "m.png"),
            "--geometry",
            str(tmp_path / "geometry.csv"),
        ]
    )
    assert rc == 0 and (tmp_path / "disk.png").is_file()
    assert "radius 25.0 px" in capsys.readouterr().out
