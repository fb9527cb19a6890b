"""What a finished cross-validation shows: each model beside the baselines, calibrated.

After every pair of ``fdflare cv`` has been trained and predicted, this writes, for each
model with prediction files:

* ``OUT/baselines/fold{k}_{persistence,climatology,history}.csv`` when a flare catalog is
  given (``--catalog``): the reference forecasts on the same validation instances (history
  left out, with a note, where a fold's training instances are all of one class);
* the model's scores beside them (:func:`fdflare.analysis.skill.compare`);
* ``OUT/calibration/<model>/``: each fold calibrated, with the reliability diagram. With
  ``--holdout-fraction`` the map of each fold is fitted on the model's predictions for that fold's
  held-out slice of training data (``OUT/predictions/holdout/``), so nothing touches the
  validation fold; without it, on the model's other folds (cross-fold isotonic);
* ``OUT/ensemble.json``: every fold checkpoint with its calibration map
  (:mod:`fdflare.forecast.ensemble`), for ``fdflare predict --ensemble``;
* ``OUT/results.json`` and ``OUT/report.html`` (:mod:`fdflare.reports.report`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fdflare.reports.cv import _merge_lock, predict_options, prediction_path
from fdflare.training.config import TrainConfig
from fdflare.training.protocol import holdout_share

RESULTS = "results.json"


def cv_results(
    out: Path,
    base: TrainConfig,
    models: Sequence[str],
    folds: Sequence[int],
    *,
    catalog: str | None = None,
    mode: str = "M",
) -> dict[str, Any]:
    """Score, compare and calibrate every model's folds; write ``results.json`` and the report.

    Runs under the lock that serialises the merges of ``cv_summary.csv``, so SLURM array
    tasks finishing together take turns; the last one sees every fold.
    """
    with _merge_lock(out):
        return _cv_results(out, base, models, folds, catalog=catalog, mode=mode)


def _cv_results(
    out: Path,
    base: TrainConfig,
    models: Sequence[str],
    folds: Sequence[int],
    *,
    catalog: str | None,
    mode: str,
) -> dict[str, Any]:
    from fdflare.analysis.calibration import (
        cross_fold,
        fit_apply,
        training_rates,
        write_calibrated,
    )
    from fdflare.analysis.metrics import evaluate_files
    from fdflare.analysis.skill import compare
    from fdflare.core.io import write_text_atomic
    from fdflare.reports.report import REPORT_NAME, write_report
    from fdflare.training.protocol import selection_rule

    labels = Path(str(base.labels))
    results: dict[str, Any] = {
        "kind": "cv",
        "labels": str(labels),
        "protocol": protocol_record(out, base, models, folds),
        "selection_rule": selection_rule(base, has_select=_has_select(labels, folds)),
        "models": {},
    }
    baseline_dir = None
    if catalog is not None:
        from fdflare.acquire.catalog import read_catalog
        from fdflare.analysis.baselines import baseline_predictions, write_predictions

        notes: list[str] = []
        preds = baseline_predictions(
            labels,
            ["persistence", "climatology", "history"],
            catalog=read_catalog(catalog),
            mode=mode,
            folds=list(folds),
            optional=["history"],
            notes=notes,
        )
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        baseline_dir = out / "baselines"
        write_predictions(preds, baseline_dir)
        results["baselines"] = {"catalog": str(catalog), "folder": "baselines", "notes": notes}
    rates = training_rates(labels, folds)
    members: list[dict[str, Any]] = []
    for model in models:
        files = [prediction_path(out, model, k) for k in folds]
        present = [(f, r) for f, r in zip(files, rates, strict=True) if f.is_file()]
        if not present:
            continue
        paths = [f for f, _ in present]
        entry: dict[str, Any] = {}
        if baseline_dir is not None:
            cmp = compare(paths, baseline_dir, threshold=0.5)
            entry["evaluate"] = {
                k: v for k, v in cmp.items() if k not in ("baselines", "comparison")
            }
            entry["baselines"], entry["comparison"] = cmp["baselines"], cmp["comparison"]
        else:
            entry["evaluate"] = evaluate_files(paths)
        folder = out / "calibration" / model
        reference = [r for _, r in present]
        has_select = _has_select(labels, folds)
        ks = [k for k, f in zip(folds, files, strict=True) if f.is_file()]
        fit_sets = (
            [predict_calibration_set(out, base, model, k, on_select=has_select) for k in ks]
            if has_select or holdout_share(base) > 0
            else []
        )
        if fit_sets and all(_both_classes(f) for f in fit_sets):
            fitted = []
            for fit, path, rate in zip(fit_sets, paths, reference, strict=True):
                fitted += fit_apply([fit], [path], "isotonic", reference_rates=[rate])
            record = write_calibrated(fitted, folder)
            entry["calibration"] = {
                "folder": f"calibration/{model}",
                "fitted_on": "select" if has_select else "holdout",
                "files": record["files"],
            }
        elif len(paths) >= 2:
            record = write_calibrated(
                cross_fold(paths, "isotonic", reference_rates=reference), folder
            )
            entry["calibration"] = {
                "folder": f"calibration/{model}",
                "fitted_on": "other folds",
                "files": record["files"],
            }
        results["models"][model] = entry
        ks = [k for k, f in zip(folds, files, strict=True) if f.is_file()]
        maps = [i["map"] for i in entry["calibration"]["files"]] if "calibration" in entry else []
        for i, k in enumerate(ks):
            run_dir = out / model / f"fold{k}"
            ckpt = run_dir / "best.ckpt"
            members.append(
                {
                    "model": model,
                    "fold": k,
                    "checkpoint": ckpt if ckpt.is_file() else run_dir / "last.ckpt",
                    "calibration": maps[i] if maps else None,
                }
            )
    if members:
        from fdflare.forecast.ensemble import write_ensemble

        results["ensemble"] = write_ensemble(out, members).name
    write_text_atomic(out / RESULTS, json.dumps(results, indent=2, default=str) + "\n")
    write_report(out, out / REPORT_NAME)
    return results


def _has_select(labels: Path, folds: Sequence[int]) -> bool:
    from fdflare.data.tables import select_table

    return any(select_table(labels, k) is not None for k in folds)


def protocol_record(
    out: Path, base: TrainConfig, models: Sequence[str], folds: Sequence[int]
) -> str:
    """The protocol of the runs: ``study``, ``honest``, or ``mixed``.

    Read from each run's ``summary.json`` (else from the settings); ``cv_summary.csv``
    names it per run.
    """
    seen = set()
    for model in models:
        for k in folds:
            path = out / model / f"fold{k}" / "summary.json"
            if path.is_file():
                summary = json.loads(path.read_text(encoding="utf-8"))
                selected_on = summary.get("selected_on", "val")
                seen.add(summary.get("protocol", "study" if selected_on == "val" else "honest"))
    if not seen:
        return "study" if base.protocol == "study" and base.holdout_fraction == 0 else "honest"
    return seen.pop() if len(seen) == 1 else "mixed"


def predict_calibration_set(
    out: Path, base: TrainConfig, model: str, fold: int, *, on_select: bool = False
) -> Path:
    """Predict the data a pair's calibration map is fitted on, with its selected checkpoint.

    By default the held-out slice of the pair's training data, the one
    :func:`fdflare.training.sets.holdout_split` took out of training, so the map fitted on it
    never sees the validation fold. Written once, to
    ``OUT/predictions/holdout/fold<k>_<name>.csv``, and reused while it is newer than the
    checkpoint. With ``on_select`` (a split with a selection interval, ``FoldK_select.csv``)
    the selection interval is predicted instead, to ``OUT/predictions/select/``: it lies
    before the test interval and apart from the training data, purged at both boundaries.
    """
    from dataclasses import replace

    from fdflare.data.tables import fold_tables
    from fdflare.inference.predict import predict
    from fdflare.training.sets import holdout_split

    config = replace(base, model=model, fold=fold)
    run_dir = out / model / f"fold{fold}"
    ckpt = run_dir / "best.ckpt"
    if not ckpt.is_file():
        ckpt = run_dir / "last.ckpt"
    pred = prediction_path(out, model, fold)
    path = pred.parent / ("select" if on_select else "holdout") / pred.name
    if path.is_file() and path.stat().st_mtime_ns >= ckpt.stat().st_mtime_ns:
        return path
    if on_select:
        from fdflare.data.tables import select_table

        found = select_table(Path(str(config.labels)), fold)
        assert found is not None  # the caller saw it
        rows = found[0]
    else:
        from fdflare.core.recipe import labels_recipe

        tables = fold_tables(Path(str(config.labels)), fold)
        _, hold = holdout_split(
            tables.train,
            holdout_share(config),
            path=str(tables.train_path),
            window=labels_recipe(str(config.labels)).window_delta,
        )
        rows = tables.train[hold].reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    predict(
        ckpt,
        rows,
        str(config.images),
        path,
        quiet=True,
        **predict_options(config),
    )
    return path


def _both_classes(path: Path) -> bool:
    """Whether a prediction file has flaring and quiet instances: a map needs both."""
    from fdflare.inference.predictions import read_prediction_file

    return bool(read_prediction_file(path, need=("target",))["target"].nunique() == 2)
