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


def test_disk_figure_on_prepared_png_draws_meridians_with_b0(tmp_path):
    """With geometry.csv's b0_deg, the +-70 deg meridians of a PNG follow the observer's B0."""
    img = np.zeros((64, 64), np.uint8)
    Image.fromarray(img).save(tmp_path / "m.png")
    geo = {"center_x": 32.0, "center_y": 30.0, "radius_px": 25.0, "crota2": 0.0}
    flat = disk_figure(tmp_path / "m.png", tmp_path / "a", geometry={**geo, "b0_deg": 0.0})
    tilted = disk_figure(tmp_path / "m.png", tmp_path / "b", geometry={**geo, "b0_deg": 7.25})
    plain = disk_figure(tmp_path / "m.png", tmp_path / "c", geometry=geo)
    assert plain["meridians"] == [] and len(flat["meridians"]) == 2
    # at B0 = 0 the east meridian reaches x = cx - R sin 70 at the equator
    assert flat["meridians"][0][0] == pytest.approx(32 - 25 * math.sin(math.radians(70)), abs=0.05)
    # B0 = 7.25 deg tilts the north pole towards us: it is seen R (1 - cos B0) lower, and
    # the meridian's southern end hides behind the limb
    flat_rows, tilted_rows = flat["meridians"][0][2:], tilted["meridians"][0][2:]
    b0 = math.radians(7.25)
    assert tilted_rows[0] - flat_rows[0] == pytest.approx(25 * (1 - math.cos(b0)), abs=0.05)
    assert tilted_rows[1] < flat_rows[1] - 0.5


# ---------------------------------------------------------------- issue 7 and 11, through the CLI

JOINED_HEAD = "timestamp,flare_prob,goes_class,fl_location,flare_start\n"


def _joined(tmp_path, rows, name="j.csv"):
    p = tmp_path / name
    p.write_text(JOINED_HEAD + "".join(r + "\n" for r in rows))
    return str(p)


GOOD = [
    'a,0.9,X1.0,"(10, 5)",2011-01-01',
    'b,0.2,M1.0,"(80, -5)",2011-01-01',
    'c,0.7,M2.0,"(-30, 12)",2011-01-01',
]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--bin-deg", "0"], "--bin-deg"),
        (["--bin-deg", "-5"], "--bin-deg"),
        (["--bin-deg", "4"], "--bin-deg: 4 does not divide the limb longitude 70"),
        (["--bin-deg", "7"], "does not divide 180"),
        (["--bin-deg", "20", "--limb-deg", "60"], "does not divide 70"),
        (["--bin-deg", "8", "--limb-deg", "80"], "does not divide 180"),
        (["--limb-deg", "95"], "--limb-deg"),
        # a limb longitude between the default bins names the option given, not the bins
        (["--limb-deg", "72"], "--limb-deg: 72 is not a whole number of 5 deg bins"),
        (["--limb-deg", "72"], "(e.g. 70 or 75)"),
        (["--threshold", "1.5"], "--threshold"),
    ],
)
def test_cli_bad_bins_and_options_are_refused(tmp_path, capsys, extra, words):
    j = _joined(tmp_path, GOOD)
    out = tmp_path / "o"
    try:
        rc = main(["spatial", "--out", str(out), *extra, j])
    except SystemExit as exc:  # argparse types
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err
    assert not out.exists()


def test_cli_bin_that_divides_everything_works(tmp_path, capsys):
    j = _joined(tmp_path, GOOD)
    assert main(["spatial", "--json", "--bin-deg", "2.5", j]) == 0
    assert json.loads(capsys.readouterr().out)["bin_deg"] == 2.5


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ('d,0.5,Q1.0,"(10, 5)",2011-01-01', "goes_class", "'Q1.0'"),
        ('d,0.5,yes,"(10, 5)",2011-01-01', "goes_class", "'yes'"),
        ('d,0.5,M1.0,"(500, 5)",2011-01-01', "fl_location", "longitude 500"),
        ('d,0.5,M1.0,"(inf, 5)",2011-01-01', "fl_location", "longitude inf"),
        ('d,0.5,M1.0,"(10, 95)",2011-01-01', "fl_location", "latitude 95"),
        ('d,0.5,M1.0,"(10, nan)",2011-01-01', "fl_location", "both longitude and latitude"),
    ],
)
def test_cli_bad_classes_and_locations_name_file_line_field(tmp_path, capsys, row, field, words):
    j = _joined(tmp_path, [*GOOD, row])
    assert main(["spatial", j]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "j.csv, line 5" in err and f"field '{field}'" in err and words in err


def test_cli_empty_class_is_no_flare_counted_and_reported(tmp_path, capsys):
    j = _joined(tmp_path, [*GOOD, 'd,0.5,,"(nan, nan)",', 'e,0.1,C2.0,"(1, 1)",2011-01-01'])
    assert main(["spatial", "--json", j]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["no_flare"] == 1 and res["other_classes"] == 1 and res["n"] == 5
    assert main(["spatial", j]) == 0
    out = capsys.readouterr().out
    assert "1 instance(s) without a flare were left out" in out
    assert "1 instance(s) with a largest flare below M were left out" in out


def test_cli_outside_grid_is_in_the_text_table_and_agrees_with_json(tmp_path, capsys):
    rows = [*GOOD, 'd,0.9,M1.0,"(20, 50)",2011-01-01', 'e,0.9,M1.0,"(95, 0)",2011-01-01']
    j = _joined(tmp_path, rows)
    assert main(["spatial", "--json", j]) == 0  # no --out: still counted
    res = json.loads(capsys.readouterr().out)
    assert res["classes"]["M"]["outside_grid"] == 2 and res["classes"]["X"]["outside_grid"] == 0
    assert res["classes"]["X+M"]["outside_grid"] == 2
    assert main(["spatial", j]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["outside", "grid"]
    m_central = next(line for line in lines if line.startswith("M ") and "central" in line)
    assert m_central.split()[-1] == "2"  # the M row's outside-grid count
    xm_central = next(line for line in lines if line.startswith("X+M") and "central" in line)
    assert xm_central.split()[-1] == "2"


def test_heatmap_colour_scale_is_fixed_from_0_to_1():
    from fdflare.analysis.figures import heatmap_figure

    df = _table([("a", 0.9, "X1", 12, 3), ("b", 0.1, "X1", 13, 4)])  # one bin, recall 0.5
    fig = heatmap_figure(recall_grid(df, np.ones(2, bool)))
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)


def test_cli_figures_leave_the_backend_and_pyplot_alone(tmp_path, capsys):
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.close("all")
    matplotlib.use("svg")  # a notebook's own choice
    try:
        assert main(["spatial", "--out", str(tmp_path / "o"), _joined(tmp_path, GOOD)]) == 0
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == []
    finally:
        matplotlib.use(before)
    assert (tmp_path / "o" / "heatmap_XM.png").stat().st_size > 1000


def test_cli_geometry_missing_is_one_line(tmp_path, capsys):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "m.png")
    out = tmp_path / "o"
    rc = main(
        [
            "spatial",
            "--out",
            str(out),
            "--disk-image",
            str(tmp_path / "m.png"),
            "--geometry",
            str(tmp_path / "nope.csv"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.csv" in err and "geometry" in err
    assert not out.exists()


def test_cli_disk_image_jp2_with_fdflares_own_reader(sunpy_test_data, tmp_path, capsys):
    from fdflare.prepare.jp2 import read_jp2_header

    jp2 = sunpy_test_data / "2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2"
    header = read_jp2_header(jp2)
    assert main(["spatial", "--json", "--out", str(tmp_path), "--disk-image", str(jp2)]) == 0
    disk = json.loads(capsys.readouterr().out)["disk"]
    radius = float(header["RSUN_OBS"]) / float(header["CDELT1"])  # 512 px, decoded as is
    assert disk["radius_px"] == pytest.approx(radius, rel=1e-6)
    assert disk["circle_radius_px"] == pytest.approx(radius * math.sin(math.radians(70)))
    assert disk["center_x"] == pytest.approx(float(header["CRPIX1"]) - 1, abs=0.01)
    with Image.open(tmp_path / "disk.png") as im:
        assert im.size[0] > 300


def test_limb_meridians_agree_with_sunpy(sunpy_test_data):
    import astropy.units as u
    import sunpy.map
    from astropy.coordinates import SkyCoord
    from sunpy.coordinates import HeliographicStonyhurst

    from fdflare.analysis.figures import limb_meridians
    from fdflare.prepare.geometry import disk_geometry
    from fdflare.prepare.jp2 import read_jp2_header

    header = read_jp2_header(
        sunpy_test_data / "2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2"
    )
    header = {**header, "CROTA2": "30", "CRVAL1": "50", "CRVAL2": "-20"}
    fits = {}
    for k, v in header.items():
        if k.startswith("HV_") or k in ("COMMENT", "HISTORY"):
            continue
        try:
            fits[k] = float(v)
        except ValueError:
            fits[k] = v
    smap = sunpy.map.Map(np.zeros((512, 512)), {**fits, "NAXIS": 2})
    geo = disk_geometry(header, (512, 512), (512, 512))
    ours = limb_meridians(geo, 70, b0_deg=float(header["CRLT_OBS"]), crota2_deg=30.0)
    lat = np.linspace(-89.5, 89.5, 181) * u.deg
    for (col, row), sign in zip(ours, (-1, 1), strict=True):
        mer = SkyCoord(
            np.full(lat.shape, sign * 70) * u.deg,
            lat,
            frame=HeliographicStonyhurst(obstime=smap.date, rsun=smap.rsun_meters),
        )
        px, py = smap.wcs.world_to_pixel(mer.transform_to(smap.coordinate_frame))
        seen = np.isfinite(col)
        assert seen.sum() > 150
        # within 0.5 px on a 203 px radius: the orthographic view ignores perspective
        np.testing.assert_allclose(col[seen], px[seen], atol=0.5)
        np.testing.assert_allclose(row[seen], 511 - py[seen], atol=0.5)


def test_cli_header_only_warns_exits_1_and_writes_nothing(tmp_path, capsys):
    empty = _joined(tmp_path, [], name="empty.csv")
    out = tmp_path / "o"
    assert main(["spatial", "--out", str(out), empty]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty.csv holds a header and no predictions" in err
    assert not out.exists()
    # beside a file with rows: analysed, still warned about, still exit 1
    assert main(["spatial", "--json", empty, _joined(tmp_path, GOOD)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 3 and "empty.csv" in captured.err


def test_cli_out_is_a_file_and_a_busy_out(tmp_path, capsys):
    from fdflare.core.outputs import output_lock

    j = _joined(tmp_path, GOOD)
    target = tmp_path / "figures.txt"
    target.write_text("mine\n")
    assert main(["spatial", "--out", str(target), j]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err and target.read_text() == "mine\n"
    with output_lock(tmp_path / "busy", command="spatial"):
        assert main(["spatial", "--out", str(tmp_path / "busy"), j]) == 2
        assert "in use" in capsys.readouterr().err


def test_the_study_no_flare_class_nf_counts_as_no_flare(tmp_path, capsys):
    f = tmp_path / "joined.csv"
    f.write_text(
        "label,flare_prob,target,goes_class,fl_lon,fl_lat,fl_start\n"
        "2011/01/01/HMI.m2011.01.01_00.00.00.jpg,0.9,1,M1.2,10,5,2011-01-01 03:00:00\n"
        "2011/01/01/HMI.m2011.01.01_01.00.00.jpg,0.1,0,NF,,,\n"
        "2011/01/01/HMI.m2011.01.01_02.00.00.jpg,0.2,0,,,,\n"
    )
    assert main(["spatial", "--json", "--out", str(tmp_path / "o"), str(f)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["no_flare"] == 2 and res["classes"]["M"]["central"]["tp"] == 1
