"""``fdflare evaluate``: TSS, HSS2 and probabilistic scores of prediction files."""

from __future__ import annotations

import argparse
import json

HELP = "skill scores (TSS, HSS2, AUC, Brier) of prediction CSVs, per file and mean ± std"
DESCRIPTION = """\
Score prediction CSVs in the study's format (timestamp, flare_prob, target), or fdflare's
joined tables. Per file: TP, FP, TN, FN, TSS, HSS2 at --threshold, ROC AUC, Brier score and
Brier skill score against climatology, and the threshold that maximises TSS; across files:
mean and population standard deviation of TSS and HSS2.

example:
  fdflare evaluate predictions/fold{1,2,3,4}_alex.csv
  fdflare evaluate --json predictions/fold1_alex.csv > scores.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare evaluate``."""
    p.add_argument("files", nargs="+", metavar="FILE", help="prediction CSV files")
    p.add_argument(
        "--threshold", type=float, default=0.5, help="P(flare) >= threshold is a positive forecast"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    """Score the files and print the result."""
    from fdflare.analysis.metrics import evaluate_files, format_table

    result = evaluate_files(args.files, threshold=args.threshold)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return 0
