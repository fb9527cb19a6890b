"""Skill scores of probabilistic flare forecasts (STUDY.md section 5).

With TP, FP, TN, FN at a probability threshold (``P(flare) >= threshold`` is a positive
forecast, as the study), ``P = TP + FN`` and ``N = TN + FP``:

* TSS = TP/P - FP/N
* HSS2 = 2 (TP*TN - FN*FP) / (P (FN + TN) + N (TP + FP))

plus threshold-free scores: ROC AUC (Mann-Whitney, ties averaged), the Brier score and the
Brier skill score against climatology (the file's own event rate), and the threshold that
maximises TSS. A score whose denominator is zero is reported as ``None`` with a note saying
why, never divided.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.scores import confusion, skill_scores
from fdflare.core.table import fmt_number, render_table


@dataclass
class Scores:
    """Scores of one prediction file (``None`` where undefined; see ``notes``)."""

    path: str
    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    tss: float | None
    hss2: float | None
    auc: float | None
    brier: float | None
    bss: float | None
    threshold: float
    best_threshold: float | None
    best_tss: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a prediction CSV: ``timestamp`` (or ``label``), ``flare_prob``, ``target``.

    The one reader of prediction files (:func:`fdflare.inference.predictions.read_prediction_file`)
    with ``target`` required. A file with a header and no rows is read as an empty table (the
    command warns about it).

    Raises:
        InputError: the path is a folder, a column is missing, or a probability is outside
            [0, 1] / a target is not 0 or 1 / an image has two rows, naming the file, line
            and field.
    """
    from fdflare.inference.predictions import read_prediction_file

    return read_prediction_file(path, need=("target",))


def roc_auc(prob: np.ndarray, target: np.ndarray) -> float | None:
    """ROC AUC by the Mann-Whitney U statistic with average ranks for ties; None if one class."""
    y = np.asarray(target).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(np.asarray(prob, dtype=float)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def brier(prob: np.ndarray, target: np.ndarray) -> tuple[float | None, float | None]:
    """Brier score and Brier skill score against the climatological event rate of the file."""
    p = np.asarray(prob, dtype=float)
    y = np.asarray(target, dtype=float)
    if len(p) == 0:
        return None, None
    bs = float(np.mean((p - y) ** 2))
    rate = float(y.mean())
    clim = rate * (1 - rate)
    return bs, (None if clim == 0 else 1 - bs / clim)


def best_threshold(prob: np.ndarray, target: np.ndarray) -> tuple[float | None, float | None]:
    """The threshold (one of the forecast values) that maximises TSS, and that TSS."""
    p = np.asarray(prob, dtype=float)
    y = np.asarray(target).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None, None
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    last = np.r_[ps[1:] != ps[:-1], True]  # thresholds at each distinct value (>= includes ties)
    tss = tp[last] / n_pos - fp[last] / n_neg
    i = int(np.argmax(tss))
    return float(ps[last][i]), float(tss[i])


def score_frame(df: pd.DataFrame, *, path: str = "", threshold: float = 0.5) -> Scores:
    """Score a prediction table with ``flare_prob`` and ``target`` columns."""
    prob = df["flare_prob"].to_numpy(dtype=float)
    y = df["target"].to_numpy(dtype=np.int64)
    tp, fp, tn, fn = confusion(prob, y, threshold)
    tss, hss2, notes = skill_scores(tp, fp, tn, fn)
    bs, bss = brier(prob, y)
    if bss is None and len(y):
        notes.append("BSS undefined: all targets are the same class (climatology is perfect)")
    bt, btss = best_threshold(prob, y)
    return Scores(
        path=path,
        n=len(df),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        tss=tss,
        hss2=hss2,
        auc=roc_auc(prob, y),
        brier=bs,
        bss=bss,
        threshold=threshold,
        best_threshold=bt,
        best_tss=btss,
        notes=notes,
    )


STD_KINDS = ("population", "sample")


def _mean_std(values: list[float | None], ddof: int = 0) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    arr = np.asarray(vals, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=ddof)) if len(arr) > ddof else None)


def evaluate_files(
    paths: Sequence[str | os.PathLike[str]], threshold: float = 0.5, std: str = "population"
) -> dict[str, Any]:
    """Score each file and summarise across files (mean and standard deviation).

    ``std`` is ``population`` (divide by n: the study's) or ``sample`` (by n - 1: what
    several follow-up papers report; undefined for one file).

    A score that is undefined in a file (``None``) is left out of the mean and std;
    ``covered`` says how many files each mean covers.

    Returns:
        ``{"files": [...], "mean": {"tss", "hss2"}, "std": {"tss", "hss2"},
        "covered": {"tss", "hss2"}, "empty": [paths], "threshold"}`` where each file entry
        has ``path, n, tp, fp, tn, fn, tss, hss2, auc, brier, bss`` and also
        ``best_threshold``, ``best_tss`` and ``notes``; ``empty`` lists the files with a
        header and no rows.
    """
    check_evaluate_options(threshold, std)
    # one file in memory at a time
    return evaluate_frames(((p, read_predictions(p)) for p in paths), threshold, std)


def check_evaluate_options(threshold: float, std: str) -> None:
    """Refuse a threshold outside [0, 1] or an unknown ``std`` kind (before any file is read)."""
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold must be in [0, 1], got {threshold}", field="--threshold")
    if std not in STD_KINDS:
        raise InputError(f"std must be one of {', '.join(STD_KINDS)}, got {std!r}", field="--std")


def evaluate_frames(
    frames: Iterable[tuple[str | os.PathLike[str], pd.DataFrame]],
    threshold: float = 0.5,
    std: str = "population",
) -> dict[str, Any]:
    """:func:`evaluate_files` of tables already read (``(path, read_predictions(path))``)."""
    check_evaluate_options(threshold, std)
    ddof = 1 if std == "sample" else 0
    scores = [score_frame(df, path=str(p), threshold=threshold) for p, df in frames]
    mean_tss, std_tss = _mean_std([s.tss for s in scores], ddof)
    mean_hss, std_hss = _mean_std([s.hss2 for s in scores], ddof)
    return {
        "files": [s.to_dict() for s in scores],
        "mean": {"tss": mean_tss, "hss2": mean_hss},
        "std": {"tss": std_tss, "hss2": std_hss},
        "covered": {
            "tss": sum(s.tss is not None for s in scores),
            "hss2": sum(s.hss2 is not None for s in scores),
        },
        "empty": [s.path for s in scores if s.n == 0],
        "threshold": threshold,
        "std_kind": std,
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    return fmt_number(x, digits)


def _mean_cell(result: dict[str, Any], key: str) -> str:
    m, s = result["mean"][key], result["std"][key]
    cell = f"{_fmt(m)} ± {_fmt(s)}"
    n_files = len(result["files"])
    covered = result.get("covered", {}).get(key, n_files)
    if covered < n_files:
        cell += f" ({covered} of {n_files})"
    return cell


def format_table(result: dict[str, Any], markdown: bool = False, *, bss: bool = True) -> str:
    """Render :func:`evaluate_files` output as a text (or markdown) table.

    When a score is undefined in some files, its mean ± std cell says how many files it
    covers (``0.5100 ± 0.0300 (3 of 4)``) and a note names the files left out. ``bss=False``
    leaves out the BSS column (against each file's own event rate), for a report that
    prints the BSS against another reference (the training rate) in a table of its own.
    """
    head = [
        "file",
        "n",
        "TP",
        "FP",
        "TN",
        "FN",
        "TSS",
        "HSS2",
        "AUC",
        "Brier",
        "BSS",
        "best thr",
        "best TSS",
    ]
    rows = []
    for f in result["files"]:
        rows.append(
            [
                Path(f["path"]).name,
                str(f["n"]),
                str(f["tp"]),
                str(f["fp"]),
                str(f["tn"]),
                str(f["fn"]),
                _fmt(f["tss"]),
                _fmt(f["hss2"]),
                _fmt(f["auc"]),
                _fmt(f["brier"]),
                _fmt(f["bss"]),
                _fmt(f["best_threshold"], 3),
                _fmt(f["best_tss"]),
            ]
        )
    rows.append(
        ["mean ± std", "", "", "", "", "", _mean_cell(result, "tss"), _mean_cell(result, "hss2")]
        + [""] * 5
    )
    notes = [f"{Path(f['path']).name}: {n}" for f in result["files"] for n in f["notes"]]
    n_files = len(result["files"])
    for key, title in (("tss", "TSS"), ("hss2", "HSS2")):
        left_out = [Path(f["path"]).name for f in result["files"] if f[key] is None]
        if left_out:
            notes.append(
                f"mean ± std of {title} covers {n_files - len(left_out)} of {n_files} files "
                f"({title} is undefined in {', '.join(left_out)})"
            )
    if not bss:
        col = head.index("BSS")
        head = head[:col] + head[col + 1 :]
        rows = [r[:col] + r[col + 1 :] for r in rows]
    return render_table(head, rows, markdown=markdown, notes=notes)
