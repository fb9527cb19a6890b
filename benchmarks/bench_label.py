"""Benchmark: vectorised labelling vs the study's per-instance loop.

Labels the whole 2010-12-01 .. 2018-12-30 hourly range (70,848 instance times, every one
with an image) from a flare catalog (by default the 8,606-flare HEK-style list in
../shared/reference/catalogs), with :func:`fdflare.label.make_labels`, and compares it with
the study's approach measured in the same run: for each instance a boolean mask over the
catalog DataFrame, a sort of the window's flares by class, and list building. The loop is
timed on ``--baseline-instances`` instances (all of them with ``--full``); without ``--full``
its full-range time is an extrapolation (the sample's time per instance times 70,848), not a
measurement, and the output says so.

    python benchmarks/bench_label.py [--catalog FILE] [--baseline-instances 2000] [--full]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd

from fdflare.acquire.catalog import read_catalog
from fdflare.core.paths import image_relpaths
from fdflare.label import STUDY_END, STUDY_START, LabelConfig, make_labels

DEFAULT_CATALOG = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "reference"
    / "catalogs"
    / "final_flare_list_sc24.csv"
)


def study_loop(catalog: pd.DataFrame, times: pd.DatetimeIndex) -> list:
    """The study's labelling loop: one DataFrame filter and sort per instance."""
    df = catalog.rename(columns={"start_time": "start"})
    rows = []
    for t in times:
        pwe = t + pd.Timedelta("23:59:59")
        emp = df[(df.start > t) & (df.start <= pwe)].sort_values("goes_class", ascending=False)
        emp = emp.reset_index()
        if emp.empty:
            rows.append([t, "NF", "unk", "unk", [], [], []])
            continue
        top = emp.head(1).squeeze(axis=0)
        rest = emp.iloc[1:]
        rows.append(
            [
                t,
                top.goes_class,
                top.fl_lon,
                top.fl_lat,
                list(rest.goes_class),
                list(rest.fl_lon),
                list(rest.fl_lat),
            ]
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    ap.add_argument("--baseline-instances", type=int, default=2000)
    ap.add_argument("--full", action="store_true", help="run the study's loop on every instance")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    if not args.catalog.is_file():
        raise SystemExit(f"catalog not found: {args.catalog} (pass --catalog FILE)")
    catalog = read_catalog(args.catalog)
    times = pd.date_range(STUDY_START, STUDY_END, freq="1h", inclusive="left")
    names = list(image_relpaths(times))
    cfg = LabelConfig()

    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = make_labels(catalog, names, cfg)
        runs.append(time.perf_counter() - t0)
    fast = statistics.median(runs)

    n_base = len(times) if args.full else min(args.baseline_instances, len(times))
    sample = times[:: max(1, len(times) // n_base)][:n_base]
    t0 = time.perf_counter()
    study_loop(catalog, sample)
    base = time.perf_counter() - t0
    base_full = base / len(sample) * len(times)

    print(
        f"catalog: {args.catalog.name} ({len(catalog)} flares); instances: {len(times)}; positives: {res.counts['positives']}"
    )
    print()
    print(f"{'method':<34}{'instances':>10}{'seconds':>12}{'full range (s)':>16}{'speed-up':>10}")
    print("-" * 82)
    extrap = "" if args.full else " (extrapolated)"
    print(
        f"{'study loop (per-instance filter)':<34}{len(sample):>10}{base:>12.3f}{base_full:>16.2f}{1:>10.0f}x{extrap}"
    )
    print(
        f"{'fdflare make_labels (vectorised)':<34}{len(times):>10}{fast:>12.3f}{fast:>16.3f}{base_full / fast:>10.0f}x"
    )
    print()
    print(f"fdflare runs (s): {', '.join(f'{r:.3f}' for r in runs)} (median shown)")
    if not args.full:
        print(
            f"note: the study loop's full-range time ({base_full:.1f} s) is extrapolated from "
            f"{len(sample)} timed instances ({base / len(sample) * 1e3:.2f} ms each) to all "
            f"{len(times)}, not measured; run with --full to time every instance"
        )


if __name__ == "__main__":
    main()
