"""Training through the real CLI on tiny synthetic data: recipe, outputs, resume, DDP, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from clitools import run_cli as cli
from fdflare.analysis.metrics import skill_scores
from fdflare.cli import main
from fdflare.core.errors import InputError
from fdflare.data.tables import class_weights
from fdflare.training.callbacks import METRIC_COLUMNS, is_improvement
from fdflare.training.config import TrainConfig, default_config_path, load_config, resolve_runtime
from fdflare.training.sets import holdout_split
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
    # the packaged study config says the same, field for field
    assert default_config_path().name == "study.yaml"
    assert load_config(default_config_path()) == c
    assert yaml.safe_load(default_config_path().read_text()).keys() == TrainConfig().__dict__.keys()


@pytest.mark.parametrize(
    ("name", "text", "field", "words"),
    [
        ("c.json", '{"lr": "fast"}', "lr", "expected float"),
        ("c.json", '{"epochs": 2.5}', "epochs", "expected int"),
        ("c.json", '{"learning_rate": 0.1}', "learning_rate", "unknown setting"),
        ("c.json", '{"model": "lenet"}', "model", "choose one of alexnet"),
        ("c.json", '{"holdout_fraction": 1.5}', "holdout_fraction", "[0, 1)"),
        ("c.json", '{"lr": -1}', "lr", "at least 0"),
        ("c.json", '{"lr": NaN}', "lr", "finite"),
        ("c.json", '{"max_lr": 0}', "max_lr", "above 0"),
        ("c.json", '{"fold": 9}', "fold", "choose one of 1, 2, 3, 4"),
        ("c.json", '{"precision": "bogus"}', "precision", "choose one of auto"),
        ("c.json", '{"devices": 0}', "devices", "at least 1"),
        ("c.json", '{"epochs": 3,}', None, "not valid JSON"),
        ("c.json", "[1, 2]", None, "one mapping"),
        ("c.yaml", "lr: fast\n", "lr", "expected float"),
        ("c.yaml", "epochs: [1\n", None, "not valid YAML"),
        ("c.yml", "batch_size: 0\n", "batch_size", "at least 1"),
    ],
)
def test_config_file_errors_name_the_field(tmp_path, name, text, field, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert err.value.path == str(path) and err.value.field == field
    assert words in str(err.value)


def test_yaml_and_json_configs_read_the_same(tmp_path):
    (tmp_path / "c.yaml").write_text("max_lr: 1e-3\nmodel: resnet18\naugment: false\n")
    (tmp_path / "c.json").write_text('{"max_lr": 0.001, "model": "resnet18", "augment": false}')
    a, b = load_config(tmp_path / "c.yaml"), load_config(tmp_path / "c.json")
    assert a == b == TrainConfig(max_lr=1e-3, model="resnet18", augment=False)


def test_every_setting_is_an_option_and_round_trips():
    """The CLI is generated from TrainConfig: each field has an option, and cv's rebuilt flags
    give back the same config."""
    import argparse

    from fdflare.commands._config import config_argv, option_name
    from fdflare.commands.train import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = {s for a in parser._actions for s in a.option_strings}
    for f in dataclasses.fields(TrainConfig):
        assert option_name(f) in options, f.name
    cfg = TrainConfig(
        model="vgg16", pretrained=False, fold=3, max_lr=2.5e-4, anneal_strategy="linear",
        augment=False, holdout_fraction=0.2, seed=7, labels="/l", images="/i", devices=2,
        deterministic=True, cycle_momentum=False, image_ext="png", precision="16-mixed",
    )  # fmt: skip
    args = parser.parse_args(["--out", "x", *config_argv(cfg)])
    assert config_from_args(args) == cfg


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


def test_holdout_purges_the_24_hours_before_it():
    hours = pd.date_range("2011-03-01", periods=100, freq="h")
    labels = [t.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S.jpg") for t in hours]
    keep, hold = holdout_split(pd.DataFrame({"label": labels, "target": [0] * 100}), 0.2)
    assert hold.sum() == 20 and hold[-20:].all()
    # the last 24 hours before the slice are in neither set: windows (t, t + 24 h) reach it
    first = hours[hold].min()
    purged = ~keep & ~hold
    assert purged.sum() == 23  # t in (first - 24 h, first): 23 hourly instances
    assert (hours[purged] > first - pd.Timedelta(hours=24)).all()
    assert (hours[keep] <= first - pd.Timedelta(hours=24)).all()


def test_runtime_on_this_cpu():
    r = resolve_runtime(TrainConfig(accelerator="cpu"))
    assert (r.precision, r.strategy, r.deterministic) == ("32-true", "auto", True)
    assert resolve_runtime(TrainConfig(accelerator="cpu", devices=2)).strategy == "ddp"
    assert resolve_runtime(TrainConfig(accelerator="cpu", num_nodes=2)).strategy == "ddp"


def test_the_fast_path_is_the_default():
    # channels-last measured faster on CPUs with AVX-512 (fdflare bench) and is on by default
    # there, NCHW elsewhere; compiling is for GPUs; either can be forced on or off
    from fdflare.training.runtime import cpu_prefers_channels_last

    r = resolve_runtime(TrainConfig(accelerator="cpu"))
    expected = (cpu_prefers_channels_last(), False, False)
    assert (r.channels_last, r.compile, r.device_augment) == expected
    r = resolve_runtime(TrainConfig(accelerator="cpu", channels_last=True))
    assert r.channels_last
    r = resolve_runtime(TrainConfig(accelerator="cpu", channels_last=False, torch_compile=True))
    assert (r.channels_last, r.compile) == (False, True)
    if torch.cuda.is_available():
        r = resolve_runtime(TrainConfig(accelerator="gpu"))
        assert (r.channels_last, r.compile, r.precision) == (True, True, "bf16-mixed")
        assert r.device_augment


# --------------------------------------------------------------------------- one epoch via the CLI


@pytest.fixture(scope="module")
def one_epoch(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "resnet34_fold1"
    assert main(train_argv(tiny, out, "--max-lr", "0.001", model="resnet34")) == 0
    return out


def test_one_epoch_outputs(one_epoch, tiny):
    out = one_epoch
    metrics = pd.read_csv(out / "metrics.csv")
    row = metrics.iloc[0]
    # the selection outcome follows from the epoch's own counts: bests start at 0, so epoch 1
    # is kept exactly when its TSS is above 0 (and its HSS2 no lower than -0.02)
    tss, hss2, _ = skill_scores(*(int(row[f"val_{k}"]) for k in ("tp", "fp", "tn", "fn")))
    assert row["val_tss"] == pytest.approx(tss) if tss is not None else math.isnan(row["val_tss"])
    selected = is_improvement(0.0, 0.0, tss, hss2, 0.02)
    assert row["selected"] == int(selected)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == (1 if selected else None)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["config.json", "last.ckpt", "metrics.csv", "summary.json"]
        + (["best.ckpt"] if selected else [])
    )
    if selected:  # best.ckpt is that epoch's checkpoint
        assert (out / "best.ckpt").read_bytes() == (out / "last.ckpt").read_bytes()
    # the resolved config, reusable with --config
    cfg = load_config(out / "config.json")
    assert (cfg.model, cfg.epochs, cfg.image_size, cfg.max_lr, cfg.pretrained) == (
        "resnet34",
        1,
        32,
        1e-3,
        False,
    )
    assert list(metrics.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert metrics["epoch"].tolist() == [1]
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


def test_augmenting_on_the_device_trains_the_same(one_epoch, tiny, tmp_path):
    # the default on CUDA; on a CPU the same pixels, so the same deterministic epoch
    out = tmp_path / "dev"
    assert (
        main(train_argv(tiny, out, "--max-lr", "0.001", "--device-augment", model="resnet34")) == 0
    )
    ours, ref = pd.read_csv(out / "metrics.csv"), pd.read_csv(one_epoch / "metrics.csv")
    cols = ["train_loss", "val_loss", "val_tp", "val_fp", "val_tn", "val_fn"]
    pd.testing.assert_frame_equal(ours[cols], ref[cols])
    assert json.loads((out / "summary.json").read_text())["runtime"]["device_augment"] is True


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


def _serve_fifo(fifo: Path, data: bytes, times: int) -> threading.Thread:
    """Hand ``data`` to the next ``times`` readers of the named pipe ``fifo``, then no more."""

    def serve() -> None:
        for _ in range(times):
            with open(fifo, "wb") as fh:  # blocks until the run opens the image
                fh.write(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_ctrl_c_then_resume_equals_uninterrupted(tiny64, tmp_path, capsys):
    """Train 2 epochs straight; Ctrl-C another run during epoch 2, resume it: same metrics and weights.

    The interrupted run cannot finish epoch 2 by itself: one of its validation images is a
    named pipe that hands out the image once, for epoch 1, so the run waits in epoch 2 until
    it is interrupted. No timing is involved. AlexNet has dropout, so this also checks that
    dropout draws are reproduced on resume.
    """
    args = ["--max-lr", "0.001", "--epochs", "2"]
    straight = tmp_path / "straight"
    assert main(train_argv(tiny64, straight, *args, model="alexnet", size=64)) == 0

    ds = copy_dataset(tiny64, tmp_path / "ds")
    # a validation image: read once per epoch, at its end (a training image is read several
    # times, and a pipe cannot tell one reader from the next)
    label = pd.read_csv(ds["labels"] / "Fold1_val.csv")["label"].iloc[-1]
    image = ds["images"] / label
    data = image.read_bytes()
    image.unlink()
    os.mkfifo(image)
    server = _serve_fifo(image, data, times=1)

    killed = tmp_path / "killed"
    argv = train_argv(ds, killed, *args, "--no-check-headers", model="alexnet", size=64)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fdflare", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        metrics = killed / "metrics.csv"
        while proc.poll() is None and not (
            metrics.exists() and len(metrics.read_text().splitlines()) >= 2
        ):
            server.join(0.05)  # epoch 1 is written once; the run then waits on the pipe
        assert proc.poll() is None, proc.communicate()[1].decode()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines()[-1] == "fdflare train: interrupted"
    assert "Traceback" not in stderr.decode()
    assert load_ckpt(killed / "last.ckpt")["fdflare"]["epoch"] == 1  # stopped during epoch 2
    assert not list(killed.glob(".*.part"))
    image.unlink()
    image.write_bytes(data)

    # the same recipe on a changed training set is refused: the schedule's length depends on it
    fewer = dict(ds, labels=tmp_path / "fewer")
    shutil.copytree(ds["labels"], fewer["labels"])
    train_csv = fewer["labels"] / "Fold1_train.csv"
    pd.read_csv(train_csv).iloc[1:].to_csv(train_csv, index=False)  # one flare: 4 samples fewer
    assert main(train_argv(fewer, killed, *args, "--resume", model="alexnet", size=64)) == 2
    assert "the training set had 48 samples and now has 44" in capsys.readouterr().err

    assert main(train_argv(ds, killed, *args, "--resume", model="alexnet", size=64)) == 0
    a, b = pd.read_csv(straight / "metrics.csv"), pd.read_csv(killed / "metrics.csv")
    timing = ["train_seconds", "val_seconds"]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing), check_exact=True)
    sa, sb = load_ckpt(straight / "last.ckpt"), load_ckpt(killed / "last.ckpt")
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for key, value in sa["state_dict"].items():
        assert torch.equal(value, sb["state_dict"][key]), key
    assert sa["fdflare"]["best"] == sb["fdflare"]["best"]


# --------------------------------------------------------------------------- DDP


@pytest.mark.slow
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


def test_holdout_selection(tiny, tmp_path, capsys):
    out = tmp_path / "holdout"
    assert main(train_argv(tiny, out, "--holdout-fraction", "0.25")) == 0
    # --quiet: no bar or per-epoch lines; the final summary still prints
    printed = capsys.readouterr()
    assert "epoch 1/1" not in printed.err and printed.out.startswith(f"{out}: 1 epoch;")
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"holdout_loss", "holdout_tss", "holdout_hss2", "val_tss"} <= set(metrics.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected_on"] == "holdout"
    # 36 training instances: the latest 9 held out, and the one less than 24 h before them
    # purged (its label window reaches into the held-out slice)
    assert summary["counts"]["holdout"] == 9 and summary["counts"]["train"] == 26


def test_json_says_what_the_summary_line_says(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tiny, out, "--json")) == 0
    result = json.loads(capsys.readouterr().out)  # one object, nothing else on stdout
    summary = json.loads((out / "summary.json").read_text())
    assert result["out"] == str(out) and result["summary"] == str(out / "summary.json")
    assert result["epochs_done"] == summary["epochs_done"] == 1
    assert result["best_epoch"] == summary["best_epoch"]
    assert result["last_checkpoint"] == str(out / "last.ckpt")
    assert result["counts"]["train"] == summary["counts"]["train"]


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


def test_truncated_image_fails_the_check_before_training(tiny, tmp_path, capsys):
    ds = copy_dataset(tiny, tmp_path / "ds")
    label = pd.read_csv(ds["labels"] / "Fold1_train.csv")["label"][4]
    path = ds["images"] / label
    path.write_bytes(path.read_bytes()[:120])  # header intact, pixel data cut off
    assert main(train_argv(ds, tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "truncated PNG image" in err
    assert not (tmp_path / "a").exists()  # no config.json, no folder


def test_corrupt_image_found_in_a_worker_names_the_file(tiny, tmp_path, capsys):
    ds = copy_dataset(tiny, tmp_path / "ds")
    label = pd.read_csv(ds["labels"] / "Fold1_train.csv")["label"][4]
    path = ds["images"] / label
    data = bytearray(path.read_bytes())
    data[60:-30] = b"\xff" * (len(data) - 90)  # header and end intact, pixel data garbled
    path.write_bytes(bytes(data))
    argv = train_argv(ds, tmp_path / "a")
    argv[argv.index("--workers") + 1] = "1"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "cannot decode image" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--accelerator", "gpu"], "--accelerator: gpu: this machine has no CUDA GPU"),
        (["--accelerator", "tpu"], "--accelerator: tpu: no TPU runtime"),
        (["--accelerator", "quantum"], "--accelerator: expected auto, cpu, gpu (= cuda), mps"),
        (["--precision", "bogus"], "--precision: 'bogus': choose one of auto"),
        (["--batch-size", "0"], "--batch-size: '0': must be at least 1"),
        (["--lr", "nan"], "--lr: 'nan': must be a finite number"),
        (["--max-lr", "-1"], "--max-lr: '-1': must be above 0"),
        (["--fold", "9"], "--fold: '9': choose one of 1, 2, 3, 4"),
        (["--model", "resnet99"], "--model: 'resnet99': choose one of alexnet"),
        (["--devices", "0"], "--devices: '0': must be at least 1"),
        (["--holdout-fraction", "1"], "--holdout-fraction: '1': must lie in [0, 1)"),
    ],
)
def test_bad_settings_fail_before_any_work(tiny, tmp_path, capsys, extra, words):
    if "gpu" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    code, err = cli(train_argv(tiny, out, *extra), capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err
    assert not out.exists()


def test_config_file_value_is_blamed_on_its_field(tiny, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: -1\n")
    code, err = cli(train_argv(tiny, tmp_path / "run", "--config", str(cfg)), capsys)
    assert code == 2 and f"{cfg}, field 'lr': -1.0: must be at least 0" in err
    assert "max_lr" not in err and not (tmp_path / "run").exists()


def test_holdout_leaving_no_training_set(tiny, tmp_path, capsys):
    code, err = cli(train_argv(tiny, tmp_path / "run", "--holdout-fraction", "0.99"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert "holds out 36 of the 36 training instances" in err and "lower --holdout-fraction" in err
    assert not (tmp_path / "run").exists()


def test_header_only_fold_file(tiny, tmp_path, capsys):
    ds = copy_dataset(tiny, tmp_path / "ds")
    val = ds["labels"] / "Fold1_val.csv"
    val.write_text(val.read_text().splitlines()[0] + "\n")
    code, err = cli(train_argv(ds, tmp_path / "run"), capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{val}: the table has a header but no rows" in err
    assert not (tmp_path / "run").exists()


def test_out_must_be_a_folder_and_no_input(tiny, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    code, err = cli(train_argv(tiny, file), capsys)
    assert code == 2 and "--out" in err and "is a file" in err and file.read_text() == "x"
    code, err = cli(train_argv(tiny, tiny["labels"]), capsys)
    assert code == 2 and "the input" in err


def test_missing_imagenet_weights_fail_before_training(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    argv = [a for a in train_argv(tiny, tmp_path / "a") if a != "--no-pretrained"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in err and "--no-pretrained" in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert not (tmp_path / "a").exists()


def test_building_the_options_imports_no_torch():
    """The options of train, cv, demo and predict (model names included) come without torch."""
    code = (
        "import argparse, sys\n"
        "from fdflare.commands import cv, demo, predict, train\n"
        "for m in (train, cv, demo, predict):\n"
        "    m.add_arguments(argparse.ArgumentParser())\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
