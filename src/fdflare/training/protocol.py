"""Where a run selects its epoch, and by which rule: the study's protocol or an honest one.

The settings are fields of :class:`~fdflare.training.config.TrainConfig` (``protocol``,
``select_by``, ``holdout_fraction``); these functions resolve them, with whether the labels
have a selection interval (``Fold{k}_select.csv`` of a chronological split), into what a run
does. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

from typing import Any

#: study: select each fold's epoch on the fold it is scored on; honest: on data it never scores
PROTOCOLS = ("study", "honest")
#: the selection rules (``auto``: the study's under the study protocol, else HONEST_RULE)
SELECTION_RULES = ("auto", "study", "loss", "smoothed_tss", "last")
#: the rule ``select_by: auto`` picks under the honest protocol (docs/demo.md: measured)
HONEST_RULE = "loss"
#: weight averaging: none, an exponential moving average, or SWA's equal average
AVERAGES = ("none", "ema", "swa")
#: the share of training data the honest protocol holds out where the labels have no
#: selection interval and holdout_fraction is 0
HONEST_HOLDOUT = 0.25
#: the help of the protocol settings of TrainConfig (its options in train, cv and demo)
HELP = {
    "protocol": "study: select the epoch on the validation fold, the one that is scored (the "
    "study's way, flattering); honest: never on the scored fold: on the labels' selection "
    "interval (Fold{K}_select.csv), on the latest --holdout-fraction share of the training data, or "
    "not at all (the last epoch)",
    "select_by": "the selection rule: study (TSS above the best, HSS2 within hss2_tolerance), "
    "loss (lowest selection loss), smoothed_tss (TSS averaged over the last 3 epochs), last "
    "(the last epoch: nothing is selected); auto: study under --protocol study; under "
    f"honest, {HONEST_RULE} on the selection interval or --holdout-fraction, else last (nothing "
    "held out)",
    "average": "weight averaging (torch's AveragedModel through Lightning's WeightAveraging): "
    "ema (an exponential moving average of the weights, decay ema_decay per step), swa (an "
    "equal average of every step's weights from the second half of training); the averaged "
    "weights are scored, selected and saved",
    "ema_decay": "EMA weight of the previous average per step",
}
EMA_DECAY_RANGE: dict[str, Any] = {"low": 0, "high": 1, "high_open": True, "metavar": "X"}


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
