"""``fdflare demo``: synth -> label -> train -> predict -> baselines -> evaluate -> calibrate -> spatial -> report."""

from __future__ import annotations

import argparse

HELP = "run the whole pipeline end to end on synthetic data (minutes on a laptop CPU)"
DESCRIPTION = """\
Generate a year of synthetic full-disk magnetograms with a flare catalog, label them, train
one model per fold (a small CNN trained with AdamW by default, small images, few epochs, no
ImageNet weights; the honest protocol: each fold keeps its last epoch and nothing is
selected on the fold it is scored on, --protocol study selects there as the study did),
predict each validation fold, forecast the same instances with persistence, climatology and
the flux baseline, calibrate the probabilities across folds, and evaluate and map the
results. Settings come from fdflare/configs/demo.yaml, then --config FILE, then the options
given. Writes OUT/results.json ({"evaluate", "baselines", "comparison", "calibration",
"verdict", "spatial", "notes", "config"}), OUT/report.md, OUT/report.html and every
intermediate file. The data are synthetic: the numbers show the pipeline works, not real
forecast skill. Rerunning the same command resumes.

example:
  fdflare demo --out demo/
  fdflare demo --out demo-alexnet/ --model alexnet --folds 1,2 --epochs 20
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare demo``: one per field of the demo's config."""
    from fdflare.commands._config import add_options
    from fdflare.reports.demo import DemoConfig

    p.add_argument("--out", default="fdflare-demo", help="output folder (default %(default)s)")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of demo settings (see fdflare/configs/demo.yaml)",
    )
    p.add_argument("--json", action="store_true", help="print results.json instead of tables")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or per-stage lines (the final tables still print)",
    )
    group = p.add_argument_group("settings (fdflare/configs/demo.yaml)")
    p.set_defaults(_config_fields=add_options(group, DemoConfig))


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its tables."""
    import json

    from fdflare.analysis.skill import format_comparison
    from fdflare.analysis.spatial import format_table as spatial_table
    from fdflare.commands._config import given_values
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.reports.demo import (
        DemoConfig,
        calibration_table,
        load_demo_config,
        run_demo,
        verdict_lines,
    )

    cfg = DemoConfig()
    if args.config:
        cfg = load_demo_config(args.config, cfg)
    cfg = cfg.updated(given_values(args, DemoConfig, args._config_fields))
    check_output_dir(args.out, inputs=[args.config])
    with output_lock(args.out, command="demo"):
        res = run_demo(args.out, cfg, quiet=args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "seconds"}))
        return 0
    cmp = {**res["evaluate"], "baselines": res["baselines"], "comparison": res["comparison"]}
    print(format_comparison(cmp))
    print()
    if "calibration" in res:
        print(calibration_table(res))
        print()
    for line in verdict_lines(res):
        print(line)
    print()
    print(spatial_table(res["spatial"]))
    print(
        f"\nwrote {args.out}/results.json, {args.out}/report.md and {args.out}/report.html "
        f"({res['seconds']:.0f} s)"
    )
    return 0
