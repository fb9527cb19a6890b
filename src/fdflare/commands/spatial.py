"""``fdflare spatial``: recall of central vs near-limb flares, heatmaps and a disk figure."""

from __future__ import annotations

import argparse
import json

HELP = "central vs near-limb recall of X/M flares, recall heatmaps and a disk figure"
DESCRIPTION = """\
Read predictions joined with the largest flare of each instance's window (the study's
*_{x,m,c}_class.csv files, or fdflare's joined prediction table), and report per class (X, M,
X+M) the TP, FN and recall of central (|lon| <= --limb-deg) and near-limb flares with a Wilson
95 % interval, and how many had no location. With --out, also write recall heatmaps (PNG and
SVG) and bin tables per class; with --disk-image, a magnetogram with the --limb-deg circle.

example:
  fdflare spatial --out figures/ --name alex predictions/alex_x_class.csv predictions/alex_m_class.csv
  fdflare spatial --out figures/ --disk-image hmi.fits
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare spatial``."""
    p.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="joined prediction tables (X- and M-class files, or one table)",
    )
    p.add_argument(
        "--out", help="directory for heatmaps (PNG, SVG), bin tables and the disk figure"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--limb-deg",
        type=float,
        default=70.0,
        help="near-limb if |lon| > this (default %(default)s)",
    )
    p.add_argument(
        "--bin-deg",
        type=float,
        default=5.0,
        help="heatmap bin size in degrees (default %(default)s)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="P(flare) >= threshold is a hit (default %(default)s)",
    )
    p.add_argument("--name", default="", help="model name for figure titles and file names")
    p.add_argument(
        "--disk-image",
        help="FITS/JP2 magnetogram (or a prepared PNG with --geometry) for the disk figure",
    )
    p.add_argument(
        "--geometry", help="geometry.csv from `fdflare prepare`, for a PNG/JPG --disk-image"
    )


def _geometry_for(image: str, geometry_csv: str) -> dict[str, float]:
    from pathlib import Path

    import pandas as pd

    from fdflare.core.errors import InputError

    geo = pd.read_csv(geometry_csv)
    for col in ("path", "center_x", "center_y", "radius_px"):
        if col not in geo.columns:
            raise InputError(f"missing column {col!r}", path=geometry_csv, field=col)
    name = Path(image).as_posix()
    match = geo[[name.endswith(str(p)) for p in geo["path"]]]
    if match.empty:
        raise InputError(f"no row for {image}", path=geometry_csv, field="path")
    row = match.iloc[0]
    return {k: float(row[k]) for k in ("center_x", "center_y", "radius_px")}


def run(args: argparse.Namespace) -> int:
    """Run the analysis and print the table or JSON."""
    from pathlib import Path

    from fdflare.core.errors import InputError
    from fdflare.analysis.spatial import (
        SpatialConfig,
        analyse,
        disk_figure,
        format_table,
        read_spatial_tables,
    )

    if not args.files and not args.disk_image:
        raise InputError("give prediction files, --disk-image, or both")
    if args.disk_image and not args.out:
        raise InputError("--disk-image needs --out for the figure")
    cfg = SpatialConfig(limb_deg=args.limb_deg, bin_deg=args.bin_deg, threshold=args.threshold)
    result: dict = {}
    if args.files:
        df = read_spatial_tables(args.files)
        result = analyse(df, cfg, out=args.out, name=args.name)
    if args.disk_image:
        geometry = _geometry_for(args.disk_image, args.geometry) if args.geometry else None
        prefix = f"{args.name}_" if args.name else ""
        result["disk"] = disk_figure(
            args.disk_image,
            Path(args.out) / f"{prefix}disk",
            limb_deg=args.limb_deg,
            geometry=geometry,
        )
    if args.json:
        print(json.dumps(result))
    else:
        if "classes" in result:
            print(format_table(result))
        for f in result.get("figures", []):
            print(f"wrote {f}")
        if "disk" in result:
            d = result["disk"]
            print(
                f"disk centre ({d['center_x']:.1f}, {d['center_y']:.1f}) px, radius {d['radius_px']:.1f} px, "
                f"{args.limb_deg:g} deg circle radius {d['circle_radius_px']:.1f} px; wrote {', '.join(d['paths'])}"
            )
    return 0
