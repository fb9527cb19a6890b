"""``fdflare evaluate``: TSS, HSS2 and probabilistic scores of prediction files."""

from __future__ import annotations

import argparse
import json
import sys

from fdflare.commands._common import probability

HELP = "skill scores (TSS, HSS2, AUC, Brier) of prediction CSVs, per file and mean ± std"
DESCRIPTION = """\
Score prediction CSVs in the study's format (timestamp, flare_prob, target), or fdflare's
joined tables. Per file: TP, FP, TN, FN, TSS, HSS2 at --threshold, ROC AUC, Brier score and
Brier skill score against climatology, and the threshold that maximises TSS; across files:
mean and standard deviation (--std) of TSS and HSS2 (a score undefined in a file is
left out, and the table says how many files the mean covers). A file with a header and no
rows is scored as n = 0 with a warning, and the exit status is 1.

example:
  fdflare evaluate predictions/fold{1,2,3,4}_alex.csv
  fdflare evaluate --json predictions/fold1_alex.csv > scores.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare evaluate``."""
    p.add_argument("files", nargs="+", metavar="FILE", help="prediction CSV files")
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="P(flare) >= threshold is a positive forecast (default %(default)s)",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="baseline folder of `fdflare baseline --out`: show each fold beside persistence "
        "and climatology (and flux) on the same instances, with the skill over persistence",
    )
    p.add_argument(
        "--std",
        choices=("population", "sample"),
        default="population",
        help="standard deviation across files: population (the study's) or sample (n - 1) "
        "(default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    """Score the files and print the result."""
    from fdflare.analysis.metrics import evaluate_files, format_table

    if args.baseline:
        from fdflare.analysis.skill import compare, format_comparison

        result = compare(args.files, args.baseline, threshold=args.threshold, std=args.std)
        text = format_comparison(result)
    else:
        result = evaluate_files(args.files, threshold=args.threshold, std=args.std)
        text = format_table(result)
    print(json.dumps(result) if args.json else text)
    for path in result["empty"]:
        print(
            f"fdflare evaluate: warning: {path} holds a header and no predictions (n = 0)",
            file=sys.stderr,
        )
    return 1 if result["empty"] else 0
