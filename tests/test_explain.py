"""`fdflare explain`: attribution maps through captum on a trained tiny model, disk shares, --where."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clitools import run_cli as cli
from fdflare.analysis.attribution import METHODS, TARGET_LAYERS, attribute, occlusion_window
from fdflare.analysis.explain import (
    attribution_shares,
    check_geometry,
    explain_image,
    great_circle_deg,
    heliographic,
    pixel_heliographic,
)
from fdflare.analysis.explain_select import parse_where, read_prediction_table, select_rows
from fdflare.analysis.figures import limb_meridians
from fdflare.cli import main
from fdflare.core.errors import UsageError
from fdflare.inference.predict import load_model
from fdflare.models.networks import create_model
from fdflare.models.registry import list_models
from test_data import make_tiny_dataset

SIZE = 32
GEO = {"center_x": 15.5, "center_y": 15.5, "radius_px": 13.0, "width": SIZE, "height": SIZE}
FAST = ["--no-pretrained", "--workers", "0", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A smallcnn trained one epoch on 32 px images, its joined predictions, a geometry.csv."""
    ds = make_tiny_dataset(tmp_path_factory.mktemp("tiny"), size=SIZE)
    run = ds["root"] / "run"
    argv = ["train", "--model", "smallcnn", "--fold", "1", "--labels", str(ds["labels"]), "--images",
            str(ds["images"]), "--out", str(run), "--epochs", "1", "--image-size", str(SIZE), *FAST]  # fmt: skip
    assert main(argv) == 0
    preds = ds["root"] / "preds" / "fold1.csv"
    argv = ["predict", "--checkpoint", str(run / "last.ckpt"), "--labels", str(ds["labels"] / "Fold1_val.csv"),
            "--images", str(ds["images"]), "--out", str(preds), "--table", str(ds["table"]), "--workers", "0", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    names = sorted(p.relative_to(ds["images"]).as_posix() for p in ds["images"].rglob("*.png"))
    # the layout of `fdflare synth`: DIR/geometry.csv beside DIR/images, paths relative to images
    pd.DataFrame([{"path": n, **GEO} for n in names]).to_csv(
        ds["root"] / "geometry.csv", index=False
    )
    (ds["root"] / "three.txt").write_text("\n".join(f"images/{n}" for n in names[:3]) + "\n")
    return {
        **ds,
        "ckpt": run / "last.ckpt",
        "preds": preds,
        "joined": preds.with_name("fold1_joined.csv"),
    }


def explain_argv(ds: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["explain", "--checkpoint", str(ds["ckpt"]), "--out", str(out), "--quiet", *extra]


# --------------------------------------------------------------------------- the methods


def test_every_registered_model_has_its_last_conv_block_as_target():
    assert set(TARGET_LAYERS) == set(list_models())
    for name in list_models():
        net = create_model(name, pretrained=False)
        modules = list(net.named_modules())
        target = TARGET_LAYERS[name]
        at = [n for n, _ in modules].index(target)
        inside = [m for n, m in modules if n == target or n.startswith(target + ".")]
        after = [m for n, m in modules[at + 1 :] if not n.startswith(target + ".")]
        before = [m for _, m in modules[:at]]
        assert not any(isinstance(m, torch.nn.Conv2d) for m in after), name  # no conv later
        assert any(isinstance(m, torch.nn.Conv2d) for m in inside + before[-2:]), name


@pytest.mark.parametrize("method", METHODS)
def test_each_method_writes_figures_and_shares(trained, tmp_path, capsys, method):
    out = tmp_path / "out"
    argv = explain_argv(
        trained, out, "--images", str(trained["root"] / "three.txt"), "--explain-method", method
    )
    # the list names images/...: geometry.csv sits in the list's folder, keyed by file name
    code, err = cli([*argv, "--geometry", str(trained["root"] / "geometry.csv")], capsys)
    assert code == 0, err
    table = pd.read_csv(out / "explanations.csv")
    assert len(table) == 3 and set(table["method"]) == {method}
    for png in table["png"]:
        with Image.open(out / png) as im:
            im.load()
            assert im.size == (700, 700) and im.format == "PNG"
    shares = table[["share_off_disk", "share_central", "share_beyond_70"]]
    assert shares.notna().all().all(), table
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-8)
    assert table["share_near_flare"].isna().all()  # no flare location without a table
    assert table["probability"].between(0, 1).all()


def test_explain_image_matches_predict_and_leaves_the_model_intact(trained, tmp_path):
    loaded = load_model(trained["ckpt"])
    pred = pd.read_csv(trained["preds"])
    label = pred["timestamp"].iloc[0]
    image = np.asarray(Image.open(trained["images"] / label))
    relus = [m for m in loaded.net.modules() if isinstance(m, torch.nn.ReLU)]
    rec = explain_image(loaded, image, GEO, method="guided-gradcam", out_png=tmp_path / "a.png")
    assert rec["probability"] == pytest.approx(pred["flare_prob"].iloc[0], abs=1e-6)
    assert all(m.inplace for m in relus)  # turned back on after guided backpropagation
    again = explain_image(loaded, image, None, method="gradcam", out_png=tmp_path / "b.png")
    assert again["probability"] == pytest.approx(rec["probability"], abs=1e-7)
    assert again["share_central"] is None and "no disk geometry" in again["warnings"][0]
    assert (tmp_path / "b.png").is_file() and not list(tmp_path.glob(".*.part"))


def test_ig_completeness_from_the_no_field_baseline(trained):
    """IG's map sums to logit(image) - logit(baseline): the baseline is what the docs say."""
    loaded = load_model(trained["ckpt"])
    label = pd.read_csv(trained["preds"])["timestamp"].iloc[0]
    x = torch.from_numpy(np.array(Image.open(trained["images"] / label))).float()[None, None] / 255
    base = torch.where(x > 0, torch.full_like(x, 128 / 255), torch.zeros_like(x))
    with torch.no_grad():
        gap = float(loaded.net.logits(x)[0, 1] - loaded.net.logits(base)[0, 1])
    total = attribute(loaded.net, loaded.model, x, "ig").sum()
    assert total == pytest.approx(gap, rel=0.05, abs=1e-4)


def test_occlusion_window_scales_with_the_image():
    assert occlusion_window(512) == (64, 32)
    assert occlusion_window(32) == (4, 2)
    assert occlusion_window(8) == (2, 1)


# --------------------------------------------------------------------------- shares


def test_shares_of_a_constructed_map():
    geo, _ = check_geometry({"center_x": 49.5, "center_y": 49.5, "radius_px": 40.0}, (100, 100))
    assert geo is not None
    attr = np.zeros((100, 100))
    attr[50, 50] = 2.0  # disk centre: central
    attr[49, 49 + 39] = 3.0  # r = 39.5 of 40: beyond 70 deg (R sin 70 = 37.6)
    attr[2, 2] = 5.0  # corner: off the disk
    attr[60, 40] = -7.0  # negative: not counted
    shares, warnings = attribution_shares(attr, geo)
    assert warnings == []
    assert shares["share_central"] == pytest.approx(0.2)
    assert shares["share_beyond_70"] == pytest.approx(0.3)
    assert shares["share_off_disk"] == pytest.approx(0.5)
    assert shares["share_near_flare"] is None
    just_inside = np.zeros((100, 100))
    just_inside[49, 49 + 37] = 1.0  # r = 37.5 < 37.59: inside the 70 deg circle
    assert attribution_shares(just_inside, geo)[0]["share_central"] == 1.0
    shares, warnings = attribution_shares(-np.ones((100, 100)), geo)
    assert shares["share_central"] is None and "no positive attribution" in warnings[0]
    assert attribution_shares(attr, None)[0]["share_central"] is None


def test_geometry_of_another_image_size_is_refused():
    geo, why = check_geometry({**GEO, "width": 64, "height": 64}, (SIZE, SIZE))
    assert geo is None and "64x64" in why and "32x32" in why
    assert check_geometry({**GEO, "radius_px": 0}, (SIZE, SIZE))[0] is None
    assert check_geometry(None, (SIZE, SIZE)) == (None, "no disk geometry")


def test_great_circle_angles():
    assert great_circle_deg(0.0, 0.0, 10.0, 0.0) == pytest.approx(10.0)
    assert great_circle_deg(0.0, 89.0, 180.0, 89.0) == pytest.approx(2.0)
    assert great_circle_deg(30.0, 10.0, 30.0, 10.0) == pytest.approx(0.0)


@pytest.mark.parametrize(("b0", "crota2"), [(0.0, 0.0), (7.0, 20.0), (-5.0, 180.0)])
def test_pixels_project_back_to_the_meridians_figures_draws(b0, crota2):
    geo = {"center_x": 255.5, "center_y": 250.0, "radius_px": 200.0, "b0_deg": b0, "crota2": crota2}
    for lon in (30.0, 60.0):
        (_, _), (cols, rows) = limb_meridians(geo, lon, b0_deg=b0, crota2_deg=crota2)
        lat = np.linspace(-89.5, 89.5, 181)
        ok = np.isfinite(cols) & (np.abs(lat) < 60)
        got_lon, got_lat = pixel_heliographic(cols[ok], rows[ok], geo)
        np.testing.assert_allclose(got_lon, lon, atol=1e-6)
        np.testing.assert_allclose(got_lat, lat[ok], atol=1e-6)


def test_share_within_10_deg_of_a_flare():
    geo = {"center_x": 99.5, "center_y": 99.5, "radius_px": 90.0, "b0_deg": 0.0, "crota2": 0.0}
    shape = (200, 200)

    def pixel(lon: float, lat: float) -> tuple[int, int]:  # orthographic, b0 = 0, north up
        x, y = (
            math.cos(math.radians(lat)) * math.sin(math.radians(lon)),
            math.sin(math.radians(lat)),
        )
        return round(geo["center_y"] - 90 * y), round(geo["center_x"] + 90 * x)

    attr = np.zeros(shape)
    attr[pixel(34.0, 12.0)] = 3.0  # about 4.5 deg from the flare at (30, 10)
    attr[pixel(0.0, 0.0)] = 1.0  # 31.5 deg away
    attr[pixel(30.0, 22.0)] = 2.0  # 12 deg away: outside
    shares, _ = attribution_shares(attr, geo, (30.0, 10.0))
    assert shares["share_near_flare"] == pytest.approx(0.5)
    assert shares["share_central"] == pytest.approx(1.0)
    lon, lat = heliographic(shape, geo)
    assert np.isnan(lon[0, 0]) and abs(lon[100, 100]) < 0.5 and abs(lat[100, 100]) < 0.5
    limb = np.zeros(shape)
    limb[pixel(80.0, 0.0)] = 1.0  # a near-limb flare's own pixel: beyond 70 deg, near the flare
    limb[pixel(0.0, 0.0)] = 1.0
    shares, _ = attribution_shares(limb, geo, (80.0, 0.0))
    assert shares["share_beyond_70"] == pytest.approx(0.5)
    assert shares["share_near_flare"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- --where


@pytest.fixture
def table(tmp_path) -> pd.DataFrame:
    rows = [  # path, prob, target, lon: 0 tp central, 1 tp limb, 2 fn limb, 3 fn central,
        ("a", 0.9, 1, 10.0), ("b", 0.8, 1, -75.0), ("c", 0.2, 1, 85.0), ("d", 0.1, 1, 70.0),
        ("e", 0.3, 1, None), ("f", 0.7, 0, None), ("g", 0.6, 0, 71.0), ("h", 0.1, 0, None),
        ("i", 0.4, 0, -20.0), ("j", 0.5, 0, None),
    ]  # fmt: skip  # 4 fn unlocated, 5 fp, 6 fp limb, 7 tn, 8 tn central, 9 fp (0.5 >= 0.5)
    path = tmp_path / "joined.csv"
    pd.DataFrame(
        {
            "label": [r[0] for r in rows],
            "flare_prob": [r[1] for r in rows],
            "target": [r[2] for r in rows],
            "goes_class": "M1.0",
            "fl_lon": [r[3] for r in rows],
            "fl_lat": [0.0 if r[3] is not None else None for r in rows],
            "fl_start": "",
        }
    ).to_csv(path, index=False)
    return read_prediction_table(path)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("tp", "ab"),
        ("fp", "fgj"),
        ("tn", "hi"),
        ("fn", "cde"),
        ("positive", "abcde"),
        ("negative", "fghij"),
        ("near_limb", "bcg"),
        ("central", "adi"),  # 70.00 is central
        ("near_limb and fn", "c"),
        ("NOT central AND NOT near_limb", "efhj"),  # unlocated: neither
        ("tp or fn and central", "abd"),  # and binds tighter than or
        ("(tp or fn) and central", "ad"),
        ("not (tp or fp)", "cdehi"),
        ("not not tp", "ab"),
        ("((fn))and(near_limb)", "c"),
    ],
)
def test_where_selects_hand_counted_rows(table, where, expected):
    assert "".join(select_rows(table, where).rows["path"]) == expected


def test_where_threshold(table):
    assert "".join(select_rows(table, "fp", threshold=0.65).rows["path"]) == "f"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "fnn",
            r"unknown name 'fnn'; valid names: tp, fp, tn, fn, positive, negative, near_limb, central",
        ),
        ("tp and", "ends too early"),
        ("(tp or fn", "not closed"),
        ("tp)", "unexpected ')'"),
        ("tp or or fn", "unexpected 'or'"),
        ("tp; __import__('os')", "unexpected ';'"),
        ("flare_prob > 0.5", "unexpected '>' at character 12"),
        ("flare_prob", "unknown name 'flare_prob'"),
        ("", "empty expression"),
    ],
)
def test_where_errors_name_the_problem(where, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_where(where)


def test_where_needs_locations_and_targets_the_table_has(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("timestamp,flare_prob\na.png,0.3\n")
    table = read_prediction_table(path)
    with pytest.raises(UsageError, match=r"need.* a target column"):
        select_rows(table, "fn")
    with pytest.raises(UsageError, match=r"_joined\.csv"):
        select_rows(table, "near_limb")


def test_batch_mode_through_the_cli(trained, tmp_path, capsys):
    joined = pd.read_csv(trained["joined"])
    fn = (joined["target"] == 1) & (joined["flare_prob"] < 0.5)
    expected = joined[fn | (joined["flare_prob"] >= 0.5)]
    where = "fn or (tp or fp)"
    out = tmp_path / "out"
    argv = explain_argv(trained, out, "--predictions", str(trained["joined"]), "--where", where,
                        "--images", str(trained["images"]), "--explain-method", "gradcam", "--limit", "4")  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 0, err
    rows = pd.read_csv(out / "explanations.csv")
    n = len(expected)
    assert len(rows) == min(4, n)
    assert rows["path"].tolist() == expected["label"].tolist()[:4]
    np.testing.assert_allclose(rows["fl_lon"], expected["fl_lon"].to_numpy()[:4])
    located = rows["fl_lon"].notna()
    assert rows.loc[located, "share_near_flare"].notna().all()
    assert rows.loc[~located, "share_near_flare"].isna().all()
    assert "warning" not in err  # geometry found beside DIR/images, as synth lays it out


def test_batch_summary_and_limit(trained, tmp_path, capsys):
    joined = pd.read_csv(trained["joined"])
    n_pos = int((joined["target"] == 1).sum())
    out = tmp_path / "out"
    argv = explain_argv(trained, out, "--predictions", str(trained["joined"]), "--where", "positive",
                        "--images", str(trained["images"]), "--explain-method", "gradcam", "--limit", "1")  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.count("\n") == 0
    assert f"selected {n_pos} of {len(joined)} rows" in printed
    assert f"{n_pos - 1} more left out by --limit 1" in printed


def test_json_on_the_cpu_and_the_old_method_name(trained, tmp_path, capsys):
    out = tmp_path / "out"
    argv = explain_argv(trained, out, "--predictions", str(trained["joined"]), "--where", "positive",
                        "--images", str(trained["images"]), "--method", "gradcam", "--limit", "1",
                        "--accelerator", "cpu", "--json")  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("--method is deprecated") == 1 and "--explain-method" in captured.err
    result = json.loads(captured.out)  # one JSON object, nothing else on stdout
    rows = pd.read_csv(out / "explanations.csv")
    assert result["csv"] == str(out / "explanations.csv") and result["explained"] == len(rows) == 1
    assert result["explain_method"] == "gradcam" and set(rows["method"]) == {"gradcam"}
    assert result["device"] == "cpu"
    assert (
        result["pngs"] == [str(out / p) for p in rows["png"]] and Path(result["pngs"][0]).is_file()
    )
    n_pos = int((pd.read_csv(trained["joined"])["target"] == 1).sum())
    assert (result["selected"], result["left_out"]) == (n_pos, n_pos - 1)


def test_nothing_selected_is_done_with_a_note(trained, tmp_path, capsys):
    out = tmp_path / "out"
    argv = explain_argv(trained, out, "--predictions", str(trained["joined"]), "--where",
                        "positive and negative", "--images", str(trained["images"]))  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "selected none of the 12 rows: nothing to explain" in captured.err
    assert "explained 0 image(s)" in captured.out
    assert pd.read_csv(out / "explanations.csv").empty


def test_unknown_where_name_is_one_line(trained, tmp_path, capsys):
    argv = explain_argv(trained, tmp_path / "out", "--predictions", str(trained["joined"]), "--where",
                        "near_limb and fnn", "--images", str(trained["images"]))  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "unknown name 'fnn'" in err and "near_limb, central" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad input


def test_missing_geometry_row_warns_and_explains_without_shares(trained, tmp_path, capsys):
    geo = pd.read_csv(trained["root"] / "geometry.csv")
    names = geo["path"].tolist()[:3]
    partial = tmp_path / "geometry.csv"
    wrong = geo.iloc[[1]].assign(width=64, height=64)
    pd.concat([geo.iloc[[0]], wrong]).to_csv(
        partial, index=False
    )  # row 1 of another size, row 2 none
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{n}\n" for n in names))
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes((trained["images"] / n).read_bytes())
    out = tmp_path / "out"
    code, err = cli(
        explain_argv(trained, out, "--images", str(listing), "--geometry", str(partial)), capsys
    )
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert names[1] in lines[0] and "64x64" in lines[0] and "without the circle" in lines[0]
    assert names[2] in lines[1] and f"no row in {partial}" in lines[1]
    rows = pd.read_csv(out / "explanations.csv")
    assert rows["share_central"].notna().tolist() == [True, False, False]
    assert rows["warning"].fillna("").str.contains("without the circle").tolist() == [
        False,
        True,
        True,
    ]
    assert all((out / p).is_file() for p in rows["png"])


def test_no_geometry_file_at_all_warns_per_image(trained, tmp_path, capsys):
    images = tmp_path / "imgs"
    name = pd.read_csv(trained["preds"])["timestamp"].iloc[0]
    (images / name).parent.mkdir(parents=True)
    (images / name).write_bytes((trained["images"] / name).read_bytes())
    code, err = cli(explain_argv(trained, tmp_path / "out", "--images", str(images)), capsys)
    assert code == 0 and "no geometry.csv: give --geometry" in err
    # the layout of `fdflare prepare`: IMAGES/geometry.csv, paths relative to IMAGES
    pd.DataFrame([{"path": name, **GEO}]).to_csv(images / "geometry.csv", index=False)
    code, err = cli(
        explain_argv(trained, tmp_path / "out2", "--images", str(images), "--explain-method", "ig"),
        capsys,
    )
    assert code == 0 and err == ""
    assert pd.read_csv(tmp_path / "out2" / "explanations.csv")["share_central"].notna().all()


def test_wrong_size_image_is_an_error_before_work(trained, tmp_path, capsys):
    images = tmp_path / "imgs"
    path = images / "2011/01/01/HMI.m2011.01.01_00.00.00.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(path)
    out = tmp_path / "out"
    code, err = cli(explain_argv(trained, out, "--images", str(images)), capsys)
    assert code == 2 and err.count("\n") == 1
    assert str(path) in err and "40x40" in err and "expected 32x32" in err
    assert not out.exists()


def test_missing_images_are_counted_before_work(trained, tmp_path, capsys):
    table = pd.read_csv(trained["joined"])
    table.loc[[1, 3], "label"] = ["2011/01/01/HMI.m2011.01.01_07.00.00.png", "nowhere.png"]
    path = tmp_path / "joined.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "out"
    argv = explain_argv(trained, out, "--predictions", str(path), "--where", "tp or not tp",
                        "--images", str(trained["images"]))  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "2 of 12 images to explain are missing" in err and "nowhere.png" in err
    assert "--skip-missing" not in err and not out.exists()


def test_bad_checkpoint_names_the_file(trained, tmp_path, capsys):
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(b"\x80\x04 not a checkpoint")
    argv = [
        "explain",
        "--checkpoint",
        str(bad),
        "--images",
        str(trained["images"]),
        "--out",
        str(tmp_path / "o"),
    ]
    code, err = cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and str(bad) in err
    assert not (tmp_path / "o").exists()
    bare = tmp_path / "bare.pth"
    torch.save(create_model("smallcnn", pretrained=False).state_dict(), bare)
    argv = [
        "explain",
        "--checkpoint",
        str(bare),
        "--images",
        str(trained["images"]),
        "--out",
        str(tmp_path / "o"),
    ]
    code, err = cli(argv, capsys)
    assert code == 2 and "--model" in err and str(bare) in err


def test_bare_state_dict_with_model_and_image_size(trained, tmp_path, capsys):
    bare = tmp_path / "fold1.pth"
    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)["state_dict"]
    torch.save(
        {"model_state_dict": {k[6:]: v for k, v in state.items() if k.startswith("model.")}}, bare
    )
    argv = ["explain", "--model", "smallcnn", "--image-size", str(SIZE), "--checkpoint", str(bare),
            "--images", str(trained["root"] / "three.txt"), "--limit", "1", "--explain-method", "occlusion",
            "--geometry", str(trained["root"] / "geometry.csv"), "--out", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    code, err = cli(argv, capsys)
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "o" / "explanations.csv")) == 1


def test_outputs_are_checked_before_work(trained, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me\n")
    code, err = cli(explain_argv(trained, a_file, "--images", str(trained["images"])), capsys)
    assert code == 2 and "is a file" in err and a_file.read_text() == "keep me\n"
    code, err = cli(
        explain_argv(trained, trained["images"], "--images", str(trained["images"])), capsys
    )
    assert code == 2 and "input" in err
    code, err = cli(
        explain_argv(trained, tmp_path / "o", "--where", "fn", "--images", str(trained["images"])),
        capsys,
    )
    assert code == 2 and "--predictions" in err
    code, err = cli(explain_argv(trained, tmp_path / "o", "--predictions", str(trained["joined"]),
                                 "--images", str(trained["images"])), capsys)  # fmt: skip
    assert code == 2 and "--where" in err
    assert not (tmp_path / "o").exists()


def test_captum_missing_names_the_extra(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum` raises ImportError
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    code, err = cli(
        explain_argv(trained, tmp_path / "o", "--images", str(trained["images"])), capsys
    )
    assert code == 2 and err.count("\n") == 1 and 'pip install "fdflare[explain]"' in err
    assert not (tmp_path / "o").exists()


def test_out_inside_the_image_folder_and_a_too_deep_where_are_refused(trained, tmp_path, capsys):
    inside = trained["images"] / "explained"
    code, err = cli(explain_argv(trained, inside, "--images", str(trained["images"]), "--limit", "1"), capsys)  # fmt: skip
    assert code == 2 and "inside the image folder" in err and not inside.exists()
    deep = "(" * 240 + "tp" + ")" * 240
    for where, words in ((deep, None), ("not " * 200 + "tp", "at most")):
        code, err = cli(explain_argv(trained, tmp_path / "o", "--predictions", str(trained["joined"]),
                                     "--images", str(trained["images"]), "--where", where), capsys)  # fmt: skip
        assert code in (0, 2) and "Traceback" not in err
        if words:
            assert code == 2 and words in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [("center_x", "abc", "'abc' is not a finite number"), ("radius_px", "-3", "positive"),
     ("b0_deg", "95", "latitude from -90 to 90"), ("path", None, "a second row")],
)  # fmt: skip
def test_a_malformed_geometry_file_names_line_and_field(
    trained, tmp_path, capsys, column, value, words
):
    geo = pd.read_csv(trained["root"] / "geometry.csv", dtype=str)
    if value is None:
        geo = pd.concat([geo, geo.iloc[[1]]], ignore_index=True)
        line = len(geo) + 1
    else:
        geo.loc[2, column] = value
        line = 4
    bad = tmp_path / "geometry.csv"
    geo.to_csv(bad, index=False)
    out = tmp_path / "out"
    code, err = cli(explain_argv(trained, out, "--images", str(trained["images"]), "--geometry", str(bad)), capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert words in err and f"line {line}" in err and column in err and str(bad) in err
