"""The ``loader`` row of ``fdflare bench`` (the study's way against fdflare's, same run).

    python benchmarks/bench_dataloader.py [--quick] [--json FILE]

is ``fdflare bench --only loader [--quick] [--out FILE]``; see docs/performance.md.
"""

from __future__ import annotations

import sys

from fdflare.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--only", "loader", *sys.argv[1:]]))
