"""How long a local archive takes to index a year of hourly JP2 names, and to answer.

    python benchmarks/bench_archive.py [--days 365] [--queries 1000]

Makes a year of hourly (empty) files in the layout of ``fdflare download`` in a temporary
folder, then times :class:`fdflare.forecast.archive.LocalArchive`: opening it (one walk of
the tree, the names parsed at once), a re-index (what a request after the newest file
costs), and ``closest`` (a binary search; the header read of a file that is not a JP2 is
skipped, so this is the lookup alone). Prints one table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.core.paths import image_relpaths
from fdflare.forecast.archive import LocalArchive


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--queries", type=int, default=1000)
    args = p.parse_args()
    times = pd.date_range("2011-01-01", periods=args.days * 24, freq="h")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel in image_relpaths(times, ext="jp2"):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        t0 = time.perf_counter()
        arch = LocalArchive(root)
        rows.append(("open (walk + index)", time.perf_counter() - t0, len(arch)))
        t0 = time.perf_counter()
        arch.refresh()
        rows.append(("refresh", time.perf_counter() - t0, len(arch)))
        rng = np.random.default_rng(0)
        queries = times[0] + pd.to_timedelta(rng.uniform(0, args.days * 86400, args.queries), "s")
        t0 = time.perf_counter()
        for q in queries:
            arch.closest(q)
        rows.append((f"closest x {args.queries}", time.perf_counter() - t0, len(arch)))
    print(f"{'step':<24} {'seconds':>10} {'files':>8}")
    for name, sec, n in rows:
        print(f"{name:<24} {sec:>10.4f} {n:>8}")


if __name__ == "__main__":
    main()
