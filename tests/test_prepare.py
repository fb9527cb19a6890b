"""The prepare stage: JP2 tree -> small images, geometry.csv, bad files, resume, array store."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fdflare.cli import main
from fdflare.core.errors import InputError, MissingDataError
from fdflare.prepare.decode import choose_reduce, decode_jp2
from fdflare.prepare.geometry import disk_geometry
from fdflare.prepare.jp2 import read_jp2_header, write_helioviewer_jp2
from fdflare.prepare.pack import build_array_store
from fdflare.prepare.pipeline import BAD_FILES_COLUMNS, GEOMETRY_COLUMNS, prepare, read_geometry
from fdflare.prepare.store import open_array_store
from fdflare.prepare.workers import run_tasks

HMI = "2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2"


def magnetogram(n: int, cx: float, cy: float, r: float, seed: int) -> np.ndarray:
    """An HMI-like 8-bit magnetogram: grey disk with bipolar spots, dark sky."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.float32)[:, None]
    x = np.arange(n, dtype=np.float32)[None, :]
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    field = 128 + rng.normal(0, 6, (n, n)).astype(np.float32)
    s = r * 0.03
    for _ in range(4):
        px, py = rng.uniform(-0.6, 0.6, 2) * r
        for sign, dx in ((1, -s), (-1, s)):
            # separable Gaussian spot, evaluated in a window around it
            x0, y0 = cx + px + dx, cy + py
            i0, i1 = int(max(0, y0 - 5 * s)), int(min(n, y0 + 5 * s))
            j0, j1 = int(max(0, x0 - 5 * s)), int(min(n, x0 + 5 * s))
            gy = np.exp(-((y[i0:i1] - y0) ** 2) / (2 * s * s))
            gx = np.exp(-((x[:, j0:j1] - x0) ** 2) / (2 * s * s))
            field[i0:i1, j0:j1] += sign * 100 * gy * gx
    img = np.where(inside, np.clip(np.rint(field), 1, 255), 0)
    return img.astype(np.uint8)


def write_magnetogram(
    path: Path, n: int, date_obs: str, *, seed: int = 0, num_resolutions: int = 6, **extra
) -> dict:
    """A Helioviewer-style JP2 whose header says where the drawn disk is."""
    cdelt = 0.504 * 4096 / n
    rsun = 975.0
    cx, cy = n / 2 - 0.5 + 3.3 * n / 1024, n / 2 - 0.5 - 2.1 * n / 1024  # stored pixels
    header = {
        "DATE-OBS": date_obs,
        "NAXIS1": n,
        "NAXIS2": n,
        "CTYPE1": "HPLN-TAN",
        "CTYPE2": "HPLT-TAN",
        "CUNIT1": "arcsec",
        "CUNIT2": "arcsec",
        "CRPIX1": cx + 1,
        "CRPIX2": n - cy,
        "CRVAL1": 0.0,
        "CRVAL2": 0.0,
        "CDELT1": cdelt,
        "CDELT2": cdelt,
        "CROTA2": 0.0,
        "RSUN_OBS": rsun,
        "HV_ROTATION": 0.0,
        **extra,
    }
    data = magnetogram(n, cx, cy, rsun / cdelt, seed)
    write_helioviewer_jp2(path, data, header, num_resolutions=num_resolutions)
    return header


@pytest.fixture(scope="session")
def big_jp2(tmp_path_factory) -> Path:
    """One 4096 x 4096 Helioviewer-style JP2 (the study's input size)."""
    path = tmp_path_factory.mktemp("big") / "HMI.m2012.03.07_00.00.00.jp2"
    write_magnetogram(path, 4096, "2012-03-07T00:00:05.200", seed=7)
    return path


@pytest.fixture(scope="session")
def small_jp2s(tmp_path_factory) -> dict[str, Path]:
    """A few 1024 x 1024 JP2s at study-layout paths, made once."""
    root = tmp_path_factory.mktemp("small")
    out = {}
    for i, stamp in enumerate(
        ["2011.01.01_00.00.00", "2011.01.01_01.00.00", "2011.01.02_00.00.00"]
    ):
        day = stamp[:10].replace(".", "/")
        rel = f"{day}/HMI.m{stamp}.jp2"
        iso = stamp[:10].replace(".", "-") + "T" + stamp[11:].replace(".", ":") + ".35"
        write_magnetogram(root / rel, 1024, iso, seed=i)
        out[rel] = root / rel
    return out


@pytest.fixture
def tree(tmp_path, small_jp2s, sunpy_test_data) -> Path:
    """A source tree: three 1024 px JP2s and sunpy's real Helioviewer HMI JP2 (512 px)."""
    src = tmp_path / "src"
    for rel, path in small_jp2s.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / rel)
    (src / "real").mkdir()
    shutil.copy(sunpy_test_data / HMI, src / "real" / HMI)
    return src


def no_partial_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


def weighted_centre(img: np.ndarray) -> tuple[float, float]:
    w = img.astype(float)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("width", "height", "size", "levels", "expected"),
    [
        (4096, 4096, 512, 5, 3),
        (4096, 4096, 500, 5, 3),
        (4096, 4096, 513, 5, 2),
        (4096, 4096, 512, 2, 2),
        (4096, 4096, 4096, 5, 0),
        (1000, 1000, 250, 5, 2),
        (1000, 1000, 251, 5, 1),
        (4096, 2048, 512, 5, 2),
        (512, 512, 1024, 5, 0),
    ],
)
def test_choose_reduce(width, height, size, levels, expected):
    assert choose_reduce(width, height, size, levels) == expected


def test_reduced_decode_matches_full_decode(big_jp2):
    reduced, k = decode_jp2(big_jp2, 512)
    full, k_full = decode_jp2(big_jp2, 512, full_decode=True)
    assert (k, k_full) == (3, 0)
    assert reduced.shape == full.shape == (512, 512) and reduced.dtype == np.uint8
    diff = np.abs(reduced.astype(int) - full.astype(int))
    # same picture: the low-pass band sits 0.44 px off the box average, so only edges differ
    assert diff.mean() < 2.0
    assert np.percentile(diff, 99) < 25
    assert np.corrcoef(reduced.ravel(), full.ravel())[0, 1] > 0.99
    # and the geometry of each path describes its own pixels
    header = read_jp2_header(big_jp2)
    for img, kk in ((reduced, k), (full, k_full)):
        geo = disk_geometry(header, (4096, 4096), (512, 512), reduce=kk)
        x, y = weighted_centre(img > 0)
        assert (geo["center_x"], geo["center_y"]) == pytest.approx((x, y), abs=0.05)


def test_fallback_when_levels_do_not_allow(tmp_path):
    path = tmp_path / "flat.jp2"
    write_magnetogram(path, 1024, "2011-01-01T00:00:00", num_resolutions=1)  # no wavelet levels
    img, k = decode_jp2(path, 256)
    assert k == 0
    with Image.open(path) as im:
        np.testing.assert_array_equal(img, np.asarray(im.resize((256, 256), Image.Resampling.BOX)))
    one_level = tmp_path / "one.jp2"
    write_magnetogram(one_level, 1024, "2011-01-01T00:00:00", num_resolutions=2)
    img2, k2 = decode_jp2(one_level, 256)  # 1024 -> 512 by the decoder, then 512 -> 256
    assert k2 == 1 and img2.shape == (256, 256)
    assert np.abs(img2.astype(int) - img.astype(int)).mean() < 2.0


def test_decode_rejects_non_grey(tmp_path):
    rgb = tmp_path / "rgb.jp2"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(rgb)
    with pytest.raises(InputError, match="one unsigned 8-bit component, found 3"):
        decode_jp2(rgb, 32)


# --------------------------------------------------------------------------- the batch


def test_prepare_png_tree_and_geometry(tree, tmp_path):
    out = tmp_path / "out"
    result = prepare(tree, out, size=256, workers=1, progress=False)
    assert (result.total, result.prepared, result.up_to_date, result.failed) == (4, 4, 0, 0)

    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert made == [
        "2011/01/01/HMI.m2011.01.01_00.00.00.png",
        "2011/01/01/HMI.m2011.01.01_01.00.00.png",
        "2011/01/02/HMI.m2011.01.02_00.00.00.png",
        f"real/{HMI[:-4]}.png",
    ]
    geometry = pd.read_csv(out / "geometry.csv")
    assert tuple(geometry.columns) == GEOMETRY_COLUMNS
    assert geometry["path"].tolist() == made
    assert pd.read_csv(out / "bad_files.csv").empty
    assert tuple(pd.read_csv(out / "bad_files.csv").columns) == BAD_FILES_COLUMNS
    assert no_partial_files(out)

    for row in geometry.itertuples():
        source = tree / row.source
        with Image.open(out / row.path) as im:
            assert (im.size, im.mode, im.format) == ((256, 256), "L", "PNG")
            pixels = np.asarray(im)
        expected, k = decode_jp2(source, 256)
        np.testing.assert_array_equal(pixels, expected)
        header = read_jp2_header(source)
        geo = disk_geometry(header, (row.src_height, row.src_width), (256, 256), reduce=k)
        assert row.reduce == k
        assert row.date_obs == geo["date_obs"]
        for key in ("center_x", "center_y", "radius_px"):
            assert getattr(row, key) == pytest.approx(geo[key], abs=1e-6)

    real = geometry.set_index("source").loc[f"real/{HMI}"]
    assert real["date_obs"] == "2023-01-31T03:39:23.200"
    assert (real["src_width"], real["reduce"]) == (512, 1)
    # FITS centre 256.5 of 512 -> stored 255.5 -> decoded at half size: 127.75
    assert real["center_x"] == pytest.approx(127.75)
    assert real["radius_px"] == pytest.approx(973.96844 / 4.80000016 / 2, rel=1e-6)
    first = geometry.iloc[0]
    assert first["date_obs"] == "2011-01-01T00:00:00.350"


def test_geometry_describes_the_written_pixels(big_jp2, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(big_jp2, src / big_jp2.name)
    out = tmp_path / "out"
    prepare(src, out, size=512, workers=1, progress=False)
    row = read_geometry(out).iloc[0]
    with Image.open(out / row["path"]) as im:
        img = np.asarray(im).astype(float)
    x, y = weighted_centre(img > 0)
    assert (row["center_x"], row["center_y"]) == pytest.approx((x, y), abs=0.05)
    # area: pixels well inside, plus the covered fraction of pixels near the limb (grey 128)
    yy, xx = np.mgrid[0:512, 0:512]
    d = np.hypot(xx - x, yy - y)
    r = row["radius_px"]
    area = (d < r - 3).sum() + np.clip(img[(d >= r - 3) & (d < r + 3)] / 128, 0, 1).sum()
    assert r == pytest.approx(math.sqrt(area / math.pi), abs=0.1)
    assert row["reduce"] == 3 and row["src_width"] == 4096


def test_prepare_jpg_in_source_tree(tree):
    # the study's layout: JPGs beside the JP2s
    first = prepare(tree, tree, size=256, fmt="jpg", workers=1, progress=False)
    assert (first.prepared, first.failed, first.ignored) == (4, 0, 0)
    jpg = tree / "2011/01/01/HMI.m2011.01.01_00.00.00.jpg"
    with Image.open(jpg) as im:
        assert (im.format, im.size, im.mode) == ("JPEG", (256, 256), "L")
        pixels = np.asarray(im).astype(int)
    expected, _ = decode_jp2(tree / "2011/01/01/HMI.m2011.01.01_00.00.00.jp2", 256)
    assert np.abs(pixels - expected).mean() < 1.5  # quality 95
    again = prepare(tree, tree, size=256, fmt="jpg", workers=1, progress=False)
    assert (again.total, again.prepared, again.up_to_date, again.ignored) == (4, 0, 4, 0)


def test_resume(tree, tmp_path):
    out = tmp_path / "out"
    prepare(tree, out, size=128, workers=1, progress=False)
    images = sorted(out.rglob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in images}
    geometry_text = (out / "geometry.csv").read_text()

    again = prepare(tree, out, size=128, workers=1, progress=False)
    assert (again.prepared, again.up_to_date) == (0, 4)
    assert {p: p.stat().st_mtime_ns for p in images} == stamps  # nothing rewritten
    assert (out / "geometry.csv").read_text() == geometry_text

    images[1].unlink()  # a deleted output is redone, and only it
    redo = prepare(tree, out, size=128, workers=1, progress=False)
    assert (redo.prepared, redo.up_to_date) == (1, 3)
    assert images[1].exists()
    assert (out / "geometry.csv").read_text() == geometry_text

    # a newer JP2 (downloaded again) is redone
    source = tree / "2011/01/02/HMI.m2011.01.02_00.00.00.jp2"
    older = source.stat().st_mtime_ns - 10**9
    os.utime(images[2], ns=(older, older))
    assert prepare(tree, out, size=128, workers=1, progress=False).prepared == 1

    # a lost geometry.csv is rebuilt from the headers, without decoding again
    (out / "geometry.csv").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in images}
    rebuilt = prepare(tree, out, size=128, workers=1, progress=False)
    assert (rebuilt.prepared, rebuilt.up_to_date) == (0, 4)
    assert {p: p.stat().st_mtime_ns for p in images} == stamps
    assert (out / "geometry.csv").read_text() == geometry_text

    # another size redoes everything
    assert prepare(tree, out, size=64, workers=1, progress=False).prepared == 4

    # rows of images whose JP2 was removed (to save space) are kept
    shutil.rmtree(tree / "2011/01/02")
    kept = prepare(tree, out, size=64, workers=1, progress=False)
    assert (kept.total, kept.kept, len(kept.geometry)) == (3, 1, 4)


def test_bad_files_reported_batch_carries_on(tree, tmp_path, small_jp2s):
    good = next(iter(small_jp2s.values())).read_bytes()
    bad_dir = tree / "2011/01/03"
    bad_dir.mkdir(parents=True)
    (bad_dir / "HMI.m2011.01.03_00.00.00.jp2").write_bytes(b"")
    (bad_dir / "HMI.m2011.01.03_01.00.00.jp2").write_bytes(good[: len(good) // 2])
    (bad_dir / "HMI.m2011.01.03_02.00.00.jp2").write_text("<html>502 Bad Gateway</html>")
    # cut at the end: the low-resolution data a reduced decode needs is all there
    jp2c = good.index(b"jp2c") - 4
    cut = good[:jp2c] + b"\x00\x00\x00\x00" + good[jp2c + 4 : -1000]
    (bad_dir / "HMI.m2011.01.03_03.00.00.jp2").write_bytes(cut)
    plain = bad_dir / "HMI.m2011.01.03_04.00.00.jp2"
    Image.fromarray(magnetogram(256, 128, 128, 100, 0)).save(plain)  # no XML header
    no_scale = bad_dir / "HMI.m2011.01.03_05.00.00.jp2"
    write_magnetogram(no_scale, 256, "2011-01-03T05:00:00", CDELT1="")

    out = tmp_path / "out"
    result = prepare(tree, out, size=128, workers=1, progress=False)
    assert (result.total, result.prepared, result.failed) == (10, 4, 6)
    bad = pd.read_csv(out / "bad_files.csv").set_index("path")["reason"]
    prefix = "2011/01/03/HMI.m2011.01.03_"
    assert "empty file" in bad[prefix + "00.00.00.jp2"]
    assert "truncated file" in bad[prefix + "01.00.00.jp2"]
    assert "not a JPEG 2000 file" in bad[prefix + "02.00.00.jp2"]
    assert "no end marker" in bad[prefix + "03.00.00.jp2"]
    assert "no Helioviewer XML box" in bad[prefix + "04.00.00.jp2"]
    assert bad[prefix + "05.00.00.jp2"] == "field 'CDELT1': header keyword CDELT1 is missing"
    assert not (out / "2011/01/03").exists()  # no output at all for bad files
    assert no_partial_files(out)
    assert len(read_geometry(out)) == 4

    # fixing a file and re-running clears it from the report
    (bad_dir / "HMI.m2011.01.03_00.00.00.jp2").write_bytes(good)
    again = prepare(tree, out, size=128, workers=1, progress=False)
    assert (again.prepared, again.failed) == (1, 5)
    assert len(pd.read_csv(out / "bad_files.csv")) == 5


def test_parallel_run_matches_serial(tree, tmp_path):
    serial = prepare(tree, tmp_path / "a", size=128, workers=1, progress=False)
    parallel = prepare(tree, tmp_path / "b", size=128, workers=2, progress=False)
    assert parallel.prepared == serial.prepared == 4
    pd.testing.assert_frame_equal(serial.geometry, parallel.geometry)
    for rel in serial.geometry["path"]:
        a = np.asarray(Image.open(tmp_path / "a" / rel))
        np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "b" / rel)))


def _die_on_crash(name: str) -> dict:
    """Worker task for the crash test: a real worker process exits on one input."""
    if name == "crash":
        os._exit(3)
    return {"row": name}


def test_worker_crash_is_reported_and_batch_carries_on():
    results = {}
    run_tasks(_die_on_crash, ["a", "crash", "b", "c"], 2, results.__setitem__)
    assert results["crash"] == {"bad": "the decoder crashed on this file (worker process died)"}
    assert {k: v for k, v in results.items() if k != "crash"} == {
        "a": {"row": "a"},
        "b": {"row": "b"},
        "c": {"row": "c"},
    }


def test_arguments_checked(tree, tmp_path):
    with pytest.raises(MissingDataError, match="not found"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(InputError, match="unknown image format 'gif'"):
        prepare(tree, tmp_path / "out", fmt="gif")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        prepare(tree, tmp_path / "file")
    out = tmp_path / "out2"
    out.mkdir()
    (out / "geometry.csv").write_text("path,date_obs\nx.png,2011-01-01\n")
    with pytest.raises(InputError, match="missing column"):
        prepare(tree, out, workers=1, progress=False)


# --------------------------------------------------------------------------- array store


def test_array_store_round_trip(tree, tmp_path, small_jp2s):
    out = tmp_path / "out"
    with pytest.raises(MissingDataError, match="--array-store"):
        open_array_store(out)
    result = prepare(tree, out, size=128, workers=1, array_store=True, progress=False)
    images, index = open_array_store(out)
    assert isinstance(images, np.memmap) and images.dtype == np.uint8
    assert images.shape == (4, 128, 128)
    assert index["row"].tolist() == [0, 1, 2, 3]
    assert index["path"].tolist() == result.geometry["path"].tolist()
    for row, rel in zip(index["row"], index["path"], strict=True):
        np.testing.assert_array_equal(images[row], np.asarray(Image.open(out / rel)))
    del images

    stamp = (out / "images.npy").stat().st_mtime_ns
    prepare(tree, out, size=128, workers=1, array_store=True, progress=False)
    assert (out / "images.npy").stat().st_mtime_ns == stamp  # up to date: not rebuilt

    extra = tree / "2011/01/05/HMI.m2011.01.05_00.00.00.jp2"
    extra.parent.mkdir(parents=True)
    shutil.copy(next(iter(small_jp2s.values())), extra)
    prepare(tree, out, size=128, workers=2, array_store=True, progress=False)
    images, index = open_array_store(out)
    assert images.shape == (5, 128, 128)
    row = index.set_index("path").loc["2011/01/05/HMI.m2011.01.05_00.00.00.png", "row"]
    np.testing.assert_array_equal(images[row], images[0])  # same JP2 content as the first
    assert no_partial_files(out)

    # filling the store from several processes, a few images each, gives the same array
    expected = np.array(images)
    del images
    (out / "images.npy").unlink()
    build_array_store(out, read_geometry(out), 128, workers=2, chunk=2, progress=False)
    images, index = open_array_store(out)
    np.testing.assert_array_equal(images, expected)
    del images

    index.iloc[:-1].to_csv(out / "images_index.csv", index=False)
    with pytest.raises(InputError, match="index has 4 rows"):
        open_array_store(out)


# --------------------------------------------------------------------------- CLI


def cli(argv: list[str]) -> int:
    """Run the real CLI; an argparse error (SystemExit) gives its status like any other."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_cli(tree, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prepare", "--source", str(tree), "--out", str(out), "--image-size", "64"]
    assert main([*argv, "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 JP2 file(s): 4 prepared, 0 up to date, 0 failed" in printed
    assert len(read_geometry(out)) == 4

    (tree / "broken.jp2").write_bytes(b"\x00" * 10)
    assert main([*argv, "--quiet", "--array-store"]) == 1
    captured = capsys.readouterr()
    # --quiet hides the progress bar only: the summary still prints
    assert "5 JP2 file(s): 0 prepared, 4 up to date, 1 failed" in captured.out
    assert "1 file(s) or folder(s) could not be prepared" in captured.err
    assert "bad_files.csv" in captured.err
    assert open_array_store(out)[0].shape == (4, 64, 64)

    assert main(["prepare", "--source", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli(["prepare", "--source", str(tree), "--out", str(out), "--image-size", "0"]) == 2
    assert "--image-size" in capsys.readouterr().err


def test_cli_writes_the_array_store_by_default(tree, tmp_path, capsys):
    argv = ["prepare", "--source", str(tree), "--image-size", "64", "--workers", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "array store:" in capsys.readouterr().out
    images, index = open_array_store(tmp_path / "a")
    assert images.shape == (4, 64, 64) and len(index) == 4
    # the fast path of train and predict: open_images picks the store without being told
    from fdflare.data.sources import ArrayStoreImages, open_images

    assert isinstance(open_images(tmp_path / "a"), ArrayStoreImages)
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-array-store"]) == 0
    assert "array store:" not in capsys.readouterr().out
    assert not (tmp_path / "b" / "images.npy").exists()
    assert len(read_geometry(tmp_path / "b")) == 4


def test_cli_old_spellings_still_work_and_warn(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", str(tree), "--out", str(out), "--size", "64", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "4 prepared" in captured.out
    assert "positional SRC_DIR is deprecated" in captured.err and "--source" in captured.err
    assert "--size is deprecated" in captured.err and "--image-size" in captured.err
    assert read_geometry(out)["width"].tolist() == [64] * 4
    # both spellings of the source at once: one line, nothing done
    assert main(["prepare", str(tree), "--source", str(tree), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give the source once" in err
    assert not (tmp_path / "b").exists()
    assert cli(["prepare", "--out", str(tmp_path / "c")]) == 2
    assert "--source" in capsys.readouterr().err


def test_cli_source_is_a_file(tree, tmp_path, capsys):
    jp2 = tree / "2011/01/01/HMI.m2011.01.01_00.00.00.jp2"
    for argv in (["--source", str(jp2)], [str(jp2)]):
        assert main(["prepare", *argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "is a file; expected a folder of JP2 files" in err, err
        assert "not found" not in err
    assert not (tmp_path / "out").exists()


def test_cli_folder_without_jp2_warns_and_exits_1(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "2011").mkdir(parents=True)
    (src / "2011" / "notes.txt").write_text("no images here\n")
    assert main(["prepare", "--source", str(src), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "0 JP2 file(s)" in captured.out
    assert "warning: no .jp2 file under" in captured.err and "1 other file(s)" in captured.err
    assert "Traceback" not in captured.err


def test_cli_warns_when_it_upsamples(tree, tmp_path, capsys):
    real = tree / "real"  # sunpy's Helioviewer JP2, 512 x 512 pixels
    assert main(["prepare", "--source", str(real), "--out", str(tmp_path / "o"), "--workers", "1",
                 "--image-size", "1024", "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: 1 image(s) come from files smaller than --image-size 1024" in err
    assert "512 x 512" in err and "upsampled" in err
    assert main(["prepare", "--source", str(real), "--out", str(tmp_path / "p"), "--workers", "1",
                 "--image-size", "256", "--quiet"]) == 0  # fmt: skip
    assert "upsampled" not in capsys.readouterr().err


def test_cli_output_checks(tree, tmp_path, capsys):
    before = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*"))
    # --out is the source: refused before any work (nothing written into the source)
    assert main(["prepare", "--source", str(tree), "--out", str(tree)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "input" in err
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == before
    # an existing file as --out
    (tmp_path / "file.txt").write_text("x")
    assert main(["prepare", "--source", str(tree), "--out", str(tmp_path / "file.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err
    # a second run into a folder in use refuses
    from fdflare.core.outputs import output_lock

    busy = tmp_path / "busy"
    with output_lock(busy, command="prepare"):
        assert main(["prepare", "--source", str(tree), "--out", str(busy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err
    assert not (busy / "geometry.csv").exists()


def test_cli_read_only_out_is_one_line_up_front(tree, capsys, read_only_dir):
    assert main(["prepare", "--source", str(tree), "--out", str(read_only_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err
    assert list(read_only_dir.iterdir()) == []


# Run as an unprivileged user: the CLI in a fresh interpreter that drops root (where it runs
# as root) only after everything it needs is imported and warmed up, since the interpreter
# itself may live where that user cannot read (a root-only home).
_UNPRIVILEGED_RUN = r"""
import json, os, sys
from fdflare.cli import main
warm_src, warm_out, argv, uid, gid = json.loads(sys.argv[1])
assert main(["prepare", "--source", warm_src, "--out", warm_out, "--workers", "1", "--quiet",
             "--image-size", "64"]) == 0
if uid is not None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise SystemExit("could not drop root")
sys.exit(main(argv))
"""


def test_cli_reports_unreadable_folders(tmp_path, small_jp2s):
    import json
    import pwd
    import subprocess
    import sys
    import tempfile

    uid = gid = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no user 'nobody' to run prepare as")
        uid, gid = user.pw_uid, user.pw_gid
    # a tree the unprivileged user can read (pytest's tmp folders are private to root)
    root = Path(tempfile.mkdtemp(prefix="fdflare-unreadable-"))
    locked = root / "src" / "2011" / "01" / "02"
    try:
        os.chmod(root, 0o755)
        for rel, path in small_jp2s.items():
            (root / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / "src" / rel)
        (root / "warm").mkdir()
        shutil.copy(next(iter(small_jp2s.values())), root / "warm" / "HMI.m2011.01.01_00.00.00.jp2")
        for p in [root / "src", *(root / "src").rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        (root / "out").mkdir(mode=0o777)
        os.chmod(root / "out", 0o777)
        os.chmod(locked, 0o000)  # holds HMI.m2011.01.02_00.00.00.jp2
        hidden = root / "src" / "2011" / "01" / "01" / "HMI.m2011.01.01_01.00.00.jp2"
        os.chmod(hidden, 0o000)  # a file that cannot be read
        argv = ["prepare", "--source", str(root / "src"), "--out", str(root / "out"),
                "--workers", "1", "--image-size", "64", "--quiet"]  # fmt: skip
        config = json.dumps([str(root / "warm"), str(tmp_path / "warm_out"), argv, uid, gid])
        res = subprocess.run(
            [sys.executable, "-c", _UNPRIVILEGED_RUN, config],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr
        assert "1 folder(s) or link(s) under" in res.stderr and "2011/01/02/" in res.stderr
        # the folder and the file are both counted and listed; the readable file is done
        assert "2 JP2 file(s): 1 prepared, 0 up to date, 2 failed" in res.stdout
        bad = pd.read_csv(root / "out" / "bad_files.csv")
        assert bad["path"].tolist() == ["2011/01/01/HMI.m2011.01.01_01.00.00.jp2", "2011/01/02/"]
        assert "Permission denied" in bad["reason"].iloc[0]
        assert "cannot read this folder" in bad["reason"].iloc[1]
        assert len(pd.read_csv(root / "out" / "geometry.csv")) == 1
    finally:
        if locked.exists():
            os.chmod(locked, 0o755)
        shutil.rmtree(root, ignore_errors=True)
