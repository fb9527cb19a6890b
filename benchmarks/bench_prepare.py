"""Benchmark: reduced-resolution JPEG 2000 decode vs full decode + area resize.

Writes one 4096 x 4096 Helioviewer-style JP2 (a synthetic magnetogram, lossy like
Helioviewer's files, or lossless with --lossless) to a temporary folder, then times, in the
same run:

* baseline: full decode + area (box) resize to --size, what the study did;
* reduced:  ``fdflare.prepare.decode.decode_jp2`` (decode at 2**k reduced resolution + box);
* header:   ``fdflare.prepare.jp2.read_jp2_header`` (the geometry's input; nothing decoded).

and prints a table of median times and the ratio to the baseline.

usage: python benchmarks/bench_prepare.py [--repeat 7] [--size 512] [--lossless]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from fdflare.prepare.decode import decode_jp2
from fdflare.prepare.jp2 import read_jp2_header, write_helioviewer_jp2


def synthetic_jp2(path: Path, n: int, lossless: bool) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(n, dtype=np.float32)[:, None]
    x = np.arange(n, dtype=np.float32)[None, :]
    c, r = n / 2 - 0.5, 0.47 * n
    inside = (x - c) ** 2 + (y - c) ** 2 <= r * r
    field = 128 + rng.normal(0, 6, (n, n)).astype(np.float32)
    data = np.where(inside, np.clip(np.rint(field), 1, 255), 0).astype(np.uint8)
    cdelt = 0.504 * 4096 / n
    header = {
        "DATE-OBS": "2012-03-07T00:00:05.200",
        "NAXIS1": n,
        "NAXIS2": n,
        "CRPIX1": c + 1,
        "CRPIX2": n - c,
        "CDELT1": cdelt,
        "CDELT2": cdelt,
        "CROTA2": 0.0,
        "RSUN_OBS": r * cdelt,
    }
    layers = None if lossless else [160, 80, 40, 20, 10]
    write_helioviewer_jp2(path, data, header, num_resolutions=6, quality_layers=layers)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up the file cache and the decoder
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--source-size", type=int, default=4096)
    parser.add_argument("--lossless", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "HMI.m2012.03.07_00.00.00.jp2"
        synthetic_jp2(path, args.source_size, args.lossless)

        def baseline() -> np.ndarray:
            with Image.open(path) as im:
                im.load()
                return np.asarray(im.resize((args.size, args.size), Image.Resampling.BOX))

        def reduced() -> np.ndarray:
            return decode_jp2(path, args.size)[0]

        k = decode_jp2(path, args.size)[1]
        diff = np.abs(reduced().astype(int) - baseline().astype(int))
        rows = [
            ("full decode + area resize (baseline)", median_ms(baseline, args.repeat)),
            (f"reduced decode (k={k}) + area resize", median_ms(reduced, args.repeat)),
            (
                "header only (read_jp2_header)",
                median_ms(lambda: read_jp2_header(path), args.repeat),
            ),
        ]
        size_mb = path.stat().st_size / 1e6

    kind = "lossless" if args.lossless else "lossy"
    print(
        f"{args.source_size} x {args.source_size} {kind} JP2 ({size_mb:.1f} MB) -> "
        f"{args.size} x {args.size}, median of {args.repeat}"
    )
    print(f"{'method':<40} {'ms':>10} {'speed-up':>10}")
    base = rows[0][1]
    for name, ms in rows:
        print(f"{name:<40} {ms:>10.1f} {base / ms:>9.1f}x")
    print(
        f"pixel difference reduced vs baseline: mean {diff.mean():.2f}, max {diff.max()} (of 255)"
    )


if __name__ == "__main__":
    main()
