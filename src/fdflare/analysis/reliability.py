"""Reliability: observed frequency per forecast bin, its diagram and the sharpness histogram.

:func:`reliability_table` counts; :func:`reliability_figure` draws, on matplotlib's object API.
The figure is built on a :class:`matplotlib.figure.Figure` of its own, never on pyplot's
global state, so making one leaves a notebook's backend and current figure alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: reliability diagram bins
N_BINS = 10


def reliability_table(prob: np.ndarray, target: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """Per equal-width probability bin: count, mean forecast and observed frequency."""
    p = np.asarray(prob, dtype=float)
    y = np.asarray(target, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / count
        freq = np.bincount(idx, weights=y, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin_lo": edges[:-1],
            "bin_hi": edges[1:],
            "count": count.astype(np.int64),
            "mean_forecast": np.where(count > 0, mean_p, np.nan),
            "observed": np.where(count > 0, freq, np.nan),
        }
    )


def reliability_figure(
    series: Mapping[str, np.ndarray], target: np.ndarray, *, n_bins: int = N_BINS
) -> Any:
    """Reliability diagram (with the count of each bin) above a sharpness histogram.

    Args:
        series: name -> forecast probabilities for the same instances (e.g. before and after
            calibration).
        target: the outcomes (0/1).
        n_bins: equal-width probability bins.

    Returns:
        A :class:`matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1.4))
    top.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect reliability")
    rate = float(np.mean(target)) if len(target) else float("nan")
    top.axhline(rate, color="0.8", lw=1, label=f"event rate ({rate:.3f})")
    edges = np.linspace(0, 1, n_bins + 1)
    width = 1.0 / n_bins / (len(series) + 1)
    for i, (name, prob) in enumerate(series.items()):
        table = reliability_table(prob, target, n_bins)
        ok = table["count"].to_numpy() > 0
        (line,) = top.plot(
            table["mean_forecast"][ok], table["observed"][ok], marker="o", lw=1.5, label=name
        )
        for _, row in table[ok].iterrows():
            top.annotate(
                f"{int(row['count'])}",
                (row["mean_forecast"], row["observed"]),
                textcoords="offset points",
                xytext=(4, -10 if i else 6),
                fontsize=7,
                color=line.get_color(),
            )
        bottom.bar(
            edges[:-1] + (i + 0.5) * width,
            table["count"],
            width=width,
            align="edge",
            color=line.get_color(),
            label=name,
        )
    top.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="forecast probability (bin mean)",
        ylabel="observed frequency",
        title="Reliability (numbers: instances per bin)",
    )
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlim=(0, 1), xlabel="forecast probability", ylabel="instances", title="Sharpness")
    bottom.set_yscale("log")
    bottom.legend(fontsize=8)
    return fig
