"""Explanations of single forecasts: where on the disk the model looked, in a figure and in numbers.

:func:`explain_image` takes a loaded model, one magnetogram and its disk geometry, draws
the attribution map (:mod:`fdflare.analysis.attribution`) over the magnetogram with the
solar limb and the 70 deg circle, saves it as a PNG and returns the numbers:

* ``share_off_disk``, ``share_central``, ``share_beyond_70``: how the positive attribution
  divides between the sky (``r > R``), the central disk (``r <= R sin 70 deg``, inside the
  circle of heliocentric angle 70 deg) and the ring between that circle and the limb. They
  sum to 1.
* ``share_near_flare``: with a flare location (Stonyhurst ``lon, lat``), the share of
  positive attribution on disk pixels within 10 deg of great-circle angle of the flare,
  each pixel projected to heliographic coordinates through the geometry
  (:func:`heliographic`).

Pixel coordinates are those of ``geometry.csv`` (:func:`fdflare.prepare.geometry.disk_geometry`):
0-based, pixel ``(i, j)`` centred on ``(y=i, x=j)``, row 0 at the top as stored.
:func:`fdflare.analysis.explain_run.explain` runs it over many images (``fdflare
explain``) and writes ``explanations.csv``. matplotlib and captum are imported inside the
functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fdflare.core.disk import NEAR_LIMB_DEG as LIMB_DEG
from fdflare.core.errors import InputError

__all__ = [
    "CSV_COLUMNS",
    "FIGURE_DPI",
    "FIGURE_INCHES",
    "LIMB_DEG",
    "NEAR_FLARE_DEG",
    "attribution_shares",
    "check_explain_available",
    "check_geometry",
    "explain_image",
    "explanation_figure",
    "great_circle_deg",
    "heliographic",
    "pixel_heliographic",
]

#: Radius of the collocation region about a flare, degrees of great-circle angle.
NEAR_FLARE_DEG = 10.0
#: Figure size (inches) and resolution: every PNG is 700 x 700 pixels.
FIGURE_INCHES = 7.0
FIGURE_DPI = 100
#: Columns of ``explanations.csv``, in order.
CSV_COLUMNS = (
    "path",
    "probability",
    "method",
    "share_off_disk",
    "share_central",
    "share_beyond_70",
    "share_near_flare",
    "fl_lon",
    "fl_lat",
    "png",
    "warning",
)
SHARE_KEYS = ("share_off_disk", "share_central", "share_beyond_70", "share_near_flare")


# --------------------------------------------------------------------------- geometry


def check_explain_available() -> None:
    """Fail early, with the extra to install, when captum is missing.

    Raises:
        InputError: captum is not installed (``pip install "fdflare[explain]"``).
    """
    from fdflare.analysis.attribution import require_captum

    require_captum()


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_geometry(
    geometry: Mapping[str, Any] | None, shape: tuple[int, int]
) -> tuple[dict[str, float] | None, str | None]:
    """The usable geometry of an image of ``shape``, or ``(None, why not)``.

    Needs finite ``center_x``, ``center_y`` and a positive ``radius_px``; ``width`` and
    ``height``, where given, must be the image's. ``b0_deg`` (observer latitude) and
    ``crota2`` (image rotation) default to 0.
    """
    if geometry is None:
        return None, "no disk geometry"
    values = {k: _finite(geometry.get(k)) for k in ("center_x", "center_y", "radius_px")}
    if any(v is None for v in values.values()) or (values["radius_px"] or 0) <= 0:
        return None, "the disk geometry has no usable center_x, center_y, radius_px"
    height, width = shape
    gw, gh = _finite(geometry.get("width")), _finite(geometry.get("height"))
    if (gw is not None and gw != width) or (gh is not None and gh != height):
        return None, (
            f"the disk geometry is for a {gw:g}x{gh:g} image, this one is {width}x{height}"
            if gw is not None and gh is not None
            else f"the disk geometry is for another image size than {width}x{height}"
        )
    geo: dict[str, float] = {k: float(v) for k, v in values.items() if v is not None}
    geo["b0_deg"] = _finite(geometry.get("b0_deg")) or 0.0
    geo["crota2"] = _finite(geometry.get("crota2")) or 0.0
    return geo, None


def _radius_map(shape: tuple[int, int], geo: Mapping[str, float]) -> np.ndarray:
    rows, cols = np.indices(shape, dtype=np.float64)
    return np.hypot(cols - geo["center_x"], rows - geo["center_y"])


def pixel_heliographic(
    cols: Any, rows: Any, geo: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Stonyhurst longitude and latitude (degrees) of stored pixel positions; NaN off the disk.

    An orthographic view from an observer at latitude ``b0_deg`` and Stonyhurst longitude
    0 (at 1 AU the perspective correction is below 0.5 % of the radius), the image turned
    by ``crota2``: the inverse of :func:`fdflare.analysis.figures.limb_meridians`. Image
    ``x`` points west (right), ``y`` north (up, towards row 0).
    """
    r = geo["radius_px"]
    dx = (np.asarray(cols, dtype=np.float64) - geo["center_x"]) / r
    dy = (geo["center_y"] - np.asarray(rows, dtype=np.float64)) / r
    rho = math.radians(geo.get("crota2", 0.0))
    x = math.cos(rho) * dx - math.sin(rho) * dy
    y = math.sin(rho) * dx + math.cos(rho) * dy
    r2 = x * x + y * y
    on = r2 <= 1.0
    z = np.sqrt(np.where(on, 1.0 - r2, np.nan))
    b0 = math.radians(geo.get("b0_deg", 0.0))
    ys = y * math.cos(b0) + z * math.sin(b0)
    zs = -y * math.sin(b0) + z * math.cos(b0)
    lat = np.degrees(np.arcsin(np.clip(ys, -1.0, 1.0)))
    lon = np.degrees(np.arctan2(x, zs))
    return np.where(on, lon, np.nan), np.where(on, lat, np.nan)


def heliographic(shape: tuple[int, int], geo: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Stonyhurst longitude and latitude of every pixel centre (:func:`pixel_heliographic`)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    return pixel_heliographic(cols, rows, geo)


def great_circle_deg(lon1: Any, lat1: Any, lon2: float, lat2: float) -> np.ndarray:
    """Angle on the sphere between points, degrees (haversine: exact for small angles)."""
    p1, p2 = np.radians(lat1), math.radians(lat2)
    dl = np.radians(np.asarray(lon1, dtype=float) - lon2)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(dl / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def attribution_shares(
    attr: np.ndarray,
    geo: Mapping[str, float] | None,
    flare: tuple[float, float] | None = None,
    *,
    limb_deg: float = LIMB_DEG,
    near_deg: float = NEAR_FLARE_DEG,
) -> tuple[dict[str, float | None], list[str]]:
    """Shares of the positive attribution off the disk, on the central disk, beyond 70 deg, near the flare.

    Args:
        attr: the attribution map ``[H, W]``.
        geo: geometry from :func:`check_geometry` (``None``: every share is ``None``).
        flare: Stonyhurst ``(lon, lat)`` of the flare, degrees, or ``None``.
        limb_deg: heliocentric angle of the circle between central disk and ring.
        near_deg: radius of the region about the flare, degrees on the sphere.

    Returns:
        ``(shares, warnings)``: the four shares of :data:`SHARE_KEYS` (``None`` where they
        cannot be computed) and why not.
    """
    shares: dict[str, float | None] = dict.fromkeys(SHARE_KEYS)
    if geo is None:
        return shares, []
    pos = np.clip(np.nan_to_num(np.asarray(attr, dtype=np.float64)), 0.0, None)
    total = float(pos.sum())
    if total <= 0:
        return shares, ["the map has no positive attribution: shares left empty"]
    r = _radius_map(pos.shape, geo)
    radius = geo["radius_px"]
    off = r > radius
    central = r <= radius * math.sin(math.radians(limb_deg))
    shares["share_off_disk"] = float(pos[off].sum() / total)
    shares["share_central"] = float(pos[central].sum() / total)
    shares["share_beyond_70"] = float(pos[~off & ~central].sum() / total)
    if flare is not None:
        lon, lat = heliographic(pos.shape, geo)
        near = np.isfinite(lon) & (great_circle_deg(lon, lat, flare[0], flare[1]) <= near_deg)
        shares["share_near_flare"] = float(pos[near].sum() / total)
    return shares, []


# --------------------------------------------------------------------------- figure


def explanation_figure(
    image: np.ndarray,
    attr: np.ndarray,
    geo: Mapping[str, float] | None,
    *,
    method: str,
    title: str,
    flare: tuple[float, float] | None = None,
    limb_deg: float = LIMB_DEG,
) -> Any:
    """The magnetogram in grey with the attribution over it, the limb and the 70 deg circle.

    Grad-CAM (never negative) is drawn in ``inferno`` from 0 to its maximum; the signed
    maps in red (for a flare) and blue (against), symmetric about 0 at the 99.5th
    percentile of ``|attribution|``. Each colour is opaque in proportion to its strength,
    so the magnetogram shows through where the model did not look.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    a = np.nan_to_num(np.asarray(attr, dtype=np.float64))
    fig = Figure(figsize=(FIGURE_INCHES, FIGURE_INCHES), dpi=FIGURE_DPI)
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, origin="upper", interpolation="nearest")
    signed = method != "gradcam"
    lim = float(np.percentile(np.abs(a), 99.5)) if a.size else 0.0
    lim = lim if lim > 0 else float(np.abs(a).max()) or 1.0
    if signed:
        norm, cmap = Normalize(-lim, lim), colormaps["bwr"]
        alpha = np.clip(np.abs(a) / lim, 0.0, 1.0)
    else:
        norm, cmap = Normalize(0.0, lim), colormaps["inferno"]
        alpha = np.clip(a / lim, 0.0, 1.0)
    rgba = cmap(norm(a))
    rgba[..., 3] = 0.85 * alpha
    ax.imshow(rgba, origin="upper", interpolation="bilinear")
    label = {"gradcam": "Grad-CAM", "guided-gradcam": "Guided Grad-CAM"}.get(method, method)
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=ax,
        fraction=0.046,
        pad=0.02,
        label=f"{label} attribution to the flare logit",
    )
    if geo is not None:
        cx, cy, radius = geo["center_x"], geo["center_y"], geo["radius_px"]
        ax.add_patch(
            Circle((cx, cy), radius, fill=False, color="yellow", linewidth=0.9, linestyle=":")
        )
        ax.add_patch(
            Circle(
                (cx, cy),
                radius * math.sin(math.radians(limb_deg)),
                fill=False,
                color="lime",
                linewidth=1.2,
                linestyle="--",
            )
        )
        if flare is not None:
            lon, lat = heliographic(a.shape, geo)
            dist = great_circle_deg(lon, lat, flare[0], flare[1])
            near = np.isfinite(lon) & (dist <= NEAR_FLARE_DEG)
            if near.any():
                ax.contour(near.astype(float), levels=[0.5], colors="cyan", linewidths=1.0)
    if geo is not None:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color="yellow", linestyle=":", label="limb"),
            Line2D(
                [], [], color="lime", linestyle="--", label=f"heliocentric angle {limb_deg:g} deg"
            ),
        ]
        if flare is not None:
            handles.append(
                Line2D([], [], color="cyan", label=f"{NEAR_FLARE_DEG:g} deg about the flare")
            )
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=len(handles),
            frameon=False,
            fontsize=8,
        )
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _save_png(fig: Any, path: Path) -> None:
    from fdflare.core.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=FIGURE_DPI)


# --------------------------------------------------------------------------- one image


class _OneImage:
    """An image source holding one in-memory image (for :class:`FlareDataset`)."""

    def __init__(self, image: np.ndarray, name: str = "image") -> None:
        self.image, self.name = image, name

    def read(self, label: str) -> np.ndarray:
        return self.image

    def exists(self, labels: Any) -> np.ndarray:
        return np.ones(len(labels), dtype=bool)

    def describe(self, label: str) -> str:
        return self.name


def _model_input(loaded: Any, image: np.ndarray, name: str) -> Any:
    """The image as the network sees it: :class:`FlareDataset`'s scaling to [0, 1]."""
    import pandas as pd

    from fdflare.data.dataset import FlareDataset

    table = pd.DataFrame({"label": [name], "target": [0]})
    source: Any = _OneImage(image, name)
    ds = FlareDataset(table, source, image_size=loaded.image_size)
    return ds[0][0].unsqueeze(0), ds


def explain_image(
    loaded: Any,
    image: np.ndarray,
    geometry: Mapping[str, Any] | None,
    *,
    method: str = "guided-gradcam",
    out_png: str | os.PathLike[str],
    title: str = "",
    flare: tuple[float, float] | None = None,
    name: str = "image",
) -> dict[str, Any]:
    """Explain one forecast: write the overlay PNG (atomically) and return its numbers.

    Args:
        loaded: a :class:`fdflare.inference.predict.LoadedModel` (``load_model``).
        image: the magnetogram, 2-D ``uint8`` of the model's image size.
        geometry: ``center_x``, ``center_y``, ``radius_px`` (0-based pixels, row 0 at the
            top), optionally ``width``, ``height``, ``b0_deg``, ``crota2``; or ``None``.
        method: one of :data:`fdflare.analysis.attribution.METHODS`.
        out_png: the figure to write.
        title: first title line (e.g. the observation time).
        flare: Stonyhurst ``(lon, lat)`` of the flare, degrees, or ``None``.
        name: the image's name in messages.

    Returns:
        ``probability``, ``method``, the shares (``None`` where unknown), ``png`` and
        ``warnings`` (a list of one-line texts: no geometry, no positive attribution).

    Raises:
        InputError: an image that is not 2-D uint8 of the model's size, an unknown method,
            or captum missing.
    """
    from fdflare.analysis.attribution import METHODS, attribute, require_captum
    from fdflare.inference.predict import predict_probabilities

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    require_captum()
    image = np.asarray(image)
    size = loaded.image_size
    if image.ndim != 2 or image.dtype != np.uint8 or image.shape != (size, size):
        raise InputError(
            f"image is {'x'.join(map(str, image.shape))} {image.dtype}, expected "
            f"{size}x{size} uint8 (the model's image size)",
            path=name,
        )
    geo, why = check_geometry(geometry, image.shape)
    warnings = [] if why is None else [f"{why}: drawn without the circle, shares left empty"]
    x, dataset = _model_input(loaded, image, name)
    dev = next(loaded.net.parameters()).device
    prob = float(predict_probabilities(loaded.net, dataset, batch_size=1, device=dev)[0])
    attr = attribute(loaded.net, loaded.model, x.to(dev), method)
    if flare is not None and not all(math.isfinite(v) for v in flare):
        flare = None
    shares, more = attribution_shares(attr, geo, flare)
    warnings += more
    label = {"gradcam": "Grad-CAM", "guided-gradcam": "Guided Grad-CAM", "ig": "IG"}
    heading = f"P(flare >= M1.0 in 24 h) = {prob:.3f}   {label.get(method, method)}"
    fig = explanation_figure(
        image,
        attr,
        geo,
        method=method,
        title=f"{title}\n{heading}" if title else heading,
        flare=flare,
    )
    out = Path(out_png)
    _save_png(fig, out)
    return {
        "probability": prob,
        "method": method,
        **shares,
        "png": str(out),
        "warnings": warnings,
    }
