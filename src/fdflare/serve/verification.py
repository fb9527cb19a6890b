"""Verification of the store's forecasts against the flares the service has seen.

:func:`verify_table` labels each forecast as the study labels an image (1 when a flare at or
above the recipe's threshold starts in ``(window_start, window_start + window)``) and
scores it beside persistence (a flare in the window before) and climatology (one rate for
all: the given one, else the flare list's rate over the year before the first window, else
the verified windows' own rate, which is said), with the Brier skill score against that
climatology. A forecast whose window ends after ``until`` is pending, never a miss. It
works on frames, as ``forecast.verify.verify_history`` does on files, and returns the same
:class:`~fdflare.forecast.verify.Verification`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def verify_table(
    table: pd.DataFrame,
    catalog: pd.DataFrame,
    *,
    until: pd.Timestamp,
    recipe: Any,
    climatology: float | None = None,
    source: str = "flare list",
) -> Any:
    """Score the forecasts of ``table`` (``window_start``, ``flare_prob``) that ``until`` closes.

    Returns:
        A :class:`~fdflare.forecast.verify.Verification` with ``scores`` for ``model``,
        ``persistence`` and ``climatology``, and ``table`` (the verified rows with ``target``).
    """
    from fdflare.acquire.goes import threshold_flux
    from fdflare.analysis.baselines import persistence
    from fdflare.analysis.metrics import score_frame
    from fdflare.forecast.verify import Verification, prior_climatology
    from fdflare.label import label_windows

    starts = pd.DatetimeIndex(pd.to_datetime(table["window_start"], utc=True)).tz_localize(None)
    ready = np.asarray(starts + recipe.window_delta <= until)
    v = Verification(
        "store", source, until, len(table), int(ready.sum()), int((~ready).sum()), 0, None, ""
    )
    if not ready.any():
        return v
    times = starts[ready]
    flux = threshold_flux(recipe.threshold)
    labels = label_windows(catalog, times, threshold=flux, rest=False)
    target = labels["target"].to_numpy(dtype=np.int64)
    v.events = int(target.sum())
    if climatology is not None:
        v.climatology, v.climatology_source = climatology, "given (--climatology)"
    else:
        rate, why = prior_climatology(catalog, times.min(), flux)
        if rate is None:
            rate = float(target.mean())
            why = f"the verified windows' own rate ({why}): a rate not known in advance"
        v.climatology, v.climatology_source = rate, why
    frames = {
        "model": pd.to_numeric(table["flare_prob"]).to_numpy(dtype=float)[ready],
        "persistence": persistence(times, catalog, threshold=flux),
        "climatology": np.full(len(times), v.climatology),
    }
    for kind, p in frames.items():
        frame = pd.DataFrame({"flare_prob": p, "target": target})
        v.scores[kind] = score_frame(frame, path=kind, threshold=0.5)
    ref = v.scores["climatology"].brier
    for s in v.scores.values():  # BSS against the climatology above, not the sample rate
        s.bss = None if not ref or s.brier is None else 1.0 - s.brier / ref
    verified = table[ready].copy()
    verified["target"] = target
    v.table = verified
    return v
