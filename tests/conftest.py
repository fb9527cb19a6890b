"""Shared fixtures: the study's reference data, sunpy's real test files, a headless backend."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("agg")


def pytest_configure(config: pytest.Config) -> None:
    """One compute thread per test worker: ``-n 2`` on two cores runs two tests at a time.

    Worker processes of pytest-xdist each take one core; torch's thread pools sized to the
    whole machine would make them fight over it. Subprocesses a test starts inherit this too.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")


#: the modules that take longest, longest first (measured on 2 cores): pytest-xdist's
#: ``loadscope`` hands whole modules to the workers in collection order, so starting these
#: first lets the workers finish together instead of one waiting on a long module at the end
LONGEST_FIRST = (
    "test_predict.py", "test_reproduce.py", "test_serve.py", "test_jsoc_rebin.py",
    "test_forecast.py", "test_forecast_store.py", "test_bench.py", "test_explain.py",
    "test_models.py", "test_report.py", "test_synth.py", "test_train.py",
)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest modules first (:data:`LONGEST_FIRST`); the rest keep their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


ROOT = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path | None:
    env = os.environ.get("FDFLARE_REFERENCE")
    for cand in ([Path(env)] if env else []) + [
        ROOT.parent / "shared" / "reference",
        ROOT / "shared" / "reference",
    ]:
        if (cand / "labels").is_dir():
            return cand
    return None


REFERENCE = _reference_dir()


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The study's released data (``../shared/reference``); skips where it is absent.

    With ``FDFLARE_REQUIRE_REFERENCE=1`` (``.ci/run`` sets it where the data is laid out) a
    missing reference fails the tests that need it instead of skipping them, so the study's
    reproduction cannot drop out of CI unnoticed.
    """
    if REFERENCE is None:
        if os.environ.get("FDFLARE_REQUIRE_REFERENCE") == "1":
            pytest.fail(
                "FDFLARE_REQUIRE_REFERENCE=1 but the study reference data was not found at "
                "../shared/reference or $FDFLARE_REFERENCE"
            )
        pytest.skip(
            "study reference data not found: put it at ../shared/reference beside the project "
            "or set FDFLARE_REFERENCE"
        )
    return REFERENCE


@pytest.fixture(scope="session")
def sunpy_test_data() -> Path:
    """Folder of real test files shipped in sunpy's wheel (a Helioviewer JP2, an HMI FITS)."""
    sunpy = pytest.importorskip("sunpy", reason="sunpy (the 'solar' extra) is not installed")
    folder = Path(sunpy.__file__).parent / "data" / "test"
    if not folder.is_dir():
        pytest.skip("this sunpy install ships no test data folder")
    return folder


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """An existing folder that this process cannot write into, even as root.

    As an ordinary user, mode 0555 is enough; root ignores modes, so there the folder is
    made immutable (``chattr +i``), which root cannot write into either. Skips where
    neither works (a file system without the attribute).
    """
    import shutil
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    os.chmod(folder, 0o555)
    immutable = False
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        res = subprocess.run([chattr, "+i", str(folder)], capture_output=True) if chattr else None
        if res is None or res.returncode != 0:
            pytest.skip("running as root where chattr +i is unavailable: no read-only folder")
        immutable = True
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        os.chmod(folder, 0o755)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> dict[str, Path]:
    """A year of the synthetic Sun (daily, 32 px), its labels, a smallcnn trained one epoch on
    fold 1, its fold-1 predictions and an isotonic calibration of them: made once per session
    through the real CLI, and never changed by a test (copy what you edit).
    """
    from fdflare.cli import main

    root = tmp_path_factory.mktemp("synthetic_set")
    fast = ["--workers", "0", "--quiet"]
    steps = [
        ["synth", "--out", str(root), "--start", "2011-01-01", "--end", "2012-01-01",
         "--cadence", "24h", "--image-size", "32", "--quiet"],
        ["label", "--catalog", str(root / "catalog.csv"), "--images", str(root / "images"),
         "--out", str(root / "labels")],
        ["train", "--model", "smallcnn", "--fold", "1", "--labels", str(root / "labels"),
         "--images", str(root / "images"), "--out", str(root / "run"), "--epochs", "1",
         "--image-size", "32", "--no-pretrained", "--batch-size", "32", *fast],
        ["predict", "--checkpoint", str(root / "run" / "last.ckpt"), "--labels",
         str(root / "labels" / "Fold1_val.csv"), "--images", str(root / "images"), "--out",
         str(root / "preds" / "fold1.csv"), "--table", str(root / "labels" / "labels.csv"), *fast],
        ["calibrate", "--fit", str(root / "preds" / "fold1.csv"), "--apply",
         str(root / "preds" / "fold1.csv"), "--out", str(root / "cal")],
    ]  # fmt: skip
    for argv in steps:
        assert main(argv) == 0, argv
    return {
        "root": root,
        "images": root / "images",
        "catalog": root / "catalog.csv",
        "geometry": root / "geometry.csv",
        "labels": root / "labels",
        "checkpoint": root / "run" / "last.ckpt",
        "predictions": root / "preds" / "fold1.csv",
        "joined": root / "preds" / "fold1_joined.csv",
        "calibration": root / "cal" / "calibration.json",
    }
