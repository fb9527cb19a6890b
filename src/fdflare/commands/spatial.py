"""``fdflare spatial``: recall of central vs near-limb flares, heatmaps and a disk figure."""

from __future__ import annotations

import argparse
import json

HELP = "central vs near-limb recall of X/M flares, recall heatmaps and a disk figure"
DESCRIPTION = """\
Read predictions joined with the largest flare of each instance's window (the study's
*_{x,m,c}_class.csv files, or fdflare's joined prediction table), and report per class (X, M,
X+M) the TP, FN and recall of central (|lon| <= --limb-deg) and near-limb flares with a Wilson
95 % interval, how many had no location and how many lay outside the heatmap grid. A class
that is not a GOES class, a longitude outside -180..180 or a latitude outside -90..90 is an
error naming the file, line and field; a file with a header and no rows is a warning and
exit status 1. With --out, also write recall heatmaps (PNG and
SVG) and bin tables per class; with --disk-image, a magnetogram with the --limb-deg circle
(a Helioviewer JPEG 2000 file is read with fdflare's own decoder; FITS needs sunpy).

example:
  fdflare spatial --out figures/ --name alex predictions/alex_x_class.csv predictions/alex_m_class.csv
  fdflare spatial --out figures/ --disk-image hmi.fits
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare spatial``: its inputs, and one per field of its config."""
    from fdflare.analysis.spatial import SpatialConfig
    from fdflare.commands._config import add_options

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
    p.add_argument("--name", default="", help="model name for figure titles and file names")
    p.add_argument(
        "--disk-image",
        help="JPEG 2000 (Helioviewer) or FITS magnetogram, or a prepared PNG with --geometry, "
        "for the disk figure",
    )
    p.add_argument(
        "--geometry", help="geometry.csv from `fdflare prepare`, for a PNG/JPG --disk-image"
    )
    group = p.add_argument_group("settings")
    p.set_defaults(_settings=add_options(group, SpatialConfig))


def _geometry_for(image: str, geometry_csv: str) -> dict[str, float]:
    import math
    from pathlib import Path

    from fdflare.core.errors import InputError
    from fdflare.prepare.geometry import read_geometry_file

    geo = read_geometry_file(geometry_csv, what="geometry file (--geometry)")
    name = Path(image).as_posix()
    hits = [i for i, p in enumerate(geo["path"].astype(str)) if name.endswith(p)]
    if not hits:
        raise InputError(f"no row for {image}", path=geometry_csv, field="path")
    row = geo.iloc[hits[0]]
    out = {k: float(row[k]) for k in ("center_x", "center_y", "radius_px")}
    for k in ("b0_deg", "crota2"):  # optional: the limb meridians need them
        if k in geo.columns and math.isfinite(row[k]):
            out[k] = float(row[k])
    return out


def run(args: argparse.Namespace) -> int:
    """Run the analysis and print the table or JSON."""
    import contextlib
    import sys
    from pathlib import Path

    from fdflare.analysis.figures import disk_figure
    from fdflare.analysis.spatial import (
        SpatialConfig,
        analyse,
        format_table,
        read_spatial_tables,
    )
    from fdflare.commands._config import config_from_args
    from fdflare.core.errors import InputError, UsageError
    from fdflare.core.outputs import check_output_dir, output_lock

    if not args.files and not args.disk_image:
        raise UsageError("give prediction files, --disk-image, or both")
    if args.disk_image and not args.out:
        raise UsageError("--disk-image needs --out for the figure")
    if args.geometry and not args.disk_image:
        raise UsageError("--geometry is for a --disk-image; give one")
    cfg = config_from_args(args, SpatialConfig, args._settings)
    prefix = f"{args.name}_" if args.name else ""
    if args.out:
        writes = [
            f"{prefix}{kind}_{c}.{ext}"
            for kind, ext in (("heatmap", "png"), ("heatmap", "svg"), ("bins", "csv"))
            for c in ("X", "M", "XM")
        ]
        writes += [f"{prefix}disk.png", f"{prefix}disk.svg"]
        inputs = [*args.files, args.disk_image, args.geometry]
        check_output_dir(args.out, inputs=inputs, writes=writes)
    geometry = _geometry_for(args.disk_image, args.geometry) if args.geometry else None
    if args.disk_image and not Path(args.disk_image).is_file():
        what = (
            "is a folder; expected an image file"
            if Path(args.disk_image).is_dir()
            else "no such image"
        )
        raise InputError(what, path=args.disk_image)
    df = read_spatial_tables(args.files) if args.files else None
    empty = [p for p, n in (df.attrs["rows"].items() if df is not None else ()) if n == 0]
    analysed = df is not None and len(df) > 0
    result: dict = {}
    writing = args.out and (analysed or args.disk_image)
    lock = output_lock(args.out, command="spatial") if writing else contextlib.nullcontext()
    with lock:
        if analysed:
            result = analyse(df, cfg, out=args.out, name=args.name)
        if args.disk_image:
            result["disk"] = disk_figure(
                args.disk_image,
                Path(args.out) / f"{prefix}disk",
                limb_deg=cfg.limb_deg,
                geometry=geometry,
            )
    if df is not None and not analysed:
        result = {"n": 0, **result}
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
                f"disk centre ({d['center_x']:.1f}, {d['center_y']:.1f}) px, radius "
                f"{d['radius_px']:.1f} px, {cfg.limb_deg:g} deg circle radius "
                f"{d['circle_radius_px']:.1f} px; wrote {', '.join(d['paths'])}"
            )
    for path in empty:
        print(
            f"fdflare spatial: warning: {path} holds a header and no predictions (n = 0)",
            file=sys.stderr,
        )
    return 1 if empty else 0
