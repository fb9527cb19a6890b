"""JPEG 2000 files with Helioviewer headers: reading real files, writing, disk geometry."""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdflare.core.errors import InputError
from fdflare.prepare.geometry import disk_geometry, observation_time
from fdflare.prepare.jp2 import (
    helioviewer_xml,
    parse_helioviewer_xml,
    read_jp2_header,
    read_jp2_info,
    reduced_size,
    write_helioviewer_jp2,
)

HMI = "2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2"
AIA = "2013_06_24__17_31_30_84__SDO_AIA_AIA_193.jp2"
EUI = "2022_04_01__00_00_45__SOLO-EUI-FSI_EUI_FSI_174.jp2"


def top_level_boxes(path: Path) -> list[tuple[bytes, bytes]]:
    """Return ``(type, first bytes of payload)`` of each top-level box, by plain parsing."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        length = length or len(data) - pos
        out.append((kind, data[pos + 8 : pos + min(length, 80)]))
        pos += length
    return out


def fits_header(header: dict[str, str]):
    """An astropy FITS header of the WCS keywords of a JP2 header (values as numbers)."""
    from astropy.io import fits

    out = fits.Header()
    for key, value in header.items():
        if len(key) > 8 or key in ("HISTORY", "COMMENT"):
            continue
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def wcs_centre(header: dict[str, str], height: int) -> tuple[float, float]:
    """Sun centre in stored pixels (row 0 at the top) through astropy's WCS."""
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's FITSFixedWarning about DATE-OBS formats
        wcs = WCS(fits_header(header))
    x, y = wcs.world_to_pixel_values(0.0, 0.0)  # FITS-ordered, 0-based
    return float(x), float(height - 1 - y)  # stored order is flipped


def disk_image(n: int, cx: float, cy: float, r: float, *, seed: int = 0) -> np.ndarray:
    """A grey disk (128 +- noise) on a dark sky, centred on stored pixel (cx, cy)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img = np.full((n, n), 10, np.uint8)
    img[inside] = np.rint(np.clip(128 + rng.normal(0, 8, int(inside.sum())), 40, 250)).astype(
        np.uint8
    )
    return img


def centroid(img: np.ndarray) -> tuple[float, float, float]:
    """Centre and equivalent radius of the bright disk (area-weighted above the sky)."""
    img = img.astype(float)
    n = img.shape[0]
    disk = img[n // 2 - n // 16 : n // 2 + n // 16, n // 2 - n // 16 : n // 2 + n // 16].mean()
    w = (img - img[:4, :4].mean()) / (disk - img[:4, :4].mean())
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    total = w.sum()
    return (w * xx).sum() / total, (w * yy).sum() / total, math.sqrt(total / math.pi)


# --------------------------------------------------------------------------- reading


def test_read_header_real_hmi(sunpy_test_data):
    header = read_jp2_header(sunpy_test_data / HMI)
    # tags are lower case in this file; keys come back upper case
    assert header["DATE-OBS"] == "2023-01-31T03:39:23.200"
    assert header["CRPIX1"] == "256.5" and header["CRPIX2"] == "256.5"
    assert header["CDELT1"] == "4.80000016"
    assert header["RSUN_OBS"] == "973.96844"
    assert header["NAXIS1"] == "512"
    assert header["T_OBS"] == "2023.01.31_03:40:22.661_TAI"
    assert "Polynomial Coefficients" in header["HISTORY"]


def test_read_header_real_aia_xml_after_codestream(sunpy_test_data):
    # this file puts its XML box after the codestream and writes a <helioviewer> section
    kinds = [k for k, _ in top_level_boxes(sunpy_test_data / AIA)]
    assert kinds.index(b"xml ") > kinds.index(b"jp2c")
    header = read_jp2_header(sunpy_test_data / AIA)
    assert header["DATE-OBS"] == "2013-06-24T17:31:30.84"
    assert header["CRPIX1"] == "2048.5000"
    assert header["HV_ROTATION"] == "0.00000"
    assert header["COMMENT"].startswith("FITS (Flexible Image Transport System)")
    assert len(header) > 150


def test_info_real_files_match_decoder(sunpy_test_data):
    for name in (HMI, AIA, EUI):
        path = sunpy_test_data / name
        info = read_jp2_info(path)
        with Image.open(path) as im:
            assert (info.width, info.height) == im.size
        assert info.complete and info.components == 1 and info.bit_depth == 8
    # the parsed number of levels is what the decoder accepts: reduce=levels works, +1 fails
    path = sunpy_test_data / HMI
    levels = read_jp2_info(path).levels
    with Image.open(path) as im:
        im.reduce = levels
        im.load()
        assert im.size == (reduced_size(512, levels),) * 2
    with Image.open(path) as im, pytest.raises(OSError):
        im.reduce = levels + 1
        im.load()


# --------------------------------------------------------------------------- writing

HEADER = {
    "DATE-OBS": "2011-01-01T00:00:00.35",
    "CRPIX1": 512.5,
    "CRPIX2": 500.25,
    "CDELT1": 2.0,
    "CDELT2": 2.0,
    "CRVAL1": 0.0,
    "CRVAL2": 0.0,
    "RSUN_OBS": 975.5,
    "CROTA2": 0.0,
    "CONTENT": "MAGNETOGRAM <LOS> & more",
    "HV_ROTATION": 0.0,
}


def test_write_round_trip_and_layout(tmp_path, sunpy_test_data):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (256, 320), dtype=np.uint8)
    path = tmp_path / "sub" / "x.jp2"
    write_helioviewer_jp2(path, data, HEADER, num_resolutions=4)
    assert [p.name for p in path.parent.iterdir()] == ["x.jp2"]  # no temporary files left

    with Image.open(path) as im:
        assert im.format == "JPEG2000" and im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), data)  # lossless by default

    header = read_jp2_header(path)
    assert header["DATE-OBS"] == "2011-01-01T00:00:00.35"
    assert header["CRPIX2"] == "500.25"
    assert header["CONTENT"] == "MAGNETOGRAM <LOS> & more"
    assert header["HV_ROTATION"] == "0.0"

    info = read_jp2_info(path)
    assert (info.width, info.height, info.levels, info.complete) == (320, 256, 3, True)

    # same box sequence as Helioviewer's HMI file: signature, ftyp, jp2h, xml, jp2c
    ours = top_level_boxes(path)
    theirs = top_level_boxes(sunpy_test_data / HMI)
    assert [k for k, _ in ours] == [k for k, _ in theirs]
    xml = dict(ours)[b"xml "]
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?><meta><fits><DATE-OBS>')


def test_xml_sections():
    xml = helioviewer_xml({"CRPIX1": 2048.5, "HV_ROTATION": 180, "FLAG": True}).decode()
    assert xml.endswith(
        "<fits><CRPIX1>2048.5</CRPIX1><FLAG>1</FLAG></fits>"
        "<helioviewer><HV_ROTATION>180</HV_ROTATION></helioviewer></meta>"
    )
    assert parse_helioviewer_xml(xml) == {"CRPIX1": "2048.5", "FLAG": "1", "HV_ROTATION": "180"}


def test_write_lossy_layers(tmp_path):
    data = disk_image(512, 250.0, 260.0, 200.0)
    write_helioviewer_jp2(tmp_path / "lossless.jp2", data, HEADER)
    write_helioviewer_jp2(tmp_path / "lossy.jp2", data, HEADER, quality_layers=[40, 10])
    assert (tmp_path / "lossy.jp2").stat().st_size < (tmp_path / "lossless.jp2").stat().st_size / 3
    assert read_jp2_info(tmp_path / "lossy.jp2").layers == 2
    with Image.open(tmp_path / "lossy.jp2") as im:
        decoded = np.asarray(im).astype(float)
    assert np.abs(decoded - data).mean() < 8


@pytest.mark.parametrize(
    ("data", "header", "kwargs", "message"),
    [
        (np.zeros((64, 64), np.float32), HEADER, {}, "uint8"),
        (np.zeros((64, 64, 3), np.uint8), HEADER, {}, "2-D"),
        (np.zeros((64, 64), np.uint8), HEADER, {"num_resolutions": 8}, "num_resolutions"),
        (np.zeros((64, 64), np.uint8), {"1BAD": 1}, {}, "XML element"),
        (np.zeros((64, 64), np.uint8), {"CRPIX1": 1, "crpix1": 2}, {}, "twice"),
        (np.zeros((64, 64), np.uint8), {"COMMENT": "a\x01b"}, {}, "characters"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path, data, header, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_helioviewer_jp2(tmp_path / "x.jp2", data, header, **kwargs)
    assert list(tmp_path.iterdir()) == []


def _need_sunpy_jp2_reader() -> None:
    """sunpy reads JP2 through glymur, which needs the OpenJPEG library (>= 2.4) installed."""
    glymur = pytest.importorskip("glymur", reason="sunpy reads JP2 through glymur, not installed")
    pytest.importorskip("lxml", reason="sunpy's JP2 reader needs lxml, not installed")
    version = str(getattr(glymur.version, "openjpeg_version", "0.0.0"))
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if parts < (2, 4):
        pytest.skip(f"glymur finds no OpenJPEG >= 2.4 library on this machine (found {version})")


def test_sunpy_reads_our_header(tmp_path):
    _need_sunpy_jp2_reader()
    from sunpy.io._jp2 import get_header

    write_helioviewer_jp2(tmp_path / "x.jp2", disk_image(64, 30, 30, 20), HEADER)
    theirs = get_header(tmp_path / "x.jp2")[0]
    assert theirs["CRPIX2"] == 500.25 and theirs["DATE-OBS"] == "2011-01-01T00:00:00.35"


# --------------------------------------------------------------------------- bad files


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.jp2"
    empty.write_bytes(b"")
    text = tmp_path / "text.jp2"
    text.write_text("<html>404 Not Found</html>\n")
    good = tmp_path / "good.jp2"
    write_helioviewer_jp2(good, disk_image(128, 64, 64, 40), HEADER, num_resolutions=3)
    blob = good.read_bytes()
    cut = tmp_path / "cut.jp2"
    cut.write_bytes(blob[: len(blob) // 2])
    header_only = tmp_path / "header_only.jp2"
    header_only.write_bytes(blob[:60])

    for path, message in [
        (empty, "empty file"),
        (text, "not a JPEG 2000 file"),
        (cut, "truncated file: box 'jp2c'"),
        (header_only, "truncated file"),
    ]:
        with pytest.raises(InputError, match=message) as err:
            read_jp2_info(path)
        assert err.value.path == str(path)

    # a codestream box running to the end of the file (length 0) that was cut short
    jp2c = blob.index(b"jp2c") - 4
    open_ended = blob[:jp2c] + b"\x00\x00\x00\x00" + blob[jp2c + 4 : len(blob) - 100]
    (tmp_path / "open.jp2").write_bytes(open_ended)
    assert read_jp2_info(tmp_path / "open.jp2").complete is False

    # a JP2 without the XML box: info reads, the header does not
    plain = tmp_path / "plain.jp2"
    Image.fromarray(disk_image(64, 30, 30, 20)).save(plain)
    assert read_jp2_info(plain).xml is None
    with pytest.raises(InputError, match="no Helioviewer XML box"):
        read_jp2_header(plain)


def test_malformed_xml():
    with pytest.raises(InputError, match="malformed XML"):
        parse_helioviewer_xml(b"<meta><fits><A>1</fits></meta>")
    with pytest.raises(InputError, match="no <fits>"):
        parse_helioviewer_xml(b"<meta><other/></meta>")
    with pytest.raises(InputError, match="DTD"):
        parse_helioviewer_xml(b'<!DOCTYPE m [<!ENTITY a "x">]><meta><fits><A>&a;</A></fits></meta>')


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("name", [HMI, EUI])
def test_geometry_matches_wcs_on_real_files(sunpy_test_data, name):
    # EUI is the hard case: off-centre reference value and a 4.3 deg roll
    path = sunpy_test_data / name
    header = read_jp2_header(path)
    info = read_jp2_info(path)
    shape = (info.height, info.width)
    geo = disk_geometry(header, shape, shape)
    x, y = wcs_centre(header, info.height)
    assert geo["center_x"] == pytest.approx(x, abs=1e-6)
    assert geo["center_y"] == pytest.approx(y, abs=1e-6)
    assert geo["radius_px"] == pytest.approx(float(header["RSUN_OBS"]) / float(header["CDELT1"]))


def test_geometry_matches_sunpy_map(sunpy_test_data):
    _need_sunpy_jp2_reader()
    pytest.importorskip("reproject", reason="sunpy.map needs reproject, not installed")
    import astropy.units as u
    import sunpy.map
    from astropy.coordinates import SkyCoord

    path = sunpy_test_data / HMI
    smap = sunpy.map.Map(path)  # sunpy flips the stored array: its row 0 is the bottom
    centre = smap.world_to_pixel(SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=smap.coordinate_frame))
    geo = disk_geometry(read_jp2_header(path), smap.data.shape, smap.data.shape)
    assert geo["center_x"] == pytest.approx(centre.x.value, abs=1e-6)
    assert geo["center_y"] == pytest.approx(smap.data.shape[0] - 1 - centre.y.value, abs=1e-6)
    assert geo["radius_px"] == pytest.approx((smap.rsun_obs / smap.scale[0]).value)


@pytest.mark.parametrize(
    "extra",
    [
        {"CRVAL1": 300.0, "CRVAL2": -150.0},
        {"CROTA2": 30.0, "CRVAL1": 200.0, "CRVAL2": 100.0, "CDELT2": 1.5},
        {"CROTA2": 180.0, "CRVAL1": -5000.0, "CRVAL2": 4000.0},
        {"PC1_1": 0.8, "PC1_2": -0.6, "PC2_1": 0.6, "PC2_2": 0.8, "CRVAL1": 90.0},
        {"CUNIT1": "deg", "CUNIT2": "deg", "CDELT1": 2 / 3600, "CDELT2": 2 / 3600, "CRVAL1": 0.1},
    ],
)
def test_geometry_matches_wcs_synthetic(extra):
    wcs_keys = {"CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN", "CUNIT1": "arcsec", "CUNIT2": "arcsec"}
    header = {k: str(v) for k, v in {**HEADER, **wcs_keys}.items()}
    header.update({k: str(v) for k, v in extra.items()})
    geo = disk_geometry(header, (1000, 1024), (1000, 1024))
    x, y = wcs_centre(header, 1000)
    assert geo["center_x"] == pytest.approx(x, abs=1e-6)
    assert geo["center_y"] == pytest.approx(y, abs=1e-6)


def test_geometry_radius_from_distance():
    import astropy.units as u
    from sunpy.coordinates.sun import _angular_radius

    header = {k: v for k, v in HEADER.items() if k != "RSUN_OBS"}
    header.update(DSUN_OBS=1.47e11, RSUN_REF=6.96e8)
    geo = disk_geometry(header, (1024, 1024), (1024, 1024))
    expected = _angular_radius(6.96e8 * u.m, 1.47e11 * u.m).to_value(u.arcsec)
    assert geo["rsun_obs"] == pytest.approx(expected, rel=1e-9)
    del header["RSUN_REF"]  # sunpy's nominal radius then
    expected = _angular_radius(695_700_000 * u.m, 1.47e11 * u.m).to_value(u.arcsec)
    assert disk_geometry(header, (1024, 1024), (1024, 1024))["rsun_obs"] == pytest.approx(expected)


def test_geometry_follows_the_decoded_pixels(tmp_path):
    # Draw a disk where the header says it is (FITS row 1 at the bottom, stored flipped),
    # decode it at full and reduced resolution, and find it where the geometry says.
    n, cdelt, rsun = 1024, 2.0, 700.0
    crpix1, crpix2 = 498.3, 530.6  # disk centre in FITS pixels (CRVAL = 0)
    cx, cy = crpix1 - 1, n - crpix2  # stored, 0-based
    header = {**HEADER, "CRPIX1": crpix1, "CRPIX2": crpix2, "CDELT1": cdelt, "CDELT2": cdelt}
    header["RSUN_OBS"] = rsun
    path = tmp_path / "disk.jp2"
    write_helioviewer_jp2(path, disk_image(n, cx, cy, rsun / cdelt), header)
    hdr = read_jp2_header(path)

    for reduce, out in [(0, 1024), (0, 128), (2, 256), (3, 128), (2, 200)]:
        with Image.open(path) as im:
            im.reduce = reduce
            im.load()
            img = im.resize((out, out), Image.Resampling.BOX) if im.size[0] != out else im.copy()
        geo = disk_geometry(hdr, (n, n), (out, out), reduce=reduce)
        x, y, r = centroid(np.asarray(img))
        # integer factors are exact up to noise; other factors add resampling ripple
        tol = 0.02 if (1024 >> reduce) % out == 0 or out % (1024 >> reduce) == 0 else 0.08
        assert geo["center_x"] == pytest.approx(x, abs=tol), (reduce, out)
        assert geo["center_y"] == pytest.approx(y, abs=tol), (reduce, out)
        assert geo["radius_px"] == pytest.approx(r, rel=2e-3), (reduce, out)


def test_geometry_header_at_other_resolution():
    # sunpy's AIA test JP2 is 410 px wide with a 4096 px header: NAXIS rescales it
    full = {**HEADER, "NAXIS1": 4096, "NAXIS2": 4096, "CRPIX1": 2048.5, "CRPIX2": 2000.5}
    full["CDELT1"] = full["CDELT2"] = 0.5
    quarter = {**HEADER, "NAXIS1": 1024, "NAXIS2": 1024, "CRPIX1": 512.5, "CRPIX2": 500.5}
    quarter["CDELT1"] = quarter["CDELT2"] = 2.0
    a = disk_geometry(full, (1024, 1024), (512, 512))
    b = disk_geometry(quarter, (1024, 1024), (512, 512))
    for key in ("center_x", "center_y", "radius_px"):
        assert a[key] == pytest.approx(b[key])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"DATE-OBS": "2011-01-01T00:00:00.35"}, "2011-01-01T00:00:00.350"),
        ({"DATE_OBS": "2013-06-24T17:31:30.84Z"}, "2013-06-24T17:31:30.840"),
        ({"date-obs": "2012-03-07 00:24:05"}, "2012-03-07T00:24:05.000"),
        ({"DATE-OBS": "2013/05/13", "TIME-OBS": "16:54:06.137"}, "2013-05-13T16:54:06.137"),
        ({"DATE-OBS": "2015-06-30T23:59:59.9996"}, "2015-07-01T00:00:00.000"),
        ({"T_OBS": "2023.01.31_03:40:22.661_TAI"}, "2023-01-31T03:39:45.661"),
    ],
)
def test_observation_time(header, expected):
    assert observation_time(header) == expected


def test_geometry_errors_name_the_field_and_file():
    with pytest.raises(InputError, match="no observation time") as err:
        observation_time({"CRPIX1": "1"})
    assert err.value.field == "DATE-OBS"
    with pytest.raises(InputError, match="invalid observation time"):
        observation_time({"DATE-OBS": "2011-13-01T00:00:00"})
    bad = {**HEADER, "CDELT1": "n/a"}
    with pytest.raises(InputError, match="not a number") as err:
        disk_geometry(bad, (64, 64), (64, 64), path="a/b.jp2")
    assert (err.value.field, err.value.path) == ("CDELT1", "a/b.jp2")
    assert str(err.value).startswith("a/b.jp2, field 'CDELT1': ")
    no_radius = {k: v for k, v in HEADER.items() if k != "RSUN_OBS"}
    with pytest.raises(InputError, match="no solar radius"):
        disk_geometry(no_radius, (64, 64), (64, 64))
