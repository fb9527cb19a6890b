"""Figures of the spatial analysis: recall heatmaps and a magnetogram with the limb circle.

Figures are drawn with matplotlib's object API (:class:`matplotlib.figure.Figure`), never
through ``pyplot``: nothing here selects a backend or touches pyplot's global state, so a
notebook that imports fdflare keeps its own backend and figure list.

Heatmaps use one fixed colour scale, recall 0 .. 1, so figures compare across classes and
models.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fdflare.core.disk import NEAR_LIMB_DEG
from fdflare.core.errors import InputError

#: Longest side of a JPEG 2000 magnetogram as decoded for the disk figure.
DISK_FIGURE_SIZE = 1024


def save_figure(fig: Any, out_base: str | os.PathLike[str], *, dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<out_base>.png`` and ``<out_base>.svg``, each atomically."""
    from fdflare.core.io import atomic_path

    out_base = Path(out_base)
    paths = []
    for ext in ("png", "svg"):
        target = out_base.with_name(out_base.name + f".{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi)
        paths.append(target)
    return paths


def heatmap_figure(
    grid: dict[str, Any], *, title: str = "", limb_deg: float = NEAR_LIMB_DEG
) -> Any:
    """Return the recall heatmap of ``grid`` (from ``recall_grid``) as a matplotlib Figure.

    Colours span recall 0 .. 1 whatever the data; bins without instances are blank; a red
    X marks bins with FN > 0 and TP = 0; red lines mark ``+-limb_deg``.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    tp, fn = grid["tp"], grid["fn"]
    n = tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n > 0, tp / np.maximum(n, 1), np.nan)
    xe, ye = grid["lon_edges"], grid["lat_edges"]
    # drawn for a page's full text width (about 1000 px): 10 pt text at 150 dpi stays
    # about 14 px high there; the colour bar matches the map's height
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(
        np.ma.masked_invalid(recall),
        extent=(xe[0], xe[-1], ye[0], ye[-1]),
        origin="lower",
        cmap="Blues",
        vmin=0.0,
        vmax=1.0,
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
    fig.legend(
        handles=[
            Line2D(
                [], [], marker="X", color="red", linestyle="None", label="no correct predictions"
            ),
            Line2D([], [], color="red", linewidth=1.5, label=f"|lon| = {limb_deg:g} deg"),
        ],
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    # the colour bar as tall as the map: an inset beside it, in the axes' own coordinates
    cax = ax.inset_axes((1.015, 0.0, 0.018, 1.0))
    fig.colorbar(im, cax=cax, orientation="vertical", label="Recall")
    return fig


def plot_heatmap(
    grid: dict[str, Any],
    out_base: str | os.PathLike[str],
    *,
    title: str = "",
    limb_deg: float = NEAR_LIMB_DEG,
) -> list[Path]:
    """Draw the recall heatmap and save it as ``<out_base>.png`` and ``<out_base>.svg``."""
    return save_figure(heatmap_figure(grid, title=title, limb_deg=limb_deg), out_base, dpi=150)


def disk_geometry_from_map(smap: Any) -> dict[str, float]:
    """Disk centre and radius in pixels (0-based, FITS orientation) of a sunpy map."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    centre = SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=smap.coordinate_frame)
    cx, cy = smap.wcs.world_to_pixel(centre)
    radius = (smap.rsun_obs / smap.scale.axis1).to_value(u.pix)
    return {"center_x": float(cx), "center_y": float(cy), "radius_px": float(radius)}


def limb_meridians(
    geometry: dict[str, float],
    limb_deg: float,
    *,
    b0_deg: float = 0.0,
    l0_deg: float = 0.0,
    crota2_deg: float = 0.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``+-limb_deg`` Stonyhurst meridians in stored pixels (row 0 at the top).

    An orthographic view of the sphere from an observer at Stonyhurst latitude ``b0_deg``
    and longitude ``l0_deg`` (at 1 AU the perspective correction is below 0.5 % of the
    radius), turned by the header's ``CROTA2`` into the image axes; points on the far side
    are NaN.

    Args:
        geometry: ``center_x``, ``center_y`` (stored pixels) and ``radius_px``.
        limb_deg: the meridians' central-meridian distance.
        b0_deg: observer latitude (``HGLT_OBS`` or ``CRLT_OBS``).
        l0_deg: observer Stonyhurst longitude (``HGLN_OBS``).
        crota2_deg: rotation of the image (``CROTA2``).
    """
    lat = np.radians(np.linspace(-89.5, 89.5, 181))
    b0, rho = math.radians(b0_deg), math.radians(crota2_deg)
    out = []
    for sign in (-1, 1):
        dl = math.radians(sign * limb_deg - l0_deg)
        x = np.cos(lat) * math.sin(dl)
        y = np.sin(lat) * math.cos(b0) - np.cos(lat) * math.cos(dl) * math.sin(b0)
        z = np.sin(lat) * math.sin(b0) + np.cos(lat) * math.cos(dl) * math.cos(b0)
        dx = math.cos(rho) * x + math.sin(rho) * y
        dy = -math.sin(rho) * x + math.cos(rho) * y
        col = geometry["center_x"] + geometry["radius_px"] * dx
        row = geometry["center_y"] - geometry["radius_px"] * dy
        visible = z > 0
        out.append((np.where(visible, col, np.nan), np.where(visible, row, np.nan)))
    return out


def _header_number(header: dict[str, str], *keys: str) -> float:
    for key in keys:
        value = header.get(key)
        if value is None or str(value).strip() == "":
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            return number
    return 0.0


def _read_jp2(image: Path, limb_deg: float) -> tuple[np.ndarray, dict[str, float], str, list]:
    """Decode a Helioviewer JP2 with fdflare's own reader; geometry from its header."""
    from fdflare.prepare.decode import decode_jp2
    from fdflare.prepare.geometry import disk_geometry
    from fdflare.prepare.jp2 import read_jp2_header, read_jp2_info

    info = read_jp2_info(image)
    header = read_jp2_header(image)
    size = min(info.width, info.height, DISK_FIGURE_SIZE)
    try:
        data, k = decode_jp2(image, size, info=info)
    except OSError as exc:
        raise InputError(f"the JPEG 2000 decoder failed ({exc})", path=image) from exc
    geo = disk_geometry(header, (info.height, info.width), data.shape, reduce=k, path=image)
    meridians = limb_meridians(
        geo,
        limb_deg,
        b0_deg=_header_number(header, "HGLT_OBS", "CRLT_OBS", "SOLAR_B0"),
        l0_deg=_header_number(header, "HGLN_OBS"),
        crota2_deg=float(geo["crota2"]),
    )
    shown = {k: float(geo[k]) for k in ("center_x", "center_y", "radius_px")}
    title = " ".join(
        str(header.get(k, "")).strip() for k in ("TELESCOP", "INSTRUME", "DATE-OBS")
    ).strip()
    return np.asarray(data, dtype=float), shown, title or image.name, meridians


def _read_fits(image: Path, limb_deg: float) -> tuple[np.ndarray, dict[str, float], str, list]:
    """Read a FITS magnetogram with sunpy; meridians through its WCS."""
    try:
        import astropy.units as u
        import sunpy.map
        from astropy.coordinates import SkyCoord
        from sunpy.coordinates import HeliographicStonyhurst
    except ImportError as exc:
        raise InputError(
            f"reading a FITS file needs sunpy ({exc}); install it with pip install "
            "'fdflare[solar]', or give a JPEG 2000 file or a prepared PNG with --geometry",
            path=image,
        ) from exc
    try:
        smap = sunpy.map.Map(str(image))
    except Exception as exc:  # sunpy raises many types for unreadable files
        raise InputError(f"not a solar image sunpy can read ({exc})", path=image) from exc
    data = np.asarray(smap.data, dtype=float)
    geo = disk_geometry_from_map(smap)
    meridians = []
    lat = np.linspace(-89.5, 89.5, 181) * u.deg
    obs = smap.observer_coordinate.transform_to(HeliographicStonyhurst(obstime=smap.date))
    b0, l0 = obs.lat.to_value(u.rad), obs.lon.to_value(u.rad)
    for sign in (-1, 1):
        mer = SkyCoord(
            np.full(lat.shape, sign * limb_deg) * u.deg,
            lat,
            frame=HeliographicStonyhurst(obstime=smap.date, rsun=smap.rsun_meters),
        )
        hpc = mer.transform_to(smap.coordinate_frame)
        la, lo = lat.to_value(u.rad), math.radians(sign * limb_deg)
        mu = np.cos(la) * np.cos(b0) * np.cos(lo - l0) + np.sin(la) * np.sin(b0)
        px, py = smap.wcs.world_to_pixel(hpc)
        meridians.append((np.where(mu > 0, px, np.nan), np.where(mu > 0, py, np.nan)))
    return data, geo, f"{smap.name}", meridians


def disk_figure(
    image: str | os.PathLike[str],
    out_base: str | os.PathLike[str],
    *,
    limb_deg: float = NEAR_LIMB_DEG,
    geometry: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Draw a magnetogram with the ``limb_deg`` circle computed from its disk geometry.

    * A JPEG 2000 file with a Helioviewer header is decoded with fdflare's own reader
      (:func:`fdflare.prepare.decode.decode_jp2`, at most 1024 pixels a side); the disk
      centre and radius come from its header (:func:`fdflare.prepare.geometry.disk_geometry`)
      and the two ``+-limb_deg`` meridians from :func:`limb_meridians`.
    * A FITS file is read with sunpy: geometry and meridians from its WCS.
    * A plain image (PNG/JPG from ``fdflare prepare``) needs ``geometry`` (``center_x,
      center_y, radius_px`` in pixels, row 0 at the top); with ``b0_deg`` (and
      ``crota2``) there, as ``geometry.csv`` has them, the meridians are drawn too.

    The circle has radius ``R sin(limb_deg)``: the projected distance from disk centre at
    which central-meridian distance ``limb_deg`` lies on the equator.

    Returns:
        The geometry used, the circle radius in pixels, ``meridians`` (the extent of each
        meridian drawn: min and max column, min and max row) and the paths written.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    image = Path(image)
    if not image.is_file():
        raise InputError("no such image", path=image)
    suffix = image.suffix.lower()
    meridians: list[tuple[np.ndarray, np.ndarray]] = []
    origin = "upper"
    if suffix in {".png", ".jpg", ".jpeg"}:
        if geometry is None:
            raise InputError(
                "a plain image needs its disk geometry (center_x, center_y, radius_px): "
                "pass --geometry geometry.csv from `fdflare prepare`",
                path=image,
            )
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as im:
                data = np.asarray(im.convert("L"), dtype=float)
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"not a readable image ({exc})", path=image) from exc
        geo = dict(geometry)
        title = image.name
        if "b0_deg" in geo:  # geometry.csv of prepare or synth: draw the meridians too
            meridians = limb_meridians(
                geo,
                limb_deg,
                b0_deg=float(geo["b0_deg"]),
                crota2_deg=float(geo.get("crota2", 0.0)),
            )
    elif suffix in {".jp2", ".j2k", ".jpx"}:
        data, geo, title, meridians = _read_jp2(image, limb_deg)
    else:
        data, geo, title, meridians = _read_fits(image, limb_deg)
        origin = "lower"
    circle_r = geo["radius_px"] * math.sin(math.radians(limb_deg))
    fig = Figure(figsize=(7, 7))
    ax = fig.add_subplot()
    if origin == "upper":
        ax.imshow(data, cmap="gray", origin="upper")
    else:
        finite = data[np.isfinite(data)]
        lim = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
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
        "meridians": [
            tuple(float(f(v)) for v in (px, py) for f in (np.nanmin, np.nanmax))
            for px, py in meridians
            if np.isfinite(px).any()
        ],
        "paths": [str(p) for p in paths],
    }
