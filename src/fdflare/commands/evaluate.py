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
mean and population standard deviation of TSS and HSS2 (a score undefined in a file is
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
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    """Score the files and print the result."""
    from fdflare.analysis.metrics import evaluate_files, format_table

    result = evaluate_files(args.files, threshold=args.threshold)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    for path in result["empty"]:
        print(
            f"fdflare evaluate: warning: {path} holds a header and no predictions (n = 0)",
            file=sys.stderr,
        )
    return 1 if result["empty"] else 0
