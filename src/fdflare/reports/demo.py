"""The whole pipeline end to end on synthetic data, in minutes on a laptop CPU.

``synth`` -> ``label`` -> ``train`` (one model per fold) -> ``predict`` -> ``evaluate`` ->
``spatial``, each stage called through its library function and writing the same files
its command writes, into one folder::

    OUT/synth/          images, geometry.csv, catalog.csv        (fdflare synth)
    OUT/labels/         Fold{k}_{train,val}.csv, labels.csv      (fdflare label)
    OUT/runs/MODEL_foldK/  config.json, metrics.csv, best.ckpt   (fdflare train)
    OUT/predictions/    foldK_MODEL.csv, foldK_MODEL_joined.csv (fdflare predict)
    OUT/figures/        recall heatmaps (PNG, SVG), bin tables   (fdflare spatial)
    OUT/results.json    {"evaluate": ..., "spatial": ...}
    OUT/report.md       the tables and figures

The demo recipe differs from the study's only where minutes demand it: small images, a
year of 12-hourly images instead of eight years of hourly ones, a few epochs, no ImageNet
weights (none can be downloaded offline), a higher learning rate, and ResNet18 (the smallest
ResNet of the registry; the study's AlexNet with its initialisation needs more epochs than
a demo has: pass ``model="alexnet"`` to run it). The data are
synthetic (see ``docs/synth.md``): the numbers show the pipeline works, not how well a
model forecasts real flares. Rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fdflare.training.config import setting


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
    model: str = _train_setting("model", "resnet18")
    folds: tuple[int, ...] = setting(
        (1, 2, 3, 4), "folds to run, comma-separated", choices=(1, 2, 3, 4), metavar="LIST"
    )
    epochs: int = _train_setting("epochs", 3)
    batch_size: int = _train_setting("batch_size", 32)
    max_lr: float = _train_setting("max_lr", 1e-2)
    workers: int = _train_setting("workers", 0)
    train: dict[str, Any] = field(default_factory=dict)

    def updated(
        self, values: dict[str, Any], *, path: str | os.PathLike[str] | None = None
    ) -> DemoConfig:
        """Return a copy with ``values`` applied, checking names, types and ranges.

        Raises:
            InputError: an unknown name or a bad value, naming the field.
        """
        from fdflare.training.config import TrainConfig, updated

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
            seed=self.seed,
            labels=labels,
            images=images,
            workers=self.workers,
        ).updated(self.train)


def demo_config_path() -> Path:
    """The packaged demo settings, ``fdflare/configs/demo.yaml`` (the defaults of :class:`DemoConfig`)."""
    return Path(__file__).parents[1] / "configs" / "demo.yaml"


def load_demo_config(path: str | os.PathLike[str], base: DemoConfig | None = None) -> DemoConfig:
    """Read a YAML or JSON file of demo settings over ``base``.

    Raises:
        InputError: unreadable file, an unknown field or a bad value, naming the file.
    """
    from fdflare.training.config import read_settings

    return (base or DemoConfig()).updated(read_settings(path), path=path)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_demo(
    out: str | os.PathLike[str], config: DemoConfig | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """Run the pipeline into ``out`` and return ``{"evaluate": ..., "spatial": ...}``."""
    import pandas as pd

    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.metrics import evaluate_files
    from fdflare.analysis.metrics import format_table as eval_table
    from fdflare.analysis.spatial import SpatialConfig, analyse, read_spatial_tables
    from fdflare.analysis.spatial import format_table as spatial_table
    from fdflare.core.io import write_text_atomic
    from fdflare.inference.predict import joined_path, predict
    from fdflare.label import LabelConfig, make_labels, read_image_list, write_labels
    from fdflare.synth.writer import generate
    from fdflare.training.fit import fit

    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    start = pd.Timestamp(cfg.start)
    end = start + pd.Timedelta(days=cfg.days)

    _say(
        f"[1/6] synth: {cfg.days} days of {cfg.cadence} synthetic magnetograms, {cfg.image_size} px",
        quiet,
    )
    synth_dir = out / "synth"
    generate(
        synth_dir,
        start=start.isoformat(),
        end=(end - pd.Timedelta(cfg.cadence)).isoformat(),
        cadence=cfg.cadence,
        size=cfg.image_size,
        seed=cfg.seed,
        progress=not quiet,
    )

    _say("[2/6] label: 24 h windows, >= M1.0, 4 quarterly folds", quiet)
    label_cfg = LabelConfig(start=str(start), end=str(end), cadence=cfg.cadence)
    labels = make_labels(
        read_catalog(synth_dir / "catalog.csv"), read_image_list(synth_dir / "images"), label_cfg
    )
    write_labels(labels, out / "labels", label_cfg)

    pred_files, joined_files = [], []
    for k in cfg.folds:
        _say(f"[3/6] train: {cfg.model}, fold {k}, {cfg.epochs} epochs", quiet)
        tcfg = cfg.train_config(k, str(out / "labels"), str(synth_dir / "images"))
        result = fit(tcfg, out / "runs" / f"{cfg.model}_fold{k}", resume=True, quiet=quiet)
        ckpt = result.best_checkpoint or result.last_checkpoint
        _say(f"[4/6] predict: fold {k} validation set with {ckpt.name}", quiet)
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

    _say("[5/6] evaluate", quiet)
    evaluation = evaluate_files(pred_files)
    _say("[6/6] spatial", quiet)
    spatial = analyse(
        read_spatial_tables(joined_files), SpatialConfig(), out=out / "figures", name=cfg.model
    )

    results: dict[str, Any] = {"evaluate": evaluation, "spatial": spatial}
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    seconds = time.perf_counter() - t0
    report = [
        "# fdflare demo (synthetic data)",
        "",
        f"Synthetic magnetograms, {cfg.days} days every {cfg.cadence} from {start:%Y-%m-%d}, {cfg.image_size} px; "
        f"{labels.counts['instances']} instances ({labels.counts['positives']} positive, >= M1.0); "
        f"{cfg.model} trained {cfg.epochs} epochs per fold without ImageNet weights; {seconds:.0f} s in all.",
        "The data are synthetic: these numbers show the pipeline works, not real forecast skill.",
        "",
        "## Skill scores per validation fold",
        "",
        eval_table(evaluation, markdown=True),
        "",
        "## Recall by location",
        "",
        spatial_table(spatial, markdown=True),
        "",
    ]
    for cls in ("X", "M", "XM"):
        png = out / "figures" / f"{cfg.model}_heatmap_{cls}.png"
        if png.is_file():
            report += [f"![{cls} heatmap](figures/{png.name})", ""]
    write_text_atomic(out / "report.md", "\n".join(report))
    results["seconds"] = seconds
    results["config"] = asdict(cfg)
    return results
