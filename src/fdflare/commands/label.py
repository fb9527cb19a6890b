"""``fdflare label``: hourly instances labelled from a flare catalog, in 4 quarterly folds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fdflare.commands._common import add_json_option

HELP = "label image instances from a GOES flare catalog and split them into quarterly folds"
DESCRIPTION = """\
Label every instance time t (from --start, every --cadence, before --end) that has an image
with the largest flare starting in (t, t + window - 1 s], and split the instances into 4 folds
by calendar quarter. Writes DIR/Fold{k}_train.csv and DIR/Fold{k}_val.csv (the study's format:
label,goes_class with the binary target), DIR/labels.csv (the full table) and
DIR/summary.json. The defaults reproduce the study (2010-12-01 .. 2018-12-30 23:00, >= M1.0).
A window is positive only when it holds a flare at or above --mode (A1.0 at the lowest).
Repeated catalog rows (same start, peak flux and location) are dropped and counted; a fold
left empty by a short range is a warning, also written to summary.json.

--split chooses the split: quarters (the study's, the default), chronological (train before
--select-from A, select on [A, B), test from --test-from B), suryabench (SuryaBench's flare
task: test from 2020-01-01, select on 15-31 January of 2011-2019) or a JSON split file of
train, select and test intervals (docs/label.md). A chronological split is one fold:
Fold1_train.csv, Fold1_select.csv (the selection set of `train --protocol honest`) and
Fold1_val.csv (the test set); every boundary is purged by the label window, and the split
is recorded in summary.json.

example:
  fdflare label --catalog flares.csv --images hmi_jpgs_512/ --mode M --out labels/
  fdflare label --catalog flares.csv --images imgs/ --out labels/ --split chronological \
      --select-from 2017-01-01 --test-from 2018-01-01
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare label``: its inputs, and one per field of its config."""
    from fdflare.commands._config import add_options
    from fdflare.label import LabelConfig

    p.add_argument("--catalog", required=True, help="flare catalog CSV (study, HEK-style or SWPC)")
    p.add_argument(
        "--images",
        required=True,
        help="image directory tree (YYYY/MM/DD/HMI.m*.jpg|png|jp2) or a text file of relative paths",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--catalog-format", default="auto", choices=["auto", "study", "hek", "swpc", "noaa"]
    )
    add_json_option(p)
    group = p.add_argument_group("settings (recorded in summary.json)")
    p.set_defaults(_settings=add_options(group, LabelConfig))


def _fold_names(n_folds: int, split: str) -> list[str]:
    if split != "quarters":
        return [f"Fold1_{part}.csv" for part in ("train", "select", "val")]
    return [f"Fold{k}_{part}.csv" for k in range(1, n_folds + 1) for part in ("train", "val")]


def run(args: argparse.Namespace) -> int:
    """Run the stage and print a summary."""
    from fdflare.acquire.catalog import read_catalog
    from fdflare.commands._config import config_from_args
    from fdflare.core.errors import InputError
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.label import (
        LabelConfig,
        make_labels,
        read_image_list,
        write_labels,
    )

    config = config_from_args(args, LabelConfig, args._settings)
    check_output_dir(
        args.out,
        inputs=[args.catalog, args.images]
        + (
            [config.split]
            if config.split not in ("quarters", "chronological", "suryabench")
            else []
        ),
        writes=[*_fold_names(config.n_folds, config.split), "labels.csv", "summary.json"],
    )
    with output_lock(args.out, command="label"):
        catalog = read_catalog(args.catalog, fmt=args.catalog_format)
        skipped: list[tuple[str, str]] = []
        names = read_image_list(args.images, skipped)
        result = make_labels(catalog, names, config)
        if result.counts["instances"] == 0:
            raise InputError(
                f"no image matches an instance time between {config.start} and {config.end} "
                f"({len(names)} image name(s) found)",
                path=args.images,
            )
        write_labels(result, args.out, config)
    if args.json:
        _print_json(args, result, skipped)
        return 0
    c = result.counts
    print(
        f"labelled {c['instances']} instances ({c['positives']} positive, >= {config.mode}) "
        f"from {c['flares_in_catalog']} flares; {c['instances_without_image']} instance times "
        f"had no image"
    )
    if c.get("duplicate_flares_dropped"):
        print(f"  {c['duplicate_flares_dropped']} duplicate catalog rows dropped")
    for k, (train, val) in result.folds.items():
        extra = f", {result.purged[k]} training instances purged" if k in result.purged else ""
        if k in result.selects:
            sel = result.selects[k]
            print(
                f"  split {result.recipe.split['kind']}: train {len(train)} "
                f"({int(train['target'].sum())} positive), select {len(sel)} "
                f"({int(sel['target'].sum())} positive), test {len(val)} "
                f"({int(val['target'].sum())} positive); {result.purged[k]} instances purged at "
                f"the boundaries, {c.get('split_excluded', 0)} in no interval"
            )
            continue
        print(
            f"  fold {k}: train {len(train)} ({int(train['target'].sum())} positive), "
            f"val {len(val)} ({int(val['target'].sum())} positive){extra}"
        )
    for note in result.notes:
        print(f"  note: {note}")
    files = (
        "Fold1_{train,select,val}.csv"
        if result.selects
        else f"Fold{{1..{len(result.folds)}}}_{{train,val}}.csv"
    )
    print(f"wrote {args.out}/{files}, labels.csv, summary.json")
    _warn(args, result.warnings, skipped)
    return 0


def _warn(args: argparse.Namespace, warnings: list[str], skipped: list[tuple[str, str]]) -> None:
    """The warnings of a run, on stderr (with the text report and with --json)."""
    import sys

    for warning in warnings:
        print(f"fdflare label: warning: {warning}", file=sys.stderr)
    if skipped:
        shown = "; ".join(f"{path}: {why}" for path, why in skipped[:3])
        print(
            f"fdflare label: warning: skipped {len(skipped)} folder(s) or link(s) under "
            f"{args.images}, so any image in them is not labelled: {shown}"
            + (" ..." if len(skipped) > 3 else ""),
            file=sys.stderr,
        )


def _print_json(args: argparse.Namespace, result: Any, skipped: list[tuple[str, str]]) -> None:
    """--json: one object with what the text report says (counts, folds, notes, files)."""
    from fdflare.commands._common import print_json

    folds = {}
    for k, (train, val) in result.folds.items():
        fold = {
            "train": len(train),
            "train_positive": int(train["target"].sum()),
            "val": len(val),
            "val_positive": int(val["target"].sum()),
            "purged": result.purged.get(k, 0),
        }
        if k in result.selects:
            sel = result.selects[k]
            fold.update(select=len(sel), select_positive=int(sel["target"].sum()))
        folds[str(k)] = fold
    names = ["labels.csv", "summary.json"] + [
        f"Fold{k}_{part}.csv"
        for k in result.folds
        for part in (("train", "select", "val") if k in result.selects else ("train", "val"))
    ]
    print_json(
        {
            "out": args.out,
            "files": [str(Path(args.out) / n) for n in names],
            "counts": dict(result.counts),
            "folds": folds,
            "notes": list(result.notes),
            "warnings": list(result.warnings),
            "skipped_folders": [{"path": p, "reason": why} for p, why in skipped],
        }
    )
    _warn(args, result.warnings, skipped)
