"""Download throughput against the loopback Helioviewer look-alike, by concurrency.

Each request to the local server waits ``--latency`` seconds, standing in for the round trip
to the real API. The baseline is concurrency 1 (one request at a time, as the study's
script), measured in the same run; the table prints each setting's time and its speed-up.
A last row times a rerun over the complete directory (every file checked by size and
SHA-256, no request made).

    python benchmarks/bench_download.py [--images 48] [--latency 0.03]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fdflare.acquire.helioviewer import download_range
from fdflare.core.http import HttpPolicy
from helioviewer_server import FakeHelioviewer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="requested times (hourly)")
    parser.add_argument("--latency", type=float, default=0.03, help="seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    start = "2011-01-01T00:00"
    # the range is half-open, [start, end): end is one hour after the last requested time
    end = (pd.Timestamp(start) + pd.Timedelta(hours=args.images)).strftime("%Y-%m-%dT%H:%M")
    rows = []
    with FakeHelioviewer(start="2011-01-01", end="2011-01-31", delay=args.latency) as server:
        for n in sorted(set([1, *args.concurrency])):
            with tempfile.TemporaryDirectory() as tmp:

                def fetch(n: int = n, tmp: str = tmp):  # one run over the range into tmp
                    return download_range(
                        start,
                        end,
                        tmp,
                        base_url=server.base_url,
                        policy=HttpPolicy(concurrency=n),
                        progress=False,
                    )

                t0 = time.perf_counter()
                summary = fetch()
                seconds = time.perf_counter() - t0
                assert summary.downloaded == args.images, summary.format()
                rows.append((f"download, concurrency {n}", seconds, args.images / seconds))
                if n == max(args.concurrency):
                    t0 = time.perf_counter()
                    again = fetch()
                    resumed = time.perf_counter() - t0
                    assert again.skipped == args.images, again.format()
                    resume_row = (
                        f"rerun, all present, concurrency {n}",
                        resumed,
                        args.images / resumed,
                    )
    rows.append(resume_row)

    baseline = rows[0][1]
    print(f"{args.images} images, {args.latency * 1000:.0f} ms per request (loopback server)")
    print(f"{'setting':<36} {'seconds':>8} {'images/s':>9} {'speed-up':>9}")
    for name, seconds, rate in rows:
        print(f"{name:<36} {seconds:8.2f} {rate:9.1f} {baseline / seconds:8.1f}x")


if __name__ == "__main__":
    main()
