"""Prediction files in the study's format, the joined table, bad checkpoints; cross-validation."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from array_tasks import write_summary_part
from clitools import run_cli as cli
from fdflare.cli import main
from fdflare.models.networks import create_model
from test_data import fit_history_map, make_tiny_dataset

FAST = ["--no-pretrained", "--workers", "0", "--batch-size", "16", "--quiet"]
JOINED = ["label", "flare_prob", "target", "goes_class", "fl_lon", "fl_lat", "fl_start"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    ds = make_tiny_dataset(tmp_path_factory.mktemp("tiny"), size=32)
    run = ds["root"] / "run"
    argv = ["train", "--model", "resnet18", "--fold", "1", "--labels", str(ds["labels"]), "--images",
            str(ds["images"]), "--out", str(run), "--epochs", "1", "--image-size", "32", "--max-lr", "0.01", *FAST]  # fmt: skip
    assert main(argv) == 0
    return {**ds, "ckpt": run / "last.ckpt"}


def predict_argv(
    ds: dict[str, Path], out: Path, *extra: str, ckpt: Path | None = None
) -> list[str]:
    return ["predict", "--checkpoint", str(ckpt or ds["ckpt"]), "--labels", str(ds["labels"] / "Fold1_val.csv"),
            "--images", str(ds["images"]), "--out", str(out), "--workers", "0", "--quiet", *extra]  # fmt: skip


def reference_probs(ds: dict[str, Path], labels: list[str]) -> np.ndarray:
    """P(flare) computed by hand: the checkpoint's weights, PIL images / 255, softmax."""
    state = torch.load(ds["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    net = create_model("resnet18", pretrained=False)
    net.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    net.eval()
    x = torch.stack(
        [
            torch.from_numpy(np.array(Image.open(ds["images"] / lab))).float()[None] / 255
            for lab in labels
        ]
    )
    with torch.no_grad():
        return torch.softmax(net.logits(x), dim=1)[:, 1].numpy()


def test_predictions_in_the_study_format(trained, tmp_path, capsys):
    out = tmp_path / "fold1_resnet18.csv"
    assert main(predict_argv(trained, out)) == 0
    assert "wrote 12 predictions" in capsys.readouterr().out
    pred = pd.read_csv(out)
    val = pd.read_csv(trained["labels"] / "Fold1_val.csv")
    assert list(pred.columns) == ["timestamp", "flare_prob", "target"]
    assert pred["timestamp"].tolist() == val["label"].tolist()
    assert pred["target"].tolist() == val["goes_class"].tolist()
    np.testing.assert_allclose(
        pred["flare_prob"], reference_probs(trained, val["label"].tolist()), atol=1e-6
    )
    from fdflare.analysis.metrics import read_predictions

    assert len(read_predictions(out)) == 12  # what `fdflare evaluate` reads


def test_joined_table(trained, tmp_path):
    out = tmp_path / "p.csv"
    assert main(predict_argv(trained, out, "--table", str(trained["table"]))) == 0
    joined = pd.read_csv(tmp_path / "p_joined.csv")
    assert list(joined.columns) == JOINED
    pred = pd.read_csv(out)
    assert joined["label"].tolist() == pred["timestamp"].tolist()
    np.testing.assert_array_equal(joined["flare_prob"], pred["flare_prob"])
    full = pd.read_csv(trained["table"]).set_index("label").loc[joined["label"]]
    assert joined["goes_class"].fillna("").tolist() == full["goes_class"].fillna("").tolist()
    np.testing.assert_array_equal(joined["fl_lon"], full["fl_lon"])
    np.testing.assert_array_equal(joined["fl_lat"], full["fl_lat"])
    assert joined["fl_start"].fillna("").tolist() == full["fl_start"].fillna("").tolist()
    import fdflare.analysis.spatial as spatial

    assert (
        len(spatial.read_spatial_table(tmp_path / "p_joined.csv")) == 12
    )  # what `fdflare spatial` reads


def test_table_without_the_predicted_images(trained, tmp_path, capsys):
    table = tmp_path / "labels.csv"
    pd.read_csv(trained["table"]).iloc[6:].to_csv(table, index=False)  # drops 2 of January's images
    out = tmp_path / "p.csv"
    assert main(predict_argv(trained, out, "--table", str(table))) == 2
    err = capsys.readouterr().err
    assert str(table) in err and "6 of 12 predicted images are not in the label table" in err
    assert not out.exists() and not (tmp_path / "p_joined.csv").exists()  # nothing half-written


def test_table_is_read_by_the_label_table_rule(trained, tmp_path, capsys):
    """``--table`` once took a second row for an image (and joined the first) where
    ``--labels`` refused it: both are now read by ``read_label_csv``."""
    table = tmp_path / "labels.csv"
    full = pd.read_csv(trained["table"])
    pd.concat([full, full.iloc[[3]]], ignore_index=True).to_csv(table, index=False)
    out = tmp_path / "p.csv"
    code, err = cli(predict_argv(trained, out, "--table", str(table)), capsys)
    assert code == 2
    label = full["label"].iloc[3]
    assert err.strip() == (
        f"fdflare predict: error: {table}, line {len(full) + 2}, field 'label': a second row "
        f"for {label} (each image is one instance)"
    )
    assert not out.exists()


def test_corrupt_checkpoints_name_the_file(trained, tmp_path, capsys):
    cases = {
        "garbage.ckpt": lambda p: p.write_bytes(b"\x80\x04 not a checkpoint"),
        "truncated.ckpt": lambda p: p.write_bytes(trained["ckpt"].read_bytes()[:4096]),
        "list.ckpt": lambda p: torch.save([1, 2, 3], p),
        "empty.ckpt": lambda p: torch.save({}, p),
        "object.ckpt": lambda p: torch.save({"state_dict": _Opaque()}, p),
    }
    cases["random.pt"] = lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096))
    cases["zero.pt"] = lambda p: p.write_bytes(b"")
    for name, make in cases.items():
        path = tmp_path / name
        make(path)
        assert main(predict_argv(trained, tmp_path / "p.csv", ckpt=path)) == 2, name
        err = capsys.readouterr().err
        assert str(path) in err and err.count("\n") == 1, (name, err)
        assert "weights_only=False" not in err and "weights_only` set to `False" not in err
        assert not err.rstrip().endswith(":"), (name, err)  # never a blank reason
    assert not (tmp_path / "p.csv").exists()
    path = tmp_path / "zero.pt"
    main(predict_argv(trained, tmp_path / "p.csv", ckpt=path))
    assert "cannot read checkpoint: the file is empty" in capsys.readouterr().err


class _Opaque:
    """Not a tensor: ``torch.load(weights_only=True)`` refuses it."""


def test_checkpoint_of_another_architecture(trained, tmp_path, capsys):
    assert main(predict_argv(trained, tmp_path / "p.csv", "--model", "vgg16")) == 2
    assert "holds a resnet18 model, not vgg16" in capsys.readouterr().err
    bare = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18", pretrained=False).state_dict(), bare)
    assert main(predict_argv(trained, tmp_path / "p.csv", "--model", "alexnet", ckpt=bare)) == 2
    err = capsys.readouterr().err
    assert str(bare) in err and "do not fit a alexnet model" in err
    assert main(predict_argv(trained, tmp_path / "p.csv", ckpt=bare)) == 2
    assert "name its architecture with --model" in capsys.readouterr().err


def test_study_style_state_dict_file(trained, tmp_path):
    """The study saved {'model_state_dict', 'optimizer_state_dict'}: same module names, same output."""
    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    sd = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    pth = tmp_path / "Model_resnet_fold1.pth"
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {}}, pth)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(predict_argv(trained, a)) == 0
    assert (
        main(predict_argv(trained, b, "--model", "resnet18", "--image-size", "32", ckpt=pth)) == 0
    )
    pd.testing.assert_frame_equal(pd.read_csv(a), pd.read_csv(b))


def test_wrong_image_size_for_the_checkpoint(trained, tmp_path, capsys):
    ds64 = make_tiny_dataset(tmp_path / "ds64", size=64, per_month=1)
    argv = predict_argv(trained, tmp_path / "p.csv")
    argv[argv.index("--labels") + 1] = str(ds64["labels"] / "Fold1_val.csv")
    argv[argv.index("--images") + 1] = str(ds64["images"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(ds64["images"]) in err and "is 64x64 L, expected 32x32" in err


def test_missing_images_counted_or_skipped(trained, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(trained["images"], images)
    gone = pd.read_csv(trained["labels"] / "Fold1_val.csv")["label"][5]
    (images / gone).unlink()
    argv = predict_argv(trained, tmp_path / "p.csv")
    argv[argv.index("--images") + 1] = str(images)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 of 12 images are missing" in err and gone in err
    assert main([*argv, "--skip-missing"]) == 0
    assert "(1 rows skipped: image missing)" in capsys.readouterr().out
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == 11 and gone not in set(pred["timestamp"])


# --------------------------------------------------------------------------- cv


def test_cv_trains_predicts_and_summarises(trained, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = ["cv", "--models", "resnet18", "--folds", "2", "--labels", str(trained["labels"]),
            "--images", str(trained["images"]), "--out", str(out), "--epochs", "1", "--image-size", "32", *FAST]  # fmt: skip
    assert main(argv) == 0
    pred = pd.read_csv(out / "predictions" / "fold2_resnet18.csv")
    assert list(pred.columns) == ["timestamp", "flare_prob", "target"]
    assert (
        pred["timestamp"].tolist()
        == pd.read_csv(trained["labels"] / "Fold2_val.csv")["label"].tolist()
    )
    joined = pd.read_csv(out / "predictions" / "fold2_resnet18_joined.csv")
    assert list(joined.columns) == [
        "label",
        "flare_prob",
        "target",
        "goes_class",
        "fl_lon",
        "fl_lat",
        "fl_start",
    ]
    summary = pd.read_csv(out / "cv_summary.csv")
    assert summary[["model", "fold", "n"]].values.tolist() == [["resnet18", 2, 12]]
    assert "summary:" in capsys.readouterr().out
    # rerun with --resume: the finished run is kept, nothing is retrained
    before = (out / "resnet18" / "fold2" / "last.ckpt").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert (out / "resnet18" / "fold2" / "last.ckpt").stat().st_mtime_ns == before


def test_cv_slurm_script(trained, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = ["cv", "--models", "alexnet,vgg16,resnet34", "--folds", "1,2", "--labels", str(trained["labels"]),
            "--images", str(trained["images"]), "--out", str(out), "--slurm", "--slurm-gpus", "2",
            "--slurm-partition", "gpu", "--max-lr", "1e-4"]  # fmt: skip
    assert main(argv) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH --array=0-5" in script and "#SBATCH --gres=gpu:2" in script
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --partition=gpu" in script
    assert "MODELS=(alexnet vgg16 resnet34)" in script and "FOLDS=(1 2)" in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert (
        '--models "$MODEL" --folds "$FOLD"' in srun and "--resume" in srun and "--devices 2" in srun
    )
    assert f"--labels {trained['labels'].resolve()}" in srun and "--max-lr 0.0001" in srun
    assert (out / "slurm").is_dir()  # SLURM needs the --output folder to exist
    # every array task maps to one model x fold pair
    body = "\n".join(
        line
        for line in script.splitlines()
        if line.startswith(("MODELS=", "FOLDS=", "MODEL=", "FOLD="))
    )
    pairs = set()
    for task in range(6):
        res = subprocess.run(
            ["bash", "-c", f"SLURM_ARRAY_TASK_ID={task}\n{body}\necho $MODEL $FOLD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        pairs.add(tuple(res.stdout.split()))
    assert pairs == {(m, f) for m in ("alexnet", "vgg16", "resnet34") for f in ("1", "2")}


def test_a_checkpoint_is_read_without_lightning(trained):
    code = (
        "import sys\n"
        "from fdflare.inference.predict import load_model\n"
        f"loaded = load_model({str(trained['ckpt'])!r})\n"
        "assert loaded.model == 'resnet18' and loaded.epoch == 1\n"
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules, "
        "sorted(m for m in sys.modules if 'lightning' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--accelerator", "gpu"], "--accelerator: gpu: this machine has no CUDA GPU"),
        (["--device", "cuda"], "--accelerator cuda: this machine has no CUDA GPU"),
        (["--device", "cuda:3"], "--accelerator cuda"),
        (["--device", "bogus"], "--device: expected auto, cpu, cuda, cuda:N or mps"),
        (["--accelerator", "tpu"], "--accelerator: tpu: no TPU runtime"),
        (["--accelerator", "cuda:0"], "--accelerator: expected auto, cpu, gpu (= cuda), mps"),
        (["--devices", "2"], "prediction runs on one device"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_device_or_batch_is_one_line_before_any_work(trained, tmp_path, capsys, extra, words):
    if torch.cuda.is_available() and {"gpu", "cuda", "cuda:3"} & set(extra):
        pytest.skip("this machine has a GPU")
    out = tmp_path / "p.csv"
    code, err = cli(predict_argv(trained, out, *extra), capsys)
    lines = [line for line in err.splitlines() if "is deprecated" not in line]
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not out.exists()


def test_device_is_a_deprecated_alias(trained, tmp_path, capsys):
    out = tmp_path / "p.csv"
    code, err = cli(predict_argv(trained, out, "--device", "cpu"), capsys)
    assert code == 0 and "--device is deprecated" in err and "use --accelerator" in err
    assert len(pd.read_csv(out)) == 12


def test_json_says_what_the_summary_says(trained, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(predict_argv(trained, out, "--accelerator", "cpu", "--json")) == 0
    result = json.loads(capsys.readouterr().out)  # one object, nothing else on stdout
    assert result["predictions"] == str(out) and result["n"] == len(pd.read_csv(out)) == 12
    assert result["joined"] is None and result["skipped_missing"] == 0


def test_outputs_are_checked_before_predicting(trained, tmp_path, capsys):
    before = trained["ckpt"].read_bytes()
    code, err = cli(predict_argv(trained, trained["ckpt"]), capsys)
    assert code == 2 and "refusing to overwrite an input" in err
    assert trained["ckpt"].read_bytes() == before
    labels = trained["labels"] / "Fold1_val.csv"
    code, err = cli(predict_argv(trained, labels), capsys)
    assert code == 2 and "the input" in err
    code, err = cli(predict_argv(trained, tmp_path), capsys)  # a folder
    assert code == 2 and err.count("\n") == 1 and "is a folder" in err
    # the joined file beside OUT may not be an input either
    table = tmp_path / "p_joined.csv"
    shutil.copy(trained["table"], table)
    code, err = cli(predict_argv(trained, tmp_path / "p.csv", "--table", str(table)), capsys)
    assert code == 2 and "the input" in err and not (tmp_path / "p.csv").exists()


def test_header_only_label_table(trained, tmp_path, capsys):
    empty = tmp_path / "Fold3_val.csv"
    empty.write_text("label,goes_class\n")
    argv = predict_argv(trained, tmp_path / "p.csv")
    argv[argv.index("--labels") + 1] = str(empty)
    code, err = cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{empty}: the table has a header but no rows" in err


# --------------------------------------------------------------------------- cv: arguments, SLURM, summary


def cv_argv(ds: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["cv", "--labels", str(ds["labels"]), "--images", str(ds["images"]), "--out", str(out),
            "--epochs", "1", "--image-size", "32", *FAST, *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--folds", "9"], "--folds: '9': choose one of 1, 2, 3, 4"),
        (["--folds", "1,1"], "--folds: 1 given more than once"),
        (["--models", "resnet18,resnet18", "--slurm"], "--models: resnet18 given more than once"),
        (["--models", "lenet"], "--models: 'lenet': choose one of alexnet"),
        (["--accelerator", "tpu"], "--accelerator: tpu: no TPU runtime"),
        (["--slurm-gpus", "-1", "--slurm"], "--slurm-gpus"),
    ],
)
def test_cv_bad_arguments_fail_before_any_work(trained, tmp_path, capsys, extra, words):
    out = tmp_path / "cv"
    code, err = cli(cv_argv(trained, out, *extra), capsys)
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_cv_out_is_a_file(trained, tmp_path, capsys):
    file = tmp_path / "cv"
    file.write_text("x")
    code, err = cli(cv_argv(trained, file, "--folds", "2"), capsys)
    assert code == 2 and "is a file" in err and file.read_text() == "x"


def test_cv_slurm_json_and_the_holdout_fraction_flag(trained, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = cv_argv(trained, out, "--models", "resnet18", "--slurm", "--holdout", "0.25", "--json")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("--holdout is deprecated") == 1
    result = json.loads(captured.out)  # one object: the script is a string in it
    assert result["out"] == str(out.resolve()) and result["slurm_script"].startswith("#!/bin/bash")
    srun = next(ln for ln in result["slurm_script"].splitlines() if ln.startswith("srun "))
    assert "--holdout-fraction 0.25" in srun and "--holdout " not in srun


def test_cv_slurm_on_cpu_and_a_path_with_spaces(trained, tmp_path, capsys):
    out = tmp_path / "cv out"
    argv = cv_argv(trained, out, "--models", "resnet18", "--slurm", "--slurm-gpus", "0")
    assert main(argv) == 0
    script = capsys.readouterr().out
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--devices 0" not in srun and "--accelerator cpu --devices 1" in srun
    assert "--gres" not in script and "#SBATCH --ntasks-per-node=1" in script
    assert f'#SBATCH --output="{out.resolve()}/slurm/%x-%A_%a.out"' in script


def test_cv_summary_keeps_every_task_row(tmp_path):
    """Array tasks finishing together each add their row: none is lost."""
    import multiprocessing

    jobs = [(str(tmp_path), fold, model) for model in ("alexnet", "vgg16") for fold in (1, 2, 3, 4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(write_summary_part, jobs)
    summary = pd.read_csv(tmp_path / "cv_summary.csv")
    assert sorted(zip(summary["model"], summary["fold"], strict=True)) == sorted(
        (m, f) for _, f, m in jobs
    )


@pytest.fixture(scope="module")
def cv_with_catalog(trained, tmp_path_factory) -> dict[str, Any]:
    """One ``fdflare cv`` of resnet18 on folds 1 and 2 with a flare catalog, and what it printed.

    Shared by the tests of its baselines and report and of the ensemble it writes.
    """
    tmp = tmp_path_factory.mktemp("cv_catalog")
    table = pd.read_csv(trained["table"])
    flares = table[table["target"] == 1]
    catalog = tmp / "flares.csv"
    pd.DataFrame(
        {
            "start_time": flares["fl_start"],
            "goes_class": "M1.5",
            "fl_lon": flares["fl_lon"],
            "fl_lat": flares["fl_lat"],
        }
    ).to_csv(catalog, index=False)
    out = tmp / "cv"
    argv = ["cv", "--models", "resnet18", "--folds", "1,2", "--labels", str(trained["labels"]),
            "--images", str(trained["images"]), "--out", str(out), "--epochs", "1",
            "--image-size", "32", "--catalog", str(catalog), *FAST]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return {"out": out, "printed": printed.getvalue()}


def test_cv_with_a_catalog_shows_baselines_calibration_and_a_report(cv_with_catalog):
    out = cv_with_catalog["out"]
    printed = cv_with_catalog["printed"]
    assert "beside the baselines" in printed and "persistence" in printed
    assert ("beats persistence" in printed) or ("does NOT beat persistence" in printed)
    for k in (1, 2):
        base = pd.read_csv(out / "baselines" / f"fold{k}_persistence.csv")
        pred = pd.read_csv(out / "predictions" / f"fold{k}_resnet18.csv")
        assert base["timestamp"].tolist() == pred["timestamp"].tolist()
    res = json.loads((out / "results.json").read_text())
    entry = res["models"]["resnet18"]
    assert set(entry["baselines"]) == {"persistence", "climatology", "history"}
    assert (out / "baselines" / "fold1_history.csv").is_file()
    assert len(entry["calibration"]["files"]) == 2
    assert (out / "calibration" / "resnet18" / "reliability.png").is_file()
    html = (out / "report.html").read_text()
    assert "persistence" in html and "history" in html and "data:image/png;base64," in html


def test_cv_with_holdout_calibrates_on_the_held_out_slice(trained, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = ["cv", "--models", "resnet18", "--folds", "1,2", "--labels", str(trained["labels"]),
            "--images", str(trained["images"]), "--out", str(out), "--epochs", "1",
            "--image-size", "32", "--holdout-fraction", "0.25", *FAST, "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)  # --json: one object, nothing else on stdout
    res = json.loads((out / "results.json").read_text())
    assert printed["summary"] == str(out.resolve() / "cv_summary.csv")
    assert [(r["model"], int(r["fold"])) for r in printed["runs"]] == [
        ("resnet18", 1),
        ("resnet18", 2),
    ]
    assert printed["protocol"] == res["protocol"] and printed["report"].endswith("report.html")
    assert printed["models"]["resnet18"]["calibration"]["fitted_on"] == "holdout"
    cal = res["models"]["resnet18"]["calibration"]
    assert cal["fitted_on"] == "holdout"
    for k, item in zip((1, 2), cal["files"], strict=True):
        held = out / "predictions" / "holdout" / f"fold{k}_resnet18.csv"
        # the map was fitted on the held-out slice of training only, never on a validation fold
        assert item["map"]["sources"] == [str(held)]
        held_names = set(pd.read_csv(held)["timestamp"])
        val_names = set(pd.read_csv(trained["labels"] / f"Fold{k}_val.csv")["label"])
        train_names = set(pd.read_csv(trained["labels"] / f"Fold{k}_train.csv")["label"])
        assert held_names <= train_names and not held_names & val_names
    assert (out / "calibration" / "resnet18" / "fold1_resnet18.csv").is_file()


# --------------------------------------------------------------------------- without answers


def test_predict_images_without_labels_matches_labelled_prediction(trained, tmp_path, capsys):
    labelled = tmp_path / "labelled.csv"
    assert main(predict_argv(trained, labelled, "--image-size", "32")) == 0
    names = pd.read_csv(labelled)["timestamp"].tolist()
    listing = trained["images"] / "some.txt"
    listing.write_text("# the first validation images\n" + "\n".join(names) + "\n\n")
    out = tmp_path / "unlabelled.csv"
    argv = ["predict", "--checkpoint", str(trained["ckpt"]), "--images", str(listing),
            "--out", str(out), "--workers", "0", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    got = pd.read_csv(out)
    assert list(got.columns) == ["timestamp", "flare_prob"]
    want = pd.read_csv(labelled)
    assert got["timestamp"].tolist() == want["timestamp"].tolist()
    assert np.allclose(got["flare_prob"], want["flare_prob"])
    # a whole folder: every image, sorted
    out_all = tmp_path / "all.csv"
    argv = ["predict", "--checkpoint", str(trained["ckpt"]), "--images", str(trained["images"]),
            "--out", str(out_all), "--workers", "0", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert len(pd.read_csv(out_all)) == len(pd.read_csv(trained["table"]))
    capsys.readouterr()


def test_an_ensemble_is_the_mean_of_its_members_and_a_map_calibrates_it(trained, tmp_path, capsys):
    import json

    from fdflare.analysis.calibration import Calibrator

    other = tmp_path / "other"
    argv = ["train", "--model", "resnet18", "--fold", "2", "--labels", str(trained["labels"]),
            "--images", str(trained["images"]), "--out", str(other), "--epochs", "1",
            "--image-size", "32", "--max-lr", "0.01", "--seed", "3", *FAST]  # fmt: skip
    assert main(argv) == 0
    members = [trained["ckpt"], other / "last.ckpt"]
    singles = []
    for i, ckpt in enumerate(members):
        out = tmp_path / f"m{i}.csv"
        argv = ["predict", "--checkpoint", str(ckpt), "--images", str(trained["images"]),
                "--out", str(out), "--workers", "0", "--quiet"]  # fmt: skip
        assert main(argv) == 0
        singles.append(pd.read_csv(out)["flare_prob"].to_numpy())
    assert not np.allclose(singles[0], singles[1])
    out = tmp_path / "ens.csv"
    argv = ["predict", "--checkpoint", *map(str, members), "--images", str(trained["images"]),
            "--out", str(out), "--workers", "0", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ensemble of 2" in printed and printed.count("member ") == 2
    ens = pd.read_csv(out)["flare_prob"].to_numpy()
    assert np.allclose(ens, (singles[0] + singles[1]) / 2, atol=1e-6)
    cal_map = Calibrator("platt", a=2.0, b=-1.0)
    cal_file = tmp_path / "map.json"
    cal_file.write_text(json.dumps(cal_map.to_dict()))
    out_cal = tmp_path / "ens_cal.csv"
    argv = ["predict", "--checkpoint", *map(str, members), "--images", str(trained["images"]),
            "--out", str(out_cal), "--calibration", str(cal_file), "--workers", "0", "--quiet",
            "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    assert np.allclose(pd.read_csv(out_cal)["flare_prob"], cal_map(ens), atol=1e-6)
    result = json.loads(capsys.readouterr().out)  # --json: what the summary says, one object
    assert result["predictions"] == str(out_cal) and result["n"] == len(ens)
    assert [m["checkpoint"] for m in result["members"]] == [str(m) for m in members]
    assert result["calibration"] == str(cal_file) and result["ensemble"] is None
    assert [m["mean_prob"] for m in result["members"]] == pytest.approx([s.mean() for s in singles])


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--labels", "{labels}", "--checkpoint", "{ckpt}"], "without --labels"),
        (["--labels", "{labels}", "--calibration", "{labels}"], "--calibration"),
        (["--calibration", "{nope}"], "no such calibration file"),
        (["--calibration", "{labels}"], "not a readable JSON"),
        (["--table", "{labels}"], "--table"),
    ],
)
def test_predict_without_labels_bad_arguments(trained, tmp_path, capsys, extra, words):
    subs = {
        "{labels}": str(trained["labels"] / "Fold1_val.csv"),
        "{ckpt}": str(trained["ckpt"]),
        "{nope}": str(tmp_path / "nope.json"),
    }
    argv = ["predict", "--checkpoint", str(trained["ckpt"]), "--images", str(trained["images"]),
            "--out", str(tmp_path / "o.csv"), "--workers", "0", "--quiet"]  # fmt: skip
    argv += [subs.get(a, a) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.csv").exists()


def test_an_image_list_that_is_not_text_or_leaves_its_folder(trained, tmp_path, capsys):
    bad = tmp_path / "list.txt"
    bad.write_bytes(b"2011/01/\xff.png\n")
    base = ["predict", "--checkpoint", str(trained["ckpt"]), "--out", str(tmp_path / "o.csv"),
            "--workers", "0", "--quiet", "--images"]  # fmt: skip
    assert main([*base, str(bad)]) == 2
    assert "UTF-8" in capsys.readouterr().err
    bad.write_text("../elsewhere/HMI.m2011.01.01_00.00.00.png\n")
    assert main([*base, str(bad)]) == 2
    assert "line 1" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, str(empty)]) == 2
    assert "no images" in capsys.readouterr().err


def test_cv_writes_an_ensemble_that_predict_runs(trained, cv_with_catalog, tmp_path, capsys):
    from fdflare.analysis.calibration import Calibrator

    out = tmp_path / "cv"  # a copy of the shared run, which this test moves
    shutil.copytree(cv_with_catalog["out"], out)
    ens = json.loads((out / "ensemble.json").read_text())
    assert [(m["model"], m["fold"]) for m in ens["members"]] == [("resnet18", 1), ("resnet18", 2)]
    assert all(not Path(m["checkpoint"]).is_absolute() for m in ens["members"])
    assert all(m["calibration"]["method"] == "isotonic" for m in ens["members"])
    # the folder moves whole: checkpoints are found beside the file
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    pred = tmp_path / "ens.csv"
    argv = ["predict", "--ensemble", str(moved / "ensemble.json"), "--images",
            str(trained["images"]), "--out", str(pred), "--workers", "0", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "2 of 2 members calibrated" in capsys.readouterr().out
    got = pd.read_csv(pred)["flare_prob"].to_numpy()
    singles = []
    for m in ens["members"]:
        single = tmp_path / f"fold{m['fold']}.csv"
        argv = ["predict", "--checkpoint", str(moved / m["checkpoint"]), "--images",
                str(trained["images"]), "--out", str(single), "--workers", "0", "--quiet"]  # fmt: skip
        assert main(argv) == 0
        raw = pd.read_csv(single)["flare_prob"].to_numpy()
        singles.append(Calibrator.from_dict(m["calibration"])(raw))
    assert np.allclose(got, np.mean(singles, axis=0), atol=1e-5)
    assert main(["predict", "--images", str(trained["images"]), "--out", str(pred)]) == 2
    assert "--checkpoint FILE... or --ensemble FILE" in capsys.readouterr().err


def test_a_history_map_reads_each_images_flares_from_the_catalog(trained, tmp_path, capsys):
    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.history import flare_history
    from fdflare.core.paths import parse_image_times

    labels = pd.read_csv(trained["table"])
    times = pd.to_datetime(labels["time"])
    # flares a few hours before every third image, up to the middle of the year only
    flares = times[times < "2011-07-01"].iloc[::3] - pd.Timedelta(hours=5)
    cat = tmp_path / "flares.csv"
    pd.DataFrame(
        {"start_time": flares.dt.strftime("%Y-%m-%d %H:%M:%S"), "goes_class": "M2.0",
         "fl_lon": 10.0, "fl_lat": 5.0}
    ).to_csv(cat, index=False)  # fmt: skip
    hist, cal = fit_history_map(cat, "2011-01-01", "2011-12-31", tmp_path / "history.json")
    plain, mapped = tmp_path / "plain.csv", tmp_path / "mapped.csv"
    base = ["predict", "--checkpoint", str(trained["ckpt"]), "--images", str(trained["images"]),
            "--workers", "0", "--quiet"]  # fmt: skip
    assert main([*base, "--out", str(plain)]) == 0
    capsys.readouterr()
    argv = [
        *base,
        "--out",
        str(mapped),
        "--calibration",
        str(hist),
        "--catalog",
        str(cat),
        "--json",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    got, raw = pd.read_csv(mapped), pd.read_csv(plain)
    assert list(got["timestamp"]) == list(raw["timestamp"])
    t = pd.DatetimeIndex(parse_image_times(got["timestamp"])[0])
    expected = cal(raw["flare_prob"].to_numpy(), flare_history(t, read_catalog(cat)))
    assert np.allclose(got["flare_prob"], expected, atol=1e-6)
    assert not np.allclose(
        got["flare_prob"], cal(raw["flare_prob"].to_numpy(), np.zeros((len(t), 4)) - 7)
    )
    # the images of the second half lie past the catalog's last flare: said, not hidden
    # and so do the first images, whose 72 h reach back before the catalog's first flare
    past = int((t > flares.max() + pd.Timedelta(hours=72)).sum())
    early = int((t - pd.Timedelta(hours=72) < flares.min()).sum())
    assert past > 0 and early > 0 and result["catalog"] == str(cat)
    assert result["notes"] == [
        f"--catalog: {early} of {len(t)} instances lie less than 72 h after the catalog's first "
        f"flare ({flares.min():%Y-%m-%d %H:%M}), or before it: their flare history reads as "
        "quiet before it, which is true only if the catalog covers that time",
        f"--catalog: {past} of {len(t)} instances lie more than 72 h after the catalog's last "
        f"flare ({flares.max():%Y-%m-%d %H:%M}): their flare history reads as quiet, which is "
        "true only if the catalog covers them",
    ]
    # an image whose name holds no time has no history: one line naming it
    odd = trained["images"] / "odd.txt"
    odd.write_text(got["timestamp"].iloc[0] + "\n" + "2011/01/03/img_0001.png\n")
    try:
        assert main([*base, "--images", str(odd), "--out", str(tmp_path / "o.csv"),
                     "--calibration", str(hist), "--catalog", str(cat)]) == 2  # fmt: skip
    finally:
        odd.unlink()
    err = capsys.readouterr().err
    assert "img_0001.png holds no time" in err and "odd.txt" in err and err.count("\n") == 1
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--catalog", "{cat}"], "--catalog is read only by a history map: give --calibration"),
        (["--calibration", "{hist}"], "a history map reads the flare history: give --catalog"),
        (
            ["--calibration", "{platt}", "--catalog", "{cat}"],
            "--catalog is read only by a history map",
        ),
        (["--calibration", "{hist}", "--catalog", "{empty}"], "lists no flare"),
        (["--calibration", "{hist}", "--catalog", "{nope}"], "--catalog"),
        (
            ["--labels", "{labels}", "--catalog", "{cat}"],
            "--catalog goes with predictions without --labels",
        ),
    ],
)
def test_a_history_map_and_its_catalog_go_together(trained, tmp_path, capsys, extra, words):
    cat = tmp_path / "flares.csv"
    cat.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-01-02 10:00:00,M1.0,0,0\n")
    hist, _ = fit_history_map(cat, "2011-01-01", "2011-01-10", tmp_path / "history.json")
    (tmp_path / "platt.json").write_text(json.dumps({"method": "platt", "a": 1.0, "b": 0.0}))
    (tmp_path / "empty.csv").write_text("start_time,goes_class,fl_lon,fl_lat\n")
    subs = {"{cat}": str(cat), "{hist}": str(hist), "{platt}": str(tmp_path / "platt.json"),
            "{empty}": str(tmp_path / "empty.csv"), "{nope}": str(tmp_path / "nope.csv"),
            "{labels}": str(trained["labels"] / "Fold1_val.csv")}  # fmt: skip
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    for ckpt in (trained["ckpt"], garbage):  # refused before any model loads
        argv = ["predict", "--checkpoint", str(ckpt), "--images", str(trained["images"]),
                "--out", str(tmp_path / "o.csv"), "--workers", "0", "--quiet"]  # fmt: skip
        assert main([*argv, *[subs.get(a, a) for a in extra]]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "o.csv").exists()
