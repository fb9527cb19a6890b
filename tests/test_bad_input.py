"""Every command, given bad input: a non-zero exit, one line on stderr, no traceback, nothing
written, and every input file byte for byte as it was.

Each row is an invocation a user could type. ``{in}`` is a folder of small, valid inputs
(a flare catalog, images, labels, predictions, checkpoint-shaped files); ``{out}`` is an
output path that does not exist yet and must still not exist afterwards.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fdflare.cli import main

HOURS = [f"2011/01/01/HMI.m2011.01.01_{h:02d}.00.00.png" for h in range(8)]


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "catalog.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n"
        "2011-01-01 02:10:00,M1.2,30.0,-15.0\n"
        "2011-01-01 05:00:00,C3.0,-80.0,10.0\n"
    )
    (root / "catalog_lon500.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n2011-01-01 02:10:00,M1.2,500.0,-15.0\n"
    )
    (root / "catalog_mixed_tz.csv").write_text(
        "start_time,goes_class,fl_lon,fl_lat\n"
        "2011-02-01 00:39:00,M1.2,30.0,-15.0\n"
        "2011-02-01T00:40:00Z,M1.3,31.0,-15.0\n"
        "2011-02-01T00:41:00+05:00,Q1.0,32.0,-15.0\n"
    )
    images = root / "images"
    rng = np.random.default_rng(0)
    for rel in HOURS:
        path = images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    (root / "images.txt").write_text("\n".join(HOURS) + "\n")
    (root / "images_latin1.txt").write_bytes(
        ("\n".join(HOURS) + "\n2011/01/01/\xe9.png\n").encode("latin-1")
    )
    labels = root / "labels"
    labels.mkdir()
    (labels / "Fold1_train.csv").write_text(
        "label,goes_class\n" + "".join(f"{r},{i % 2}\n" for i, r in enumerate(HOURS[:6]))
    )
    (labels / "Fold1_val.csv").write_text(
        "label,goes_class\n" + "".join(f"{r},{i % 2}\n" for i, r in enumerate(HOURS[6:]))
    )
    (labels / "Fold3_train.csv").write_text((labels / "Fold1_train.csv").read_text())
    (labels / "Fold3_val.csv").write_text("label,goes_class\n")
    preds = "timestamp,flare_prob,target\n" + "".join(
        f"{r},{0.1 + 0.1 * i:.1f},{i % 2}\n" for i, r in enumerate(HOURS)
    )
    (root / "fold1.csv").write_text(preds)
    (root / "header_only.csv").write_text("timestamp,flare_prob,target\n")
    (root / "fold1_trailing_commas.csv").write_text(
        "".join(ln + ("," if i else "") + "\n" for i, ln in enumerate(preds.splitlines()))
    )
    (root / "joined.csv").write_text(
        "timestamp,flare_prob,goes_class,fl_location,flare_start\n"
        + "".join(
            f'{r},0.{i + 1},M1.{i},"({10 * i - 30}.0, -10)",2011-01-01 0{i}:30:00\n'
            for i, r in enumerate(HOURS)
        )
    )
    (root / "joined_header_only.csv").write_text(
        "timestamp,flare_prob,goes_class,fl_location,flare_start\n"
    )
    from fdflare.forecast.formats import HISTORY_COLUMNS, RECIPE_COLUMNS

    (root / "history.csv").write_text(  # a history of the study's columns (no recipe)
        ",".join(c for c in HISTORY_COLUMNS if c not in RECIPE_COLUMNS) + "\n"
        "2011/01/01/HMI.m2011.01.01_00.00.42.jp2,0.4,,2011-01-01T00:00:00Z,2011-01-01T00:01:00Z,"
        "2011-01-01T00:00:42Z,2011-01-01T00:00:42Z,2011-01-02T00:00:42Z,1000,http://x/v2/,0,0,0.4,a.pt\n"
    )
    lines = (root / "history.csv").read_text().splitlines()
    (root / "history_trailing_commas.csv").write_text(
        "\n".join([lines[0], *(ln + "," for ln in lines[1:])]) + "\n"
    )
    (root / "history_header_only.csv").write_text(lines[0] + "\n")
    (root / "random.pt").write_bytes(rng.integers(0, 255, 4096, dtype=np.uint8).tobytes())
    (root / "empty.pt").write_bytes(b"")
    (root / "not_really.jp2").write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n")
    (root / "partial_reference" / "labels").mkdir(parents=True)
    return root


def _train(*extra: str) -> list[str]:
    return [
        "train",
        "--labels",
        "{in}/labels",
        "--images",
        "{in}/images",
        "--out",
        "{out}",
        "--no-pretrained",
        "--epochs",
        "1",
        "--image-size",
        "64",
        *extra,
    ]


def _predict(*extra: str, out: str = "{out}/p.csv", ckpt: str = "{in}/random.pt") -> list[str]:
    return [
        "predict",
        "--checkpoint",
        ckpt,
        "--labels",
        "{in}/labels/Fold1_val.csv",
        "--images",
        "{in}/images",
        "--out",
        out,
        "--image-size",
        "64",
        *extra,
    ]


def _label(
    *extra: str, catalog: str = "{in}/catalog.csv", images: str = "{in}/images"
) -> list[str]:
    return ["label", "--catalog", catalog, "--images", images, "--out", "{out}", *extra]


SPAN = ["--start", "2011-01-01", "--end", "2011-01-02"]

# each case: (argv, a regular expression the error line must match, so the case fails for
# the reason it names and not for some other error)
CASES: dict[str, tuple[list[str], str]] = {
    # acquire
    "download start garbage": (
        [
            "download",
            "--start",
            "garbage",
            "--end",
            "2011-01-02",
            "--out",
            "{out}",
        ],
        "--start",
    ),
    "download end before start": (
        [
            "download",
            "--start",
            "2011-01-02",
            "--end",
            "2011-01-01",
            "--out",
            "{out}",
        ],
        "--end",
    ),
    "download out is a file": (["download", *SPAN, "--out", "{in}/catalog.csv"], "is a file"),
    "download concurrency 0": (
        ["download", *SPAN, "--concurrency", "0", "--out", "{out}"],
        "--concurrency",
    ),
    "catalog out is its source": (
        [
            "catalog",
            "--source",
            "{in}/catalog.csv",
            "--out",
            "{in}/catalog.csv",
        ],
        "input",
    ),
    "catalog out is a folder": (
        ["catalog", "--source", "{in}/catalog.csv", "--out", "{in}"],
        "folder",
    ),
    "catalog source missing": (
        ["catalog", "--source", "{in}/nope.csv", "--out", "{out}/c.csv"],
        "nope.csv",
    ),
    "catalog bad min class": (
        [
            "catalog",
            "--source",
            "{in}/catalog.csv",
            "--out",
            "{out}/c.csv",
            "--min-class",
            "Q1.0",
        ],
        "Q1.0",
    ),
    "catalog mixed time zones and bad class": (
        [
            "catalog",
            "--source",
            "{in}/catalog_mixed_tz.csv",
            "--out",
            "{out}/c.csv",
        ],
        "line 4",
    ),
    "catalog format typo": (
        [
            "catalog",
            "--source",
            "{in}/catalog.csv",
            "--out",
            "{out}/c.csv",
            "--catalog-format",
            "csvv",
        ],
        "--catalog-format",
    ),
    "catalog base url not http": (
        [
            "catalog",
            "--source",
            "hek",
            "--start",
            "2011-01-01",
            "--end",
            "2011-02-01",
            "--out",
            "{out}/c.csv",
            "--base-url",
            "file:///etc/passwd",
        ],
        "--base-url",
    ),
    "catalog connect timeout 0": (
        ["catalog", "--source", "hek", "--out", "{out}/c.csv", "--connect-timeout", "0"],
        "--connect-timeout",
    ),
    "catalog backoff negative": (
        ["catalog", "--source", "hek", "--out", "{out}/c.csv", "--backoff", "-1"],
        "--backoff",
    ),
    # synth
    "synth out is a file": (["synth", "--out", "{in}/catalog.csv"], "is a file"),
    "synth image size 0": (["synth", "--out", "{out}", "--image-size", "0"], "--image-size"),
    "synth end before start": (
        [
            "synth",
            "--out",
            "{out}",
            "--start",
            "2011-01-02",
            "--end",
            "2011-01-01",
        ],
        "end",
    ),
    # prepare
    "prepare source is a file": (
        ["prepare", "--source", "{in}/not_really.jp2", "--out", "{out}"],
        "is a file",
    ),
    "prepare source missing": (["prepare", "--source", "{in}/nope", "--out", "{out}"], "nope"),
    "prepare out is a file": (
        ["prepare", "--source", "{in}/images", "--out", "{in}/catalog.csv"],
        "is a file",
    ),
    "prepare out is its source": (
        ["prepare", "--source", "{in}/images", "--out", "{in}/images"],
        "input",
    ),
    "prepare image size 0": (
        [
            "prepare",
            "--source",
            "{in}/images",
            "--out",
            "{out}",
            "--image-size",
            "0",
        ],
        "--image-size",
    ),
    # label
    "label mode M0": (_label("--mode", "M0"), "A1.0"),
    "label mode C0.0": (_label("--mode", "C0.0"), "A1.0"),
    "label mode Q": (_label("--mode", "Q"), "--mode"),
    "label start garbage": (_label("--start", "garbage"), "--start"),
    "label gap hours negative": (_label("--gap-hours", "-5"), "--gap-hours"),
    "label catalog missing": (_label(catalog="{in}/nope.csv"), "nope.csv"),
    "label longitude 500": (_label(catalog="{in}/catalog_lon500.csv"), "fl_lon"),
    "label image list not utf-8": (_label(images="{in}/images_latin1.txt"), "UTF-8"),
    "label out is a file": (
        [
            "label",
            "--catalog",
            "{in}/catalog.csv",
            "--images",
            "{in}/images",
            "--out",
            "{in}/catalog.csv",
        ],
        "is a file",
    ),
    "label out is the image folder": (
        [
            "label",
            "--catalog",
            "{in}/catalog.csv",
            "--images",
            "{in}/images",
            "--out",
            "{in}/images",
        ],
        "input",
    ),
    # train and cv
    "train accelerator gpu": (_train("--accelerator", "gpu"), "gpu"),
    "train accelerator tpu": (_train("--accelerator", "tpu"), "tpu"),
    "train holdout fraction 1": (_train("--holdout-fraction", "1"), "--holdout-fraction"),
    "train accelerator mps": (_train("--accelerator", "mps"), "--accelerator: mps"),
    "train precision bogus": (_train("--precision", "bogus"), "bogus"),
    "train batch size 0": (_train("--batch-size", "0"), "batch"),
    "train fold 9": (_train("--fold", "9"), "9"),
    "train lr nan": (_train("--lr", "nan"), "(?<!max_)\\blr\\b"),
    "train model typo": (_train("--model", "alexnett"), "alexnett"),
    "train empty fold": (_train("--fold", "3"), "Fold3_val.csv"),
    "train out is a file": (
        [
            "train",
            "--labels",
            "{in}/labels",
            "--images",
            "{in}/images",
            "--out",
            "{in}/catalog.csv",
            "--no-pretrained",
        ],
        "is a file",
    ),
    "cv folds 9": (
        [
            "cv",
            "--labels",
            "{in}/labels",
            "--images",
            "{in}/images",
            "--out",
            "{out}",
            "--folds",
            "9",
            "--no-pretrained",
        ],
        "9",
    ),
    "cv model typo": (
        [
            "cv",
            "--labels",
            "{in}/labels",
            "--images",
            "{in}/images",
            "--out",
            "{out}",
            "--models",
            "alexnett",
            "--no-pretrained",
        ],
        "alexnett",
    ),
    "cv out is a file": (
        [
            "cv",
            "--labels",
            "{in}/labels",
            "--images",
            "{in}/images",
            "--out",
            "{in}/catalog.csv",
            "--no-pretrained",
        ],
        "is a file",
    ),
    # predict
    "predict checkpoint is random bytes": (_predict(), "checkpoint"),
    "predict checkpoint is empty": (_predict(ckpt="{in}/empty.pt"), "empty"),
    "predict out is the checkpoint": (_predict(out="{in}/random.pt"), "input"),
    "predict out is the labels": (_predict(out="{in}/labels/Fold1_val.csv"), "input"),
    "predict out is a folder": (_predict(out="{in}"), "folder"),
    "predict device bogus": (_predict("--device", "bogus"), "bogus"),
    "predict accelerator mps": (_predict("--accelerator", "mps"), "--accelerator: mps"),
    "predict accelerator tpu": (_predict("--accelerator", "tpu"), "--accelerator: tpu"),
    "predict batch size 0": (_predict("--batch-size", "0"), "batch"),
    # evaluate, spatial
    "evaluate a folder": (["evaluate", "{in}/"], "folder"),
    "evaluate missing file": (["evaluate", "{in}/nope.csv"], "nope.csv"),
    "evaluate header only": (["evaluate", "{in}/header_only.csv"], "header"),
    "evaluate trailing commas": (
        ["evaluate", "{in}/fold1_trailing_commas.csv"],
        r"line 2.*comma at the end",
    ),
    "evaluate threshold 2": (["evaluate", "--threshold", "2", "{in}/fold1.csv"], "--threshold"),
    "spatial bin 0": (
        ["spatial", "--bin-deg", "0", "--out", "{out}", "{in}/joined.csv"],
        "--bin-deg",
    ),
    "spatial bin negative": (
        ["spatial", "--bin-deg", "-5", "--out", "{out}", "{in}/joined.csv"],
        "--bin-deg",
    ),
    "spatial bin does not divide": (
        [
            "spatial",
            "--bin-deg",
            "7",
            "--limb-deg",
            "70",
            "--out",
            "{out}",
            "{in}/joined.csv",
        ],
        "divide",
    ),
    "spatial geometry missing": (
        [
            "spatial",
            "--geometry",
            "{in}/nope.csv",
            "--disk-image",
            "x.jp2",
            "--out",
            "{out}",
            "{in}/joined.csv",
        ],
        "nope.csv",
    ),
    "spatial out is a file": (
        ["spatial", "--out", "{in}/catalog.csv", "{in}/joined.csv"],
        "is a file",
    ),
    "spatial header only": (["spatial", "--out", "{out}", "{in}/joined_header_only.csv"], "header"),
    # forecast (no request is made: the base URL is a closed loopback port)
    "forecast random checkpoint": (
        [
            "forecast",
            "--checkpoint",
            "{in}/random.pt",
            "--model",
            "alexnet",
            "--time",
            "2011-01-01T00:00",
            "--base-url",
            "http://127.0.0.1:9/v2/",
            "--history",
            "{out}/h.csv",
        ],
        "random.pt",
    ),
    "forecast empty checkpoint": (
        [
            "forecast",
            "--checkpoint",
            "{in}/empty.pt",
            "--time",
            "2011-01-01T00:00",
            "--base-url",
            "http://127.0.0.1:9/v2/",
        ],
        "empty.pt",
    ),
    "forecast in the future": (
        [
            "forecast",
            "--checkpoint",
            "{in}/random.pt",
            "--time",
            "2999-01-01T00:00",
            "--base-url",
            "http://127.0.0.1:9/v2/",
        ],
        "in the future",
    ),
    "forecast ensemble missing": (
        ["forecast", "--ensemble", "{in}/nope.json", "--base-url", "http://127.0.0.1:9/v2/"],
        "nope.json",
    ),
    "forecast history is an input": (
        [
            "forecast",
            "--checkpoint",
            "{in}/random.pt",
            "--history",
            "{in}/random.pt",
            "--base-url",
            "http://127.0.0.1:9/v2/",
        ],
        "--history",
    ),
    "forecast history with trailing commas": (
        [
            "forecast",
            "--checkpoint",
            "{in}/random.pt",
            "--history",
            "{in}/history_trailing_commas.csv",
            "--base-url",
            "http://127.0.0.1:9/v2/",
        ],
        r"line 2.*comma at the end",
    ),
    "forecast archive missing": (
        ["forecast", "--checkpoint", "{in}/random.pt", "--archive", "{in}/nope"],
        "no such archive",
    ),
    "forecast store is not a store": (
        [
            "forecast",
            "--checkpoint",
            "{in}/random.pt",
            "--base-url",
            "http://127.0.0.1:9/v2/",
            "--store",
            "{in}/catalog.csv",
        ],
        "not an SQLite database",
    ),
    "verify history with trailing commas": (
        [
            "verify",
            "--history",
            "{in}/history_trailing_commas.csv",
            "--catalog",
            "{in}/catalog.csv",
        ],
        r"line 2.*comma at the end",
    ),
    "verify history header only": (
        ["verify", "--history", "{in}/history_header_only.csv", "--catalog", "{in}/catalog.csv"],
        "empty",
    ),
    "verify start after end": (
        [
            "verify",
            "--history",
            "{in}/history.csv",
            "--catalog",
            "{in}/catalog.csv",
            "--start",
            "2011-02-01",
            "--end",
            "2011-01-01",
        ],
        "--start .* not before --end",
    ),
    "verify history and store": (
        [
            "verify",
            "--history",
            "{in}/history.csv",
            "--store",
            "{out}/s.sqlite",
            "--catalog",
            "{in}/catalog.csv",
        ],
        "one of them",
    ),
    "verify history is predictions": (
        ["verify", "--history", "{in}/fold1.csv", "--catalog", "{in}/catalog.csv"],
        "not a forecast history",
    ),
    "verify catalog bad class": (
        ["verify", "--history", "{in}/history.csv", "--catalog", "{in}/catalog_mixed_tz.csv"],
        "Q1.0",
    ),
    "verify out is the history": (
        [
            "verify",
            "--history",
            "{in}/history.csv",
            "--catalog",
            "{in}/catalog.csv",
            "--out",
            "{in}/history.csv",
        ],
        "--out",
    ),
    "verify end garbage": (
        [
            "verify",
            "--history",
            "{in}/history.csv",
            "--catalog",
            "{in}/catalog.csv",
            "--end",
            "later",
        ],
        "--end",
    ),
    # reports
    "reproduce reference missing": (
        ["reproduce", "--reference", "{in}/nope", "--out", "{out}"],
        "nope",
    ),
    "reproduce reference partial": (
        [
            "reproduce",
            "--reference",
            "{in}/partial_reference",
            "--out",
            "{out}",
        ],
        "predictions",
    ),
    "reproduce out is a file": (
        [
            "reproduce",
            "--reference",
            "{in}/partial_reference",
            "--out",
            "{in}/catalog.csv",
        ],
        "is a file",
    ),
    "demo model typo": (["demo", "--model", "alexnett", "--out", "{out}"], "alexnett"),
    "demo out is a file": (["demo", "--out", "{in}/catalog.csv"], "is a file"),
}


EXPLAIN_CASES: dict[str, tuple[list[str], str]] = {
    "explain unknown --where name": (
        ["explain", "--checkpoint", "{in}/random.pt", "--predictions", "{in}/fold1.csv",
         "--where", "near_limb and fnn", "--images", "{in}/images", "--out", "{out}"],
        r"unknown name 'fnn'; valid names: tp, fp, tn, fn, positive, negative, near_limb, central",
    ),
    "explain --where near_limb without locations": (
        ["explain", "--checkpoint", "{in}/random.pt", "--predictions", "{in}/fold1.csv",
         "--where", "near_limb", "--images", "{in}/images", "--out", "{out}"],
        r"fl_lon, fl_lat.*_joined\.csv",
    ),
    "explain --where without --predictions": (
        ["explain", "--checkpoint", "{in}/random.pt", "--where", "fn", "--images", "{in}/images",
         "--out", "{out}"],
        r"--predictions",
    ),
    "explain bad checkpoint": (
        ["explain", "--checkpoint", "{in}/random.pt", "--images", "{in}/images", "--out", "{out}"],
        r"random\.pt",
    ),
    "explain out is a file": (
        ["explain", "--checkpoint", "{in}/random.pt", "--images", "{in}/images", "--out",
         "{in}/catalog.csv"],
        r"is a file",
    ),
    "explain geometry file missing": (
        ["explain", "--checkpoint", "{in}/random.pt", "--images", "{in}/images", "--geometry",
         "{in}/no_geometry.csv", "--out", "{out}"],
        r"--geometry \S*no_geometry\.csv: no such file",
    ),
    "explain method typo": (
        ["explain", "--checkpoint", "{in}/random.pt", "--images", "{in}/images", "--explain-method",
         "gradcamm", "--out", "{out}"],
        r"gradcamm",
    ),
    "explain accelerator mps": (
        ["explain", "--checkpoint", "{in}/random.pt", "--images", "{in}/images",
         "--accelerator", "mps", "--out", "{out}"],
        r"--accelerator: mps",
    ),
    "verify start garbage": (
        ["verify", "--history", "{in}/history.csv", "--catalog", "{in}/catalog.csv",
         "--start", "later"],
        "--start",
    ),
    "explain limit 0": (
        ["explain", "--checkpoint", "{in}/random.pt", "--images", "{in}/images", "--limit", "0",
         "--out", "{out}"],
        r"--limit",
    ),
}  # fmt: skip
CASES.update(EXPLAIN_CASES)

# chronological splits (label --split) and the selection protocols (train --protocol)
SPLIT_CASES: dict[str, tuple[list[str], str]] = {
    "label chronological without dates": (_label("--split", "chronological"), "--select-from"),
    "label select-from with quarters": (_label("--select-from", "2011-01-01"), "chronological"),
    "label test-from before select-from": (
        _label("--split", "chronological", "--select-from", "2011-02-01", "--test-from", "2011-01-01"),
        "--test-from",
    ),
    "label select-from garbage": (
        _label("--split", "chronological", "--select-from", "soon", "--test-from", "2011-01-01"),
        "--select-from",
    ),
    "label split file missing": (_label("--split", "{in}/nope.json"), r"nope\.json"),
    "label split file not JSON": (_label("--split", "{in}/catalog.csv"), "not valid JSON"),
    "train protocol typo": (_train("--protocol", "honset"), "--protocol"),
    "train select-by typo": (_train("--select-by", "tss"), "--select-by"),
    "train average typo": (_train("--average", "swag"), "--average"),
}  # fmt: skip
CASES.update(SPLIT_CASES)

_SERVE = ["--flare-list-url", "http://127.0.0.1:9/x", "--base-url", "http://127.0.0.1:9/v2/",
          "--port", "0"]  # fmt: skip
SERVE_CASES = {
    "serve without a store": (["serve", "--checkpoint", "{in}/random.pt", *_SERVE], r"--store"),
    "serve ensemble missing": (
        ["serve", "--ensemble", "{in}/nope.json", "--store", "{out}", *_SERVE], r"nope\.json"),
    "serve store is a folder": (
        ["serve", "--checkpoint", "{in}/random.pt", "--store", "{in}/images", *_SERVE], r"a folder"),
    "serve every typo": (
        ["serve", "--checkpoint", "{in}/random.pt", "--store", "{out}", "--every", "hourly", *_SERVE],
        r"--every"),
    "serve replay without archive": (
        ["serve", "--checkpoint", "{in}/random.pt", "--store", "{out}", "--replay",
         "2011-01-01..2011-01-02", *_SERVE], r"--archive"),
    "serve replay reversed": (
        ["serve", "--checkpoint", "{in}/random.pt", "--store", "{out}", "--replay",
         "2011-01-02..2011-01-01", "--archive", "{in}/images", "--catalog", "{in}/catalog.csv",
         *_SERVE], r"not after START"),
    "serve catalog without replay": (
        ["serve", "--checkpoint", "{in}/random.pt", "--store", "{out}", "--catalog",
         "{in}/catalog.csv", *_SERVE], r"--replay"),
    "serve demo folder empty": (["serve", "--demo", "{in}/images", *_SERVE], r"fdflare demo"),
    "serve bad checkpoint": (
        ["serve", "--checkpoint", "{in}/random.pt", "--store", "{out}", *_SERVE], r"random\.pt"),
}  # fmt: skip
CASES.update(SERVE_CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_invocation(case, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    template, pattern = CASES[case]
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in template]
    before = _digest(inputs)
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert status not in (0, None), f"exit {status}; stdout: {captured.out!r}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].startswith(f"fdflare {argv[0]}: "), lines[0]
    assert re.search(pattern, lines[0], re.IGNORECASE), f"{lines[0]!r} does not match {pattern!r}"
    for noise in ("np.float64", "np.int64", "weights_only", "KeyError", "None"):
        assert noise not in lines[0], lines[0]
    assert _digest(inputs) == before, "an input file was changed"
    assert not out.exists(), f"{out} was left behind"


# --------------------------------------------------------------------------- hand-edited files
# Every file a user may edit by hand, with each field made wrong in turn. The files come from
# a real run on the synthetic Sun (the session's ``synthetic_set``); each case edits a copy in
# its own folder ``{case}`` and runs the command that reads it; ``{set}`` is the untouched set
# (images, checkpoint).
#
# Reserved for the files other parts own (add their rows to EDITS with a key of EDITABLE):
#   ensemble.json (forecast/ensemble), a checkpoint's fields (training/checkpoint), the
#   forecast history (forecast/formats).

_TRAIN = ["train", "--model", "smallcnn", "--fold", "1", "--images", "{set}/images", "--out",
          "{out}", "--epochs", "1", "--image-size", "32", "--no-pretrained", "--workers", "0",
          "--quiet"]  # fmt: skip

_CV = ["cv", "--models", "smallcnn", "--folds", "1", "--labels", "{case}/labels", "--images",
       "{set}/images", "--out", "{out}", "--epochs", "1", "--image-size", "32",
       "--no-pretrained", "--workers", "0", "--quiet"]  # fmt: skip

# kind: (the file, relative to the set and to the case folder; the command that reads it)
EDITABLE: dict[str, tuple[str, list[str]]] = {
    "fold_train": ("labels/Fold1_train.csv", [*_TRAIN, "--labels", "{case}/labels"]),
    "fold_val": ("labels/Fold1_val.csv", [*_TRAIN, "--labels", "{case}/labels"]),
    "labels": ("labels/labels.csv", [*_TRAIN, "--labels", "{case}/labels/labels.csv"]),
    "cv_fold_val": ("labels/Fold1_val.csv", _CV),
    "cv_labels": ("labels/labels.csv", _CV),
    "geometry": (
        "geometry.csv",
        ["explain", "--checkpoint", "{set}/run/last.ckpt", "--images", "{set}/images",
         "--geometry", "{case}/geometry.csv", "--limit", "1", "--out", "{out}", "--quiet"],
    ),
    "catalog": (
        "catalog.csv",
        ["label", "--catalog", "{case}/catalog.csv", "--images", "{set}/images", "--out", "{out}"],
    ),
    "predictions": ("preds/fold1.csv", ["evaluate", "{case}/preds/fold1.csv"]),
    "joined": ("preds/fold1_joined.csv", ["spatial", "--out", "{out}", "{case}/preds/fold1_joined.csv"]),
    "calibration": (
        "cal/calibration.json",
        ["predict", "--checkpoint", "{set}/run/last.ckpt", "--images", "{set}/images",
         "--calibration", "{case}/cal/calibration.json", "--out", "{out}/p.csv", "--quiet"],
    ),
}  # fmt: skip

# The copies each case folder gets (small files only).
_COPIED = sorted({rel for rel, _ in EDITABLE.values()} | {"labels/summary.json",
    *(f"labels/Fold{k}_{part}.csv" for k in range(1, 5) for part in ("train", "val"))})  # fmt: skip

# An edit of a CSV file: ("cell", row, column, value) sets a data row's field (row 0 is line
# 2); ("drop", column) removes a column; ("extra",) adds a field to every data row (a trailing
# comma); ("dup", row) repeats a row; ("header",) keeps the header only; ("empty",) leaves
# nothing. An edit of a JSON file: ("json", "a.0.b", value) sets a value (None: removes it).
EDITS: list[tuple[str, str, tuple[Any, ...], str]] = [
    # kind, what, edit, the error line must match
    ("fold_train", "empty label", ("cell", 3, "label", ""), r"line 5.*'label'"),
    ("fold_train", "absolute label", ("cell", 0, "label", "/etc/passwd"), r"line 2.*'label'"),
    ("fold_train", "label leaves the folder", ("cell", 1, "label", "../x.png"), r"line 3.*'label'"),
    ("fold_train", "target not a number", ("cell", 2, "goes_class", "yes"), r"line 4.*'goes_class'"),
    ("fold_train", "target 2", ("cell", 2, "goes_class", "2"), r"line 4.*'goes_class'"),
    ("fold_train", "target empty", ("cell", 5, "goes_class", ""), r"line 7.*'goes_class'"),
    ("fold_train", "target column missing", ("drop", "goes_class"), r"target"),
    ("fold_train", "label column missing", ("drop", "label"), r"'label'"),
    ("fold_train", "extra column", ("extra",), r"Fold1_train\.csv, line 2: 3 fields.*trailing comma"),
    ("fold_train", "duplicated row", ("dup", 4), r"Fold1_train\.csv, line 7.*second row"),
    ("fold_train", "empty file", ("empty",), r"Fold1_train\.csv"),
    ("fold_train", "header only", ("header",), r"Fold1_train\.csv.*no rows"),
    ("fold_val", "target not a number", ("cell", 0, "goes_class", "x"), r"Fold1_val\.csv, line 2.*'goes_class'"),
    ("fold_val", "extra column", ("extra",), r"Fold1_val\.csv, line 2.*trailing comma"),
    ("fold_val", "duplicated row", ("dup", 0), r"Fold1_val\.csv, line 3.*second row"),
    ("fold_val", "header only", ("header",), r"Fold1_val\.csv.*no rows"),
    ("labels", "target not a number", ("cell", 7, "target", "x"), r"line 9.*'target'"),
    ("labels", "target 2", ("cell", 7, "target", "2"), r"line 9.*'target'"),
    ("labels", "fold not a number", ("cell", 3, "fold", "one"), r"line 5.*'fold'"),
    ("labels", "fold 0", ("cell", 3, "fold", "0"), r"line 5.*'fold'"),
    ("labels", "fold 1.5", ("cell", 3, "fold", "1.5"), r"line 5.*'fold'"),
    ("labels", "empty label", ("cell", 0, "label", ""), r"line 2.*'label'"),
    ("labels", "extra column", ("extra",), r"labels\.csv, line 2.*trailing comma"),
    ("labels", "duplicated row", ("dup", 10), r"labels\.csv, line 13.*second row"),
    ("labels", "target column missing", ("drop", "target"), r"target"),
    ("cv_fold_val", "a target flipped", ("flip", 5, "goes_class"), r"Fold1_val\.csv, line 7, field 'goes_class'.*1 of \d+ rows disagree.*tolerance 0"),
    ("cv_fold_val", "a row not in labels.csv", ("cell", 2, "label", "2011/01/03/HMI.m2011.01.03_00.30.00.png"), r"Fold1_val\.csv, line 4.*not in labels\.csv"),
    ("cv_labels", "a target flipped", ("flip", 7, "target"), r"Fold1_val\.csv, line 9.*labels\.csv.*tolerance 0"),
    ("cv_labels", "a validation row in another fold", ("cell", 3, "fold", "2"), r"Fold1_val\.csv, line 5.*validates fold 1 here but is of fold 2 in labels\.csv"),
    ("geometry", "centre not a number", ("cell", 0, "center_x", "left"), r"line 2.*'center_x'"),
    ("geometry", "radius zero", ("cell", 1, "radius_px", "0"), r"line 3.*'radius_px'"),
    ("geometry", "radius negative", ("cell", 1, "radius_px", "-15"), r"line 3.*'radius_px'"),
    ("geometry", "radius empty", ("cell", 2, "radius_px", ""), r"line 4.*'radius_px'"),
    ("geometry", "width not a number", ("cell", 0, "width", "wide"), r"line 2.*'width'"),
    ("geometry", "b0 out of range", ("cell", 0, "b0_deg", "100"), r"line 2.*'b0_deg'"),
    ("geometry", "radius column missing", ("drop", "radius_px"), r"radius_px"),
    ("geometry", "extra column", ("extra",), r"geometry\.csv, line 2.*trailing comma"),
    ("geometry", "duplicated row", ("dup", 0), r"geometry\.csv, line 3.*second row"),
    ("catalog", "time garbage", ("cell", 2, "start_time", "soon"), r"line 4.*'start_time'"),
    ("catalog", "class unknown", ("cell", 2, "goes_class", "Q1.0"), r"line 4.*Q1\.0"),
    ("catalog", "class empty", ("cell", 2, "goes_class", ""), r"line 4.*'goes_class'"),
    ("catalog", "longitude 500", ("cell", 1, "fl_lon", "500"), r"fl_lon"),
    ("catalog", "latitude not a number", ("cell", 1, "fl_lat", "north"), r"line 3.*'fl_lat'"),
    ("catalog", "class column missing", ("drop", "goes_class"), r"goes_class"),
    # the catalog reader (acquire/) refuses it, but names the shifted field, not the comma
    ("catalog", "extra column", ("extra",), r"catalog\.csv, line 2"),
    ("catalog", "empty file", ("empty",), r"catalog\.csv"),
    ("predictions", "probability a word", ("cell", 3, "flare_prob", "high"), r"line 5.*'flare_prob'"),
    ("predictions", "probability 1.5", ("cell", 3, "flare_prob", "1.5"), r"line 5.*'flare_prob'"),
    ("predictions", "probability negative", ("cell", 3, "flare_prob", "-0.1"), r"line 5.*'flare_prob'"),
    ("predictions", "probability empty", ("cell", 3, "flare_prob", ""), r"line 5.*'flare_prob'"),
    ("predictions", "target 2", ("cell", 4, "target", "2"), r"line 6.*'target'"),
    ("predictions", "target a word", ("cell", 4, "target", "yes"), r"line 6.*'target'"),
    ("predictions", "target column missing", ("drop", "target"), r"'target'"),
    ("predictions", "extra column", ("extra",), r"fold1\.csv, line 2.*trailing comma"),
    ("predictions", "duplicated row", ("dup", 2), r"fold1\.csv, line 5.*second row"),
    ("predictions", "empty file", ("empty",), r"fold1\.csv"),
    ("joined", "extra column", ("extra",), r"fold1_joined\.csv, line 2.*trailing comma"),
    ("joined", "probability a word", ("cell", 0, "flare_prob", "x"), r"line 2.*'flare_prob'"),
    ("calibration", "y above 1", ("json", "files.0.map.y.-1", 1.5), r"calibration\.json.*'files\[0\]\.map\.y\[\d+\]'.*\[0, 1\]"),
    ("calibration", "y below 0", ("json", "files.0.map.y.0", -0.2), r"'files\[0\]\.map\.y\[0\]'.*\[0, 1\]"),
    ("calibration", "y not a number", ("json", "files.0.map.y.2", "a"), r"'files\[0\]\.map\.y\[2\]'.*not a finite number"),
    ("calibration", "y NaN", ("json", "files.0.map.y.1", float("nan")), r"'files\[0\]\.map\.y\[1\]'.*not a finite number"),
    ("calibration", "x not a list", ("json", "files.0.map.x", "0.1 0.2"), r"'files\[0\]\.map\.x'.*list"),
    ("calibration", "x missing", ("json", "files.0.map.x", None), r"'files\[0\]\.map\.x'"),
    ("calibration", "x and y lengths differ", ("json", "files.0.map.y.0", None), r"'files\[0\]\.map\.y'.*values for"),
    ("calibration", "x decreasing", ("json", "files.0.map.x.1", -5.0), r"'files\[0\]\.map\.x\[1\]'.*non-decreasing"),
    ("calibration", "y decreasing", ("json", "files.0.map.y.0", 0.99), r"'files\[0\]\.map\.y\[1\]'.*non-decreasing"),
    ("calibration", "method unknown", ("json", "files.0.map.method", "spline"), r"'files\[0\]\.map\.method'.*spline"),
    ("calibration", "method missing", ("json", "files.0.map.method", None), r"'files\[0\]\.map\.method'"),
    ("calibration", "Platt without coefficients", ("json", "files.0.map.method", "platt"), r"'files\[0\]\.map\.a'"),
    ("calibration", "n negative", ("json", "files.0.map.n", -3), r"'files\[0\]\.map\.n'"),
    ("calibration", "n a word", ("json", "files.0.map.n", "ten"), r"'files\[0\]\.map\.n'"),
    ("calibration", "sources not a list", ("json", "files.0.map.sources", 3), r"'files\[0\]\.map\.sources'"),
    ("calibration", "map not an object", ("json", "files.0.map", [1, 2]), r"'files\[0\]\.map'.*object"),
    ("calibration", "file without a map", ("json", "files.0.map", None), r"'files\[0\]'"),
    ("calibration", "files not a list", ("json", "files", {"a": 1}), r"'files'"),
    ("calibration", "not JSON", ("empty",), r"calibration\.json.*JSON"),
]  # fmt: skip


def _edit_csv(path: Path, edit: tuple[Any, ...]) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    head, body = rows[0], rows[1:]
    op = edit[0]
    if op == "cell":
        body[edit[1]][head.index(edit[2])] = edit[3]
    elif op == "flip":
        row, col = body[edit[1]], head.index(edit[2])
        row[col] = str(1 - int(row[col]))
    elif op == "drop":
        i = head.index(edit[1])
        head, body = head[:i] + head[i + 1 :], [r[:i] + r[i + 1 :] for r in body]
    elif op == "extra":
        body = [[*r, ""] for r in body]
    elif op == "dup":
        body.insert(edit[1] + 1, list(body[edit[1]]))
    elif op == "header":
        body = []
    elif op == "empty":
        path.write_bytes(b"")
        return
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([head, *body])
    path.write_text(out.getvalue(), encoding="utf-8")


def _edit_json(path: Path, edit: tuple[Any, ...]) -> None:
    if edit[0] == "empty":
        path.write_bytes(b"")
        return
    _, where, value = edit
    data = json.loads(path.read_text(encoding="utf-8"))
    keys = [int(k) if k.lstrip("-").isdigit() else k for k in where.split(".")]
    parent = data
    for k in keys[:-1]:
        parent = parent[k]
    if value is None:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.mark.parametrize(
    "kind, what, edit, pattern", EDITS, ids=[f"{k}: {w}" for k, w, *_ in EDITS]
)
def test_hand_edited_file(kind, what, edit, pattern, synthetic_set, tmp_path, capsys):
    base: Path = synthetic_set["root"]
    case, out = tmp_path / "case", tmp_path / "out"
    for rel in _COPIED:
        (case / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / rel, case / rel)
    rel, template = EDITABLE[kind]
    (_edit_json if rel.endswith(".json") else _edit_csv)(case / rel, edit)
    argv = [
        a.replace("{case}", str(case)).replace("{set}", str(base)).replace("{out}", str(out))
        for a in template
    ]
    before = (_digest(base), _digest(case))
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert status not in (0, None), f"exit {status}; stdout: {captured.out!r}; stderr: {err!r}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].startswith(f"fdflare {argv[0]}: error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"
    assert (_digest(base), _digest(case)) == before, "an input file was changed"
    assert not out.exists(), f"{out} was left behind"
