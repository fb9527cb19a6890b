"""A model's scores beside the baselines' on the same instances, and its skill over them.

For each model prediction file ``fold{k}_{model}.csv`` the baseline folder must hold
``fold{k}_persistence.csv`` and ``fold{k}_climatology.csv`` (``fdflare baseline --out``),
forecasting exactly the same instances; ``fold{k}_flux.csv`` and ``fold{k}_history.csv``
are used when present. Then:

* skill over persistence, for TSS and HSS2: ``(S_model - S_pers) / (1 - S_pers)``, the
  share of persistence's distance to a perfect score that the model closes (negative when
  the model is worse than persistence);
* the Brier skill score against climatology: ``1 - BS_model / BS_clim``, with the
  climatology of the fold's training instances (not the validation fold's own rate, which a
  forecaster cannot know in advance).

Whether the model beats each baseline on the mean scores is stated, never left to the
reader: a model that loses to persistence is reported as losing. Beside it stands how sure
that is (:func:`paired_difference`): the mean difference of TSS and HSS2, with a 95 % interval from a paired
bootstrap over whole days, and whether the difference is outside the noise.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.analysis.metrics import check_evaluate_options, evaluate_frames, read_predictions
from fdflare.core.errors import InputError
from fdflare.core.paths import parse_image_times
from fdflare.core.table import fmt_number, render_table

BASELINE_KINDS = ("persistence", "climatology", "flux", "history")
_FOLD = re.compile(r"fold(\d+)", re.IGNORECASE)


def fold_of(path: str | os.PathLike[str]) -> int | None:
    """The fold number in a file name such as ``fold3_alex.csv`` (None if it has none)."""
    m = _FOLD.search(Path(path).name)
    return int(m.group(1)) if m else None


def _skill(model: float | None, ref: float | None) -> float | None:
    if model is None or ref is None or ref >= 1:
        return None
    return (model - ref) / (1 - ref)


def _mean_std(values: list[float | None], ddof: int) -> tuple[float | None, float | None]:
    vals = np.array([v for v in values if v is not None], dtype=float)
    if len(vals) == 0:
        return None, None
    std = float(vals.std(ddof=ddof)) if len(vals) > ddof else None
    return float(vals.mean()), std


#: bootstrap replicates of :func:`paired_difference`
RESAMPLES = 2000
#: fewer days than this in all (over the folds) and no interval is given: a bootstrap over a
#: handful of days says nothing about the next ones
MIN_DAYS = 10
#: the scores :func:`paired_difference` compares
SCORES = ("tss", "hss2")


def day_counts(
    prob: np.ndarray, target: np.ndarray, group: np.ndarray, n: int, threshold: float
) -> np.ndarray:
    """Per block ``group`` (0 to ``n - 1``): (tp, fp, tn, fn) of the forecast ``prob >= threshold``."""
    pred = prob >= threshold
    y = target.astype(bool)
    out = np.zeros((n, 4))
    for j, mask in enumerate((pred & y, pred & ~y, ~pred & ~y, ~pred & y)):
        out[:, j] = np.bincount(group, weights=mask.astype(float), minlength=n)
    return out


def score_of(counts: np.ndarray, score: str) -> np.ndarray:
    """TSS or HSS2 of (tp, fp, tn, fn) counts along the last axis."""
    tp, fp, tn, fn = np.moveaxis(counts, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if score == "tss":
            return tp / (tp + fn) - fp / (fp + tn)
        return 2 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def paired_difference(
    folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]],
    *,
    threshold: float = 0.5,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Mean over folds of ``S(model) - S(baseline)`` for TSS and HSS2, paired over days.

    Args:
        folds: per fold ``(model probabilities, baseline probabilities, targets, times)``
            of the same instances, in the same order.
        threshold: ``P >= threshold`` is a yes forecast.
        resamples: bootstrap replicates.
        seed: of the resampling, so a rerun gives the same interval.

    Each fold's instances are grouped by UTC day, because the instances of one day share
    their active regions; the days are resampled with replacement, the same days for both
    forecasts, ``resamples`` times, each fold apart (the folds are disjoint in time), and
    the replicate means over folds give the standard error and the 95 % percentile
    interval. A fold where either score is undefined (one class) is left out and counted.
    No interval is given (``reason`` says why) when an instance's time is unknown (no day
    to group it in) or the folds hold fewer than :data:`MIN_DAYS` days in all.

    Returns:
        Per score (``tss``, ``hss2``): ``mean`` (the observed mean difference), ``se``,
        ``low``, ``high`` (the interval), ``verdict`` (``"better"``: the interval above 0,
        ``"worse"``: below, ``"within noise"``), ``reason`` (why there is no interval, or
        None), ``days``, ``folds`` (used), ``folds_left_out``, ``resamples`` and
        ``block`` (``"day"``); the numbers are None where they cannot be had.
    """
    rng = np.random.default_rng(seed)
    observed: dict[str, list[float]] = {k: [] for k in SCORES}
    replicates: dict[str, list[np.ndarray]] = {k: [] for k in SCORES}
    left_out = dict.fromkeys(SCORES, 0)
    days = {k: 0 for k in SCORES}
    untimed = 0
    blocks = []
    for model, base, target, times in folds:
        t = pd.DatetimeIndex(times)
        untimed += int(np.asarray(t.isna()).sum())
        _, group = np.unique(np.asarray(t.normalize().asi8), return_inverse=True)
        n_days = int(group.max()) + 1 if len(group) else 0
        y = np.asarray(target)
        cm = day_counts(np.asarray(model, dtype=float), y, group, n_days, threshold)
        cb = day_counts(np.asarray(base, dtype=float), y, group, n_days, threshold)
        blocks.append((n_days, cm, cb))
    for n_days, cm, cb in blocks:
        w = None  # the fold's resampled day weights, and its counts under them
        for k in SCORES:
            diff = float(score_of(cm.sum(0), k) - score_of(cb.sum(0), k)) if n_days else np.nan
            if not np.isfinite(diff):
                left_out[k] += 1
                continue
            observed[k].append(diff)
            days[k] += n_days
            if untimed:
                continue
            if w is None:
                w = rng.multinomial(n_days, np.full(n_days, 1.0 / n_days), size=resamples)
                wm, wb = w @ cm, w @ cb
            replicates[k].append(score_of(wm, k) - score_of(wb, k))
    out: dict[str, dict[str, Any]] = {}
    for k in SCORES:
        r: dict[str, Any] = {
            "mean": float(np.mean(observed[k])) if observed[k] else None,
            "se": None, "low": None, "high": None, "verdict": None, "reason": None,
            "days": days[k], "folds": len(observed[k]), "folds_left_out": left_out[k],
            "resamples": resamples, "block": "day",
        }  # fmt: skip
        out[k] = r
        if not observed[k]:
            r["reason"] = "undefined on every fold (one class)"
            continue
        if untimed:
            r["reason"] = f"{untimed} instance(s) without a time in their name: no days to resample"
            continue
        if days[k] < MIN_DAYS:
            r["reason"] = f"too few days to say how sure ({days[k]}; {MIN_DAYS} needed)"
            continue
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with one class
            means = np.nanmean(np.vstack(replicates[k]), axis=0)
        means = means[np.isfinite(means)]
        low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
        r.update(
            se=float(np.std(means, ddof=1)),
            low=low,
            high=high,
            verdict="better" if low > 0 else "worse" if high < 0 else "within noise",
        )
    return out


def _instances(path: str | os.PathLike[str], df: pd.DataFrame) -> pd.DataFrame:
    """A prediction file's rows keyed by image name (no folders), sorted by it.

    ``df`` is the file at ``path`` as :func:`read_predictions` read it.

    The study's files hold absolute paths from the authors' cluster, fdflare's relative ones:
    images are matched by name.

    Raises:
        InputError: two rows name the same image (in different folders).
    """
    ids = df["timestamp"] if "timestamp" in df.columns else df["label"]
    name = ids.astype(str).str.replace(r"^.*[/\\]", "", regex=True)
    twice = name.duplicated(keep=False).to_numpy()
    if twice.any():
        first = int(np.flatnonzero(twice)[0])
        raise InputError(
            f"two rows name the image {name.iloc[first]} (in different folders): instances "
            "are matched by image name",
            path=path,
            line=first + 2,
            field=str(ids.name),
        )
    out = pd.DataFrame(
        {"name": name.to_numpy(), "prob": df["flare_prob"].to_numpy(), "target": df["target"]}
    )
    return out.sort_values("name", kind="stable").reset_index(drop=True)


def _check_same_instances(
    model: str | os.PathLike[str],
    ours: pd.DataFrame,
    baseline: str | os.PathLike[str],
    theirs: pd.DataFrame,
) -> None:
    """Refuse a baseline (``theirs``, :func:`_instances`) of other images or other targets."""
    if len(ours) != len(theirs) or not np.array_equal(ours["name"], theirs["name"]):
        raise InputError(
            f"forecasts other instances than {Path(model).name} ({len(theirs)} vs "
            f"{len(ours)}): baselines must be made from the model's own labels",
            path=baseline,
        )
    differ = np.flatnonzero(ours["target"].to_numpy() != theirs["target"].to_numpy())
    if len(differ):
        raise InputError(
            f"its targets differ from {Path(model).name}'s at {len(differ)} instance(s), "
            f"the first {theirs['name'].iloc[differ[0]]}: baselines must be made from "
            "the model's own labels",
            path=baseline,
            field="target",
        )


def difference_at_thresholds(
    forecasts: Sequence[tuple[str | os.PathLike[str], pd.DataFrame, float]],
    baseline_dir: str | os.PathLike[str],
    kinds: Sequence[str],
) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`paired_difference` of yes/no forecasts made at each fold's own threshold.

    Args:
        forecasts: per fold ``(file, table, threshold)``: a prediction file (named
            ``fold{k}_*.csv``), its table (``timestamp``, ``flare_prob``, ``target``) and the
            threshold chosen for it without its own data (the other folds').
        baseline_dir: the ``fdflare baseline --out`` folder of the same instances.
        kinds: the baselines to compare with, each scored at 0.5 as :func:`compare` does.

    Returns:
        Per baseline kind, :func:`paired_difference`'s result.

    Raises:
        InputError: a missing baseline file, or one that forecasts other instances.
    """
    base = Path(baseline_dir)
    paired: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]]] = {
        kind: [] for kind in kinds
    }
    for path, table, threshold in forecasts:
        ours = _instances(path, table)
        yes = (ours["prob"].to_numpy(float) >= threshold).astype(float)
        times = pd.DatetimeIndex(parse_image_times(ours["name"])[0])
        for kind in kinds:
            other = base / f"fold{fold_of(path)}_{kind}.csv"
            if not other.is_file():
                raise InputError(f"no {other.name} to compare {Path(path).name} with", path=base)
            theirs = _instances(other, read_predictions(other))
            _check_same_instances(path, ours, other, theirs)
            paired[kind].append((yes, theirs["prob"].to_numpy(), ours["target"].to_numpy(), times))
    return {kind: paired_difference(paired[kind]) for kind in kinds}


def with_history(
    pred_files: Sequence[str | os.PathLike[str]],
    catalog: pd.DataFrame,
    out: str | os.PathLike[str],
    baseline_dir: str | os.PathLike[str],
    *,
    reference_rates: Sequence[float | None] | None = None,
    kinds: Sequence[str] = ("persistence", "history"),
) -> dict[str, Any]:
    """A model's folds with the flare history, cross-fold, beside the baselines.

    Each fold's history map (:mod:`fdflare.analysis.calibration`, ``history``) is fitted on
    the other folds' predictions; the calibrated files, ``calibration.json`` and the
    reliability diagram go to ``out``. Each fold is scored at the threshold that maximises
    TSS on the other folds, and the yes/no forecasts are compared with each baseline of
    ``kinds`` in ``baseline_dir`` by the paired day bootstrap
    (:func:`difference_at_thresholds`).

    Returns:
        ``method``, ``files`` (``calibration.json``'s), ``tss_at_threshold`` (per fold),
        ``mean_tss_at_threshold`` (None where a fold has none), and per kind
        ``difference_vs_{kind}`` (the TSS difference, or None).
    """
    from fdflare.analysis.calibration import cross_fold, write_calibrated

    done = cross_fold(pred_files, "history", reference_rates=reference_rates, catalog=catalog)
    record = write_calibrated(done, out)
    at = [(f["after"].get("at_threshold") or {}).get("tss") for f in record["files"]]
    scores = [float(v) for v in at if v is not None]
    mean = sum(scores) / len(scores) if scores and len(scores) == len(at) else None
    found: dict[str, Any] = {}
    if mean is not None:
        found = difference_at_thresholds(
            [(c.source, c.table, 0.5 if c.threshold is None else c.threshold) for c in done],
            baseline_dir,
            kinds,
        )
    result: dict[str, Any] = {
        "method": "history",
        "files": record["files"],
        "tss_at_threshold": at,
        "mean_tss_at_threshold": mean,
    }
    for kind in kinds:
        result[f"difference_vs_{kind}"] = found[kind]["tss"] if kind in found else None
    return result


def difference_of(comparison: dict[str, Any], kind: str, score: str) -> dict[str, Any] | None:
    """How sure :func:`compare`'s ``comparison`` is against baseline ``kind`` on ``score``."""
    return ((comparison.get("difference") or {}).get(kind) or {}).get(score)


def difference_words(diff: dict[str, Any] | None) -> str:
    """``difference +0.004 (95 % interval over days -0.050 to +0.061): within noise``."""
    if not diff or diff.get("mean") is None:
        return "difference undefined"
    left = diff.get("folds_left_out") or 0
    tail = f"; {left} fold(s) left out, one class" if left else ""
    if diff.get("verdict") is None:
        return f"difference {diff['mean']:+.3f} ({diff.get('reason') or 'no interval'}{tail})"
    return (
        f"difference {diff['mean']:+.3f} (95 % interval over days {diff['low']:+.3f} to "
        f"{diff['high']:+.3f}{tail}): {diff['verdict']}"
    )


def compare(
    model_files: Sequence[str | os.PathLike[str]],
    baseline_dir: str | os.PathLike[str],
    *,
    threshold: float = 0.5,
    std: str = "population",
) -> dict[str, Any]:
    """Score ``model_files`` and the matching baseline files; add skill over the baselines.

    Returns:
        The :func:`~fdflare.analysis.metrics.evaluate_files` result of the model files with
        ``"baselines": {kind: evaluate result}`` and ``"comparison"``: per file the fold,
        ``tss_skill_vs_persistence``, ``hss2_skill_vs_persistence`` and
        ``bss_vs_climatology``, their means, and ``beats``: whether the model's mean TSS and
        HSS2 are above each baseline's.

    Raises:
        InputError: a model file without a fold number, a missing baseline file, or a
            baseline that forecasts other instances than the model.
    """
    base = Path(baseline_dir)
    if not base.is_dir():
        raise InputError(
            "no such baseline folder (make one with `fdflare baseline --out`)", path=base
        )
    folds = []
    for f in model_files:
        k = fold_of(f)
        if k is None:
            raise InputError("cannot tell the fold of this file (expected fold{k}_*.csv)", path=f)
        folds.append(k)
    kinds = [
        kind
        for kind in BASELINE_KINDS
        if all((base / f"fold{k}_{kind}.csv").is_file() for k in folds)
    ]
    for kind in ("persistence", "climatology"):
        if kind not in kinds:
            k = next(k for k in folds if not (base / f"fold{k}_{kind}.csv").is_file())
            raise InputError(
                f"no fold{k}_{kind}.csv (run `fdflare baseline --labels ... --out {base}`)",
                path=base,
            )
    check_evaluate_options(threshold, std)
    baseline_files = {kind: [base / f"fold{k}_{kind}.csv" for k in folds] for kind in kinds}
    # each file is read once: for the pairing here and for the scores below
    tables = {
        str(f): read_predictions(f)
        for f in [*model_files, *(p for paths in baseline_files.values() for p in paths)]
    }
    paired: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]]] = {
        kind: [] for kind in kinds
    }
    for i, f in enumerate(model_files):
        ours = _instances(f, tables[str(f)])
        times = pd.DatetimeIndex(parse_image_times(ours["name"])[0])
        for kind in kinds:
            path = baseline_files[kind][i]
            theirs = _instances(path, tables[str(path)])
            _check_same_instances(f, ours, path, theirs)
            paired[kind].append(
                (
                    ours["prob"].to_numpy(),
                    theirs["prob"].to_numpy(),
                    ours["target"].to_numpy(),
                    times,
                )
            )
    result = evaluate_frames([(f, tables[str(f)]) for f in model_files], threshold, std)
    result["baselines"] = {
        kind: evaluate_frames([(p, tables[str(p)]) for p in paths], threshold, std)
        for kind, paths in baseline_files.items()
    }
    pers, clim = result["baselines"]["persistence"], result["baselines"]["climatology"]
    rows = []
    for i, f in enumerate(result["files"]):
        p, c = pers["files"][i], clim["files"][i]
        bss = None
        if f["brier"] is not None and c["brier"]:
            bss = 1.0 - f["brier"] / c["brier"]
        rows.append(
            {
                "path": f["path"],
                "fold": folds[i],
                "tss_skill_vs_persistence": _skill(f["tss"], p["tss"]),
                "hss2_skill_vs_persistence": _skill(f["hss2"], p["hss2"]),
                "bss_vs_climatology": bss,
            }
        )
    ddof = 1 if std == "sample" else 0
    means = {
        key: _mean_std([r[key] for r in rows], ddof)[0]
        for key in ("tss_skill_vs_persistence", "hss2_skill_vs_persistence", "bss_vs_climatology")
    }
    beats: dict[str, dict[str, bool | None]] = {}
    for kind, res in result["baselines"].items():
        beats[kind] = {
            key: None
            if result["mean"][key] is None or res["mean"][key] is None
            else bool(result["mean"][key] > res["mean"][key])
            for key in ("tss", "hss2")
        }
    difference = {kind: paired_difference(paired[kind], threshold=threshold) for kind in kinds}
    result["comparison"] = {
        "files": rows,
        "mean": means,
        "beats": beats,
        "difference": difference,
    }
    return result


def format_comparison(result: dict[str, Any], markdown: bool = False) -> str:
    """The per-fold table of :func:`compare`: each model fold, then its baselines."""
    head = [
        "file",
        "n",
        "TSS",
        "HSS2",
        "AUC",
        "Brier",
        "BSS clim.",
        "TSS skill vs pers.",
        "HSS2 skill vs pers.",
    ]
    rows: list[list[str]] = []
    kinds = list(result["baselines"])
    clim = result["baselines"]["climatology"]
    for i, f in enumerate(result["files"]):
        c = result["comparison"]["files"][i]
        rows.append(
            [
                Path(f["path"]).name,
                str(f["n"]),
                fmt_number(f["tss"]),
                fmt_number(f["hss2"]),
                fmt_number(f["auc"]),
                fmt_number(f["brier"]),
                fmt_number(c["bss_vs_climatology"]),
                fmt_number(c["tss_skill_vs_persistence"]),
                fmt_number(c["hss2_skill_vs_persistence"]),
            ]
        )
        for kind in kinds:
            b = result["baselines"][kind]["files"][i]
            bss = None
            if b["brier"] is not None and clim["files"][i]["brier"]:
                bss = 1.0 - b["brier"] / clim["files"][i]["brier"]
            rows.append(
                [
                    f"  {kind}",
                    str(b["n"]),
                    fmt_number(b["tss"]),
                    fmt_number(b["hss2"]),
                    fmt_number(b["auc"]),
                    fmt_number(b["brier"]),
                    fmt_number(bss),
                    "",
                    "",
                ]
            )

    def mean_cell(res: dict[str, Any], key: str) -> str:
        m, s = res["mean"][key], res["std"][key]
        return f"{fmt_number(m)} ± {fmt_number(s)}"

    rows.append(
        ["mean ± std", "", mean_cell(result, "tss"), mean_cell(result, "hss2")]
        + [""] * 3
        + [
            fmt_number(result["comparison"]["mean"]["tss_skill_vs_persistence"]),
            fmt_number(result["comparison"]["mean"]["hss2_skill_vs_persistence"]),
        ]
    )
    for kind in kinds:
        res = result["baselines"][kind]
        rows.append([f"  {kind}", "", mean_cell(res, "tss"), mean_cell(res, "hss2")] + [""] * 5)
    notes = []
    for kind, verdict in result["comparison"]["beats"].items():
        for key, title in (("tss", "TSS"), ("hss2", "HSS2")):
            v = verdict[key]
            if v is None:
                notes.append(f"{title} vs {kind}: undefined")
            else:
                diff = difference_of(result["comparison"], kind, key)
                notes.append(
                    f"mean {title} {'beats' if v else 'does NOT beat'} {kind} "
                    f"({fmt_number(result['mean'][key])} vs "
                    f"{fmt_number(result['baselines'][kind]['mean'][key])})"
                    + (f"; {difference_words(diff)}" if diff else "")
                )
    notes.append(
        f"std: {result.get('std_kind', 'population')}; BSS clim.: Brier skill against the "
        "training rate of each fold; skill vs pers.: (S - S_pers) / (1 - S_pers)"
    )
    return render_table(head, rows, markdown=markdown, notes=notes)
