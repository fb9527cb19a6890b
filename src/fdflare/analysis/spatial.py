"""Where on the disk a model finds its flares: central vs near-limb recall, heatmaps, disk figure.

For every instance whose largest flare (in the 24 h window) is X- or M-class, the flare's
Stonyhurst longitude (central-meridian distance) splits it into *central* (``|lon| <=
limb_deg``) or *near-limb* (``|lon| > limb_deg``); a forecast ``P >= threshold`` is a true
positive (TP), otherwise a false negative (FN). Recall TP/(TP+FN) is reported per group and
class with a Wilson 95 % interval; instances with an unknown location are counted and left
out. As in the study, longitudes are rounded to 0.01 deg before they are compared.

Input is checked, never silently mis-counted: a class that is not a GOES class, a
location outside the sphere's range and a half-given location are errors naming the file,
line and field; instances whose largest flare is below M, or that hold no flare, are counted
and reported. Figures live in :mod:`fdflare.analysis.figures`.

Heatmaps bin recall in ``bin_deg`` boxes over longitude -90..90 and latitude -35..35, mark
bins with FN > 0 and TP = 0 with a red X, and draw lines at ``+-limb_deg``. A flare exactly
on an upper edge that is also a boundary (``+limb_deg``, ``+90``, ``+35``) goes into the bin
below, so the central region is ``[-70, 70]`` inclusive, as in the study.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.disk import NEAR_LIMB_DEG
from fdflare.core.errors import InputError
from fdflare.core.settings import setting, validate
from fdflare.core.table import fmt_number, render_table

CLASSES = ("X", "M", "X+M")
Z95 = 1.959963984540054
LON_RANGE = (-90.0, 90.0)
LAT_RANGE = (-35.0, 35.0)


@dataclass
class SpatialConfig:
    """Options of the spatial analysis (the study's defaults).

    Each field carries its help and range (:func:`fdflare.core.settings.setting`):
    ``fdflare spatial`` generates its options from them and :func:`check_config` checks a
    config.
    """

    limb_deg: float = setting(
        NEAR_LIMB_DEG,
        "near-limb if |lon| > this",
        low=0,
        high=90,
        low_open=True,
        high_open=True,
        metavar="DEG",
    )
    bin_deg: float = setting(
        5.0,
        "heatmap bin size in degrees; must divide --limb-deg, 180 and 70",
        low=0,
        low_open=True,
        metavar="DEG",
    )
    threshold: float = setting(0.5, "P(flare) >= threshold is a hit", low=0, high=1, metavar="P")

    def checked(self) -> SpatialConfig:
        """The config, checked (:func:`check_config`).

        Raises:
            InputError: a bad setting, naming the field.
        """
        check_config(self)
        return self


def _divides(step: float, span: float) -> bool:
    ratio = span / step
    return abs(ratio - round(ratio)) <= 1e-9 * max(1.0, ratio)


def check_config(config: SpatialConfig) -> None:
    """Check the options before any work.

    Each field by its range (``limb_deg`` in (0, 90), ``bin_deg`` above 0, ``threshold`` in
    [0, 1]); then ``bin_deg`` must divide ``limb_deg``, the 180 deg of longitude and the 70
    deg of latitude of the grid, so that the limb lines fall on bin edges and the grid has
    whole bins.

    Raises:
        InputError: naming the field.
    """
    validate(config)
    limb, step = config.limb_deg, config.bin_deg
    lon_span = LON_RANGE[1] - LON_RANGE[0]
    lat_span = LAT_RANGE[1] - LAT_RANGE[0]
    if not _divides(step, limb) and step == SpatialConfig.bin_deg:
        # the bins are the default: the limb longitude given is what falls between them
        near = [x for x in (limb - limb % step, limb - limb % step + step) if 0 < x < 90]
        example = f" (e.g. {' or '.join(f'{x:g}' for x in near)})" if near else ""
        raise InputError(
            f"{limb:g} is not a whole number of {step:g} deg bins: choose a limb longitude "
            f"that the bin size divides{example}, or a --bin-deg that divides it",
            field="limb_deg",
        )
    for span, what in ((limb, f"the limb longitude {limb:g}"), (lon_span, "180"), (lat_span, "70")):
        if not _divides(step, span):
            raise InputError(
                f"{step:g} does not divide {what}: the bins must divide the limb longitude, "
                "the 180 deg of longitude and the 70 deg of latitude (e.g. 5, 2.5, 10)",
                field="bin_deg",
            )


# --------------------------------------------------------------------------- input


def read_spatial_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read predictions joined with the largest flare's class and location.

    Accepts the study's ``*_{x,m,c}_class.csv`` (``timestamp, flare_prob, goes_class,
    fl_location = "(lon, lat)", flare_start``) or fdflare's joined table (``label,
    flare_prob, goes_class, fl_lon, fl_lat, ...``). An empty class means the window held
    no flare. A class that is not a GOES class (``Q1.0``, ``yes``), a longitude outside
    -180..180 or a latitude outside -90..90 (or infinite), and a location with one
    coordinate only are errors naming the file, line and field: the rules of the one reader
    of prediction files, :func:`fdflare.inference.predictions.read_prediction_file`.

    Returns:
        A frame with ``id, flare_prob, goes_class, lon, lat`` (NaN for unknown locations).
    """
    from fdflare.inference.predictions import read_prediction_file

    df = read_prediction_file(
        path,
        need=("goes_class", "location"),
        expected="predictions joined with the largest flare (flare_prob, goes_class and "
        "fl_location or fl_lon/fl_lat)",
    )
    id_col = df.attrs["id_column"]
    return pd.DataFrame(
        {
            "id": df[id_col].astype(str) if id_col else pd.Series(range(len(df))).astype(str),
            "flare_prob": df["flare_prob"].to_numpy(dtype=float),
            "goes_class": df["goes_class"].astype("string"),
            "lon": df["fl_lon"].to_numpy(dtype=float),
            "lat": df["fl_lat"].to_numpy(dtype=float),
        }
    )


def read_spatial_tables(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Read and concatenate several joined tables (e.g. the X- and M-class files of a model).

    The result's ``attrs["rows"]`` maps each path to its number of rows, so that a file
    with a header and no rows can be reported.
    """
    if not paths:
        raise InputError("no input files given")
    tables = [read_spatial_table(p) for p in paths]
    out = pd.concat(tables, ignore_index=True)
    out.attrs["rows"] = {str(p): len(t) for p, t in zip(paths, tables, strict=True)}
    return out


# --------------------------------------------------------------------------- statistics


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of a binomial proportion ``k/n`` (None when ``n == 0``)."""
    if n == 0:
        return None, None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _group(tp: int, fn: int) -> dict[str, Any]:
    n = tp + fn
    lo, hi = wilson_interval(tp, n)
    return {"tp": tp, "fn": fn, "n": n, "recall": (tp / n if n else None), "recall_ci95": [lo, hi]}


def class_masks(goes_class: pd.Series) -> dict[str, np.ndarray]:
    """Masks of X, M and X+M instances from the largest flare's class."""
    letter = (
        goes_class.astype("string").str.strip().str[:1].str.upper().fillna("").to_numpy(dtype=str)
    )
    x, m = letter == "X", letter == "M"
    return {"X": x, "M": m, "X+M": x | m}


def location_recall(df: pd.DataFrame, config: SpatialConfig | None = None) -> dict[str, Any]:
    """Central and near-limb TP, FN and recall per class (the ``--json`` ``classes`` object)."""
    cfg = config or SpatialConfig()
    lon = np.round(df["lon"].to_numpy(dtype=float), 2)
    hit = df["flare_prob"].to_numpy(dtype=float) >= cfg.threshold
    known = ~np.isnan(lon)
    central = known & (np.abs(lon) <= cfg.limb_deg)
    limb = known & (np.abs(lon) > cfg.limb_deg)
    out: dict[str, Any] = {}
    for name, mask in class_masks(df["goes_class"]).items():
        out[name] = {
            "central": _group(
                int((mask & central & hit).sum()), int((mask & central & ~hit).sum())
            ),
            "limb": _group(int((mask & limb & hit).sum()), int((mask & limb & ~hit).sum())),
            "unknown": int((mask & ~known).sum()),
            "n": int(mask.sum()),
        }
    return out


def bin_indices(
    lon: np.ndarray, lat: np.ndarray, config: SpatialConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap bin of each location: ``(ix, iy, inside)`` (see module docstring for edges)."""
    cfg = config or SpatialConfig()
    lon = np.round(np.asarray(lon, dtype=float), 2)
    lat = np.asarray(lat, dtype=float)
    nx = round((LON_RANGE[1] - LON_RANGE[0]) / cfg.bin_deg)
    ny = round((LAT_RANGE[1] - LAT_RANGE[0]) / cfg.bin_deg)
    with np.errstate(invalid="ignore"):
        ix = np.floor((lon - LON_RANGE[0]) / cfg.bin_deg)
        iy = np.floor((lat - LAT_RANGE[0]) / cfg.bin_deg)
        ix = np.where((lon == cfg.limb_deg) | (lon == LON_RANGE[1]), ix - 1, ix)
        iy = np.where(lat == LAT_RANGE[1], iy - 1, iy)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ix = np.where(inside, ix, 0).astype(np.int64)
    iy = np.where(inside, iy, 0).astype(np.int64)
    return ix, iy, inside


def recall_grid(
    df: pd.DataFrame, mask: np.ndarray, config: SpatialConfig | None = None
) -> dict[str, Any]:
    """TP and FN counts per (lat, lon) bin for the instances in ``mask``."""
    cfg = config or SpatialConfig()
    nx = round((LON_RANGE[1] - LON_RANGE[0]) / cfg.bin_deg)
    ny = round((LAT_RANGE[1] - LAT_RANGE[0]) / cfg.bin_deg)
    ix, iy, inside = bin_indices(df["lon"].to_numpy(), df["lat"].to_numpy(), cfg)
    hit = df["flare_prob"].to_numpy(dtype=float) >= cfg.threshold
    sel = mask & inside
    tp = np.zeros((ny, nx), dtype=np.int64)
    fn = np.zeros((ny, nx), dtype=np.int64)
    np.add.at(tp, (iy[sel & hit], ix[sel & hit]), 1)
    np.add.at(fn, (iy[sel & ~hit], ix[sel & ~hit]), 1)
    known = ~np.isnan(df["lon"].to_numpy(dtype=float)) & ~np.isnan(df["lat"].to_numpy(dtype=float))
    return {
        "tp": tp,
        "fn": fn,
        "lon_edges": LON_RANGE[0] + cfg.bin_deg * np.arange(nx + 1),
        "lat_edges": LAT_RANGE[0] + cfg.bin_deg * np.arange(ny + 1),
        "outside": int((mask & known & ~inside).sum()),
    }


def grid_table(grid: dict[str, Any]) -> pd.DataFrame:
    """Long table of non-empty bins: ``lat_min, lon_min, tp, fn, recall``."""
    iy, ix = np.nonzero(grid["tp"] + grid["fn"])
    tp, fn = grid["tp"][iy, ix], grid["fn"][iy, ix]
    return pd.DataFrame(
        {
            "lat_min": grid["lat_edges"][iy],
            "lon_min": grid["lon_edges"][ix],
            "tp": tp,
            "fn": fn,
            "recall": tp / (tp + fn),
        }
    )


# --------------------------------------------------------------------------- stage


def analyse(
    df: pd.DataFrame,
    config: SpatialConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    name: str = "",
) -> dict[str, Any]:
    """Location recall per class and, with ``out``, heatmaps (PNG + SVG) and bin tables.

    Every class entry has ``outside_grid``: instances with a known location outside the
    heatmap grid (|lat| > 35 or |lon| > 90), with or without ``out``.

    Returns:
        ``{"classes": {...}, "limb_deg", "bin_deg", "threshold", "n", "other_classes",
        "no_flare", "figures"}``: ``other_classes`` counts instances whose largest flare is
        below M (C, B, A), ``no_flare`` those with an empty class.
    """
    from fdflare.core.io import atomic_open

    cfg = config or SpatialConfig()
    check_config(cfg)
    result: dict[str, Any] = {
        "classes": location_recall(df, cfg),
        "limb_deg": cfg.limb_deg,
        "bin_deg": cfg.bin_deg,
        "threshold": cfg.threshold,
        "n": len(df),
    }
    masks = class_masks(df["goes_class"])
    no_flare = df["goes_class"].astype("string").fillna("").str.strip().eq("").to_numpy(bool)
    result["other_classes"] = int((~masks["X+M"] & ~no_flare).sum())
    result["no_flare"] = int(no_flare.sum())
    figures: list[str] = []
    grids = {cls: recall_grid(df, mask, cfg) for cls, mask in masks.items()}
    for cls, grid in grids.items():
        result["classes"][cls]["outside_grid"] = grid["outside"]
    if out is not None:
        from fdflare.analysis.figures import plot_heatmap

        out = Path(out)
        prefix = f"{name}_" if name else ""
        for cls, mask in masks.items():
            grid = grids[cls]
            tag = cls.replace("+", "")
            label = f"{name} " if name else ""
            paths = plot_heatmap(
                grid,
                out / f"{prefix}heatmap_{tag}",
                title=f"{label}{cls}-class flares: recall by location ({int(mask.sum())} instances)",
                limb_deg=cfg.limb_deg,
            )
            with atomic_open(out / f"{prefix}bins_{tag}.csv") as fh:
                grid_table(grid).to_csv(fh, index=False, lineterminator="\n")
            figures += [str(p) for p in paths]
    result["figures"] = figures
    return result


def _fmt(x: float | None) -> str:
    return fmt_number(x, 4)


def location_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """The location table as (head, rows, notes): class x (central, near-limb).

    Each row has TP, FN, recall and its Wilson 95 % CI; the last two columns count, per
    class, the instances with an unknown location and those outside the heatmap grid (the
    ``unknown`` and ``outside_grid`` of the JSON), on the class's central row. The notes
    say how many instances were neither X nor M. The CLI table and the HTML report are
    both made from this, so they show the same rows and columns.
    """
    head = ["class", "location", "TP", "FN", "recall", "95% CI", "unknown loc.", "outside grid"]
    rows = []
    for cls in CLASSES:
        c = result["classes"].get(cls)
        if c is None:
            continue
        for key, label in (
            ("central", f"central |lon| <= {result['limb_deg']:g}"),
            ("limb", f"near-limb |lon| > {result['limb_deg']:g}"),
        ):
            g = c[key]
            lo, hi = g["recall_ci95"]
            ci = "n/a" if lo is None else f"[{lo:.3f}, {hi:.3f}]"
            first = key == "central"
            rows.append(
                [
                    cls,
                    label,
                    str(g["tp"]),
                    str(g["fn"]),
                    _fmt(g["recall"]),
                    ci,
                    str(c["unknown"]) if first else "",
                    str(c.get("outside_grid", 0)) if first else "",
                ]
            )
    notes = []
    if result.get("other_classes"):
        notes.append(
            f"{result['other_classes']} instance(s) with a largest flare below M were left out"
        )
    if result.get("no_flare"):
        notes.append(f"{result['no_flare']} instance(s) without a flare were left out")
    return head, rows, notes


def format_table(result: dict[str, Any], markdown: bool = False) -> str:
    """Render :func:`location_table` as aligned text (or a markdown table) with its notes."""
    head, rows, notes = location_table(result)
    return render_table(head, rows, markdown=markdown, left=2, notes=notes)
