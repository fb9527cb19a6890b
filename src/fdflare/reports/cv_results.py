"""What a finished cross-validation shows: each model beside the baselines, calibrated.

After every pair of ``fdflare cv`` has been trained and predicted, this writes, for each
model with prediction files:

* ``OUT/baselines/fold{k}_{persistence,climatology}.csv`` when a flare catalog is given
  (``--catalog``): the reference forecasts on the same validation instances;
* the model's scores beside them (:func:`fdflare.analysis.skill.compare`);
* ``OUT/calibration/<model>/``: each fold calibrated with a map fitted on the model's other
  folds (cross-fold isotonic), with the reliability diagram;
* ``OUT/results.json`` and ``OUT/report.html`` (:mod:`fdflare.reports.report`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fdflare.reports.cv import _merge_lock, prediction_path
from fdflare.training.config import TrainConfig

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
    from fdflare.analysis.calibration import cross_fold, write_calibrated
    from fdflare.analysis.metrics import evaluate_files
    from fdflare.analysis.skill import compare
    from fdflare.core.io import write_text_atomic
    from fdflare.data.tables import fold_tables
    from fdflare.reports.report import REPORT_NAME, write_report

    labels = Path(str(base.labels))
    results: dict[str, Any] = {"kind": "cv", "labels": str(labels), "models": {}}
    baseline_dir = None
    if catalog is not None:
        from fdflare.acquire.catalog import read_catalog
        from fdflare.analysis.baselines import baseline_predictions, write_predictions

        preds = baseline_predictions(
            labels,
            ["persistence", "climatology"],
            catalog=read_catalog(catalog),
            mode=mode,
            folds=list(folds),
        )
        baseline_dir = out / "baselines"
        write_predictions(preds, baseline_dir)
        results["baselines"] = {"catalog": str(catalog), "folder": "baselines"}
    rates = [float(fold_tables(labels, k).train["target"].mean()) for k in folds]
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
        if len(paths) >= 2:
            folder = out / "calibration" / model
            record = write_calibrated(
                cross_fold(paths, "isotonic", reference_rates=[r for _, r in present]), folder
            )
            entry["calibration"] = {"folder": f"calibration/{model}", "files": record["files"]}
        results["models"][model] = entry
    write_text_atomic(out / RESULTS, json.dumps(results, indent=2, default=str) + "\n")
    write_report(out, out / REPORT_NAME)
    return results
