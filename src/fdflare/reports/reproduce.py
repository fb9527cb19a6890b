"""Reproduce the study's published tables and figures from a folder of its released data.

The folder is laid out like the study's release (see ``docs/reproduce.md``)::

    labels/Fold{1..4}_{train,val}.csv          optional: the study's fold files
    flare_catalog_partial.csv                  optional: catalog to rebuild the labels from
    predictions/fold{k}_{model}.csv            per-fold validation predictions
    predictions/{model}_{x,m,c}_class.csv      predictions joined with the largest flare

For every model found it runs :mod:`fdflare.analysis.metrics` on the fold files and
:mod:`fdflare.analysis.spatial` on the X- and M-class files, and writes ``report.md`` (per-fold table,
mean +- std, location table, heatmaps) and ``results.json``. When labels and the catalog are
present it also rebuilds the fold files with :mod:`fdflare.label` and says whether they are
byte-for-byte identical.

What is reproduced, precisely: the study's labels (rebuilt byte for byte from its catalog and
image list) and its tables (computed from its released predictions). Retraining the study's
models is not reproduced: training on other hardware and software gives other weights.

The folder is checked before anything is written, and every piece it lacks is named.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fdflare.core.errors import MissingDataError
from fdflare.reports.report import MODEL_NAMES

if TYPE_CHECKING:
    import pandas as pd

FOLD_FILE = re.compile(r"^fold(\d+)_([A-Za-z0-9]+)\.csv$")


def default_reference_dir() -> Path | None:
    """The study's data: ``$FDFLARE_REFERENCE``, else ``../shared/reference`` or ``shared/reference``."""
    env = os.environ.get("FDFLARE_REFERENCE")
    candidates = [Path(env)] if env else []
    candidates += [
        Path("..") / "shared" / "reference",
        Path("shared") / "reference",
        Path("reference"),
    ]
    for c in candidates:
        if (c / "predictions").is_dir() or (c / "labels").is_dir():
            return c
    return None


def find_models(pred_dir: Path) -> dict[str, dict[str, Any]]:
    """Models with prediction files in ``pred_dir``: ``{model: {"folds": {k: path}, "x": path, ...}}``."""
    models: dict[str, dict[str, Any]] = {}
    if not pred_dir.is_dir():
        return models
    for p in sorted(pred_dir.iterdir()):
        m = FOLD_FILE.match(p.name)
        if m:
            models.setdefault(m.group(2), {"folds": {}})["folds"][int(m.group(1))] = p
    for model in [*list(models)]:
        for cls in ("x", "m", "c"):
            p = pred_dir / f"{model}_{cls}_class.csv"
            if p.is_file():
                models[model][cls] = p
    for p in sorted(pred_dir.glob("*_x_class.csv")):
        model = p.name[: -len("_x_class.csv")]
        models.setdefault(model, {"folds": {}})
        for cls in ("x", "m", "c"):
            q = pred_dir / f"{model}_{cls}_class.csv"
            if q.is_file():
                models[model][cls] = q
    return models


def check_labels(ref: Path) -> dict[str, Any] | None:
    """Rebuild the fold files from the catalog and the list of their images; compare bytes."""
    import pandas as pd

    from fdflare.acquire.catalog import read_catalog
    from fdflare.data.tables import read_label_csv
    from fdflare.label import LabelConfig, make_labels, write_labels

    labels, catalog = ref / "labels", ref / CATALOG_FILE
    files = sorted(labels.glob("Fold*_*.csv")) if labels.is_dir() else []
    if not files or not catalog.is_file():
        return None
    names = (
        pd.concat([read_label_csv(f, allow_empty=True) for f in files])["label"]
        .drop_duplicates()
        .tolist()
    )
    result = make_labels(read_catalog(catalog), names, LabelConfig())
    with tempfile.TemporaryDirectory() as tmp:
        write_labels(result, tmp)
        same = {f.name: (Path(tmp) / f.name).read_bytes() == f.read_bytes() for f in files}
    return {
        "files": same,
        "identical": all(same.values()),
        "instances": result.counts["instances"],
        "positives": result.counts["positives"],
    }


LABEL_FILES = tuple(f"Fold{k}_{part}.csv" for k in range(1, 5) for part in ("train", "val"))
CATALOG_FILE = "flare_catalog_partial.csv"
#: the catalog the flare history is read from: a complete list (every flare >= C1.0). The
#: partial catalog lists a flare only where it was the largest of some instance's next 24 h,
#: so whether a past flare is listed depends on the flares after it: a history read from it
#: would read the future.
HISTORY_CATALOG = "catalogs/final_flare_list_sc24.csv"
LAYOUT = (
    "labels/Fold{1..4}_{train,val}.csv with flare_catalog_partial.csv, "
    "predictions/fold{k}_{model}.csv, predictions/{model}_{x,m}_class.csv"
)


def find_reference(ref: str | os.PathLike[str] | None) -> Path:
    """The reference folder: ``ref`` when given, else :func:`default_reference_dir`.

    Raises:
        MissingDataError: ``ref`` does not exist or is a file, or none was given and none
            of the default places holds one; the message names the path.
    """
    if ref is not None:
        path = Path(ref)
        if not path.exists():
            raise MissingDataError(
                f"--reference {ref}: no such folder (expected a folder laid out like the "
                f"study's release: {LAYOUT})"
            )
        if not path.is_dir():
            raise MissingDataError(
                f"--reference {ref} is a file; expected a folder laid out like the study's "
                f"release ({LAYOUT})"
            )
        return path
    found = default_reference_dir()
    if found is None:
        raise MissingDataError(
            "no reference data found: pass --reference DIR (a folder laid out like the study's "
            "release: labels/, predictions/fold{k}_{model}.csv, predictions/{model}_{x,m}_class.csv), "
            "set FDFLARE_REFERENCE, or run `fdflare demo` to make data of your own"
        )
    return found


def plan_reference(ref_dir: Path) -> dict[str, Any]:
    """What ``ref_dir`` holds, and what it lacks; nothing is read but folder listings.

    Returns:
        ``{"models": find_models(...), "labels": bool (the fold files and the catalog are
        there to rebuild the labels), "missing": [sentences naming each absent piece]}``.

    Raises:
        MissingDataError: nothing in ``ref_dir`` can be reproduced; the message names what
            is missing.
    """
    pred_dir, labels_dir, catalog = (
        ref_dir / "predictions",
        ref_dir / "labels",
        ref_dir / CATALOG_FILE,
    )
    models = find_models(pred_dir)
    missing: list[str] = []
    fold_files = [f for f in LABEL_FILES if (labels_dir / f).is_file()]
    can_label = bool(fold_files) and catalog.is_file()
    if labels_dir.is_dir() or catalog.is_file():
        if not fold_files:
            missing.append(f"labels/ holds none of the fold files {', '.join(LABEL_FILES)}")
        elif len(fold_files) < len(LABEL_FILES):
            absent = [f for f in LABEL_FILES if f not in fold_files]
            missing.append(
                f"labels/ lacks {', '.join(absent)}: only {len(fold_files)} of "
                f"{len(LABEL_FILES)} fold files are rebuilt and compared"
            )
        if not catalog.is_file():
            missing.append(f"{CATALOG_FILE} is missing, so the labels are not rebuilt")
        elif not (ref_dir / HISTORY_CATALOG).is_file():
            missing.append(
                f"{HISTORY_CATALOG} is missing, so there is no history baseline and persistence "
                "reads the partial catalog (which lists a flare by what follows it, so it "
                "cannot give the history)"
            )
    if not pred_dir.is_dir():
        missing.append(
            "predictions/ is missing: no skill scores or location table "
            "(expected predictions/fold{k}_{model}.csv and predictions/{model}_{x,m}_class.csv)"
        )
    elif not models:
        missing.append(
            "predictions/ holds no fold{k}_{model}.csv and no {model}_x_class.csv: "
            "no skill scores or location table"
        )
    for model, files in models.items():
        folds = sorted(files["folds"])
        if not folds:
            missing.append(f"{model}: no predictions/fold{{k}}_{model}.csv, so no skill scores")
        elif len(folds) < 4 and max(folds) <= 4:
            absent = [str(k) for k in range(1, 5) if k not in folds]
            missing.append(
                f"{model}: predictions/fold{{{','.join(absent)}}}_{model}.csv missing; the mean "
                f"covers folds {', '.join(map(str, folds))}"
            )
        for cls in ("x", "m"):
            if cls not in files:
                missing.append(
                    f"{model}: predictions/{model}_{cls}_class.csv missing, so the location "
                    f"table has no {cls.upper()}-class rows"
                )
    if not models and not can_label:
        raise MissingDataError(f"{ref_dir}: nothing to reproduce; " + "; ".join(missing))
    return {"models": models, "labels": can_label, "missing": missing}


def reproduce(
    ref: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    threshold: float = 0.5,
    plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate and analyse every model in ``ref``; write ``report.md`` and ``results.json`` to ``out``.

    The reference is checked (:func:`find_reference`, :func:`plan_reference`) before
    anything is written; ``plan`` passes a plan already made.
    """
    from fdflare.analysis.metrics import evaluate_files, format_table
    from fdflare.analysis.spatial import SpatialConfig, analyse, read_spatial_tables
    from fdflare.analysis.spatial import format_table as spatial_table
    from fdflare.core.io import write_text_atomic

    ref_dir = find_reference(ref)
    if plan is None:
        plan = plan_reference(ref_dir)
    models = plan["models"]
    label_check = check_labels(ref_dir) if plan["labels"] else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "reference": str(ref_dir),
        "threshold": threshold,
        "missing": plan["missing"],
        "models": {},
    }
    lines = [
        "# fdflare reproduction report",
        "",
        f"Reference data: `{ref_dir}`; threshold {threshold}.",
        "",
        "What this reproduces: the study's labels, rebuilt byte for byte from its flare "
        "catalog and image list, and its tables (skill scores, location counts, heatmaps) "
        "computed from its released predictions. It does not retrain the study's models.",
        "",
    ]
    if plan["missing"]:
        lines += ["## Missing from the reference", ""]
        lines += [f"- {m}" for m in plan["missing"]]
        lines.append("")
    if label_check is not None:
        results["labels"] = label_check
        n_same = sum(label_check["files"].values())
        lines += [
            "## Labels",
            "",
            f"Rebuilt {len(label_check['files'])} fold files from `flare_catalog_partial.csv` and their image names: "
            f"{n_same} of {len(label_check['files'])} byte-for-byte identical "
            f"({label_check['instances']} instances, {label_check['positives']} positive).",
            "",
        ]
    baseline_dir, history = (
        _baselines(ref_dir, out, results, lines) if plan["labels"] else (None, None)
    )
    for model, files in models.items():
        title = MODEL_NAMES.get(model.lower(), model)
        entry: dict[str, Any] = {}
        lines += [f"## {title} (`{model}`)", ""]
        if files["folds"]:
            folds = [files["folds"][k] for k in sorted(files["folds"])]
            ev = evaluate_files(folds, threshold=threshold)
            entry["evaluate"] = ev
            m, s = ev["mean"], ev["std"]
            lines += [
                "### Skill scores per validation fold",
                "",
                format_table(ev, markdown=True, bss=baseline_dir is None),
                "",
            ]
            if m["tss"] is not None and m["hss2"] is not None:
                lines += [
                    f"Mean ± population std over folds: TSS {m['tss']:.2f} ± {s['tss']:.2f}, HSS2 {m['hss2']:.2f} ± {s['hss2']:.2f}.",
                    "",
                ]
            entry["selection"] = _selection(folds, threshold, lines)
            if baseline_dir is not None:
                entry.update(_beside_baselines(folds, baseline_dir, threshold, lines))
            if len(folds) >= 2:
                entry["calibration"] = _calibrate(model, folds, ref_dir, out, lines)
            if len(folds) >= 2 and history is not None:
                entry["with_history"] = _with_history(
                    model, folds, history, out, entry["calibration"], lines
                )
        spatial_files = [files[c] for c in ("x", "m") if c in files]
        if spatial_files:
            sp = analyse(
                read_spatial_tables(spatial_files),
                SpatialConfig(threshold=threshold),
                out=out,
                name=model,
            )
            entry["spatial"] = sp
            lines += ["### Recall by location", "", spatial_table(sp, markdown=True), ""]
            for cls in ("X", "M", "XM"):
                png = out / f"{model}_heatmap_{cls}.png"
                if png.is_file():
                    lines += [f"![{title} {cls} heatmap]({png.name})", ""]
        results["models"][model] = entry
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    from fdflare.reports.report import REPORT_NAME, write_report

    write_report(out, out / REPORT_NAME)
    results["report"] = str(out / "report.md")
    results["html"] = str(out / REPORT_NAME)
    return results


BASELINE_DIR = "baselines"
CALIBRATION_DIR = "calibration"


def _baselines(
    ref_dir: Path, out: Path, results: dict[str, Any], lines: list[str]
) -> tuple[Path, pd.DataFrame | None]:
    """Persistence and history from the full catalog (where present), climatology from the labels.

    Returns:
        The baseline folder, and the full catalog (None where it is absent).
    """
    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.baselines import baseline_predictions, write_predictions

    full = ref_dir / HISTORY_CATALOG
    history = read_catalog(full) if full.is_file() else None
    # Persistence reads the past as the history does, so from the full list where it is
    # there: the partial catalog leaves out a past flare where a larger one followed it.
    source = full if history is not None else ref_dir / CATALOG_FILE
    catalog = history if history is not None else read_catalog(source)
    notes: list[str] = []
    preds = baseline_predictions(
        ref_dir / "labels", ["persistence", "climatology"], catalog=catalog
    )
    if history is not None:
        preds += baseline_predictions(ref_dir / "labels", ["history"], catalog=history, notes=notes)
    else:
        notes.append(
            f"{HISTORY_CATALOG} is missing, so persistence reads {CATALOG_FILE}, which leaves out "
            "a past flare where a larger one followed it within 24 h"
        )
    folder = out / BASELINE_DIR
    write_predictions(preds, folder)
    results["baselines"] = {
        "catalog": str(source),
        "history_catalog": str(full) if history is not None else None,
        "folder": BASELINE_DIR,
        "notes": notes,
    }
    lines += [
        "## Baselines",
        "",
        f"Persistence (a flare >= M1.0 started in the 24 h up to the image time, from "
        f"`{source.relative_to(ref_dir).as_posix()}`) and climatology (each fold's training "
        "positive rate) forecast the same validation instances as the models: "
        f"`{BASELINE_DIR}/fold{{k}}_{{kind}}.csv`.",
        "",
    ]
    if history is not None:
        lines += [
            "So does history: a logistic regression, fitted on each fold's training instances, "
            "on the largest flare and the number of flares >= C1.0 in the 24 and 72 h up to "
            f"the image time, from `{HISTORY_CATALOG}`. Neither reads `{CATALOG_FILE}`: that "
            "lists a flare only where it was the largest of some instance's next 24 h, so "
            "whether a past flare is listed depends on the flares after it.",
            "",
        ]
    lines += [*[f"- note: {n}" for n in notes], *([""] if notes else [])]
    return folder, history


def _with_history(
    model: str,
    folds: list[Path],
    catalog: pd.DataFrame,
    out: Path,
    calibration: dict[str, Any],
    lines: list[str],
) -> dict[str, Any]:
    """The model's released scores and the flare history together, fold by fold."""
    from fdflare.analysis.calibration import before_after
    from fdflare.analysis.skill import difference_words, with_history
    from fdflare.core.table import render_table

    name = f"{model}-history"
    result = with_history(
        folds,
        catalog,
        out / CALIBRATION_DIR / name,
        out / BASELINE_DIR,
        reference_rates=[f["after"]["reference_rate"] for f in calibration["files"]],
    )
    result["folder"] = f"{CALIBRATION_DIR}/{name}"
    head, table = before_after(result, "history")
    lines += [
        "### With the flare history",
        "",
        "Each fold's released scores and the flare history up to each instance (from "
        f"`{HISTORY_CATALOG}`) together: a logistic map fitted on the other folds' predictions "
        "(`fdflare calibrate --method history`), scored at the threshold that maximises TSS "
        "on those folds.",
        "",
        *render_table(head, table, markdown=True).splitlines(),
        "",
    ]
    if result["mean_tss_at_threshold"] is not None:
        lines += [
            f"Mean TSS at the other folds' threshold: {result['mean_tss_at_threshold']:.4f}; "
            f"against persistence, {difference_words(result['difference_vs_persistence'])}; "
            f"against the history baseline, {difference_words(result['difference_vs_history'])}.",
            "",
        ]
    return result


def _selection(folds: list[Path], threshold: float, lines: list[str]) -> dict[str, Any]:
    """How much selecting each fold's epoch on that fold can flatter it (the noise part)."""
    import pandas as pd

    from fdflare.analysis.selection import selection_flattery
    from fdflare.core.paths import parse_image_times
    from fdflare.inference.predictions import read_prediction_file

    data = []
    for path in folds:
        df = read_prediction_file(path, need=("id", "target"))
        names = df[df.attrs["id_column"]].astype(str).str.replace("\\", "/").str.split("/").str[-4:]
        times, _ = parse_image_times(names.str.join("/"))
        data.append((df["flare_prob"].to_numpy(), df["target"].to_numpy(), pd.DatetimeIndex(times)))
    res = selection_flattery(data, threshold=threshold)
    res["protocol"] = "study"
    per = ", ".join(f"{r['noise_bound']:.3f}" for r in res["folds"])
    ses = ", ".join(f"{r['tss_se']:.3f}" for r in res["folds"])
    lines += [
        "### Protocol: how much the study's selection can flatter these scores",
        "",
        f"Protocol study: each fold's epoch was the best of {res['epochs']} by TSS on the fold "
        "it is scored on. The released predictions hold only that epoch, so the flattery "
        "itself cannot be measured from them (it needs every epoch scored on data the "
        "selection never saw: `fdflare demo` measures it on synthetic data, docs/demo.md). "
        "Its noise part can be bounded: a bootstrap over whole days gives each fold's TSS a "
        f"standard error of {ses}; the best of {res['epochs']} equally skilled epochs with "
        f"independent errors of that size would score {per} above a fair pick on average "
        f"(mean {res['mean_noise_bound']:.3f}, x{res['expected_max_normal']:.2f} the standard "
        "error). Correlated epochs flatter less; epochs that really differ, more.",
        "",
    ]
    return res


def _beside_baselines(
    folds: list[Path], baseline_dir: Path, threshold: float, lines: list[str]
) -> dict[str, Any]:
    from fdflare.analysis.skill import compare, format_comparison

    cmp = compare(folds, baseline_dir, threshold=threshold)
    lines += ["### Beside the baselines", "", format_comparison(cmp, markdown=True), ""]
    return {"baselines": cmp["baselines"], "comparison": cmp["comparison"]}


def _calibrate(
    model: str, folds: list[Path], ref_dir: Path, out: Path, lines: list[str]
) -> dict[str, Any]:
    """Cross-fold isotonic calibration: each fold mapped with the other folds' predictions."""
    from fdflare.analysis.calibration import (
        before_after,
        cross_fold,
        training_rates,
        write_calibrated,
    )
    from fdflare.core.table import render_table

    rates: list[float] | None = None
    labels = ref_dir / "labels"
    matches = [FOLD_FILE.match(path.name) for path in folds]
    if labels.is_dir() and all(matches):
        try:
            rates = training_rates(labels, [int(m.group(1)) for m in matches if m])
        except MissingDataError:
            rates = None
    folder = out / CALIBRATION_DIR / model
    record = write_calibrated(cross_fold(folds, "isotonic", reference_rates=rates), folder)
    head, table = before_after(record, "isotonic")
    rows = render_table(head, table, markdown=True).splitlines()
    lines += [
        "### Calibrated probabilities (cross-fold isotonic)",
        "",
        "Each fold's probabilities are mapped with an isotonic map fitted on the other folds' "
        "validation predictions, the only out-of-sample data a release of predictions has. "
        "BSS is against each fold's training positive rate.",
        "",
        *rows,
        "",
        f"![{model} reliability]({CALIBRATION_DIR}/{model}/reliability.png)",
        "",
    ]
    return {"folder": f"{CALIBRATION_DIR}/{model}", "files": record["files"]}
