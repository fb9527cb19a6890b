"""``fdflare reproduce``: the study's tables and figures from its released data."""

from __future__ import annotations

import argparse

from fdflare.commands._common import add_json_option, probability

HELP = "reproduce the study's skill scores, location table and heatmaps from its released data"
DESCRIPTION = """\
Given a folder laid out like the study's release (labels/, predictions/fold{k}_{model}.csv,
predictions/{model}_{x,m,c}_class.csv, flare_catalog_partial.csv), rebuild the labels and
check them byte for byte, run evaluate and spatial for every model found, and write a
markdown report with the per-fold table, mean ± std, the location table and the heatmaps.
Without --reference it looks at $FDFLARE_REFERENCE, ../shared/reference and shared/reference.

What is reproduced: the study's labels (byte for byte) and its tables from its released
predictions. Retraining the study's models is not. The reference folder is checked before
anything is written, and whatever it lacks is named.

example:
  fdflare reproduce --reference path/to/reference --out reproduction/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare reproduce``."""
    p.add_argument("--reference", help="folder laid out like the study's release")
    p.add_argument("--out", default="fdflare-reproduce", help="output folder (default %(default)s)")
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="P(flare) >= threshold is a positive forecast (default %(default)s)",
    )
    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    """Run the reproduction and print where the report is."""
    from fdflare.analysis.metrics import format_table
    from fdflare.analysis.spatial import format_table as spatial_table
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.reports.reproduce import MODEL_NAMES, find_reference, plan_reference, reproduce

    ref_dir = find_reference(args.reference)
    check_output_dir(
        args.out, inputs=[ref_dir], writes=["report.md", "results.json", "report.html"]
    )
    plan = plan_reference(ref_dir)
    with output_lock(args.out, command="reproduce"):
        res = reproduce(ref_dir, args.out, threshold=args.threshold, plan=plan)
    if args.json:  # results.json, with the paths of the reports
        from fdflare.commands._common import print_json

        print_json(res)
        return 0
    for note in res["missing"]:
        print(f"missing: {note}")
    if "labels" in res:
        lab = res["labels"]
        print(
            f"labels: {sum(lab['files'].values())}/{len(lab['files'])} fold files rebuilt byte for byte"
        )
    for model, entry in res["models"].items():
        print(f"\n== {MODEL_NAMES.get(model.lower(), model)} ==")
        if "evaluate" in entry:
            # beside the baselines, BSS is against each fold's training rate; the own-rate
            # BSS of `fdflare evaluate` would be a second, different BSS column
            print(format_table(entry["evaluate"], bss="comparison" not in entry))
        if "comparison" in entry:
            from fdflare.analysis.skill import format_comparison

            print("\nbeside the baselines (same instances):")
            print(format_comparison({**entry["evaluate"], **entry}))
        if "calibration" in entry:
            bss = [f"{i['after']['bss']:+.2f}" for i in entry["calibration"]["files"]]
            raw = [f"{i['before']['bss']:+.2f}" for i in entry["calibration"]["files"]]
            ref = (
                "each fold's training rate"
                if "comparison" in entry
                else "the other folds' event rate (no labels give each fold's training rate)"
            )
            print(
                f"\nBSS against {ref}: {', '.join(raw)}; after cross-fold "
                f"isotonic calibration: {', '.join(bss)} ({entry['calibration']['folder']}/)"
            )
        if "spatial" in entry:
            print()
            print(spatial_table(entry["spatial"]))
    print(f"\nwrote {res['report']} and {res['html']}")
    return 0
