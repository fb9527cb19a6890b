"""Benchmark: synthetic magnetograms per second vs a naive per-pixel, per-patch Python loop.

Times, in the same run, on one seeded synthetic Sun (``--seed``, a busy day by default):

* baseline: a plain Python loop over every pixel of the disk and, inside it, over every flux
  patch of the regions (the same Gaussian-on-the-sphere field, foreshortening and 8-bit
  scaling as :func:`fdflare.synth.render.render_magnetogram` and :func:`fdflare.synth.render.to_uint8`),
  measured on a small ``--baseline-size`` image and scaled by the pixel count to 512 and
  4096 pixels (its cost is pixels x patches); its output is checked against fdflare's;
* ``render``: :func:`fdflare.synth.render.render_magnetogram` + ``to_uint8`` at 512 pixels;
* ``synth 512 PNG``: :func:`fdflare.synth.writer.generate` writing ``--n`` 512 x 512 PNGs (with
  one process and with ``--workers`` worker processes), everything included;
* ``synth 4096 JP2``: ``generate`` with ``SynthConfig(jp2=True)`` writing ``--n-jp2`` 4096 x 4096 JPEG 2000
  files with the Helioviewer header (rendering and encoding).

and prints images per second and the speed-up over the baseline at the same size.

usage: python benchmarks/bench_synth.py [--n 48] [--n-jp2 2] [--baseline-size 64] [--seed 0]
       [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fdflare.synth.config import SynthConfig
from fdflare.synth.regions import region_patches, simulate_regions
from fdflare.synth.render import render_magnetogram, to_uint8
from fdflare.synth.sun import RSUN_CM, DiskGeometry
from fdflare.synth.writer import generate


def naive_render(
    patches: pd.DataFrame, geometry: DiskGeometry, clip: float, stretch: float
) -> np.ndarray:
    """The field of every patch summed at every pixel in plain Python, scaled to 8 bits."""
    n = geometry.size
    rad = geometry.radius_px
    b0 = math.radians(geometry.b0_deg)
    rows = []
    for p in patches.itertuples(index=False):
        lon, lat = math.radians(p.lon), math.radians(p.lat)
        xs = math.cos(lat) * math.sin(lon)
        ys = math.sin(lat)
        zs = math.cos(lat) * math.cos(lon)
        sig = math.radians(p.sigma)
        sig = math.sqrt(sig * sig + 1.0 / (12.0 * rad * rad))
        amp = p.flux / (2 * math.pi * (sig * RSUN_CM) ** 2)
        y = ys * math.cos(b0) - zs * math.sin(b0)
        z = ys * math.sin(b0) + zs * math.cos(b0)
        rows.append((xs, y, z, sig * sig, amp))
    out = np.zeros((n, n), dtype=np.uint8)
    for i in range(n):
        for j in range(n):
            x = (j - geometry.center_x) / rad
            y = (geometry.center_y - i) / rad
            r2 = x * x + y * y
            if r2 > 1.0:
                continue
            z = math.sqrt(1.0 - r2)
            b = 0.0
            for px, py, pz, s2, amp in rows:
                cosd = x * px + y * py + z * pz
                b += amp * math.exp(min(cosd - 1.0, 0.0) / s2) * z
            v = round(128.0 + 127.0 * math.asinh(stretch * b / clip) / math.asinh(stretch))
            out[i, j] = min(max(v, 1), 255)
    return out


def busy_day(seed: int, start: str, days: int) -> pd.Timestamp:
    """The time in ``start`` .. ``start + days`` with the most visible flux: a worst case."""
    t0 = pd.Timestamp(start)
    times = pd.date_range(t0, t0 + pd.Timedelta(days=days), freq="1D")
    regions = simulate_regions(times[0], times[-1], seed=seed)
    best, when = -1.0, times[0]
    for t in times:
        p = region_patches(regions, t)
        flux = float(np.abs(p.loc[p["lon"].abs() < 90, "flux"]).sum())
        if flux > best:
            best, when = flux, t
    return when


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn``."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=48, help="512-pixel PNGs per generate run")
    ap.add_argument("--n-jp2", type=int, default=2, help="4096-pixel JPEG 2000 files")
    ap.add_argument("--baseline-size", type=int, default=64, help="image size of the loop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", default="2011-01-01", help="search a busy day from here")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the second run")
    args = ap.parse_args()

    when = busy_day(args.seed, args.start, 120)
    regions = simulate_regions(when - pd.Timedelta(days=1), when, seed=args.seed)
    patches = region_patches(regions, when)
    clip, stretch = SynthConfig.clip, SynthConfig.stretch

    # Baseline: the naive loop on a small image, checked against fdflare's renderer.
    small = DiskGeometry.centred(args.baseline_size)
    t0 = time.perf_counter()
    slow = naive_render(patches, small, clip, stretch)
    base = time.perf_counter() - t0
    fast = to_uint8(render_magnetogram(patches, small, noise=0.0), clip, stretch)
    diff = int(np.abs(slow.astype(int) - fast.astype(int)).max())
    per_pixel = base / args.baseline_size**2

    g512 = DiskGeometry.centred(512)
    render = timed(
        lambda: to_uint8(render_magnetogram(patches, g512, noise=0.0), clip, stretch),
        args.repeat,
    )

    def run_generate(size: int, n: int, workers: int | None, jp2: bool = False) -> float:
        end = when + pd.Timedelta(hours=n - 1)
        config = SynthConfig(
            start=when.isoformat(),
            end=end.isoformat(),
            cadence="1h",
            size=size,
            seed=args.seed,
            jp2=jp2,
        )
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(Path(tmp) / "out", config, workers=workers, progress=False)
            return time.perf_counter() - t0

    png_1 = run_generate(512, args.n, 1)
    png_n = run_generate(512, args.n, args.workers)
    jp2 = run_generate(16, args.n_jp2, 1, jp2=True) if args.n_jp2 > 0 else math.nan

    visible = int((patches["lon"].abs() < 90).sum())
    print(
        f"synthetic Sun: seed {args.seed}, {when:%Y-%m-%d %H:%M}, {len(patches)} flux patches "
        f"({visible} on the visible hemisphere)"
    )
    print(
        f"baseline loop at {args.baseline_size} px: {base:.2f} s; "
        f"largest difference from fdflare's image: {diff} level(s) of 255"
    )
    print()
    header = f"{'method':<38}{'size':>6}{'images/s':>12}{'baseline img/s':>16}{'speed-up':>10}"
    print(header)
    print("-" * len(header))

    def row(name: str, size: int, seconds_per_image: float, note: str = "") -> None:
        base_s = per_pixel * size * size
        print(
            f"{name:<38}{size:>6}{1 / seconds_per_image:>12.2f}{1 / base_s:>16.5f}"
            f"{base_s / seconds_per_image:>9.0f}x{note}"
        )

    row(f"python loop (measured at {args.baseline_size} px)", args.baseline_size, base)
    row("render_magnetogram + to_uint8", 512, render)
    row("synth 512 PNG, 1 process", 512, png_1 / args.n)
    row(f"synth 512 PNG, {args.workers} worker processes", 512, png_n / args.n)
    if args.n_jp2 > 0:
        row("synth 4096 JP2 (render + encode)", 4096, jp2 / args.n_jp2)
    print()
    print(
        "baseline images/s at 512 and 4096 px: the loop's time per pixel times the pixels; "
        "fdflare rows include writing the files unless named render."
    )


if __name__ == "__main__":
    main()
