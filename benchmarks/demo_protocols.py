"""Which demo recipe learns under honest selection? Run by hand; prints one table.

For each synthetic Sun (``--seeds``) and each recipe (``--variants``, names of ``VARIANTS``),
trains the demo's folds once and replays every selection rule on the run's ``metrics.csv``
(each epoch's scores on the selection set and on the test fold are both recorded), so one
training run gives the test TSS of every rule: the study's (select on the test fold itself),
held-out TSS with the study's rule, held-out loss, a smoothed held-out TSS, and the last
epoch. Persistence and the flux baseline are scored on the same test instances.

    PYTHONPATH=src python benchmarks/demo_protocols.py --root /tmp/dp --seeds 0,1,2 --variants base

Never tune on the test column: it is printed to report, not to choose. Seeds 3, 4 and 5
are the development Suns for choosing a recipe; seeds 0, 1 and 2 (the ones docs/demo.md
reports) are run once, after the choice.

A recipe's ``channels`` (not a demo setting) sets ``SmallCNNFlare.CHANNELS`` in this process
for that recipe's training only (the default model is untouched): the "fewer parameters"
candidates. ``head: "hazard"`` likewise replaces the small CNN's average pooling and linear
head, in this process, by a hazard head: a 1x1 convolution gives a log-rate at each place of
the last feature map, and the flare logit is their log-mean-exp, so the disk's flare rate is
the sum of its places' rates (as the synthetic Sun draws its flares, region by region) rather
than an average over the disk. ``head: "stem"`` puts a full-resolution stem (a 3x3 convolution to 8 channels and a 2x2
max-pool) in front of the network, for images twice the demo's size at 1.4x its arithmetic.
``synth_s`` is the time to generate the images when this run generated them
(``-`` when they were already there), ``train_s`` the four folds' training.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: recipes: demo settings over configs/demo.yaml, ``train`` over the training config,
#: ``label`` over the label config
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {"average": "none", "train": {"holdout_fraction": 0.25}},
    "ema": {"average": "ema", "train": {"holdout_fraction": 0.25}},
    "lr3": {"max_lr": 3e-4, "average": "none", "train": {"holdout_fraction": 0.25}},
    "lr3_swa": {"max_lr": 3e-4, "average": "swa", "train": {"holdout_fraction": 0.25}},
    "lr3_ema": {"max_lr": 3e-4, "average": "ema", "train": {"holdout_fraction": 0.25}},
    "lr3_last": {"max_lr": 3e-4, "average": "none", "select_by": "last", "train": {}},
    "lr3_last_swa": {"max_lr": 3e-4, "average": "swa", "select_by": "last", "train": {}},
    "lr3_6h": {
        "max_lr": 3e-4,
        "cadence": "6h",
        "epochs": 5,
        "average": "none",
        "train": {"holdout_fraction": 0.25},
    },
    # the candidates of docs/demo.md "What was tried" (more data per fold, fewer parameters),
    # all with the default's honest protocol (last epoch, nothing held out)
    "lr3_last_6h": {"max_lr": 3e-4, "cadence": "6h", "epochs": 5, "select_by": "last", "train": {}},
    "lr3_last_half": {
        "max_lr": 3e-4,
        "select_by": "last",
        "train": {},
        "channels": (8, 16, 32, 64),
    },
    "lr3_last_3blk": {
        "max_lr": 3e-4,
        "select_by": "last",
        "train": {},
        "channels": (16, 32, 64),
    },
    # rotations anywhere on the disk (the flare rate does not depend on the orientation), and
    # two synthetic years with half the epochs (twice the independent regions, the same steps)
    "lr3_last_rot180": {
        "max_lr": 3e-4,
        "select_by": "last",
        "train": {"rotation_degrees": 180.0},
    },
    "lr3_last_hazard": {"max_lr": 3e-4, "select_by": "last", "train": {}, "head": "hazard"},
    "lr3_last_2y": {"max_lr": 3e-4, "days": 730, "epochs": 5, "select_by": "last", "train": {}},
    # twice the resolution for 1.4x the arithmetic: a full-resolution stem (8 channels, then a
    # 2x2 max-pool) in front of the same network, so the first layer sees the pixels in which a
    # region's complexity lies at 64 px
    "lr3_last_128stem": {
        "max_lr": 3e-4,
        "image_size": 128,
        "select_by": "last",
        "train": {},
        "head": "stem",
    },
    # the line-of-sight field turned into the radial field it comes from: each pixel's
    # departure divided by mu, the cosine of its angle from disk centre (``mu``), or by mu^2,
    # which also undoes the foreshortened area (``mu2``), so a region near the limb shows its
    # flux as it would at disk centre
    "lr3_last_mu": {"max_lr": 3e-4, "select_by": "last", "train": {}, "head": "mu"},
    "lr3_last_mu2": {"max_lr": 3e-4, "select_by": "last", "train": {}, "head": "mu2"},
    # the limb mask eroded by 2 pixels instead of 3 (at 64 px the disk then shows out to about
    # 68 deg from its centre instead of 64 deg), alone and with the radial field
    "lr3_last_e2": {"max_lr": 3e-4, "select_by": "last", "train": {}, "head": "e2"},
    "lr3_last_e2mu": {"max_lr": 3e-4, "select_by": "last", "train": {}, "head": "e2mu"},
}


@contextmanager
def _mu(power: int, erode: int | None = None) -> Iterator[None]:
    """Divide ``SmallCNNFlare``'s disk departure by mu**power, and erode the limb by ``erode``
    pixels instead of the default, while the block runs."""
    import torch
    import torch.nn.functional as F

    from fdflare.models.networks import SmallCNNFlare

    if not power and erode is None:
        yield
        return
    dep = SmallCNNFlare.disk_departure

    def eroded(self: Any, x: Any) -> Any:
        lit = (x > 0).to(x.dtype)
        e = int(erode)  # type: ignore[arg-type]
        mask = -F.max_pool2d(-lit, 2 * e + 1, stride=1, padding=e)
        bg = (x * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp_min(1)
        return (x - bg) * mask * 10.0

    def mu_departure(self: Any, x: Any) -> Any:
        out = dep(self, x) if erode is None else eroded(self, x)
        if not power:
            return out
        lit = (x > 0).to(x.dtype)
        n = lit.sum((2, 3), keepdim=True).clamp_min(1)
        h, w = x.shape[-2:]
        ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, 1, h, 1)
        xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, 1, w)
        cy = (lit * ys).sum((2, 3), keepdim=True) / n
        cx = (lit * xs).sum((2, 3), keepdim=True) / n
        r = torch.sqrt(n / math.pi)
        rho2 = ((ys - cy) ** 2 + (xs - cx) ** 2) / (r * r)
        mu = torch.sqrt((1 - rho2).clamp_min(0)).clamp_min(0.2)
        return out / mu**power

    SmallCNNFlare.disk_departure = mu_departure  # type: ignore[method-assign]
    try:
        yield
    finally:
        SmallCNNFlare.disk_departure = dep  # type: ignore[method-assign]


@contextmanager
def _stem(on: bool) -> Iterator[None]:
    """Put a full-resolution stem in front of ``SmallCNNFlare`` while the block runs."""
    from torch import nn

    from fdflare.models.networks import SmallCNNFlare

    if not on:
        yield
        return
    init = SmallCNNFlare.__init__

    def stem_init(self: Any, input_adapter: str = "conv", num_classes: int = 2) -> None:
        init(self, input_adapter, num_classes)
        first = self.features[0]
        width = 8
        stem = nn.Conv2d(first.in_channels, width, kernel_size=3, padding=1, bias=False)
        conv = nn.Conv2d(width, first.out_channels, kernel_size=3, padding=1, bias=False)
        for c in (stem, conv):
            nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
        self.features = nn.Sequential(
            stem, nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2), conv,
            *list(self.features)[1:],
        )  # fmt: skip

    SmallCNNFlare.__init__ = stem_init  # type: ignore[method-assign]
    try:
        yield
    finally:
        SmallCNNFlare.__init__ = init  # type: ignore[method-assign]


@contextmanager
def _hazard_head(on: bool) -> Iterator[None]:
    """Give ``SmallCNNFlare`` the hazard head (module docstring) while the block runs."""
    from torch import nn

    from fdflare.models.networks import SmallCNNFlare

    if not on:
        yield
        return
    init, logits = SmallCNNFlare.__init__, SmallCNNFlare.logits

    def hazard_init(self: Any, input_adapter: str = "conv", num_classes: int = 2) -> None:
        init(self, input_adapter, num_classes)
        self.hazard = nn.Conv2d(self.CHANNELS[-1], 1, 1)
        nn.init.normal_(self.hazard.weight, 0.0, 0.01)
        nn.init.zeros_(self.hazard.bias)

    def hazard_logits(self: Any, x: Any) -> Any:
        import torch

        h = self.hazard(self.features(self.first_conv_layer(self.disk_departure(x)))).flatten(1)
        z = torch.logsumexp(h, 1) - math.log(h.shape[1])
        return torch.stack([torch.zeros_like(z), z], 1)

    SmallCNNFlare.__init__, SmallCNNFlare.logits = hazard_init, hazard_logits  # type: ignore[method-assign]
    try:
        yield
    finally:
        SmallCNNFlare.__init__, SmallCNNFlare.logits = init, logits  # type: ignore[method-assign]


def _tss(prob: np.ndarray, y: np.ndarray) -> float:
    p = prob >= 0.5
    y = y.astype(bool)
    tp, fn = (p & y).sum(), (~p & y).sum()
    fp, tn = (p & ~y).sum(), (~p & ~y).sum()
    return float(tp / max(tp + fn, 1) - fp / max(fp + tn, 1))


def _replay(m: pd.DataFrame, prefix: str) -> int | None:
    from fdflare.training.callbacks import is_improvement

    best_t, best_h, ep = 0.0, 0.0, None
    for _, r in m.iterrows():
        t, h = r.get(f"{prefix}_tss"), r.get(f"{prefix}_hss2")
        t = None if t is None or (isinstance(t, float) and math.isnan(t)) else float(t)
        h = None if h is None or (isinstance(h, float) and math.isnan(h)) else float(h)
        if is_improvement(best_t, best_h, t, h):
            best_t, best_h, ep = t, h, int(r["epoch"])
    return ep


def rules(m: pd.DataFrame) -> dict[str, float]:
    """Test TSS of the epoch each rule selects."""
    val = dict(zip(m["epoch"].astype(int), m["val_tss"].astype(float), strict=True))
    last = int(m["epoch"].max())
    out = {}
    study = _replay(m, "val")
    out["study"] = val[study or last]
    if "holdout_tss" in m:
        out["ho_tss"] = val[_replay(m, "holdout") or last]
        out["ho_loss"] = val[int(m.loc[m["holdout_loss"].idxmin(), "epoch"])]
        sm = m["holdout_tss"].fillna(-1).rolling(3, center=True, min_periods=1).mean()
        out["ho_smooth"] = val[int(m.loc[sm.idxmax(), "epoch"])]
    out["last"] = val[last]
    if "selected" in m:  # what the run itself kept (its own rule)
        kept = m.loc[m["selected"] == 1, "epoch"]
        out["run"] = val[int(kept.max()) if len(kept) else last]
    return out


def main() -> None:
    """Run the grid and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--gap-hours", type=float, default=None)
    args = ap.parse_args()
    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.baselines import baseline_predictions
    from fdflare.label import LabelConfig, make_labels, read_image_list, write_labels
    from fdflare.models.networks import SmallCNNFlare
    from fdflare.reports.demo import DemoConfig
    from fdflare.synth.config import SynthConfig
    from fdflare.synth.writer import generate
    from fdflare.training.fit import fit, read_metrics

    root = Path(args.root)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.variants.split(","):
            v = dict(VARIANTS[name])
            train = v.pop("train", {})
            channels = tuple(v.pop("channels", SmallCNNFlare.CHANNELS))
            head = v.pop("head", "pool")
            hazard, stem = head == "hazard", head == "stem"
            mu_power = {"mu": 1, "mu2": 2, "e2mu": 1}.get(head, 0)
            erode = 2 if head in ("e2", "e2mu") else None
            cfg = DemoConfig(seed=seed).updated({**v, "train": train})
            sd = root / f"seed{seed}"
            tag = "" if cfg.cadence == "12h" else f"_{cfg.cadence}"
            tag += "" if cfg.days == 365 else f"_{cfg.days}d"
            tag += "" if cfg.image_size == 64 else f"_{cfg.image_size}px"
            synth = sd / f"synth{tag}"
            start = pd.Timestamp(cfg.start)
            end = start + pd.Timedelta(days=cfg.days)
            synth_s: int | str = "-"
            if not (synth / "catalog.csv").is_file():
                t_synth = time.perf_counter()
                config = SynthConfig(
                    start=start.isoformat(),
                    end=(end - pd.Timedelta(cfg.cadence)).isoformat(),
                    cadence=cfg.cadence,
                    size=cfg.image_size,
                    seed=seed,
                )
                generate(synth, config, progress=False)
                synth_s = round(time.perf_counter() - t_synth)
            catalog = read_catalog(synth / "catalog.csv")
            lcfg = LabelConfig(
                start=str(start), end=str(end), cadence=cfg.cadence, gap_hours=args.gap_hours
            )
            labels = sd / f"labels{tag}_gap{args.gap_hours}"
            write_labels(make_labels(catalog, read_image_list(synth / "images"), lcfg), labels)
            base: dict[str, list[float]] = {}
            for p in baseline_predictions(
                labels, ["persistence", "flux"], catalog=catalog, images=synth / "images"
            ):
                base.setdefault(p.kind, []).append(
                    _tss(p.table["flare_prob"].to_numpy(), p.table["target"].to_numpy())
                )
            t0 = time.perf_counter()
            per = []
            default_channels = SmallCNNFlare.CHANNELS
            SmallCNNFlare.CHANNELS = channels  # this recipe's network, this process only
            try:
                with _hazard_head(hazard), _stem(stem), _mu(mu_power, erode):
                    for k in cfg.folds:
                        run = sd / f"{name}_gap{args.gap_hours}" / f"fold{k}"
                        fit(
                            cfg.train_config(k, str(labels), str(synth / "images")),
                            run,
                            resume=True,
                            quiet=True,
                        )
                        per.append(rules(read_metrics(run)))
            finally:
                SmallCNNFlare.CHANNELS = default_channels
            secs = time.perf_counter() - t0
            row: dict[str, Any] = {
                "seed": seed,
                "variant": name,
                "channels": "-".join(map(str, channels)),
                "synth_s": synth_s,
                "train_s": round(secs),
            }
            for rule in per[0]:
                row[rule] = round(float(np.mean([p[rule] for p in per])), 3)
                row[rule + "_folds"] = [round(p[rule], 3) for p in per]
            row["persistence"] = round(float(np.mean(base["persistence"])), 3)
            row["persistence_folds"] = [round(x, 3) for x in base["persistence"]]
            row["flux"] = round(float(np.mean(base["flux"])), 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows)
    print(df[[c for c in df.columns if not c.endswith("_folds")]].to_string(index=False))


if __name__ == "__main__":
    main()
