"""How much selecting the epoch on the scored fold can flatter a score, from one set of predictions.

The study kept, for each fold, the epoch whose validation TSS was best, on the very fold it
reports. Its released predictions hold only the kept epoch, so the flattery itself cannot be
measured from them: that needs every epoch's score on data the selection never saw (what
``fdflare demo`` measures on synthetic data). What one set of predictions does give is the
fold's sampling noise, and with it a bound on the part of the flattery that noise alone can
produce: if the candidate epochs were equally skilled and their errors on the fold
independent, the best of ``epochs`` of them would lie ``SE x E[max of epochs standard normals]``
above a fair pick, on average. Errors of nearby epochs on the same instances are correlated,
which makes the real noise part smaller; epochs that really differ make the whole flattery
larger. The standard error comes from a bootstrap that resamples whole days, because hourly
instances of one day share their active regions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: the study's epochs per fold (STUDY.md section 4)
STUDY_EPOCHS = 50


def expected_max_normal(n: int) -> float:
    """``E[max of n independent standard normals]`` (numerical integration)."""
    x = np.linspace(-8.0, 8.0, 8001)
    phi = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    return float(np.trapezoid(x * n * phi * cdf ** (n - 1), x))


def tss_standard_error(
    prob: np.ndarray,
    target: np.ndarray,
    times: pd.DatetimeIndex,
    *,
    threshold: float = 0.5,
    resamples: int = 1000,
    seed: int = 0,
) -> float:
    """Standard error of TSS at ``threshold``, by a bootstrap over whole days (UTC)."""
    from fdflare.analysis.skill import day_counts, score_of

    day = pd.DatetimeIndex(times).normalize()
    _, group = np.unique(day.asi8, return_inverse=True)
    n_days = int(group.max()) + 1
    counts = day_counts(np.asarray(prob), np.asarray(target), group, n_days, threshold)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_days, np.full(n_days, 1.0 / n_days), size=resamples)
    return float(np.nanstd(score_of(weights @ counts, "tss"), ddof=1))


def selection_flattery(
    folds: list[tuple[np.ndarray, np.ndarray, pd.DatetimeIndex]],
    *,
    epochs: int = STUDY_EPOCHS,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Per fold: the day-bootstrap standard error of TSS and the noise bound on the flattery.

    Args:
        folds: per fold ``(probabilities, targets, image times)``.
        epochs: candidate epochs the selection chose among.
        threshold: the probability threshold of TSS.
    """
    factor = expected_max_normal(epochs)
    rows = []
    for prob, target, times in folds:
        se = tss_standard_error(prob, target, times, threshold=threshold)
        rows.append({"tss_se": se, "noise_bound": se * factor})
    bounds = [r["noise_bound"] for r in rows]
    return {
        "epochs": epochs,
        "expected_max_normal": factor,
        "folds": rows,
        "mean_noise_bound": float(np.mean(bounds)) if bounds else None,
    }
