"""The whole pipeline end to end on synthetic data, in minutes on a laptop CPU.

``synth`` -> ``label`` -> ``train`` (one model per fold) -> ``predict`` -> ``baseline`` ->
``evaluate --baseline`` -> ``calibrate --cross-fold`` -> ``spatial`` -> ``report``, each
stage called through its library function and writing the same files its command writes,
into one folder::

    OUT/synth/          images, geometry.csv, catalog.csv,       (fdflare synth)
                        jp2/ (the same Sun as JPEG 2000 files, for `fdflare serve --demo OUT`)
    OUT/labels/         Fold{k}_{train,val}.csv, labels.csv      (fdflare label)
    OUT/runs/MODEL_foldK/  config.json, metrics.csv, best.ckpt   (fdflare train)
    OUT/predictions/    foldK_MODEL.csv, foldK_MODEL_joined.csv (fdflare predict)
    OUT/baselines/      foldK_{persistence,climatology,flux,history}.csv (fdflare baseline)
    OUT/calibration/MODEL/  calibrated files, calibration.json  (fdflare calibrate)
    OUT/calibration/MODEL-history/  the same with the flare history (calibrate --method history)
    OUT/figures/        recall heatmaps (PNG, SVG), bin tables   (fdflare spatial)
    OUT/ensemble.json   the fold checkpoints and their calibration maps (fdflare cv)
    OUT/results.json    {"evaluate", "baselines", "comparison", "calibration",
                         "with_history", "verdict", "spatial", "notes", "config"}
    OUT/report.md, OUT/report.html                               (fdflare report)

The demo recipe differs from the study's only where minutes demand it: small images, a
year of 12-hourly images instead of eight years of hourly ones, a few epochs, no ImageNet
weights (none can be downloaded offline), and the small CNN of the registry (``smallcnn``,
whose input has the limb masked so that the seasonal disk radius is no cue) trained with
AdamW, because from random weights SGD learns nothing in the few hundred steps a demo has
(see ``docs/demo.md``). The data are synthetic (see ``docs/synth.md``): the numbers show the
pipeline works, not how well a model forecasts real flares. Rerunning the same command
resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fdflare.core.settings import setting


def _train_setting(name: str, default: Any) -> Any:
    """A demo field that is a training setting: help, choices and range from :class:`TrainConfig`."""
    from fdflare.training.config import TrainConfig

    (f,) = [f for f in fields(TrainConfig) if f.name == name]
    return field(default=default, metadata=f.metadata)


@dataclass
class DemoConfig:
    """Options of the demo (defaults finish in a few minutes on 2 CPU cores).

    The defaults are ``fdflare/configs/demo.yaml``. The training fields take their help,
    choices and ranges from :class:`~fdflare.training.config.TrainConfig`; ``train`` holds
    any other training settings for the demo's runs.
    """

    start: str = setting(
        "2011-01-01T00:00", "first image time of the synthetic data", metavar="TIME"
    )
    days: int = setting(365, "days of synthetic data", low=1, metavar="N")
    cadence: str = setting("12h", "image cadence", metavar="DURATION")
    image_size: int = _train_setting("image_size", 64)
    seed: int = _train_setting("seed", 0)
    model: str = _train_setting("model", "smallcnn")
    folds: tuple[int, ...] = setting(
        (1, 2, 3, 4), "folds to run, comma-separated", choices=(1, 2, 3, 4), metavar="LIST"
    )
    epochs: int = _train_setting("epochs", 10)
    batch_size: int = _train_setting("batch_size", 32)
    max_lr: float = _train_setting("max_lr", 3e-4)
    optimizer: str = _train_setting("optimizer", "adamw")
    workers: int = _train_setting("workers", 0)
    protocol: str = _train_setting("protocol", "honest")
    select_by: str = _train_setting("select_by", "auto")
    average: str = _train_setting("average", "none")
    train: dict[str, Any] = field(default_factory=dict)

    def updated(
        self, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> DemoConfig:
        """Return a copy with ``values`` applied, checking names, types and ranges.

        Raises:
            InputError: an unknown name or a bad value, naming the field.
        """
        from fdflare.core.settings import updated
        from fdflare.training.config import TrainConfig

        cfg = updated(self, values, path=path)
        TrainConfig(pretrained=False).updated(cfg.train, path=path)  # check the overrides too
        return cfg

    def train_config(self, fold: int, labels: str, images: str) -> Any:
        """The training config of one fold."""
        from fdflare.training.config import TrainConfig

        return TrainConfig(
            model=self.model,
            pretrained=False,
            fold=fold,
            image_size=self.image_size,
            epochs=self.epochs,
            batch_size=self.batch_size,
            max_lr=self.max_lr,
            optimizer=self.optimizer,
            seed=self.seed,
            labels=labels,
            images=images,
            workers=self.workers,
            protocol=self.protocol,
            select_by=self.select_by,
            average=self.average,
        ).updated(self.train)


def demo_config_path() -> Path:
    """The packaged demo settings, ``fdflare/configs/demo.yaml`` (the defaults of :class:`DemoConfig`)."""
    return Path(__file__).parents[1] / "configs" / "demo.yaml"


def load_demo_config(path: str | os.PathLike[str], base: DemoConfig | None = None) -> DemoConfig:
    """Read a YAML or JSON file of demo settings over ``base``.

    Raises:
        InputError: unreadable file, an unknown field or a bad value, naming the file.
    """
    from fdflare.core.settings import read_settings

    return (base or DemoConfig()).updated(read_settings(path), path=path)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


#: The demo's steps in the order they run: the progress lines are numbered from this list,
#: and docs/demo.md's table of steps lists the same (tests/test_report.py compares them).
STEPS = ("synth", "label", "train", "predict", "baseline", "evaluate", "calibrate", "spatial")


def _step(name: str, detail: str, quiet: bool) -> None:
    """Say that step ``name`` (one of :data:`STEPS`) starts: ``[3/8] train: ...``."""
    _say(f"[{STEPS.index(name) + 1}/{len(STEPS)}] {name}: {detail}", quiet)


BASELINE_KINDS = ("persistence", "climatology", "flux", "history")
#: the width of the demo's JPEG 2000 files (`fdflare serve --demo` replays them)
DEMO_JP2_SIZE = 256
BASELINE_DIR = "baselines"
CALIBRATION_DIR = "calibration"


def run_demo(
    out: str | os.PathLike[str], config: DemoConfig | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """Run the pipeline into ``out``; return (and write to ``OUT/results.json``) the results.

    The results are ``{"evaluate", "baselines", "comparison", "calibration", "verdict",
    "spatial", "notes", "config"}`` (``calibration`` only with two or more folds) plus
    ``"seconds"`` (not written, so a rerun writes the same file).
    """
    import pandas as pd

    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.baselines import baseline_predictions, write_predictions
    from fdflare.analysis.skill import compare
    from fdflare.analysis.spatial import SpatialConfig, analyse, read_spatial_tables
    from fdflare.core.io import write_text_atomic
    from fdflare.data.tables import select_table
    from fdflare.inference.predict import joined_path, predict
    from fdflare.label import LabelConfig, make_labels, read_image_list, write_labels
    from fdflare.synth.config import SynthConfig
    from fdflare.synth.writer import generate
    from fdflare.training.fit import fit
    from fdflare.training.protocol import selection_rule, selection_set

    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    start = pd.Timestamp(cfg.start)
    end = start + pd.Timedelta(days=cfg.days)

    _step(
        "synth",
        f"{cfg.days} days of {cfg.cadence} synthetic magnetograms, {cfg.image_size} px",
        quiet,
    )
    synth_dir = out / "synth"
    synth_cfg = SynthConfig(
        start=start.isoformat(),
        end=(end - pd.Timedelta(cfg.cadence)).isoformat(),
        cadence=cfg.cadence,
        size=cfg.image_size,
        seed=cfg.seed,
        jp2=True,
        jp2_size=max(DEMO_JP2_SIZE, cfg.image_size),
    )
    generate(synth_dir, synth_cfg, progress=not quiet)

    _step("label", "24 h windows, >= M1.0, 4 quarterly folds", quiet)
    label_cfg = LabelConfig(start=str(start), end=str(end), cadence=cfg.cadence)
    catalog = read_catalog(synth_dir / "catalog.csv")
    labels = make_labels(catalog, read_image_list(synth_dir / "images"), label_cfg)
    write_labels(labels, out / "labels", label_cfg)

    pred_files, joined_files, notes = [], [], []
    checkpoints: list[Path] = []
    selected_on: set[str] = set()
    for k in cfg.folds:
        _step("train", f"starting fold {k}: {cfg.model}, {cfg.epochs} epochs", quiet)
        tcfg = cfg.train_config(k, str(out / "labels"), str(synth_dir / "images"))
        result = fit(tcfg, out / "runs" / f"{cfg.model}_fold{k}", resume=True, quiet=quiet)
        ckpt = result.best_checkpoint or result.last_checkpoint
        has_select = select_table(tcfg.labels, k) is not None
        selected_on.add(selection_set(tcfg, has_select=has_select))
        rule = selection_rule(tcfg, has_select=has_select)
        if result.best_checkpoint is None:
            notes.append(
                f"fold {k}: no epoch passed the selection rule ({rule}), so it "
                "is predicted with last.ckpt"
            )
            _say(notes[-1], quiet)
        _step("predict", f"fold {k} validation set with {ckpt.name}", quiet)
        pred = out / "predictions" / f"fold{k}_{cfg.model}.csv"
        done = [pred, joined_path(pred)]
        if not all(p.is_file() and p.stat().st_mtime_ns >= ckpt.stat().st_mtime_ns for p in done):
            pred.parent.mkdir(parents=True, exist_ok=True)
            predict(
                ckpt,
                out / "labels" / f"Fold{k}_val.csv",
                synth_dir / "images",
                pred,
                table=out / "labels" / "labels.csv",
                batch_size=cfg.batch_size,
                quiet=True,
            )
        pred_files.append(pred)
        joined_files.append(joined_path(pred))
        checkpoints.append(ckpt)

    _step("baseline", f"{', '.join(BASELINE_KINDS)} on the same instances", quiet)
    baselines = baseline_predictions(
        out / "labels",
        BASELINE_KINDS,
        catalog=catalog,
        images=synth_dir / "images",
        folds=list(cfg.folds),
    )
    write_predictions(baselines, out / BASELINE_DIR)
    _step("evaluate", "the model beside the baselines", quiet)
    cmp = compare(pred_files, out / BASELINE_DIR)
    evaluation = {k: v for k, v in cmp.items() if k not in ("baselines", "comparison")}
    results: dict[str, Any] = {
        "evaluate": evaluation,
        "baselines": cmp["baselines"],
        "comparison": cmp["comparison"],
    }
    _step("calibrate", "cross-fold isotonic, and with the flare history", quiet)
    if len(pred_files) >= 2:
        results["calibration"] = _calibrate(out, cfg, pred_files)
        results["with_history"] = _with_history(out, cfg, pred_files, catalog, cmp["baselines"])
    else:
        notes.append(
            "calibration skipped: cross-fold calibration needs the predictions of two or more folds"
        )
    _write_ensemble(out, cfg, checkpoints, results.get("calibration"))
    results["verdict"] = verdict(results)
    results["verdict"]["selected_on"] = sorted(selected_on)
    results["verdict"]["protocol"] = "study" if selected_on == {"val"} else "honest"
    results["verdict"]["selection_rule"] = rule
    _step("spatial", "recall by location, heatmaps", quiet)
    results["spatial"] = analyse(
        read_spatial_tables(joined_files), SpatialConfig(), out=out / "figures", name=cfg.model
    )
    results["notes"] = _verdict_sentences(results["verdict"]) + notes
    if "with_history" in results:
        results["notes"] += _history_sentences(results["with_history"])
    results["config"] = json.loads(json.dumps(asdict(cfg)))
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    seconds = time.perf_counter() - t0
    write_text_atomic(out / "report.md", _markdown(out, cfg, labels.counts, results, seconds))
    from fdflare.reports.report import REPORT_NAME, write_report

    write_report(out, out / REPORT_NAME)
    results["seconds"] = seconds
    return results


def _write_ensemble(
    out: Path, cfg: DemoConfig, checkpoints: list[Path], calibration: dict[str, Any] | None
) -> Path:
    """``OUT/ensemble.json``: every fold's checkpoint with its cross-fold calibration map."""
    from fdflare.forecast.ensemble import write_ensemble

    maps = [f["map"] for f in calibration["files"]] if calibration else [None] * len(checkpoints)
    members = [
        {"model": cfg.model, "fold": k, "checkpoint": ckpt.resolve(), "calibration": m}
        for k, ckpt, m in zip(cfg.folds, checkpoints, maps, strict=True)
    ]
    return write_ensemble(out, members)


def _calibrate(out: Path, cfg: DemoConfig, pred_files: list[Path]) -> dict[str, Any]:
    """Cross-fold isotonic calibration: each fold mapped with the other folds' predictions."""
    from fdflare.analysis.calibration import cross_fold, training_rates, write_calibrated

    rates = training_rates(out / "labels", cfg.folds)
    folder = f"{CALIBRATION_DIR}/{cfg.model}"
    record = write_calibrated(
        cross_fold(pred_files, "isotonic", reference_rates=rates), out / folder
    )
    return {"method": "isotonic", "folder": folder, "files": record["files"]}


def _with_history(
    out: Path,
    cfg: DemoConfig,
    pred_files: list[Path],
    catalog: Any,
    baselines: dict[str, Any],
) -> dict[str, Any]:
    """The model's score and the flare history together, mapped fold by fold as calibration is.

    Each fold's map (``fdflare calibrate --method history``) is fitted on the other folds'
    predictions and their flare history, and its threshold maximises TSS there; the fold is
    scored at that threshold, beside persistence and the history baseline, with how sure
    each difference is (a paired bootstrap over days).
    """
    from fdflare.analysis.calibration import training_rates
    from fdflare.analysis.skill import with_history

    folder = f"{CALIBRATION_DIR}/{cfg.model}-history"
    kinds = [k for k in ("persistence", "history") if k in baselines]
    result = with_history(
        pred_files,
        catalog,
        out / folder,
        out / BASELINE_DIR,
        reference_rates=training_rates(out / "labels", cfg.folds),
        kinds=kinds,
    )
    result["folder"] = folder
    for kind in kinds:
        theirs = baselines[kind]["mean"]["tss"]
        ours = result["mean_tss_at_threshold"]
        result[f"{kind}_tss"] = theirs
        result[f"beats_{kind}"] = None if ours is None or theirs is None else ours > theirs
    return result


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Whether the model beats persistence, at 0.5 and at the threshold chosen on other folds.

    The verdict (``beats_persistence``) uses TSS at the probability threshold 0.5 of the raw
    model, the study's rule; ``difference_vs_persistence`` says how sure it is (the mean
    difference, its 95 % interval from a paired bootstrap over days, and ``better``,
    ``worse`` or ``within noise``: :func:`fdflare.analysis.skill.paired_difference`). Beside
    it, ``tss_at_threshold`` is the calibrated model's
    validation TSS at the threshold that maximises TSS on the other folds' calibrated
    predictions (never on the fold itself).
    """
    from fdflare.analysis.skill import difference_of

    ev, pers = results["evaluate"], results["baselines"]["persistence"]
    aucs = [f["auc"] for f in ev["files"]]
    out: dict[str, Any] = {
        "rule": "mean test-fold TSS at threshold 0.5 above persistence's",
        "tss": ev["mean"]["tss"],
        "persistence_tss": pers["mean"]["tss"],
        "beats_persistence": results["comparison"]["beats"]["persistence"]["tss"],
        "difference_vs_persistence": difference_of(results["comparison"], "persistence", "tss"),
        "min_auc": None if any(a is None for a in aucs) else min(aucs),
    }
    cal = results.get("calibration")
    if cal:
        at = [(f["after"].get("at_threshold") or {}).get("tss") for f in cal["files"]]
        ok = [t for t in at if t is not None]
        out["tss_at_threshold"] = at
        out["mean_tss_at_threshold"] = sum(ok) / len(ok) if len(ok) == len(at) else None
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def calibration_table(results: dict[str, Any], markdown: bool = False) -> str:
    """Per fold: Brier skill before and after calibration, TSS at 0.5 and at the threshold."""
    from fdflare.analysis.calibration import before_after
    from fdflare.core.table import render_table

    head, rows = before_after(results["calibration"])
    return render_table(
        head,
        rows,
        markdown=markdown,
        notes=[
            "each fold calibrated with an isotonic map fitted on the other folds' predictions; "
            "its threshold maximises TSS on those; BSS against each fold's training rate"
        ],
    )


def _verdict_sentences(v: dict[str, Any]) -> list[str]:
    from fdflare.analysis.skill import difference_words

    word = {True: "beats", False: "does NOT beat", None: "cannot be compared with"}
    lines = [
        f"verdict (mean TSS at 0.5, the study's threshold): the model {word[v['beats_persistence']]} "
        f"persistence ({_fmt(v['tss'])} vs {_fmt(v['persistence_tss'])}); lowest fold ROC AUC "
        f"{_fmt(v['min_auc'])}"
    ]
    if v.get("difference_vs_persistence"):
        lines.append(
            f"how sure: {difference_words(v['difference_vs_persistence'])} (a paired "
            "bootstrap over whole days of the test folds; neighbouring days share regions too, "
            "so the interval is if anything too narrow)"
        )
    if v.get("mean_tss_at_threshold") is not None:
        lines.append(
            "beside it, calibrated and at the TSS-maximising threshold of the other folds "
            f"(never the fold's own): mean TSS {_fmt(v['mean_tss_at_threshold'])}"
        )
    if "val" in v.get("selected_on", []):
        lines.append(
            "caution: protocol study: each fold's epoch was selected on the fold it is scored "
            "on, as the study does; that favours the model over persistence, which selects "
            "nothing (the default, --protocol honest, selects on held-out training data)"
        )
    elif v.get("selected_on") == ["none"]:
        lines.append(
            "protocol honest: nothing was selected; each fold is scored with its last epoch "
            "(rule: last), and the scored fold touched nothing"
        )
    elif v.get("selected_on"):
        lines.append(
            f"protocol honest: each fold's epoch was selected (rule: {v.get('selection_rule')}) "
            "on data that is never scored (the latest part of its training data, held out and "
            "purged by the label window, or the labels' selection interval)"
        )
    return lines


def _history_sentences(h: dict[str, Any]) -> list[str]:
    """What the model and the flare history forecast together, beside the two references."""
    from fdflare.analysis.skill import difference_words

    if h.get("mean_tss_at_threshold") is None:
        return ["with the flare history: undefined (a fold without a threshold)"]
    word = {True: "beats", False: "does NOT beat", None: "cannot be compared with"}
    lines = [
        "with the flare history (a logistic map of the model's score and the flares of the "
        "last 24 and 72 h, fitted on the other folds, at their TSS-maximising threshold): "
        f"mean TSS {_fmt(h['mean_tss_at_threshold'])}"
    ]
    for kind, name in (("persistence", "persistence"), ("history", "the flare history alone")):
        if f"{kind}_tss" not in h:
            continue
        sure = h.get(f"difference_vs_{kind}")
        lines.append(
            f"  {word[h[f'beats_{kind}']]} {name} ({_fmt(h[f'{kind}_tss'])})"
            + (f"; how sure: {difference_words(sure)}" if sure else "")
        )
    return lines


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """The verdict in words (does the model beat persistence, its lowest ROC AUC) and the notes.

    The notes name every fold predicted with ``last.ckpt``.
    """
    return list(results.get("notes", []))


def _markdown(
    out: Path, cfg: DemoConfig, counts: dict[str, Any], results: dict[str, Any], seconds: float
) -> str:
    from fdflare.analysis.skill import format_comparison
    from fdflare.analysis.spatial import format_table as spatial_table

    start = f"{cfg.start[:10]}"
    cmp = {
        **results["evaluate"],
        "baselines": results["baselines"],
        "comparison": results["comparison"],
    }
    report = [
        "# fdflare demo (synthetic data)",
        "",
        f"Synthetic magnetograms, {cfg.days} days every {cfg.cadence} from {start}, {cfg.image_size} px; "
        f"{counts['instances']} instances ({counts['positives']} positive, >= M1.0); "
        f"{cfg.model} trained {cfg.epochs} epochs per fold without ImageNet weights; {seconds:.0f} s in all.",
        "The data are synthetic: these numbers show the pipeline works, not real forecast skill.",
        "",
        "## Skill scores per validation fold, beside the baselines",
        "",
        format_comparison(cmp, markdown=True),
        "",
        *[f"- {line}" for line in verdict_lines(results)],
        "",
    ]
    if "calibration" in results:
        report += [
            "## Calibrated probabilities (cross-fold isotonic)",
            "",
            calibration_table(results, markdown=True),
            "",
            f"![reliability]({results['calibration']['folder']}/reliability.png)",
            "",
        ]
    if "with_history" in results:
        from fdflare.analysis.calibration import before_after
        from fdflare.core.table import render_table

        report += [
            "## With the flare history (the model's score and the last 72 h of flares)",
            "",
            render_table(*before_after(results["with_history"], "history"), markdown=True),
            "",
        ]
    report += ["## Recall by location", "", spatial_table(results["spatial"], markdown=True), ""]
    for cls in ("X", "M", "XM"):
        png = out / "figures" / f"{cfg.model}_heatmap_{cls}.png"
        if png.is_file():
            report += [f"![{cls} heatmap](figures/{png.name})", ""]
    return "\n".join(report)
