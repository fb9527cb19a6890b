"""Label tables: the study's fold files and fdflare's ``labels.csv``, folds and class weights.

* :func:`read_label_csv` reads a label table: the study's fold files (``label,goes_class``
  where ``goes_class`` is the binary target) or fdflare's ``labels.csv`` (``label``,
  ``target``, ...: :data:`fdflare.label.TABLE_COLUMNS`). It is the one reader of both, for
  training, ``predict --labels`` and ``predict --table``.
* :func:`fold_tables` picks the train and validation tables of a fold.
* :func:`class_weights` gives the study's NLL class weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError, MissingDataError
from fdflare.core.io import read_csv_table, refuse_first, shown_cell


def read_label_csv(path: str | os.PathLike[str], *, allow_empty: bool = False) -> pd.DataFrame:
    """Read a label table and return it with ``label`` (str) and ``target`` (int64) columns.

    Accepts the study's fold files (``label,goes_class`` with ``goes_class`` the binary
    target) and fdflare's ``labels.csv`` (``label``, ``target`` and more columns, which are
    kept). Labels are relative image paths; absolute paths and ``..`` are refused.

    Args:
        path: the CSV file.
        allow_empty: accept a table with a header and no rows (else an error).

    Raises:
        InputError: naming the file, line and field of the first bad value, or a table
            without rows.
    """
    path = Path(path)
    df = read_csv_table(path, what="label table", dtype={"label": "string"}, keep_default_na=True)
    if "label" not in df.columns:
        raise InputError(
            f"missing column 'label' (found {', '.join(map(str, df.columns))})",
            path=path,
            field="label",
        )
    if "target" in df.columns:
        field = "target"
    elif "goes_class" in df.columns:
        field = "goes_class"  # the study's fold files: goes_class holds the binary target
    else:
        raise InputError(
            "missing target column: expected 'target' (fdflare labels.csv) or 'goes_class' "
            "(the study's fold files, binary)",
            path=path,
            field="target",
        )
    label = df["label"].astype("string").str.strip()
    bad = (label.isna() | (label == "")).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"empty label ({int(bad.sum())} in all)", path=path, line=i + 2, field="label"
        )
    unsafe = (
        label.str.startswith("/")
        | label.str.contains(r"(?:^|[/\\])\.\.(?:[/\\]|$)")
        | label.str.match(r"^[A-Za-z]:")
    ).to_numpy(dtype=bool)
    if unsafe.any():
        i = int(np.flatnonzero(unsafe)[0])
        raise InputError(
            f"label {label.iloc[i]!r} is not a relative path inside the image folder",
            path=path,
            line=i + 2,
            field="label",
        )
    refuse_first(
        label.duplicated().to_numpy(dtype=bool),
        lambda i: f"a second row for {label.iloc[i]} (each image is one instance)",
        path=path,
        field="label",
    )
    target = pd.to_numeric(df[field], errors="coerce")
    bad = ~target.isin([0, 1]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        hint = (
            " (the study's fold files hold the binary target in goes_class)"
            if field == "goes_class"
            else ""
        )
        raise InputError(
            f"target {df[field].iloc[i]!r} is not 0 or 1{hint}; {int(bad.sum())} bad value(s) in all",
            path=path,
            line=i + 2,
            field=field,
        )
    if len(df) == 0 and not allow_empty:
        raise InputError(
            "the table has a header but no rows (a fold outside the labelled period?)", path=path
        )
    out = df.copy()
    out["label"] = label.astype(str).to_numpy()
    out["target"] = target.to_numpy().astype(np.int64)
    if field == "goes_class":
        out = out.drop(columns=["goes_class"])
    out.attrs["path"] = str(path)
    return out


@dataclass
class FoldTables:
    """The train and validation tables of one fold, with where they came from."""

    train: pd.DataFrame
    val: pd.DataFrame
    train_path: Path
    val_path: Path


def fold_tables(labels: str | os.PathLike[str], fold: int) -> FoldTables:
    """Return the train and validation tables of ``fold`` from a label folder or table.

    For a folder, uses ``Fold{k}_train.csv`` and ``Fold{k}_val.csv`` when present (the
    study's files, or those of ``fdflare label``); otherwise, or when ``labels`` is a table
    file, splits that table (``labels.csv``) by its ``fold`` column (or by the calendar
    quarter of the image time: fold k validates months 3k-2 .. 3k).

    Raises:
        MissingDataError: neither the fold files nor ``labels.csv`` exist.
    """
    labels = Path(labels)
    if labels.is_file():  # a table given: split it
        table_path = labels
    else:
        table_path = labels / "labels.csv"
        train_path, val_path = labels / f"Fold{fold}_train.csv", labels / f"Fold{fold}_val.csv"
        if train_path.is_file() and val_path.is_file():
            train, val = read_label_csv(train_path), read_label_csv(val_path)
            return FoldTables(train, val, train_path, val_path)
    if not table_path.is_file():
        raise MissingDataError(
            f"no labels for fold {fold} in {labels}: expected Fold{fold}_train.csv and "
            f"Fold{fold}_val.csv, or labels.csv (run `fdflare label --out {labels}` to make them)"
        )
    table = read_label_csv(table_path)
    if "split" in table.columns:  # a chronological split (fdflare.splits): one fold
        role = table["split"].astype(str).to_numpy()
        if fold != 1:
            raise InputError(
                f"fold {fold}: a chronological split has one fold (1)",
                path=table_path,
                field="split",
            )
        train_df = table[role == "train"].reset_index(drop=True)
        val_df = table[role == "test"].reset_index(drop=True)
        train_df.attrs["path"] = val_df.attrs["path"] = str(table_path)
        return FoldTables(train_df, val_df, table_path, table_path)
    if "fold" in table.columns:
        fold_of = pd.to_numeric(table["fold"], errors="coerce").to_numpy(dtype=float)
        refuse_first(
            ~(np.isfinite(fold_of) & (fold_of >= 1) & (fold_of == np.round(fold_of))),
            lambda i: f"fold {shown_cell(table['fold'].iloc[i])} is not a fold number (1, 2, ...)",
            path=table_path,
            field="fold",
        )
    else:
        from fdflare.core.paths import parse_image_times

        times, _ = parse_image_times(table["label"])
        fold_of = ((pd.DatetimeIndex(times).month.to_numpy() - 1) // 3 + 1).astype(float)
    if not np.isin(fold_of, [fold]).any():
        raise InputError(f"no instance of fold {fold} in the table", path=table_path, field="fold")
    val = fold_of == fold
    train_df = table[~val].reset_index(drop=True)
    val_df = table[val].reset_index(drop=True)
    train_df.attrs["path"] = val_df.attrs["path"] = str(table_path)
    return FoldTables(train_df, val_df, table_path, table_path)


def select_table(labels: str | os.PathLike[str], fold: int) -> tuple[pd.DataFrame, Path] | None:
    """The selection set of ``fold``: ``Fold{k}_select.csv`` of a chronological split.

    Returns None when the label folder has none (the study's quarterly folds): the honest
    protocol then holds out the latest part of the training data instead.
    """
    labels = Path(labels)
    if labels.is_dir():
        path = labels / f"Fold{fold}_select.csv"
        return (read_label_csv(path, allow_empty=True), path) if path.is_file() else None
    table = read_label_csv(labels)
    if "split" not in table.columns:
        return None
    sel = table[table["split"].astype(str).to_numpy() == "select"].reset_index(drop=True)
    return sel, labels


def class_weights(
    n_flare: int, n_noflare: int, flare_copies: int = 4, noflare_copies: int = 2
) -> tuple[float, float]:
    """Return the study's NLL class weights ``[r, 1 - r]``.

    ``r = 1 - c_nf N_nf / (c_fl N_fl + c_nf N_nf)`` with the counts before augmentation and
    the copies per instance (4 and 2 in the study), i.e. each class is weighted by the
    share of the *other* class in the augmented training set.
    """
    total = flare_copies * n_flare + noflare_copies * n_noflare
    if total == 0:
        raise ValueError("no training instances")
    r = 1.0 - (noflare_copies * n_noflare) / total
    return r, 1.0 - r


#: Rows on which a fold file and ``labels.csv`` of one label folder may disagree (target, or
#: the fold a validation row belongs to): none. Both come from one run of ``fdflare label``;
#: a disagreement means one of them was edited or rebuilt from another catalog or recipe.
LABEL_DISAGREEMENT_TOLERANCE = 0


def check_label_folder(labels: str | os.PathLike[str], folds: list[int]) -> None:
    """Refuse a label folder whose fold files contradict its ``labels.csv``.

    For each fold, every row of ``Fold{k}_train.csv`` and ``Fold{k}_val.csv`` must be in
    ``labels.csv`` with the same target, and a validation row must be of fold ``k`` there
    (when ``labels.csv`` has a ``fold`` column). Up to :data:`LABEL_DISAGREEMENT_TOLERANCE`
    disagreeing rows are allowed (none). Nothing is checked when the folder lacks either.

    Raises:
        InputError: naming the fold file, the line of the first disagreeing row and the
            field, with how many rows disagree.
    """
    labels = Path(labels)
    table_path = labels / "labels.csv"
    if not labels.is_dir() or not table_path.is_file():
        return
    table = None
    for k in folds:
        for part in ("train", "val"):
            path = labels / f"Fold{k}_{part}.csv"
            if not path.is_file():
                continue
            if table is None:
                full = read_label_csv(table_path, allow_empty=True)
                table = full.set_index("label")
            fold_file = read_label_csv(path, allow_empty=True)
            known = fold_file["label"].isin(table.index).to_numpy()
            missing = ~known
            target = np.full(len(fold_file), -1, dtype=np.int64)
            target[known] = table.loc[fold_file["label"][known], "target"].to_numpy()
            wrong_target = known & (target != fold_file["target"].to_numpy())
            wrong_fold = np.zeros(len(fold_file), dtype=bool)
            if part == "val" and "fold" in table.columns:
                fold_of = pd.to_numeric(table["fold"], errors="coerce")
                wrong_fold[known] = fold_of.loc[fold_file["label"][known]].to_numpy() != k
            bad = missing | wrong_target | wrong_fold
            if int(bad.sum()) <= LABEL_DISAGREEMENT_TOLERANCE:
                continue
            i = int(np.flatnonzero(bad)[0])
            name = fold_file["label"].iloc[i]
            if missing[i]:
                what, field = f"{name} is not in {table_path.name}", "label"
            elif wrong_target[i]:
                what = (
                    f"target {fold_file['target'].iloc[i]} here but {target[i]} in "
                    f"{table_path.name} for {name}"
                )
                field = "goes_class" if "goes_class" in _header(path) else "target"
            else:
                other = shown_cell(table["fold"].loc[name])
                what = f"{name} validates fold {k} here but is of fold {other} in {table_path.name}"
                field = "label"
            raise InputError(
                f"{what}; {int(bad.sum())} of {len(fold_file)} rows disagree with "
                f"{table_path.name} (tolerance {LABEL_DISAGREEMENT_TOLERANCE}): the fold files "
                f"and {table_path.name} come from different runs of `fdflare label` (edited, or "
                "another catalog?); relabel the folder",
                path=path,
                line=i + 2,
                field=field,
            )


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig") as fh:
        return fh.readline().strip().split(",")
