"""A model's scores beside the baselines' on the same instances, and its skill over them.

For each model prediction file ``fold{k}_{model}.csv`` the baseline folder must hold
``fold{k}_persistence.csv`` and ``fold{k}_climatology.csv`` (``fdflare baseline --out``),
forecasting exactly the same instances; ``fold{k}_flux.csv`` is used when present. Then:

* skill over persistence, for TSS and HSS2: ``(S_model - S_pers) / (1 - S_pers)``, the
  share of persistence's distance to a perfect score that the model closes (negative when
  the model is worse than persistence);
* the Brier skill score against climatology: ``1 - BS_model / BS_clim``, with the
  climatology of the fold's training instances (not the validation fold's own rate, which a
  forecaster cannot know in advance).

Whether the model beats each baseline on the mean scores is stated, never left to the
reader: a model that loses to persistence is reported as losing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fdflare.analysis.metrics import evaluate_files, read_predictions
from fdflare.core.errors import InputError
from fdflare.core.table import fmt_number, render_table

BASELINE_KINDS = ("persistence", "climatology", "flux")
_FOLD = re.compile(r"fold(\d+)", re.IGNORECASE)


def fold_of(path: str | os.PathLike[str]) -> int | None:
    """The fold number in a file name such as ``fold3_alex.csv`` (None if it has none)."""
    m = _FOLD.search(Path(path).name)
    return int(m.group(1)) if m else None


def _skill(model: float | None, ref: float | None) -> float | None:
    if model is None or ref is None or ref >= 1:
        return None
    return (model - ref) / (1 - ref)


def _tails(path: str | os.PathLike[str]) -> np.ndarray:
    df = read_predictions(path)
    ids = df["timestamp"] if "timestamp" in df.columns else df["label"]
    # the study's files hold absolute paths from the authors' cluster: compare image names
    return np.sort(ids.astype(str).str.replace(r"^.*/", "", regex=True).to_numpy())


def _mean_std(values: list[float | None], ddof: int) -> tuple[float | None, float | None]:
    vals = np.array([v for v in values if v is not None], dtype=float)
    if len(vals) == 0:
        return None, None
    std = float(vals.std(ddof=ddof)) if len(vals) > ddof else None
    return float(vals.mean()), std


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
    for f, k in zip(model_files, folds, strict=True):
        ours = _tails(f)
        for kind in kinds:
            theirs = _tails(base / f"fold{k}_{kind}.csv")
            if len(ours) != len(theirs) or not np.array_equal(ours, theirs):
                raise InputError(
                    f"forecasts other instances than {Path(f).name} ({len(theirs)} vs "
                    f"{len(ours)}): baselines must be made from the model's own labels",
                    path=base / f"fold{k}_{kind}.csv",
                )
    result = evaluate_files(model_files, threshold=threshold, std=std)
    result["baselines"] = {
        kind: evaluate_files(
            [base / f"fold{k}_{kind}.csv" for k in folds], threshold=threshold, std=std
        )
        for kind in kinds
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
    result["comparison"] = {"files": rows, "mean": means, "beats": beats}
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
                notes.append(
                    f"mean {title} {'beats' if v else 'does NOT beat'} {kind} "
                    f"({fmt_number(result['mean'][key])} vs "
                    f"{fmt_number(result['baselines'][kind]['mean'][key])})"
                )
    notes.append(
        f"std: {result.get('std_kind', 'population')}; BSS clim.: Brier skill against the "
        "training rate of each fold; skill vs pers.: (S - S_pers) / (1 - S_pers)"
    )
    return render_table(head, rows, markdown=markdown, notes=notes)
