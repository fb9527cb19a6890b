"""``fdflare reproduce``: the study's tables and figures from its released data."""

from __future__ import annotations

import argparse

HELP = "reproduce the study's skill scores, location table and heatmaps from its released data"
DESCRIPTION = """\
Given a folder laid out like the study's release (labels/, predictions/fold{k}_{model}.csv,
predictions/{model}_{x,m,c}_class.csv, flare_catalog_partial.csv), rebuild the labels and
check them byte for byte, run evaluate and spatial for every model found, and write a
markdown report with the per-fold table, mean ± std, the location table and the heatmaps.
Without --reference it looks at $FDFLARE_REFERENCE, ../shared/reference and shared/reference.

example:
  fdflare reproduce --reference path/to/reference --out reproduction/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare reproduce``."""
    p.add_argument("--reference", help="folder laid out like the study's release")
    p.add_argument("--out", default="fdflare-reproduce", help="output folder (default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5)


def run(args: argparse.Namespace) -> int:
    """Run the reproduction and print where the report is."""
    from fdflare.analysis.metrics import format_table
    from fdflare.reports.reproduce import MODEL_NAMES, reproduce
    from fdflare.analysis.spatial import format_table as spatial_table

    res = reproduce(args.reference, args.out, threshold=args.threshold)
    if "labels" in res:
        lab = res["labels"]
        print(
            f"labels: {sum(lab['files'].values())}/{len(lab['files'])} fold files rebuilt byte for byte"
        )
    for model, entry in res["models"].items():
        print(f"\n== {MODEL_NAMES.get(model.lower(), model)} ==")
        if "evaluate" in entry:
            print(format_table(entry["evaluate"]))
        if "spatial" in entry:
            print()
            print(spatial_table(entry["spatial"]))
    print(f"\nwrote {res['report']}")
    return 0
