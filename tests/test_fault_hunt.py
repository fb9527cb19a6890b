"""Faults found by users on the synthetic Sun: linked folders, full disks, stale temporaries,
contradicting label files, calibration maps, bad JP2 headers, shifted CSV rows.

Every case runs the real CLI. The synthetic data are made once per module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clitools import run_cli as cli
from fdflare.cli import main


@pytest.fixture(scope="module")
def jp2_sun(tmp_path_factory) -> Path:
    """Two months of a synthetic Sun as Helioviewer-style JP2 files (daily, 64 px)."""
    root = tmp_path_factory.mktemp("jp2_sun")
    argv = ["synth", "--out", str(root), "--start", "2011-01-01", "--end", "2011-03-01",
            "--cadence", "24h", "--image-size", "32", "--jp2", "--jp2-size", "64", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return root / "jp2"


def _linked_tree(jp2_sun: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A source tree whose February is a link to a folder kept elsewhere."""
    src, elsewhere = tmp_path / "src", tmp_path / "other_disk"
    shutil.copytree(jp2_sun / "2011" / "01", src / "2011" / "01")
    shutil.copytree(jp2_sun / "2011" / "02", elsewhere / "02")
    (src / "2011" / "02").symlink_to(elsewhere / "02", target_is_directory=True)
    return src, elsewhere


# --------------------------------------------------------------------------- linked folders


def test_prepare_follows_a_linked_month(jp2_sun, tmp_path, capsys):
    src, _ = _linked_tree(jp2_sun, tmp_path)
    out = tmp_path / "out"
    code, err = cli(["prepare", "--source", str(src), "--out", str(out), "--image-size", "32",
                     "--workers", "1", "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    geometry = pd.read_csv(out / "geometry.csv")
    assert len(geometry) == 31 + 28
    assert geometry["path"].str.startswith("2011/02/").sum() == 28
    assert (out / "2011" / "02" / "14" / "HMI.m2011.02.14_00.00.00.png").is_file()


def test_prepare_reports_a_link_that_loops(jp2_sun, tmp_path, capsys):
    src, _ = _linked_tree(jp2_sun, tmp_path)
    (src / "2011" / "01" / "01" / "back").symlink_to(src / "2011", target_is_directory=True)
    (src / "2011" / "01" / "02" / "gone").symlink_to(tmp_path / "nowhere")
    out = tmp_path / "out"
    code, err = cli(["prepare", "--source", str(src), "--out", str(out), "--image-size", "32",
                     "--workers", "1", "--quiet"], capsys)  # fmt: skip
    assert code == 1, err  # done, but something was skipped
    assert "Traceback" not in err
    assert "2 folder(s) or link(s) under" in err and "2011/01/01/back/" in err
    bad = pd.read_csv(out / "bad_files.csv")
    reasons = dict(zip(bad["path"], bad["reason"], strict=True))
    assert "loop" in reasons["2011/01/01/back/"]
    assert "points nowhere" in reasons["2011/01/02/gone"]
    assert len(pd.read_csv(out / "geometry.csv")) == 31 + 28


def test_label_follows_a_linked_month_and_reports_a_loop(jp2_sun, tmp_path, capsys):
    src, _ = _linked_tree(jp2_sun, tmp_path)
    (src / "2011" / "01" / "01" / "back").symlink_to(src, target_is_directory=True)
    catalog = jp2_sun.parent / "catalog.csv"
    code, err = cli(["label", "--catalog", str(catalog), "--images", str(src), "--out",
                     str(tmp_path / "labels")], capsys)  # fmt: skip
    assert code == 0, err
    labels = pd.read_csv(tmp_path / "labels" / "labels.csv")
    assert len(labels) == 31 + 28
    assert "skipped 1 folder(s) or link(s)" in err and "2011/01/01/back/" in err
    assert "loop" in err


# --------------------------------------------------------------------------- JP2 headers

# (keyword, value; None removes it): every header keyword is untrusted
BAD_HEADERS = {
    "NAXIS1 zero": ({"NAXIS1": "0"}, "NAXIS1"),
    "NAXIS2 negative": ({"NAXIS2": "-64"}, "NAXIS2"),
    "NAXIS1 nan": ({"NAXIS1": "nan"}, "NAXIS1"),
    "NAXIS1 not a number": ({"NAXIS1": "sixty-four"}, "NAXIS1"),
    "NAXIS1 fractional": ({"NAXIS1": "64.5"}, "NAXIS1"),
    "CDELT1 zero": ({"CDELT1": "0"}, "CDELT1"),
    "CDELT2 nan": ({"CDELT2": "NaN"}, "CDELT2"),
    "CDELT1 infinite": ({"CDELT1": "inf"}, "CDELT1"),
    "CDELT2 not a number": ({"CDELT2": "x"}, "CDELT2"),
    "RSUN_OBS zero": ({"RSUN_OBS": "0"}, "RSUN_OBS"),
    "RSUN_OBS negative": ({"RSUN_OBS": "-975"}, "RSUN_OBS"),
    "RSUN_OBS nan": ({"RSUN_OBS": "nan"}, "RSUN_OBS"),
    "RSUN_OBS not a number": ({"RSUN_OBS": "big"}, "RSUN_OBS"),
    "DSUN_OBS zero": ({"RSUN_OBS": None, "DSUN_OBS": "0"}, "DSUN_OBS"),
    "DSUN_OBS negative": ({"RSUN_OBS": None, "DSUN_OBS": "-1.5e11"}, "DSUN_OBS"),
    "CRPIX1 nan": ({"CRPIX1": "nan"}, "CRPIX1"),
    "CRPIX2 not a number": ({"CRPIX2": "middle"}, "CRPIX2"),
    "CRPIX1 far outside the image": ({"CRPIX1": "-1e6"}, "CRPIX1"),
    "CRPIX2 huge": ({"CRPIX2": "1e308"}, "CRPIX2"),
    "CROTA2 nan": ({"CROTA2": "nan"}, "CROTA2"),
    "CRVAL2 at the pole": ({"CRVAL2": "324000"}, "CRVAL2"),
    "T_OBS bad month": ({"DATE-OBS": None, "DATE_OBS": None, "T_OBS": "2011.13.45_00:00:41.141_TAI"}, "T_OBS"),
    "T_OBS garbage": ({"DATE-OBS": None, "DATE_OBS": None, "T_OBS": "soon\nor later " * 20}, "T_OBS"),
}  # fmt: skip


def _rewrite_header(src: Path, dst: Path, edits: dict[str, str | None]) -> None:
    import numpy as np
    from PIL import Image

    from fdflare.prepare.jp2 import read_jp2_header, write_helioviewer_jp2

    header: dict[str, str | int | float] = dict(read_jp2_header(src))
    for key, value in edits.items():
        if value is None:
            header.pop(key, None)
        else:
            header[key] = value
    with Image.open(src) as im:
        data = np.asarray(im)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_helioviewer_jp2(dst, data, header, num_resolutions=3)


def test_prepare_lists_every_bad_header_and_goes_on(jp2_sun, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(jp2_sun / "2011" / "01" / "01", src / "good")
    good = next((src / "good").glob("*.jp2"))
    names = {}
    for i, (case, (edits, _)) in enumerate(BAD_HEADERS.items()):
        names[case] = f"bad/HMI.m2011.01.02_{i:02d}.00.00.jp2"
        _rewrite_header(good, src / names[case], edits)
    out = tmp_path / "out"
    code, err = cli(["prepare", "--source", str(src), "--out", str(out), "--image-size", "32",
                     "--workers", "1", "--quiet"], capsys)  # fmt: skip
    assert code == 1, err
    assert "Traceback" not in err
    assert len(pd.read_csv(out / "geometry.csv")) == 1  # the good file
    bad = pd.read_csv(out / "bad_files.csv", keep_default_na=False)
    reasons = dict(zip(bad["path"], bad["reason"], strict=True))
    for case, (_, field) in BAD_HEADERS.items():
        reason = reasons.get(names[case])
        assert reason is not None, f"{case}: not in bad_files.csv"
        assert "\n" not in reason and len(reason) <= 200, f"{case}: {reason!r}"
        assert field in reason, f"{case}: {reason!r}"
    assert len(bad) == len(BAD_HEADERS)


def test_forecast_style_decode_refuses_a_zero_naxis(jp2_sun, tmp_path):
    """The in-memory decode (what forecast does with a server's file) raises InputError."""
    from fdflare.core.errors import InputError
    from fdflare.prepare.decode import decode_with_geometry

    good = next((jp2_sun / "2011" / "01" / "01").glob("*.jp2"))
    bad = tmp_path / "HMI.m2011.01.01_00.00.00.jp2"
    _rewrite_header(good, bad, {"NAXIS1": "0"})
    with pytest.raises(InputError, match="NAXIS1"):
        decode_with_geometry(bad, 32)


# --------------------------------------------------------------------------- cv and labels.csv


def test_cv_refuses_fold_files_that_contradict_labels_csv(synthetic_set, tmp_path, capsys):
    labels = tmp_path / "labels"
    shutil.copytree(synthetic_set["labels"], labels)
    val = pd.read_csv(labels / "Fold1_val.csv")
    val["goes_class"] = 1 - val["goes_class"]  # every target flipped
    val.to_csv(labels / "Fold1_val.csv", index=False)
    out = tmp_path / "cv"
    code, err = cli(["cv", "--models", "smallcnn", "--folds", "1", "--labels", str(labels),
                     "--images", str(synthetic_set["images"]), "--out", str(out), "--epochs", "1",
                     "--image-size", "32", "--no-pretrained", "--workers", "0", "--quiet"], capsys)  # fmt: skip
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Fold1_val.csv, line 2, field 'goes_class'" in err
    assert f"{len(val)} of {len(val)} rows disagree" in err and "tolerance 0" in err
    assert not out.exists()


# --------------------------------------------------------------------------- full disk, kills

# A full disk, portably: a file size limit (RLIMIT_FSIZE) in a child process makes every
# write past it fail with EFBIG ("File too large"), as ENOSPC does on a full disk.
_LIMITED_RUN = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of the process
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from fdflare.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _limited(limit: int, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run(
        [sys.executable, "-c", _LIMITED_RUN, str(limit), *argv],
        capture_output=True, text=True, timeout=600, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.mark.slow  # several processes, each loading torch: .ci/run runs it
def test_train_on_a_full_disk_names_the_checkpoint(synthetic_set, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", "smallcnn", "--fold", "1", "--labels", str(synthetic_set["labels"]),
            "--images", str(synthetic_set["images"]), "--out", str(out), "--epochs", "1",
            "--image-size", "32", "--no-pretrained", "--workers", "0", "--batch-size", "32",
            "--quiet"]  # fmt: skip
    res = _limited(20_000, argv, tmp_path)  # config.json fits, the checkpoint does not
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0] == f"fdflare train: error: File too large: {out / 'last.ckpt'}"
    assert sorted(p.name for p in out.iterdir()) == [".fdflare.lock", "config.json"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_rerun_removes_stale_temporaries_of_dead_runs_only(synthetic_set, tmp_path, capsys):
    import re
    import socket

    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())  # as temporary names hold it
    out = tmp_path / "labels"
    argv = ["label", "--catalog", str(synthetic_set["catalog"]), "--images",
            str(synthetic_set["images"]), "--out", str(out)]  # fmt: skip
    # a full disk while writing: the error names the label file, no temporary is left
    res = _limited(4_000, argv, tmp_path)
    assert res.returncode == 3, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert "File too large: " + str(out / "Fold1_train.csv") in res.stderr
    assert ".part" not in res.stderr
    assert not out.exists()  # nothing written: not even a temporary file

    # temporaries of killed writes: this host's dead process (removed), a live process and
    # another host (kept: their writes may be in flight)
    dead = out / f".labels.csv.{host}.{_dead_pid()}.k1ll3d00.part"
    live = out / f".labels.csv.{host}.{os.getppid()}.inflight.part"
    other = out / f".labels.csv.other-host.{_dead_pid()}.elsewhre.part"
    out.mkdir()
    for p in (dead, live, other):
        p.write_text("half a table")
    code, err = cli(argv, capsys)
    assert code == 0, err
    assert not dead.exists() and live.exists() and other.exists()
    assert (out / "labels.csv").is_file()
