"""How much of the demo's flare labels could any image model know? Run by hand; prints a table.

The synthetic Sun draws its flares from what its regions are (``fdflare.synth.flares``):
each region on the disk flares at a rate set by its unsigned flux and its complexity. So,
for the demo's test instances (the same synthetic year, 12-hourly, quarterly folds), this
forecasts each one from the regions' truth at the image time, as a perfect reader of the
image could at best:

* ``regions``: the expected number of flares >= M1.0 in the next 24 h from every region on
  the visible disk, with its true flux and complexity (held at their image-time values);
* ``flux only``: the same with every region's complexity set to the mean, so that only
  the flux counts;
* ``foreshortened``: flux only, and each region's flux times the cosine of its central
  meridian distance, as the line-of-sight field shows it.

A score is the TSS at the threshold that maximises the TSS on the other three folds (never
on the scored fold), the mean over the four folds. Persistence and the flux baseline are
scored on the same instances, at 0.5 as in the demo::

    PYTHONPATH=src python benchmarks/demo_ceiling.py --root /tmp/ceiling --seeds 0,1,2,3,4,5

These forecasts read the synthetic truth, which no model sees: they bound what the images
could give, they are not a baseline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def _tss(prob: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    p, y = prob >= threshold, y.astype(bool)
    return float((p & y).sum() / max(y.sum(), 1) - (p & ~y).sum() / max((~y).sum(), 1))


def _best_threshold(score: np.ndarray, y: np.ndarray) -> float:
    candidates = np.unique(score)
    return float(candidates[int(np.argmax([_tss(score, y, t) for t in candidates]))])


def _m_rate(regions: dict[str, np.ndarray], day: float, kind: str, c_mean: float) -> float:
    """Expected flares >= M1.0 per day from the regions on the visible disk at ``day``."""
    from fdflare.synth.flares import flare_productivity
    from fdflare.synth.regions import _evolve

    n = len(regions["region"])
    s = _evolve(regions, np.arange(n), np.full(n, day))
    flux = regions["flux_max"] * s["frac"]
    c = regions["complexity"] if kind == "regions" else np.full(n, c_mean)
    if kind == "foreshortened":
        flux = flux * np.cos(np.radians(np.clip(s["lon"], -90.0, 90.0)))
    rate, cap = flare_productivity(flux, c)
    # dN/dF ~ F^-2 from C1.0 to the cap: the share of flares at M1.0 or above
    share = np.clip(1.0 - 0.9 / (1.0 - 1e-6 / cap), 0.0, 1.0)
    return float((rate * share * s["alive"] * (np.abs(s["lon"]) < 90.0)).sum())


def main() -> None:
    """Score the perfect readers and the baselines for each seed; print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.baselines import baseline_predictions
    from fdflare.core.paths import parse_image_times
    from fdflare.label import LabelConfig, make_labels, read_image_list, write_labels
    from fdflare.reports.demo import DemoConfig
    from fdflare.synth.config import SynthConfig
    from fdflare.synth.regions import _region_arrays
    from fdflare.synth.seeds import _days
    from fdflare.synth.writer import generate

    kinds = ("regions", "flux only", "foreshortened")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = DemoConfig(seed=seed)
        start = pd.Timestamp(cfg.start)
        end = start + pd.Timedelta(days=cfg.days)
        synth = Path(args.root) / f"seed{seed}" / "synth"
        if not (synth / "catalog.csv").is_file():
            generate(
                synth,
                SynthConfig(
                    start=start.isoformat(),
                    end=(end - pd.Timedelta(cfg.cadence)).isoformat(),
                    cadence=cfg.cadence,
                    size=cfg.image_size,
                    seed=seed,
                ),
                progress=False,
            )
        catalog = read_catalog(synth / "catalog.csv")
        labels = synth.parent / "labels"
        lcfg = LabelConfig(start=str(start), end=str(end), cadence=cfg.cadence)
        write_labels(make_labels(catalog, read_image_list(synth / "images"), lcfg), labels)
        regions = _region_arrays(pd.read_csv(synth / "regions.csv"))
        c_mean = float(np.mean(regions["complexity"]))
        folds: dict[int, dict[str, pd.DataFrame]] = {}
        for p in baseline_predictions(
            labels, ["persistence", "flux"], catalog=catalog, images=synth / "images"
        ):
            folds.setdefault(p.fold, {})[p.kind] = p.table
        scores: dict[str, dict[int, np.ndarray]] = {k: {} for k in kinds}
        for k, tables in folds.items():
            times, _ = parse_image_times(tables["persistence"]["timestamp"])
            days = _days(list(times))
            for kind in kinds:
                lam = np.array([_m_rate(regions, d, kind, c_mean) for d in days])
                scores[kind][k] = 1.0 - np.exp(-lam)
        row: dict[str, object] = {"seed": seed}
        for kind in kinds:
            per = []
            for k in folds:
                others = [j for j in folds if j != k]
                s = np.concatenate([scores[kind][j] for j in others])
                y = np.concatenate([folds[j]["persistence"]["target"].to_numpy() for j in others])
                threshold = _best_threshold(s, y)
                per.append(
                    _tss(scores[kind][k], folds[k]["persistence"]["target"].to_numpy(), threshold)
                )
            row[kind] = round(float(np.mean(per)), 3)
        for base in ("persistence", "flux"):
            row[base] = round(
                float(
                    np.mean(
                        [
                            _tss(t[base]["flare_prob"].to_numpy(), t[base]["target"].to_numpy())
                            for t in folds.values()
                        ]
                    )
                ),
                3,
            )
        rows.append(row)
        print(row, flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
