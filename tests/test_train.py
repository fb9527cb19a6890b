"""Training through the real CLI on tiny synthetic data: recipe, outputs, resume, DDP, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fdflare.cli import main
from fdflare.data.dataset import class_weights
from fdflare.core.errors import InputError
from fdflare.training.fit import (
    METRIC_COLUMNS,
    TrainConfig,
    default_config_path,
    holdout_split,
    is_improvement,
    load_config,
    resolve_runtime,
)
from test_data import make_tiny_dataset

FAST = ["--no-pretrained", "--workers", "0", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny32"), size=32)


def train_argv(
    ds: dict[str, Path], out: Path, *extra: str, model: str = "resnet18", size: int = 32
) -> list[str]:
    return [
        "train", "--model", model, "--fold", "1", "--labels", str(ds["labels"]), "--images", str(ds["images"]),
        "--out", str(out), "--epochs", "1", "--image-size", str(size), *FAST, *extra,
    ]  # fmt: skip


def copy_dataset(ds: dict[str, Path], dst: Path) -> dict[str, Path]:
    shutil.copytree(ds["root"], dst)
    return {k: dst / v.relative_to(ds["root"]) for k, v in ds.items()}


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- config and rule


def test_defaults_are_the_study_recipe():
    c = TrainConfig()
    assert (c.lr, c.weight_decay, c.max_lr, c.anneal_strategy) == (1e-4, 1e-3, 1e-5, "cos")
    assert (c.batch_size, c.epochs, c.image_size, c.seed) == (64, 50, 512, 40)
    assert (c.threshold, c.hss2_tolerance, c.holdout_fraction, c.augment) == (0.5, 0.02, 0.0, True)
    assert (c.pretrained, c.input_adapter) == (True, "conv")
    # the packaged default config says the same, field for field
    assert load_config(default_config_path()) == c
    assert json.loads(default_config_path().read_text()).keys() == TrainConfig().__dict__.keys()


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('{"lr": "fast"}', "lr", "expected float"),
        ('{"epochs": 2.5}', "epochs", "expected int"),
        ('{"learning_rate": 0.1}', "learning_rate", "unknown setting"),
        ('{"model": "lenet"}', "model", "unknown model"),
        ('{"holdout_fraction": 1.5}', "holdout_fraction", "[0, 1)"),
        ('{"epochs": 3,}', None, "not valid JSON"),
        ("[1, 2]", None, "one JSON object"),
    ],
)
def test_config_file_errors_name_the_field(tmp_path, text, field, words):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert err.value.path == str(path) and err.value.field == field
    assert words in str(err.value)


def test_selection_rule():
    best_tss = best_hss = 0.0
    kept = []
    for tss, hss2 in [
        (0.0, 0.1),
        (0.30, 0.20),
        (0.35, 0.17),
        (0.36, 0.19),
        (0.20, 0.5),
        (None, 0.3),
        (0.5, None),
    ]:
        keep = is_improvement(best_tss, best_hss, tss, hss2, 0.02)
        kept.append(keep)
        if keep:
            best_tss, best_hss = tss, hss2
    # TSS must rise above the best so far (from 0); HSS2 may fall by 0.02 at most; undefined never
    assert kept == [False, True, False, True, False, False, False]
    assert is_improvement(0.3, 0.2, 0.31, 0.181, 0.02)
    assert not is_improvement(0.3, 0.2, 0.31, 0.1799, 0.02)


def test_holdout_is_the_latest_share_by_time():
    labels = [
        f"2011/{m:02d}/01/HMI.m2011.{m:02d}.01_00.00.00.jpg" for m in (5, 1, 12, 7, 3, 9, 11, 4)
    ]
    table = pd.DataFrame({"label": labels, "target": [0] * 8})
    keep, hold = holdout_split(table, 0.25)
    assert sorted(np.asarray(labels)[hold].tolist()) == [labels[6], labels[2]]  # November, December
    assert keep.sum() == 6
    with pytest.raises(InputError, match="image time") as err:
        holdout_split(pd.DataFrame({"label": ["a.jpg"], "target": [0]}), 0.5, path="t.csv")
    assert err.value.line == 2


def test_runtime_on_this_cpu():
    r = resolve_runtime(TrainConfig(accelerator="cpu"))
    assert (r.precision, r.strategy, r.deterministic) == ("32-true", "auto", True)
    assert resolve_runtime(TrainConfig(accelerator="cpu", devices=2)).strategy == "ddp"
    assert resolve_runtime(TrainConfig(accelerator="cpu", num_nodes=2)).strategy == "ddp"


# --------------------------------------------------------------------------- one epoch via the CLI


@pytest.fixture(scope="module")
def one_epoch(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "resnet34_fold1"
    assert main(train_argv(tiny, out, "--max-lr", "0.001", model="resnet34")) == 0
    return out


def test_one_epoch_outputs(one_epoch, tiny):
    out = one_epoch
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.json", "last.ckpt", "metrics.csv", "summary.json",
    ] + (["best.ckpt"] if (out / "best.ckpt").exists() else [])  # fmt: skip
    # the resolved config, reusable with --config
    cfg = load_config(out / "config.json")
    assert (cfg.model, cfg.epochs, cfg.image_size, cfg.max_lr, cfg.pretrained) == (
        "resnet34",
        1,
        32,
        1e-3,
        False,
    )
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert metrics["epoch"].tolist() == [1]
    row = metrics.iloc[0]
    assert row[["val_tp", "val_fp", "val_tn", "val_fn"]].sum() == 12  # every validation image, once
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    assert row["train_seconds"] > 0 and row["val_seconds"] > 0
    # OneCycleLR stepped once per batch: 12 flares x 4 + 24 no-flares x 2 = 96 samples = 6 batches
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-4, weight_decay=1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=1e-3, total_steps=6, anneal_strategy="cos"
    )
    for _ in range(6):
        ref_opt.step()
        ref.step()
    assert row["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)
    ckpt = load_ckpt(out / "last.ckpt")  # weights_only=True loads it
    rec = ckpt["fdflare"]
    assert rec["epoch"] == 1 and rec["config"]["model"] == "resnet34"
    assert rec["class_weights"] == pytest.approx(list(class_weights(12, 24)))
    assert rec["counts"]["train_samples"] == 96 and rec["counts"]["val"] == 12
    assert rec["scores"]["val_loss"] == pytest.approx(row["val_loss"])
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert any(k.startswith("model.first_conv_layer.0") for k in ckpt["state_dict"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] == 1 and summary["runtime"]["precision"] == "32-true"


def test_existing_run_needs_resume(one_epoch, tiny, capsys):
    assert main(train_argv(tiny, one_epoch, model="resnet34")) == 2
    assert "pass --resume" in capsys.readouterr().err
    # a finished run resumed: nothing to do, nothing changed
    before = (one_epoch / "last.ckpt").stat().st_mtime_ns
    assert main(train_argv(tiny, one_epoch, "--max-lr", "0.001", "--resume", model="resnet34")) == 0
    assert (one_epoch / "last.ckpt").stat().st_mtime_ns == before


def test_resume_refuses_another_recipe_or_a_corrupt_checkpoint(one_epoch, tiny, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    assert main(train_argv(tiny, run, "--max-lr", "0.01", "--resume", model="resnet34")) == 2
    assert (
        "cannot resume with a different recipe: max_lr: run has 0.001, now 0.01\n"
        in capsys.readouterr().err
    )
    assert (
        main(
            train_argv(
                tiny, run, "--max-lr", "0.001", "--epochs", "3", "--resume", model="resnet34"
            )
        )
        == 2
    )
    assert (
        "epochs: run has 1, now 3" in capsys.readouterr().err
    )  # the OneCycle schedule depends on it
    (run / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    assert main(train_argv(tiny, run, "--max-lr", "0.001", "--resume", model="resnet34")) == 2
    err = capsys.readouterr().err
    assert str(run / "last.ckpt") in err and "cannot read checkpoint" in err


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory) -> dict[str, Path]:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny64"), size=64, per_month=2)


def test_resume_after_kill_equals_uninterrupted(tiny64, tmp_path, capsys):
    """Train 2 epochs straight; kill another run during epoch 2, resume it: same metrics and weights.

    AlexNet has dropout, so this also checks that dropout draws are reproduced on resume.
    """
    args = ["--max-lr", "0.001", "--epochs", "2"]
    straight = tmp_path / "straight"
    assert main(train_argv(tiny64, straight, *args, model="alexnet", size=64)) == 0

    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "fdflare",
        *train_argv(tiny64, killed, *args, model="alexnet", size=64),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = killed / "metrics.csv"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
    assert load_ckpt(killed / "last.ckpt")["fdflare"]["epoch"] == 1  # killed during epoch 2

    # the same recipe on a changed training set is refused: the schedule's length depends on it
    fewer = dict(tiny64, labels=tmp_path / "fewer")
    shutil.copytree(tiny64["labels"], fewer["labels"])
    train_csv = fewer["labels"] / "Fold1_train.csv"
    pd.read_csv(train_csv).iloc[1:].to_csv(train_csv, index=False)  # one flare: 4 samples fewer
    assert main(train_argv(fewer, killed, *args, "--resume", model="alexnet", size=64)) == 2
    assert "the training set had 48 samples and now has 44" in capsys.readouterr().err

    assert main(train_argv(tiny64, killed, *args, "--resume", model="alexnet", size=64)) == 0
    a, b = pd.read_csv(straight / "metrics.csv"), pd.read_csv(killed / "metrics.csv")
    timing = ["train_seconds", "val_seconds"]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing), check_exact=True)
    sa, sb = load_ckpt(straight / "last.ckpt"), load_ckpt(killed / "last.ckpt")
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for key, value in sa["state_dict"].items():
        assert torch.equal(value, sb["state_dict"][key]), key
    assert sa["fdflare"]["best"] == sb["fdflare"]["best"]


# --------------------------------------------------------------------------- DDP


def test_ddp_two_cpu_processes(tiny, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "fdflare",
        *train_argv(tiny, out, "--accelerator", "cpu", "--devices", "2"),
    ]
    # loopback only; Lightning picks a free port
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"} | {"MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("1 epoch") == 1  # one report, from rank 0
    rec = load_ckpt(out / "last.ckpt")["fdflare"]
    assert rec["world_size"] == 2 and rec["runtime"]["strategy"] == "ddp"
    row = pd.read_csv(out / "metrics.csv").iloc[0]
    # validation shards are gathered without padding: each of the 12 images counted once
    assert row[["val_tp", "val_fp", "val_tn", "val_fn"]].sum() == 12


# --------------------------------------------------------------------------- held-out selection


def test_holdout_selection(tiny, tmp_path):
    out = tmp_path / "holdout"
    assert main(train_argv(tiny, out, "--holdout", "0.25")) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"holdout_loss", "holdout_tss", "holdout_hss2", "val_tss"} <= set(metrics.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected_on"] == "holdout"
    assert summary["counts"]["holdout"] == 9 and summary["counts"]["train"] == 27


# --------------------------------------------------------------------------- bad input


def test_missing_images_listed_then_skipped(tiny, tmp_path, capsys):
    ds = copy_dataset(tiny, tmp_path / "ds")
    train = pd.read_csv(ds["labels"] / "Fold1_train.csv")
    for label in train["label"][:2]:
        (ds["images"] / label).unlink()
    assert main(train_argv(ds, tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert (
        "2 of 36 images are missing" in err and train["label"][0] in err and "--skip-missing" in err
    )
    assert not (tmp_path / "a").exists()
    assert main(train_argv(ds, tmp_path / "b", "--skip-missing")) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["counts"]["skipped_missing"] == 2 and summary["counts"]["train"] == 34
    assert any("skipped 2 of 36" in n for n in summary["notes"])


def test_missing_image_folder(tiny, tmp_path, capsys):
    ds = dict(tiny, images=tmp_path / "nowhere")
    assert main(train_argv(ds, tmp_path / "a")) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_empty_class(tiny, tmp_path, capsys):
    ds = copy_dataset(tiny, tmp_path / "ds")
    path = ds["labels"] / "Fold1_train.csv"
    pd.read_csv(path).assign(goes_class=0).to_csv(path, index=False)
    assert main(train_argv(ds, tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "no flare (target 1) instances" in err


def test_wrong_image_size_names_the_file(tiny, tmp_path, capsys):
    ds = copy_dataset(tiny, tmp_path / "ds")
    label = pd.read_csv(ds["labels"] / "Fold1_val.csv")["label"][2]
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(ds["images"] / label)
    assert main(train_argv(ds, tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert str(ds["images"] / label) in err and "is 48x48 L, expected 32x32" in err


def test_corrupt_image_found_in_a_worker_names_the_file(tiny, tmp_path, capsys):
    ds = copy_dataset(tiny, tmp_path / "ds")
    label = pd.read_csv(ds["labels"] / "Fold1_train.csv")["label"][4]
    path = ds["images"] / label
    path.write_bytes(path.read_bytes()[:120])  # header intact, pixel data cut off
    argv = train_argv(ds, tmp_path / "a")
    argv[argv.index("--workers") + 1] = "1"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "cannot decode image" in err
    assert "Traceback" not in err


def test_missing_imagenet_weights_fail_before_training(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    argv = [a for a in train_argv(tiny, tmp_path / "a") if a != "--no-pretrained"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in err and "--no-pretrained" in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert not (tmp_path / "a").exists()
