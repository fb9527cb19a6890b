"""The label recipe travels with the model: label -> train -> checkpoint -> ensemble -> forecast.

A model trained on labels of ``>= C1.0 in 12 h`` must be published as such, never as the
study's ``>= M1.0 in 24 h``; a model that records no recipe is taken as the study's and says
so; members of different events, and ensemble entries that contradict their checkpoints,
are refused in one line. Every run goes through the real CLI with real (tiny) models.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fdflare.cli import main
from fdflare.core.errors import InputError
from fdflare.core.recipe import Recipe, canonical_threshold, common_recipe
from helioviewer_server import FakeHelioviewer
from test_data import make_tiny_dataset

SIZE = 32
FAST = ["--no-pretrained", "--workers", "0", "--batch-size", "16", "--quiet", "--epochs", "1",
        "--image-size", str(SIZE), "--model", "smallcnn", "--fold", "1"]  # fmt: skip


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _catalog(ds: dict[str, Path], path: Path) -> Path:
    """Flares that make the C1.0/12 h labels differ from the M1.0/24 h ones."""
    table = pd.read_csv(ds["table"])
    times = pd.to_datetime(table["time"])
    rows = []
    for i, t in enumerate(times):
        if table["target"].iloc[i] == 1:  # a C flare 5 h after: positive for C1.0 in 12 h
            rows.append((t + pd.Timedelta(hours=5), "C2.0"))
        if i % 3 == 1:  # an M flare 18 h after: positive only for a window over 18 h
            rows.append((t + pd.Timedelta(hours=18), "M1.5"))
    cat = pd.DataFrame(rows, columns=["start_time", "goes_class"]).sort_values("start_time")
    cat["start_time"] = cat["start_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    cat["fl_lon"], cat["fl_lat"] = 10.0, 5.0
    cat.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recipe")
    ds = make_tiny_dataset(root / "tiny", size=SIZE)
    catalog = _catalog(ds, root / "catalog.csv")
    c12, m24 = root / "labels_c12", root / "labels_m24"
    for out, extra in ((c12, ["--mode", "C", "--window", "12h"]), (m24, [])):
        assert main(["label", "--catalog", str(catalog), "--images", str(ds["images"]),
                     "--start", "2011-01-01", "--end", "2012-01-01", "--out", str(out),
                     *extra]) == 0  # fmt: skip
    runs = {}
    for name, labels in (("c12", c12), ("study", ds["labels"])):
        runs[name] = root / f"run_{name}"
        assert main(["train", "--labels", str(labels), "--images", str(ds["images"]),
                     "--out", str(runs[name]), *FAST]) == 0  # fmt: skip
    listing = ds["images"] / "one.txt"
    listing.write_text(str(pd.read_csv(ds["table"])["label"].iloc[0]) + "\n")
    return {"root": root, "images": ds["images"], "catalog": catalog, "c12": c12, "m24": m24,
            "run_c12": runs["c12"], "run_study": runs["study"], "listing": listing}  # fmt: skip


def test_label_records_its_recipe_with_the_catalog_hash(world):
    summary = json.loads((world["c12"] / "summary.json").read_text())
    recipe = summary["recipe"]
    assert recipe["threshold"] == "C1.0" and recipe["window"] == "12h"
    assert recipe["cadence"] == "1h" and recipe["split"]["kind"] == "quarters"
    assert recipe["catalog"] == "catalog.csv"
    assert recipe["catalog_sha256"] == hashlib.sha256(world["catalog"].read_bytes()).hexdigest()
    assert json.loads((world["m24"] / "summary.json").read_text())["recipe"]["threshold"] == "M1.0"


def test_train_copies_the_recipe_into_config_summary_and_checkpoint(world, tmp_path, capsys):
    import torch

    run = world["run_c12"]
    expect = json.loads((world["c12"] / "summary.json").read_text())["recipe"]
    assert json.loads((run / "config.json").read_text())["recipe"] == expect
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == expect and summary["event"] == "flare >= C1.0 in the next 12 h"
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["fdflare"]["recipe"] == expect
    # the run's config.json is reusable as --config: the recipe is read from the labels
    again = tmp_path / "again"
    code, _out, err = cli(["train", "--config", str(run / "config.json"), "--out", str(again),
                           "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    # labels without a recipe: the study's is assumed, and the run says so
    study = json.loads((world["run_study"] / "summary.json").read_text())
    assert study["recipe"] is None and "study's event" in " ".join(study["notes"])


def test_resume_with_labels_of_another_event_is_refused(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world["run_c12"], run)
    code, _out, err = cli(["train", "--labels", str(world["m24"]), "--images",
                           str(world["images"]), "--out", str(run), "--resume",
                           *FAST], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "C1.0 in the next 12 h" in err and "M1.0 in the next 24 h" in err


def test_predict_states_the_event_or_that_the_study_is_assumed(world, tmp_path, capsys):
    out = tmp_path / "p.csv"
    base = ["predict", "--images", str(world["listing"]), "--out", str(out), "--quiet",
            "--accelerator", "cpu"]  # fmt: skip
    code, printed, err = cli([*base, "--checkpoint", str(world["run_c12"] / "last.ckpt")], capsys)
    assert code == 0, err
    assert "P(flare >= C1.0 in the next 12 h)" in printed and "assumed" not in printed
    code, printed, err = cli([*base, "--checkpoint", str(world["run_study"] / "last.ckpt")], capsys)
    assert code == 0, err
    assert "P(flare >= M1.0 in the next 24 h)" in printed and "assumed" in printed
    # two members of different events are not averaged
    out.unlink()
    code, printed, err = cli([*base, "--checkpoint", str(world["run_c12"] / "last.ckpt"),
                              str(world["run_study"] / "last.ckpt")], capsys)  # fmt: skip
    assert code == 2 and printed == "" and err.count("\n") == 1
    assert "different events" in err and not out.exists()


def test_predict_refuses_labels_of_another_event(world, tmp_path, capsys):
    out = tmp_path / "p.csv"
    code, _printed, err = cli(["predict", "--checkpoint", str(world["run_c12"] / "last.ckpt"),
                               "--labels", str(world["m24"] / "Fold1_val.csv"), "--images",
                               str(world["images"]), "--out", str(out), "--quiet"], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "labels' targets are flare >= M1.0" in err
    assert not out.exists()


def _forecast(url: str, *extra: str) -> list[str]:
    return ["forecast", "--time", "2011-01-01T10:00", "--base-url", url, "--retries", "1",
            "--read-timeout", "5", "--accelerator", "cpu", "--json", *extra]  # fmt: skip


def test_forecast_states_the_event_and_window_its_members_were_trained_for(world, capsys):
    with FakeHelioviewer("2011-01-01T00:00", "2011-01-01T23:00") as hv:
        code, out, err = cli(_forecast(hv.base_url, "--checkpoint",
                                       str(world["run_c12"] / "last.ckpt")), capsys)  # fmt: skip
        assert code == 0, err
        fc = json.loads(out)
        assert fc["event"] == "flare >= C1.0 in the next 12 h" and fc["threshold"] == "C1.0"
        assert fc["window_hours"] == 12 and fc["recipe_assumed"] is False
        start = pd.Timestamp(fc["window_start"])
        assert pd.Timestamp(fc["window_end"]) - start == pd.Timedelta(hours=12)
        code, out, err = cli(_forecast(hv.base_url, "--checkpoint",
                                       str(world["run_study"] / "last.ckpt")), capsys)  # fmt: skip
        assert code == 0, err
        fc = json.loads(out)
        assert fc["threshold"] == "M1.0" and fc["window_hours"] == 24 and fc["recipe_assumed"]


@pytest.fixture
def ensemble_dir(world, tmp_path) -> Path:
    """A folder with the C1.0/12 h checkpoint and a bare state_dict of the same network."""
    import torch

    from fdflare.inference.predict import load_model

    folder = tmp_path / "ens"
    folder.mkdir()
    shutil.copy(world["run_c12"] / "last.ckpt", folder / "c12.ckpt")
    net = load_model(folder / "c12.ckpt").net
    torch.save(net.state_dict(), folder / "bare.pth")
    return folder


def _write(folder: Path, members: list[dict], **top) -> Path:
    path = folder / "ensemble.json"
    path.write_text(json.dumps({"format": 1, **top, "members": members}))
    return path


def _both(ens: Path, world, tmp_path, capsys) -> list[tuple[int, str, str]]:
    """``predict --ensemble`` and ``forecast --ensemble`` on one file (no server needed to fail)."""
    pred = ["predict", "--ensemble", str(ens), "--images", str(world["listing"]), "--out",
            str(tmp_path / "p.csv"), "--quiet", "--accelerator", "cpu"]  # fmt: skip
    fc = _forecast("http://127.0.0.1:9/v2/", "--ensemble", str(ens))
    return [cli(pred, capsys), cli(fc, capsys)]


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([{"checkpoint": "c12.ckpt", "model": "resnet18"}], "holds a smallcnn model, not resnet18"),
        ([{"checkpoint": "c12.ckpt", "image_size": 64}], "trained on 32 px images, not 64"),
        ([{"checkpoint": "../c12.ckpt"}], "must be a path inside the ensemble's folder"),
        ([{"checkpoint": "/etc/passwd"}], "must be a path inside the ensemble's folder"),
        ([{"checkpoint": "c12.ckpt", "recipe": {"threshold": "M1.0", "window": "24h"}}],
         "was trained for flare >= C1.0 in the next 12 h, but the ensemble says"),
        ([{"checkpoint": "c12.ckpt", "recipe": {"threshold": "Q1", "window": "24h"}}],
         "field 'members[1].recipe.threshold'"),
        ([{"checkpoint": "c12.ckpt", "recipe": {"threshold": "C1", "window": "-2h"}}],
         "not a positive duration"),
        ([{"checkpoint": "c12.ckpt", "image_size": "32"}], "image_size '32'"),
        ([{"checkpoint": "c12.ckpt", "colour": "red"}], "unknown key 'colour'"),
        ([{"checkpoint": "c12.ckpt"}, {"checkpoint": "bare.pth", "model": "smallcnn",
                                       "image_size": 32}], "different events"),
        ([{"checkpoint": "bare.pth"}], "bare state_dict"),
    ],
)  # fmt: skip
def test_predict_and_forecast_read_one_ensemble_by_one_set_of_rules(
    world, ensemble_dir, tmp_path, capsys, members, words
):
    ens = _write(ensemble_dir, members)
    before = ens.read_bytes()
    for code, out, err in _both(ens, world, tmp_path, capsys):
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert words in err and "Traceback" not in err
    assert ens.read_bytes() == before and not (tmp_path / "p.csv").exists()


def test_a_bare_state_dict_member_takes_the_recipe_its_entry_states(
    world, ensemble_dir, tmp_path, capsys
):
    recipe = {"threshold": "C1.0", "window": "12h"}
    ens = _write(ensemble_dir, [
        {"checkpoint": "c12.ckpt", "model": "smallcnn"},
        {"checkpoint": "bare.pth", "model": "smallcnn", "image_size": 32, "recipe": recipe},
    ])  # fmt: skip
    (code_p, out_p, err_p), _ = _both(ens, world, tmp_path, capsys)
    assert code_p == 0, err_p
    assert "ensemble of 2" in out_p and "P(flare >= C1.0 in the next 12 h)" in out_p
    probs = pd.read_csv(tmp_path / "p.csv")["flare_prob"]
    assert len(probs) == 1 and 0.0 <= probs.iloc[0] <= 1.0
    with FakeHelioviewer("2011-01-01T00:00", "2011-01-01T23:00") as hv:
        code, out, err = cli(_forecast(hv.base_url, "--ensemble", str(ens)), capsys)
    assert code == 0, err
    fc = json.loads(out)
    assert fc["threshold"] == "C1.0" and len(fc["members"]) == 2


def test_cv_writes_image_size_and_recipe_into_the_ensemble(world, tmp_path):
    from fdflare.forecast.ensemble import read_ensemble, write_ensemble

    folder = tmp_path / "cv"
    shutil.copytree(world["run_c12"], folder / "smallcnn" / "fold1")
    path = write_ensemble(folder, [{"model": "smallcnn", "fold": 1,
                                    "checkpoint": folder / "smallcnn" / "fold1" / "last.ckpt"}])  # fmt: skip
    data = json.loads(path.read_text())
    assert data["recipe"]["threshold"] == "C1.0" and data["recipe"]["window"] == "12h"
    assert data["members"][0]["image_size"] == SIZE
    assert data["members"][0]["checkpoint"] == "smallcnn/fold1/last.ckpt"
    moved = tmp_path / "moved"
    shutil.move(folder, moved)  # the folder moves whole
    (entry,) = read_ensemble(moved / "ensemble.json")
    assert entry.image_size == SIZE and entry.recipe is not None and entry.recipe.window == "12h"
    outside = tmp_path / "elsewhere.ckpt"
    shutil.copy(world["run_c12"] / "last.ckpt", outside)
    with pytest.raises(InputError, match="outside the ensemble's folder"):
        write_ensemble(moved, [{"model": "smallcnn", "fold": 1, "checkpoint": outside}])


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("M", "M1.0"), ("c", "C1.0"), ("M5", "M5.0"), ("X10", "X10.0"), ("m1.55", "M1.55")],
)
def test_thresholds_are_written_one_way(text, canonical):
    assert canonical_threshold(text) == canonical


def test_common_recipe_refuses_two_events_and_prefers_a_stated_one():
    c12 = Recipe(threshold="C1.0", window="12h")
    with pytest.raises(InputError, match="different events"):
        common_recipe([("a", c12), ("b", Recipe())])
    assumed = Recipe(assumed=True)
    assert not common_recipe([("a", assumed), ("b", Recipe(cadence="1h"))]).assumed
    assert Recipe(window="1440min").same_event(Recipe(window="24h"))


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda r: r.update(format="1"), "field 'fdflare.format': format '1' is not a format number"),
        (lambda r: r.update(format=99), "field 'fdflare.format': checkpoint format 99 is newer"),
        (lambda r: r.update(config=["smallcnn"]), "field 'fdflare.config': the training config is a list"),
        (lambda r: r["config"].update(image_size="32"), "field 'fdflare.config.image_size'"),
        (lambda r: r["config"].update(image_size=0), "image size 0 is not a positive number"),
        (lambda r: r["config"].update(model="resnet9000"), "field 'fdflare.config.model'"),
        (lambda r: r["config"].update(input_adapter=3), "field 'fdflare.config.input_adapter'"),
        (lambda r: r.update(epoch="three"), "field 'fdflare.epoch'"),
        (lambda r: r.update(scores=[1]), "field 'fdflare.scores'"),
        (lambda r: r.update(recipe={"threshold": "M1.0"}), "field 'fdflare.recipe.window'"),
        (lambda r: r.update(recipe="M1.0 in 24 h"), "field 'fdflare.recipe'"),
    ],
)  # fmt: skip
def test_every_field_of_a_checkpoint_is_checked(world, tmp_path, capsys, edit, words):
    import torch

    ckpt = torch.load(world["run_c12"] / "last.ckpt", map_location="cpu", weights_only=True)
    edit(ckpt["fdflare"])
    bad = tmp_path / "edited.ckpt"
    torch.save(ckpt, bad)
    before = bad.read_bytes()
    out = tmp_path / "p.csv"
    for argv in (
        ["predict", "--checkpoint", str(bad), "--images", str(world["listing"]), "--out", str(out),
         "--quiet", "--accelerator", "cpu"],
        _forecast("http://127.0.0.1:9/v2/", "--checkpoint", str(bad)),
    ):  # fmt: skip
        code, printed, err = cli(argv, capsys)
        assert code == 2 and printed == "" and err.count("\n") == 1, err
        assert words in err and "Traceback" not in err
    assert bad.read_bytes() == before and not out.exists()
