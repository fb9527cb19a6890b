"""The study's categorical scores (STUDY.md section 5), shared by model selection and evaluation.

With TP, FP, TN, FN at a probability threshold (``P(flare) >= threshold`` is a positive
forecast), ``P = TP + FN`` and ``N = TN + FP``:

* TSS = TP/P - FP/N
* HSS2 = 2 (TP*TN - FN*FP) / (P (FN + TN) + N (TP + FP))

Training selects its best epoch on these and :mod:`fdflare.analysis.metrics` reports them, so
they live here, below both stages.
"""

from __future__ import annotations

import numpy as np


def confusion(
    prob: np.ndarray, target: np.ndarray, threshold: float = 0.5
) -> tuple[int, int, int, int]:
    """Return ``(tp, fp, tn, fn)`` with ``prob >= threshold`` as a positive forecast."""
    pred = np.asarray(prob, dtype=float) >= threshold
    y = np.asarray(target).astype(bool)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    return tp, fp, tn, fn


def skill_scores(
    tp: int, fp: int, tn: int, fn: int
) -> tuple[float | None, float | None, list[str]]:
    """Return ``(tss, hss2, notes)``; a score is ``None`` where its denominator is zero."""
    notes: list[str] = []
    p, n = tp + fn, tn + fp
    tss: float | None
    if p == 0 or n == 0:
        tss = None
        notes.append(
            "TSS undefined: "
            + ("no positive instances (P = 0)" if p == 0 else "no negative instances (N = 0)")
        )
    else:
        tss = tp / p - fp / n
    denom = p * (fn + tn) + n * (tp + fp)
    hss2: float | None
    if denom == 0:
        hss2 = None
        notes.append("HSS2 undefined: denominator P(FN+TN) + N(TP+FP) is zero")
    else:
        hss2 = 2 * (tp * tn - fn * fp) / denom
    return tss, hss2, notes
