"""The tables of one training run: the training, validation and selection sets.

:func:`read_sets` reads a fold's tables (:func:`fdflare.data.tables.fold_tables`), checks
every image (missing ones are an error, or with ``skip_missing`` dropped and counted in a
note), takes the selection set where the epoch is selected
(:func:`fdflare.training.protocol.selection_set`): the labels' selection interval, or the
latest share of the training data (:func:`holdout_split`), from which the training
instances whose label window reaches into it are purged (:func:`purge_holdout`); then checks
that both classes are left to train on. :func:`instance_counts` counts what a run trains on
and its class weights. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.recipe import STUDY, Recipe, format_window
from fdflare.data.sources import check_images, open_images
from fdflare.data.tables import class_weights, fold_tables, select_table
from fdflare.training.config import TrainConfig
from fdflare.training.protocol import holdout_share, selection_set

__all__ = [
    "PURGE",
    "Note",
    "RunSets",
    "check_classes",
    "holdout_split",
    "instance_counts",
    "purge_holdout",
    "read_sets",
]

#: the label window: training instances this close before the held-out slice are purged
PURGE = STUDY.window_delta  # the study's label window; a run purges by its labels' window

#: takes a note for ``summary.json`` and prints it (``True``: even when the run is quiet)
Note = Callable[[str, bool], None]


@dataclass
class RunSets:
    """The tables a run trains, validates and selects its epoch on.

    Attributes:
        train: the training instances (without missing images and purged rows).
        val: the validation fold.
        holdout: the selection set (the labels' selection interval or the held-out slice of
            the training data); ``None`` where the epoch is selected on ``val`` or not at all.
        selection: where the epoch is selected (``val``, ``select``, ``holdout``, ``none``).
        has_select: whether the labels have a selection interval.
        train_path: the training table's file.
        val_path: the validation table's file.
        skipped_missing: rows dropped for a missing image (``skip_missing``).
        source: the images (:func:`fdflare.data.sources.open_images`).
    """

    train: pd.DataFrame
    val: pd.DataFrame
    holdout: pd.DataFrame | None
    selection: str
    has_select: bool
    train_path: Path
    val_path: Path
    skipped_missing: int
    source: Any


def holdout_split(
    table: pd.DataFrame,
    fraction: float,
    *,
    path: str | None = None,
    window: pd.Timedelta = PURGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Split off the latest ``fraction`` of a table by image time: ``(train_mask, holdout_mask)``.

    The training instances whose label window (``window``, the recipe's) reaches into the
    held-out slice (those less than one window before its first instance) are purged: in neither mask, so no flare is
    both a training target and a held-out one. What is fitted on the held-out slice
    (epoch selection, calibration) never touches the validation fold either.

    Raises:
        InputError: a label whose time cannot be read from its name (naming file and line).
    """
    from fdflare.core.paths import parse_image_times

    if "time" in table.columns:
        times = pd.to_datetime(table["time"], errors="coerce")
    else:
        times, _ = parse_image_times(table["label"])
    t = pd.DatetimeIndex(times)
    bad = t.isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            "cannot read the image time from this label (needed for the held-out split)",
            path=path,
            line=i + 2,
            field="label",
        )
    n_hold = math.ceil(fraction * len(table))
    order = np.argsort(t.asi8, kind="stable")
    hold = np.zeros(len(table), dtype=bool)
    hold[order[len(table) - n_hold :]] = True
    keep = ~hold
    if hold.any():
        start = t[hold].min()
        keep &= ~np.asarray(t > start - window)  # windows (t, t + window) that reach the slice
    return keep, hold


def read_sets(config: TrainConfig, recipe: Recipe, note: Note) -> RunSets:
    """The training, validation and selection sets of ``config``'s fold, checked.

    Raises:
        InputError: no labels or images given, a missing image (without ``skip_missing``),
            an empty class in the training set, a held-out share that leaves one, or an
            empty validation set.
        MissingDataError: no fold files or image folder.
    """
    if not config.labels or not config.images:
        raise InputError(
            "both labels and images must be given (--labels DIR --images DIR)", field="labels"
        )
    tables = fold_tables(config.labels, config.fold)
    if recipe.assumed:
        note(
            f"{config.labels} records no label recipe (no summary.json of `fdflare label`): the "
            f"model is taken to forecast the study's event, {recipe.event}",
            False,
        )
    source = open_images(
        config.images, ext=config.image_ext, decoder=config.decoder, array_store=config.array_store
    )
    train, n_miss_train = _without_missing(
        tables.train, tables.train_path, source, config, "training", note
    )
    val, n_miss_val = _without_missing(
        tables.val, tables.val_path, source, config, "validation", note
    )
    holdout = None
    chosen = select_table(config.labels, config.fold)
    selection = selection_set(config, has_select=chosen is not None)
    if selection == "select":
        assert chosen is not None
        holdout, n_miss_sel = _without_missing(*chosen, source, config, "selection", note)
        n_miss_val += n_miss_sel
        if holdout["target"].nunique() < 2:
            note(
                f"the selection set ({len(holdout)} instances of {chosen[1]}) lacks one "
                "class: TSS is undefined",
                True,
            )
    if selection == "holdout":
        train, holdout = purge_holdout(train, config, tables.train_path, recipe, note)
    check_classes(train, tables.train_path, "training")
    if len(val) == 0:
        raise InputError("the validation set is empty", path=tables.val_path)
    return RunSets(
        train=train,
        val=val,
        holdout=holdout,
        selection=selection,
        has_select=chosen is not None,
        train_path=tables.train_path,
        val_path=tables.val_path,
        skipped_missing=n_miss_train + n_miss_val,
        source=source,
    )


def _without_missing(
    table: pd.DataFrame, path: Path, source: Any, config: TrainConfig, what: str, note: Note
) -> tuple[pd.DataFrame, int]:
    """Check every image of ``table``; drop (and note) the missing ones under ``skip_missing``."""
    check = check_images(
        table,
        source,
        image_size=config.image_size,
        skip_missing=config.skip_missing,
        table_path=path,
        check_headers=config.check_headers,
    )
    if check.missing:
        shown = ", ".join(check.missing[:5])
        note(
            f"{what}: skipped {len(check.missing)} of {len(table)} rows whose image is missing (e.g. {shown})",
            True,
        )
        table = table[check.keep].reset_index(drop=True)
    return table, len(check.missing)


def purge_holdout(
    train: pd.DataFrame, config: TrainConfig, path: Path, recipe: Recipe, note: Note
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the latest share of ``train`` and purge what comes within a label window of it.

    Returns:
        ``(train, holdout)``: the training instances left, and the held-out slice.

    Raises:
        InputError: the share leaves one class (or none) to train on.
    """
    fraction = holdout_share(config)
    n_before = len(train)
    keep, hold = holdout_split(train, fraction, path=str(path), window=recipe.window_delta)
    holdout = train[hold].reset_index(drop=True)
    train = train[keep].reset_index(drop=True)
    purged = n_before - len(train) - len(holdout)
    if purged:
        note(
            f"{purged} training instance(s) less than {format_window(recipe.window_delta)} "
            "before the held-out slice purged "
            "(their label windows reach into it)",
            False,
        )
    n_fl, n_nf = int(train["target"].sum()), int((train["target"] == 0).sum())
    if n_fl == 0 or n_nf == 0:
        raise InputError(
            f"{fraction:g} holds out {len(holdout)} of the {n_before} "
            f"training instances of {path}, leaving {n_fl} flare and {n_nf} "
            "no-flare instances to train on: both classes are needed (lower --holdout-fraction)",
            field="holdout_fraction",
        )
    if holdout["target"].nunique() < 2:
        note(
            "the held-out selection set lacks one class: TSS is undefined and no epoch can be selected",
            True,
        )
    return train, holdout


def check_classes(table: pd.DataFrame, path: Path, what: str) -> None:
    """Refuse a set without flare or without no-flare instances.

    Raises:
        InputError: naming the table and its ``target`` field.
    """
    n_fl = int(table["target"].sum())
    n_nf = len(table) - n_fl
    if n_fl == 0 or n_nf == 0:
        raise InputError(
            f"the {what} set has no {'flare (target 1)' if n_fl == 0 else 'no-flare (target 0)'} "
            f"instances ({n_fl} flare, {n_nf} no-flare): both classes are needed",
            path=path,
            field="target",
        )


def instance_counts(sets: RunSets, *, augment: bool) -> tuple[dict[str, int], tuple[float, float]]:
    """What a run trains on (``summary.json``'s ``counts``) and its class weights.

    With ``augment`` each flare instance gives 4 samples and each no-flare one 2 (the
    study's augmented set); the class weights follow from those counts.
    """
    train, val, holdout = sets.train, sets.val, sets.holdout
    n_fl = int(train["target"].sum())
    n_nf = len(train) - n_fl
    copies = (4, 2) if augment else (1, 1)
    counts = {
        "train": len(train),
        "train_flare": n_fl,
        "train_noflare": n_nf,
        "train_samples": copies[0] * n_fl + copies[1] * n_nf,
        "val": len(val),
        "val_flare": int(val["target"].sum()),
        "holdout": 0 if holdout is None or sets.selection != "holdout" else len(holdout),
        "select": 0 if holdout is None or sets.selection != "select" else len(holdout),
        "skipped_missing": sets.skipped_missing,
    }
    return counts, class_weights(n_fl, n_nf, *copies)
