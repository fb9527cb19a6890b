"""Where a run selects its epoch, and by which rule: the study's protocol or an honest one.

The settings are fields of :class:`~fdflare.training.config.TrainConfig` (``protocol``,
``select_by``, ``holdout_fraction``); these functions resolve them, with whether the labels
have a selection interval (``Fold{k}_select.csv`` of a chronological split), into what a run
does. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

from typing import Any

from fdflare.training.config import HONEST_HOLDOUT, HONEST_RULE


def selection_rule(config: Any, *, has_select: bool = False) -> str:
    """The selection rule a config applies (``select_by``, with ``auto`` resolved).

    ``auto``: the study's rule on the validation fold (study protocol); under the honest
    protocol the lowest loss where there is a selection set (the labels' selection interval,
    or ``holdout_fraction`` > 0), else the last epoch.
    """
    if config.select_by != "auto":
        return str(config.select_by)
    where = selection_set(config, has_select=has_select)
    return {"val": "study", "none": "last"}.get(where, HONEST_RULE)


def selection_set(config: Any, *, has_select: bool) -> str:
    """Where a run selects its epoch.

    ``val`` (the study: the validation fold), ``select`` (the labels' selection interval),
    ``holdout`` (the latest part of the training data) or ``none`` (the honest protocol
    without a selection interval, where nothing is held out: ``holdout_fraction`` 0 with
    ``select_by`` ``auto`` or ``last``).
    """
    if config.protocol == "honest":
        if has_select and config.holdout_fraction == 0:
            return "select"
        return "holdout" if holdout_share(config) > 0 else "none"
    return "holdout" if config.holdout_fraction > 0 else "val"


def holdout_share(config: Any) -> float:
    """The share of training data held out for selection (``holdout`` selection)."""
    if config.holdout_fraction > 0:
        return float(config.holdout_fraction)
    if config.protocol == "honest" and config.select_by not in ("auto", "last"):
        return HONEST_HOLDOUT  # a rule that needs a selection set, and none was given
    return 0.0
