"""``fdflare report``: one self-contained HTML page for a train run, a cv set, a demo or a reproduction.

The page holds what a reader needs to judge a model, in this order:

1. the per-fold table with the baselines on the same instances (persistence, climatology,
   flux and history where present), mean +- std, and a plain verdict on whether the model beats them;
2. the reliability diagram of the calibrated and uncalibrated probabilities;
3. the central / near-limb location table and the recall heatmaps;
4. training curves from every ``metrics.csv`` in the folder;
5. the run's settings.

Everything comes from the files the stages wrote (``results.json``, ``metrics.csv``,
``config.json``, figures); nothing is recomputed, so the page shows exactly what the run
found. Figures are embedded (:mod:`fdflare.reports.html`), so the page is one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fdflare.core.errors import InputError, MissingDataError
from fdflare.reports.html import Page, image_file, matplotlib_figure, table_html

REPORT_NAME = "report.html"
#: the study's models as its tables name them, by file-name short name or registry name
MODEL_NAMES = {
    "alex": "AlexNet",
    "alexnet": "AlexNet",
    "vgg": "VGG16",
    "vgg16": "VGG16",
    "resnet": "ResNet34",
    "resnet34": "ResNet34",
}


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _read_json(path: Path) -> dict[str, Any]:
    from fdflare.core.io import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError("expected one JSON object", path=path)
    return data


def kind_of(folder: Path) -> str:
    """``reproduction``, ``demo``, ``cv`` or ``train``, from the files in ``folder``."""
    results = folder / "results.json"
    if results.is_file():
        data = _read_json(results)
        if "reference" in data and "models" in data:
            return "reproduction"
        if "evaluate" in data:
            return "demo"
    if (folder / "cv_summary.csv").is_file() or (folder / "ensemble.json").is_file():
        return "cv"
    if (folder / "metrics.csv").is_file() and (folder / "config.json").is_file():
        return "train"
    raise MissingDataError(
        f"{folder} is not a train run, cv set, demo or reproduction: expected results.json, "
        "cv_summary.csv or config.json with metrics.csv"
    )


# --------------------------------------------------------------------------- sections


def _scores_section(page: Page, ev: dict[str, Any], entry: dict[str, Any]) -> None:
    """The per-fold table; with the baselines beside each fold where the entry has them."""
    baselines = entry.get("baselines") or {}
    comparison = entry.get("comparison")
    clim = baselines.get("climatology")
    head = ["file", "n", "TP", "FP", "TN", "FN", "TSS", "HSS2", "AUC", "Brier"]
    head += ["BSS vs training rate" if clim else "BSS vs own rate"]
    if comparison:
        head += ["TSS skill vs pers."]
    rows: list[list[str]] = []
    classes: list[str] = []

    def bss(f: dict[str, Any], i: int) -> str:
        if clim is None:
            return _fmt(f["bss"])
        ref = clim["files"][i]["brier"]
        return _fmt(None if f["brier"] is None or not ref else 1.0 - f["brier"] / ref)

    for i, f in enumerate(ev["files"]):
        row = [Path(f["path"]).name] + [_fmt(f[k]) for k in ("n", "tp", "fp", "tn", "fn")]
        row += [_fmt(f[k]) for k in ("tss", "hss2", "auc", "brier")] + [bss(f, i)]
        if comparison:
            row.append(_fmt(comparison["files"][i]["tss_skill_vs_persistence"]))
        rows.append(row)
        classes.append("")
        for kind, res in baselines.items():
            b = res["files"][i]
            brow = [kind] + [_fmt(b[k]) for k in ("n", "tp", "fp", "tn", "fn")]
            brow += [_fmt(b[k]) for k in ("tss", "hss2", "auc", "brier")] + [bss(b, i)]
            if comparison:
                brow.append("")
            rows.append(brow)
            classes.append("baseline")

    def mean(res: dict[str, Any], key: str) -> str:
        return f"{_fmt(res['mean'][key])} ± {_fmt(res['std'][key])}"

    pad = [""] * (len(head) - 8)
    rows.append(["mean ± std", "", "", "", "", "", mean(ev, "tss"), mean(ev, "hss2"), *pad])
    classes.append("summary")
    for kind, res in baselines.items():
        rows.append([kind, "", "", "", "", "", mean(res, "tss"), mean(res, "hss2"), *pad])
        classes.append("baseline")
    page.raw(table_html(head, rows, row_classes=classes))
    if comparison:
        from fdflare.analysis.skill import difference_of, difference_words

        for kind, verdict in comparison["beats"].items():
            for key, title in (("tss", "TSS"), ("hss2", "HSS2")):
                if verdict[key] is None:
                    continue
                m, b = ev["mean"][key], baselines[kind]["mean"][key]
                word = "beats" if verdict[key] else "does NOT beat"
                diff = difference_of(comparison, kind, key)
                sure = f" The {difference_words(diff)}." if diff else ""
                page.paragraph(
                    f"Mean {title} {word} {kind}: {_fmt(m)} vs {_fmt(b)}.{sure}",
                    "" if verdict[key] else "note",
                )
    else:
        page.paragraph(
            "No baselines were computed for this run (no flare catalog): the scores stand alone.",
            "note",
        )


def _calibration_section(
    page: Page, folder: Path, entry: dict[str, Any], key: str = "calibration"
) -> None:
    cal = entry.get(key)
    if not cal:
        return
    from fdflare.analysis.calibration import before_after

    if key == "with_history":
        page.heading("With the flare history", 3)
        page.paragraph(
            "Each fold's forecast from the model's score and the flares of the last 24 and "
            "72 hours together: a logistic map fitted on the other folds (fdflare calibrate "
            "--method history)."
        )
        page.raw(table_html(*before_after(cal, "history")))
    else:
        page.heading("Calibration and reliability", 3)
        page.raw(table_html(*before_after(cal)))
    page.paragraph(
        "BSS is against climatology (each fold's training positive rate). The threshold that "
        "maximises TSS is chosen on the calibration data only."
    )
    png = folder / cal["folder"] / "reliability.png"
    if png.is_file():
        page.raw(image_file(png, "Reliability diagram (instances per bin) and sharpness"))


def _spatial_section(page: Page, folder: Path, sp: dict[str, Any], name: str) -> None:
    """The location table as ``fdflare spatial`` prints it, then one heatmap per class."""
    from fdflare.analysis.spatial import CLASSES, location_table

    page.heading("Recall by location (central vs near-limb)", 3)
    head, rows, notes = location_table(sp)
    page.raw(table_html(head, rows, left=2))
    for note in notes:
        page.paragraph(f"Note: {note}.")
    for cls in CLASSES:
        tag = cls.replace("+", "")
        for candidate in (
            folder / f"{name}_heatmap_{tag}.png",
            folder / "figures" / f"{name}_heatmap_{tag}.png",
        ):
            if candidate.is_file():
                page.raw(image_file(candidate, f"{cls} recall by location", wide=True))
                break


def _curves_section(page: Page, folder: Path) -> None:
    import pandas as pd

    runs = sorted(folder.glob("metrics.csv")) + sorted(folder.glob("*/metrics.csv"))
    runs += sorted(folder.glob("*/*/metrics.csv"))
    if not runs:
        return
    from matplotlib.figure import Figure

    page.heading("Training curves")
    figs = []
    for path in runs:
        try:
            m = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
        if "epoch" not in m.columns or m.empty:
            continue
        fig = Figure(figsize=(5.2, 3.2), layout="constrained")
        ax = fig.subplots()
        for col in ("train_loss", "val_loss"):
            if col in m.columns:
                ax.plot(m["epoch"], m[col], marker="o", label=col)
        ax.set(xlabel="epoch", ylabel="loss")
        ax2 = ax.twinx()
        for col, style in (("val_tss", "--"), ("val_hss2", ":")):
            if col in m.columns:
                ax2.plot(m["epoch"], m[col], ls=style, color="k", label=col)
        ax2.set(ylabel="TSS / HSS2", ylim=(-1, 1))
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="best")
        title = path.parent.name if path.parent != folder else folder.name
        ax.set_title(title, fontsize=9)
        figs.append(matplotlib_figure(fig, f"{title}: loss and validation scores per epoch"))
    if figs:
        page.raw('<div class="grid">' + "".join(figs) + "</div>")


def _settings_section(page: Page, settings: dict[str, Any]) -> None:
    page.heading("Settings")
    page.preformatted(json.dumps(settings, indent=2, default=str))


# --------------------------------------------------------------------------- pages


def _reproduction(folder: Path, data: dict[str, Any]) -> Page:
    page = Page(
        "fdflare reproduction of Pandey et al. (ICMLA 2023)",
        "The study's labels rebuilt from its catalog, and its tables computed from its released "
        "predictions; the models are not retrained.",
    )
    if data.get("labels"):
        lab = data["labels"]
        same = sum(lab["files"].values())
        page.paragraph(
            f"Labels: {same} of {len(lab['files'])} fold files rebuilt byte for byte "
            f"({lab['instances']} instances, {lab['positives']} positive)."
        )
    for note in data.get("missing", []):
        page.paragraph(f"Missing from the reference: {note}", "note")
    for model, entry in data["models"].items():
        page.heading(f"{MODEL_NAMES.get(model.lower(), model)} ({model})")
        if "evaluate" in entry:
            page.heading("Skill per validation fold, beside the baselines", 3)
            _scores_section(page, entry["evaluate"], entry)
        _calibration_section(page, folder, entry)
        _calibration_section(page, folder, entry, "with_history")
        if "spatial" in entry:
            _spatial_section(page, folder, entry["spatial"], model)
    _settings_section(
        page, {"reference": data.get("reference"), "threshold": data.get("threshold")}
    )
    return page


def _demo(folder: Path, data: dict[str, Any]) -> Page:
    config = data.get("config", {})
    model = config.get("model", "model")
    page = Page(
        f"fdflare demo: {model} on synthetic data",
        "Every stage on a synthetic Sun: the numbers show what the pipeline does, not how well "
        "a model forecasts real flares.",
    )
    page.heading("Skill per validation fold, beside the baselines")
    entry: dict[str, Any] = {
        k: data[k] for k in ("baselines", "comparison", "calibration", "with_history") if k in data
    }
    _scores_section(page, data["evaluate"], entry)
    for note in data.get("notes", []):
        page.paragraph(note, "note")
    _calibration_section(page, folder, entry)
    _calibration_section(page, folder, entry, "with_history")
    if "spatial" in data:
        _spatial_section(page, folder, data["spatial"], model)
    _curves_section(page, folder)
    _settings_section(page, config)
    return page


def _train(folder: Path) -> Page:
    page = Page(f"fdflare training run {folder.name}")
    summary = folder / "summary.json"
    if summary.is_file():
        s = _read_json(summary)
        best = s.get("best_epoch")
        page.paragraph(
            f"Best epoch {best}"
            if best is not None
            else "No epoch met the selection rule (see last.ckpt)."
        )
    _curves_section(page, folder)
    _settings_section(page, _read_json(folder / "config.json"))
    return page


def _cv(folder: Path) -> Page:
    import pandas as pd

    page = Page(f"fdflare cross-validation {folder.name}")
    summary = folder / "cv_summary.csv"
    if summary.is_file():
        table = pd.read_csv(summary)
        page.heading("Runs")
        page.raw(
            table_html(
                [str(c) for c in table.columns],
                [[_fmt(v) for v in row] for row in table.itertuples(index=False)],
            )
        )
    results = folder / "results.json"
    if results.is_file():
        data = _read_json(results)
        for model, entry in data.get("models", {}).items():
            page.heading(f"{model}: skill per validation fold")
            if "evaluate" in entry:
                _scores_section(page, entry["evaluate"], entry)
            _calibration_section(page, folder, entry)
    _curves_section(page, folder)
    return page


def build_report(folder: str | os.PathLike[str]) -> str:
    """The HTML page for the run in ``folder``.

    Raises:
        MissingDataError: ``folder`` holds no run fdflare knows.
    """
    path = Path(folder)
    if not path.is_dir():
        raise MissingDataError(
            f"{folder}: no such folder (a train run, cv set, demo or reproduction)"
        )
    kind = kind_of(path)
    if kind == "reproduction":
        page = _reproduction(path, _read_json(path / "results.json"))
    elif kind == "demo":
        page = _demo(path, _read_json(path / "results.json"))
    elif kind == "train":
        page = _train(path)
    else:
        page = _cv(path)
    return page.render()


def write_report(folder: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write :func:`build_report` of ``folder`` to ``out`` atomically."""
    from fdflare.core.io import write_text_atomic

    html_text = build_report(folder)
    write_text_atomic(out, html_text)
    return Path(out)


__all__ = ["MODEL_NAMES", "REPORT_NAME", "build_report", "kind_of", "write_report"]
