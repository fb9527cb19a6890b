"""The FITS row reader: the full average from the rows it decompresses, or sampled rows.

By default every row is decompressed (fdflare's reader, not astropy's whole-image one) and
the image is the exact block mean of the full-resolution grey levels. Sampled rows
(``rows_per_block``), measured on these fields (512 -> 64 px, 8 x 8 blocks; 8 G noise, two
+1200/-900 G regions clipped at +-250 G, NaN beyond the limb): one row per block differs
from the block mean by 1.1 grey levels on average (median 1, 99th percentile 9, at most 60
at the sharp edges of clipped regions), two rows by 0.77 (median 0, 99th percentile 8, at
most 28). The geometry is the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from fdflare.core.errors import InputError
from fdflare.prepare.fits import (
    decode_fits_with_geometry,
    north_up,
    parse_scaling,
    read_fits,
    reduced_rows,
    scale_field,
)
from fdflare.prepare.fitsrows import open_row_tiles
from fdflare.prepare.pipeline import prepare
from hmi_fits import hmi_field, hmi_header, write_hmi_fits

N, SIZE = 512, 64
GEOMETRY = ("center_x", "center_y", "radius_px", "crota2", "rsun_obs", "b0_deg", "date_obs")


def _record(tmp_path, *, integer=False, crota2=179.929779, seed=1, **compression):
    header = hmi_header(N, "2014.03.01_00:00:00_TAI", crota2=crota2)
    field = hmi_field(N, header, seed=seed)
    name = f"hmi_{int(integer)}_{crota2:g}_{seed}.fits"
    return write_hmi_fits(tmp_path / name, field, header, integer=integer, **compression)


def _stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    diff = np.abs(a.astype(int) - b.astype(int))
    return float(diff.mean()), float(np.median(diff)), float(np.percentile(diff, 99))


@pytest.mark.parametrize("integer", [False, True], ids=["float", "int32-bscale"])
@pytest.mark.parametrize("crota2", [179.929779, 0.0], ids=["upside-down", "north-up"])
def test_row_reader_matches_the_full_average(tmp_path, integer, crota2):
    path = _record(tmp_path, integer=integer, crota2=crota2)
    tiles = open_row_tiles(path)
    assert tiles is not None and tiles.shape == (N, N)  # the row reader is taken
    # the exact block mean of the full-resolution grey levels, rounded half up
    data, header = read_fits(path)
    stored, turned = north_up(data, header)
    grey = scale_field(stored, turned, parse_scaling("helioviewer")).astype(np.int64)
    f = N // SIZE
    exact = np.floor(grey.reshape(SIZE, f, SIZE, f).sum(axis=(1, 3)) / f**2 + 0.5)
    every, geo = decode_fits_with_geometry(path, SIZE)
    assert every.shape == (SIZE, SIZE) and every.dtype == np.uint8
    assert np.array_equal(every, exact)
    # astropy's whole image through Pillow's box filter, which rounds after each axis
    full, geo_full = decode_fits_with_geometry(path, SIZE, full_decode=True)
    assert np.abs(every.astype(int) - full.astype(int)).max() <= 1
    one, geo_one = decode_fits_with_geometry(path, SIZE, rows_per_block=1)
    two, geo_two = decode_fits_with_geometry(path, SIZE, rows_per_block=2)
    for key in GEOMETRY:
        assert geo[key] == geo_one[key] == geo_full[key] == geo_two[key]
    mean, median, p99 = _stats(one, every)
    assert mean < 1.5 and median <= 1 and p99 <= 12  # measured: 1.1, 1, 9
    mean, median, p99 = _stats(two, every)
    assert mean < 1.0 and median <= 1 and p99 <= 10  # measured: 0.77, 0, 8
    # north up, west right: +1200 G at 600" north is bright, -900 G at 600" west dark
    scale = geo["rsun_obs"] / geo["radius_px"]
    cy, cx = geo["center_y"], geo["center_x"]
    for img in (every, one, two):
        assert img[round(cy - 600 / scale), round(cx)] > 200
        assert img[round(cy), round(cx + 600 / scale)] < 60
        assert img[0, 0] == 0 and abs(int(img[round(cy), round(cx)]) - 127) <= 3


def test_columns_exact_on_a_field_constant_down_the_rows(tmp_path):
    """A field that changes only along the rows: every row of a block is alike.

    Inside the disk the reduced pixel is then the block mean (to one grey level of float
    rounding), so a column flipped or shifted would show. Blocks the limb crosses differ
    (measured: 2.1 grey levels on average, 37 at most, where few of the block's pixels are
    on the disk): the picked row's on-disk columns are not those of the block's other rows.
    """
    header = hmi_header(N, "2014.03.01_00:00:00_TAI")
    cols = np.arange(N, dtype=np.float32)
    field = np.broadcast_to(np.sin(cols / 9.0) * 300.0, (N, N)).astype(np.float32)
    path = write_hmi_fits(tmp_path / "stripes.fits", field, header, integer=True)
    full, geo = decode_fits_with_geometry(path, SIZE)
    one, _ = decode_fits_with_geometry(path, SIZE, rows_per_block=1)
    diff = np.abs(one.astype(int) - full.astype(int))
    rows, cols = np.indices(full.shape)
    inside = np.hypot(rows - geo["center_y"], cols - geo["center_x"]) < geo["radius_px"] - 1
    assert diff[inside].max() <= 1
    assert diff[~inside & (full > 0)].mean() < 4 and diff.max() <= 40  # measured: 2.1, 37
    flipped = np.abs(one[:, ::-1].astype(int) - full.astype(int))
    assert flipped.mean() > 10  # the test can tell the columns' order


def test_only_the_picked_rows_are_decompressed(tmp_path):
    """Rows one row per block does not pick are damaged: its image does not change."""
    path = _record(tmp_path, integer=True)
    before, _ = decode_fits_with_geometry(path, SIZE, rows_per_block=1)
    tiles = open_row_tiles(path)
    assert tiles is not None
    factor = N // SIZE
    # upside down (CROTA2 ~ 180): stored row s is FITS array row s
    picked = {i * factor + r for i in range(SIZE) for r in reduced_rows(factor, 1)}
    from astropy.io import fits

    with fits.open(path, disable_image_compression=True) as hdul:
        table = hdul[1]
        assert table.header["TFORM1"].startswith("1P") and table.header["NAXIS1"] == 8
        at = table.fileinfo()["datLoc"]
    raw = bytearray(path.read_bytes())
    # one (count, heap offset) descriptor per tile row; the heap follows the table
    descriptors = np.frombuffer(bytes(raw[at : at + 8 * N]), ">i4").reshape(N, 2)
    start = at + 8 * N
    for row, (count, offset) in enumerate(descriptors):
        if row not in picked and count > 8:
            raw[start + offset + 4 : start + offset + count] = b"\xff" * (count - 4)
    damaged = tmp_path / "damaged.fits"
    damaged.write_bytes(bytes(raw))
    after, _ = decode_fits_with_geometry(damaged, SIZE, rows_per_block=1)
    assert np.array_equal(before, after)
    # reading every row trips over the damage, and so does astropy's whole-image read
    for kwargs in ({}, {"full_decode": True}):
        with pytest.raises(InputError, match="not a readable FITS file"):
            decode_fits_with_geometry(damaged, SIZE, **kwargs)


@pytest.mark.parametrize(
    ("compression", "size"),
    [
        ({"tile_shape": (64, 64)}, SIZE),  # square tiles: a row needs a row of tiles
        ({"quantize_method": 1}, SIZE),  # SUBTRACTIVE_DITHER_1: astropy undoes the dither
        ({}, 100),  # 512 is not a multiple of 100
    ],
    ids=["square-tiles", "dithered", "no-integer-factor"],
)
def test_other_files_take_the_full_path(tmp_path, compression, size):
    path = _record(tmp_path, **compression)
    full, geo_full = decode_fits_with_geometry(path, size, full_decode=True)
    for rows in (None, 1):
        img, geo = decode_fits_with_geometry(path, size, rows_per_block=rows)
        assert np.array_equal(img, full) and geo == geo_full


def test_uncompressed_fits_and_bad_arguments(tmp_path):
    from astropy.io import fits

    header = hmi_header(N, "2014.03.01_00:00:00_TAI")
    field = hmi_field(N, header)
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(field, header=fits.Header(list(header.items()))).writeto(path)
    assert open_row_tiles(path) is None
    reduced, _ = decode_fits_with_geometry(path, SIZE, rows_per_block=1)
    full, _ = decode_fits_with_geometry(path, SIZE, full_decode=True)
    assert np.array_equal(reduced, full)
    with pytest.raises(ValueError, match="rows_per_block"):
        decode_fits_with_geometry(path, SIZE, rows_per_block=3)


def test_truncated_file_is_an_input_error(tmp_path):
    path = _record(tmp_path, integer=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="FITS"):
        decode_fits_with_geometry(cut, SIZE)


def test_prepare_full_decode_reads_fits_whole(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    path = _record(src)
    for full_decode in (False, True):
        out = tmp_path / f"out{int(full_decode)}"
        result = prepare(
            src,
            out,
            size=SIZE,
            workers=1,
            array_store=False,
            progress=False,
            full_decode=full_decode,
        )
        assert (result.prepared, result.failed) == (1, 0)
        from PIL import Image

        img = np.asarray(Image.open(out / path.with_suffix(".png").name))
        expected, _ = decode_fits_with_geometry(path, SIZE, full_decode=full_decode)
        assert np.array_equal(img, expected)
