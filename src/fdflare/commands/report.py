"""``fdflare report``: one self-contained HTML page for a run."""

from __future__ import annotations

import argparse

HELP = "one self-contained HTML page for a train run, cv set, demo or reproduction"
DESCRIPTION = """\
Write one HTML page for DIR (a train run, a cv set, a demo or a reproduction): the
per-fold table beside the baselines with mean +- std and a plain verdict, the reliability
diagram, the location table and recall heatmaps, training curves from metrics.csv, and the
run's settings. Figures are embedded and the page loads nothing from the network, so it
opens anywhere as one file. `fdflare demo` and `fdflare reproduce` write DIR/report.html
themselves.

example:
  fdflare report reproduction/ --out reproduction.html
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare report``."""
    p.add_argument("folder", metavar="DIR", help="a train run, cv set, demo or reproduction")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the page to write")
    from fdflare.commands._common import add_json_option

    add_json_option(p)


def run(args: argparse.Namespace) -> int:
    """Write the page and say where it is."""
    from pathlib import Path

    from fdflare.core.errors import MissingDataError
    from fdflare.core.outputs import check_output_file

    folder = Path(args.folder)
    if not folder.is_dir():
        kind = "a file" if folder.exists() else "not found"
        raise MissingDataError(
            f"{args.folder}: {kind}; expected the folder of a train run, cv set, demo or "
            "reproduction"
        )
    check_output_file(args.out, inputs=[folder])
    from fdflare.reports.report import write_report

    path = write_report(folder, args.out)
    if args.json:
        from fdflare.commands._common import print_json

        print_json({"out": str(path), "folder": str(folder)})
        return 0
    print(f"wrote {path}")
    return 0
