"""Where on the disk a model finds its flares: central vs near-limb recall, heatmaps, disk figure.

For every instance whose largest flare (in the 24 h window) is X- or M-class, the flare's
Stonyhurst longitude (central-meridian distance) splits it into *central* (``|lon| <=
limb_deg``) or *near-limb* (``|lon| > limb_deg``); a forecast ``P >= threshold`` is a true
positive (TP), otherwise a false negative (FN). Recall TP/(TP+FN) is reported per group and
class with a Wilson 95 % interval; instances with an unknown location are counted and left
out. As in the study, longitudes are rounded to 0.01 deg before they are compared.

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

from fdflare.core.errors import InputError

CLASSES = ("X", "M", "X+M")
Z95 = 1.959963984540054
LON_RANGE = (-90.0, 90.0)
LAT_RANGE = (-35.0, 35.0)


@dataclass
class SpatialConfig:
    """Options of the spatial analysis (the study's defaults)."""

    limb_deg: float = 70.0
    bin_deg: float = 5.0
    threshold: float = 0.5


# --------------------------------------------------------------------------- input


def read_spatial_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read predictions joined with the largest flare's class and location.

    Accepts the study's ``*_{x,m,c}_class.csv`` (``timestamp, flare_prob, goes_class,
    fl_location = "(lon, lat)", flare_start``) or fdflare's joined table (``label,
    flare_prob, goes_class, fl_lon, fl_lat, ...``).

    Returns:
        A frame with ``id, flare_prob, goes_class, lon, lat`` (NaN for unknown locations).
    """
    from fdflare.core.io import read_csv_table

    path = Path(path)
    df = read_csv_table(path, dtype={"goes_class": "string", "fl_location": "string"})
    for col in ("flare_prob", "goes_class"):
        if col not in df.columns:
            raise InputError(
                f"missing column {col!r}: spatial analysis needs predictions joined with the "
                "largest flare (flare_prob, goes_class and fl_location or fl_lon/fl_lat); "
                f"found {', '.join(map(str, df.columns))}",
                path=path,
                field=col,
            )
    if "fl_location" in df.columns:
        loc = df["fl_location"].astype("string").str.strip().str.strip("()[]")
        parts = loc.str.split(",", n=1, expand=True).reindex(columns=[0, 1])
        lon_raw, lat_raw, lon_field, lat_field = parts[0], parts[1], "fl_location", "fl_location"
    elif {"fl_lon", "fl_lat"} <= set(df.columns):
        lon_raw, lat_raw, lon_field, lat_field = df["fl_lon"], df["fl_lat"], "fl_lon", "fl_lat"
    else:
        raise InputError(
            'missing location columns: need fl_location "(lon, lat)" or fl_lon and fl_lat',
            path=path,
            field="fl_location",
        )
    coords = []
    for raw, fld in ((lon_raw, lon_field), (lat_raw, lat_field)):
        s = raw.astype("string").str.strip()
        unknown = s.isna() | s.str.lower().isin(["", "nan", "unk", "none"])
        num = pd.to_numeric(s.where(~unknown), errors="coerce")
        bad = (num.isna() & ~unknown).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"not a location: {str(s.iloc[i])!r}", path=path, line=i + 2, field=fld
            )
        coords.append(num.to_numpy(dtype=float))
    prob = pd.to_numeric(df["flare_prob"], errors="coerce")
    bad = (prob.isna() | (prob < 0) | (prob > 1)).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            "probability is not a number in [0, 1]", path=path, line=i + 2, field="flare_prob"
        )
    id_col = next((c for c in ("timestamp", "label") if c in df.columns), None)
    return pd.DataFrame(
        {
            "id": df[id_col].astype(str) if id_col else pd.Series(range(len(df))).astype(str),
            "flare_prob": prob.to_numpy(dtype=float),
            "goes_class": df["goes_class"].astype("string").str.strip(),
            "lon": coords[0],
            "lat": coords[1],
        }
    )


def read_spatial_tables(paths: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """Read and concatenate several joined tables (e.g. the X- and M-class files of a model)."""
    if not paths:
        raise InputError("no input files given")
    return pd.concat([read_spatial_table(p) for p in paths], ignore_index=True)


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


# --------------------------------------------------------------------------- figures


def save_figure(fig: Any, out_base: str | os.PathLike[str], *, dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<out_base>.png`` and ``<out_base>.svg`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    from fdflare.core.io import atomic_path

    out_base = Path(out_base)
    paths = []
    for ext in ("png", "svg"):
        target = out_base.with_name(out_base.name + f".{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi)
        paths.append(target)
    plt.close(fig)
    return paths


def plot_heatmap(
    grid: dict[str, Any],
    out_base: str | os.PathLike[str],
    *,
    title: str = "",
    limb_deg: float = 70.0,
) -> list[Path]:
    """Draw the recall heatmap and save it as ``<out_base>.png`` and ``<out_base>.svg``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tp, fn = grid["tp"], grid["fn"]
    n = tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n > 0, tp / np.maximum(n, 1), np.nan)
    xe, ye = grid["lon_edges"], grid["lat_edges"]
    fig, ax = plt.subplots(figsize=(10, 5.2))
    finite = recall[np.isfinite(recall)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = min(vmin, 0.0), max(vmax, 1.0)
    im = ax.imshow(
        np.ma.masked_invalid(recall),
        extent=(xe[0], xe[-1], ye[0], ye[-1]),
        origin="lower",
        cmap="Blues",
        vmin=vmin,
        vmax=vmax,
        aspect="equal",
    )
    iy, ix = np.nonzero((tp == 0) & (fn > 0))
    step = xe[1] - xe[0]
    ax.scatter(xe[ix] + step / 2, ye[iy] + step / 2, marker="X", s=60, color="red", zorder=3)
    for x in (-limb_deg, limb_deg):
        ax.axvline(x, color="red", linewidth=1.5)
    ax.set_xticks(np.arange(xe[0], xe[-1] + 1, 10))
    ax.set_xticks(xe, minor=True)
    ax.set_yticks(np.arange(ye[0], ye[-1] + 1, 10))
    ax.set_yticks(ye, minor=True)
    ax.grid(which="minor", alpha=0.2)
    ax.grid(which="major", alpha=0.5)
    ax.set_xlabel("Heliographic longitude (central-meridian distance), deg")
    ax.set_ylabel("Latitude, deg")
    if title:
        ax.set_title(title)
    ax.legend(
        handles=[
            Line2D(
                [], [], marker="X", color="red", linestyle="None", label="no correct predictions"
            )
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        frameon=False,
    )
    fig.colorbar(im, ax=ax, orientation="vertical", label="Recall", fraction=0.025, pad=0.02)
    fig.tight_layout()
    paths = save_figure(fig, out_base, dpi=150)
    return paths


def disk_geometry_from_map(smap: Any) -> dict[str, float]:
    """Disk centre and radius in pixels (0-based, FITS orientation) of a sunpy map."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    centre = SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=smap.coordinate_frame)
    cx, cy = smap.wcs.world_to_pixel(centre)
    radius = (smap.rsun_obs / smap.scale.axis1).to_value(u.pix)
    return {"center_x": float(cx), "center_y": float(cy), "radius_px": float(radius)}


def disk_figure(
    image: str | os.PathLike[str],
    out_base: str | os.PathLike[str],
    *,
    limb_deg: float = 70.0,
    geometry: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Draw a magnetogram with the ``limb_deg`` circle computed from its disk geometry.

    A FITS or JP2 file with a solar header is read with sunpy: the disk centre and radius
    come from its WCS, and the two ``+-limb_deg`` Stonyhurst meridians are drawn with
    ``sunpy.coordinates``. A plain image (PNG/JPG from ``fdflare prepare``) needs
    ``geometry`` (``center_x, center_y, radius_px`` in pixels, row 0 at the top).
    The circle has radius ``R sin(limb_deg)``: the projected distance from disk centre at
    which central-meridian distance ``limb_deg`` lies on the equator.

    Returns:
        The geometry used, the circle radius in pixels and the paths written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    image = Path(image)
    if not image.is_file():
        raise InputError("no such image", path=image)
    meridians: list[tuple[np.ndarray, np.ndarray]] = []
    if image.suffix.lower() in {".png", ".jpg", ".jpeg"}:
        if geometry is None:
            raise InputError(
                "a plain image needs its disk geometry (center_x, center_y, radius_px): "
                "pass --geometry geometry.csv from `fdflare prepare`",
                path=image,
            )
        from PIL import Image

        with Image.open(image) as im:
            data = np.asarray(im.convert("L"), dtype=float)
        origin = "upper"
        geo = dict(geometry)
        title = image.name
    else:
        import astropy.units as u
        import sunpy.map
        from astropy.coordinates import SkyCoord
        from sunpy.coordinates import HeliographicStonyhurst

        try:
            smap = sunpy.map.Map(str(image))
        except Exception as exc:  # sunpy raises many types for unreadable files
            raise InputError(f"not a solar image sunpy can read ({exc})", path=image) from exc
        data = np.asarray(smap.data, dtype=float)
        origin = "lower"
        geo = disk_geometry_from_map(smap)
        title = f"{smap.name}"
        lat = np.linspace(-89.5, 89.5, 181) * u.deg
        for sign in (-1, 1):
            mer = SkyCoord(
                np.full(lat.shape, sign * limb_deg) * u.deg,
                lat,
                frame=HeliographicStonyhurst(obstime=smap.date, rsun=smap.rsun_meters),
            )
            hpc = mer.transform_to(smap.coordinate_frame)
            # on the near side of the sphere as seen by the observer (mu > 0)
            obs = smap.observer_coordinate.transform_to(HeliographicStonyhurst(obstime=smap.date))
            b0, l0 = obs.lat.to_value(u.rad), obs.lon.to_value(u.rad)
            la, lo = lat.to_value(u.rad), math.radians(sign * limb_deg)
            mu = np.cos(la) * np.cos(b0) * np.cos(lo - l0) + np.sin(la) * np.sin(b0)
            visible = mu > 0
            px, py = smap.wcs.world_to_pixel(hpc)
            meridians.append((np.where(visible, px, np.nan), np.where(visible, py, np.nan)))
    circle_r = geo["radius_px"] * math.sin(math.radians(limb_deg))
    fig, ax = plt.subplots(figsize=(7, 7))
    finite = data[np.isfinite(data)]
    lim = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
    if origin == "upper":
        ax.imshow(data, cmap="gray", origin="upper")
    else:
        ax.imshow(data, cmap="gray", origin="lower", vmin=-lim, vmax=lim)
    ax.add_patch(
        Circle((geo["center_x"], geo["center_y"]), circle_r, fill=False, color="red", linewidth=1.5)
    )
    ax.add_patch(
        Circle(
            (geo["center_x"], geo["center_y"]),
            geo["radius_px"],
            fill=False,
            color="yellow",
            linewidth=0.8,
            linestyle=":",
        )
    )
    for px, py in meridians:
        ax.plot(px, py, color="red", linestyle="--", linewidth=1.0)
    ax.set_title(f"{title}: |lon| = {limb_deg:g} deg")
    ax.set_axis_off()
    fig.tight_layout()
    paths = save_figure(fig, out_base, dpi=120)
    return {
        **geo,
        "circle_radius_px": circle_r,
        "limb_deg": limb_deg,
        "paths": [str(p) for p in paths],
    }


# --------------------------------------------------------------------------- stage


def analyse(
    df: pd.DataFrame,
    config: SpatialConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    name: str = "",
) -> dict[str, Any]:
    """Location recall per class and, with ``out``, heatmaps (PNG + SVG) and bin tables.

    Returns:
        ``{"classes": {...}, "limb_deg", "bin_deg", "threshold", "n", "other_classes",
        "figures"}``.
    """
    from fdflare.core.io import atomic_open

    cfg = config or SpatialConfig()
    result: dict[str, Any] = {
        "classes": location_recall(df, cfg),
        "limb_deg": cfg.limb_deg,
        "bin_deg": cfg.bin_deg,
        "threshold": cfg.threshold,
        "n": len(df),
    }
    masks = class_masks(df["goes_class"])
    result["other_classes"] = int((~masks["X+M"]).sum())
    figures: list[str] = []
    if out is not None:
        out = Path(out)
        prefix = f"{name}_" if name else ""
        for cls, mask in masks.items():
            grid = recall_grid(df, mask, cfg)
            result["classes"][cls]["outside_grid"] = grid["outside"]
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
    return "n/a" if x is None else f"{x:.4f}"


def format_table(result: dict[str, Any], markdown: bool = False) -> str:
    """Render the location table: class x (central, near-limb) with TP, FN, recall, 95 % CI."""
    head = ["class", "location", "TP", "FN", "recall", "95% CI", "unknown loc."]
    rows = []
    for cls in CLASSES:
        c = result["classes"][cls]
        for key, label in (
            ("central", f"central |lon| <= {result['limb_deg']:g}"),
            ("limb", f"near-limb |lon| > {result['limb_deg']:g}"),
        ):
            g = c[key]
            lo, hi = g["recall_ci95"]
            ci = "n/a" if lo is None else f"[{lo:.3f}, {hi:.3f}]"
            rows.append(
                [
                    cls,
                    label,
                    str(g["tp"]),
                    str(g["fn"]),
                    _fmt(g["recall"]),
                    ci,
                    str(c["unknown"]) if key == "central" else "",
                ]
            )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(
        [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows]
    )
