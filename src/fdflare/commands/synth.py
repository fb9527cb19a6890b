"""``fdflare synth``: a synthetic full-disk magnetogram data set with its flare catalog."""

from __future__ import annotations

import argparse
from typing import Any

from fdflare.commands._common import (
    add_deprecated_alias,
    add_json_option,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
)

HELP = "write SYNTHETIC magnetograms and a matching flare catalog (demos, tests, benchmarks)"
DESCRIPTION = """\
Write a synthetic data set in the layout of prepared data, so that every later stage
(label, train, predict, spatial) runs on it unchanged, in minutes and offline:

  DIR/images/YYYY/MM/DD/HMI.mYYYY.MM.DD_HH.MM.SS.png   8-bit line-of-sight magnetograms
  DIR/geometry.csv    path,date_obs,center_x,center_y,radius_px,... (written last)
  DIR/catalog.csv     start_time,goes_class,fl_lon,fl_lat (flares until END + 24 h)
  DIR/regions.csv     the active regions behind the images (ground truth)
  DIR/synth.json      the settings; rerun with the same ones to resume
  DIR/jp2/...jp2      with --jp2: Helioviewer-style JPEG 2000 files for `fdflare prepare`

The data are SYNTHETIC: bipolar active regions that emerge, rotate differentially and
decay, flaring at rates that rise with their flux and complexity. They are for demos,
tests and benchmarks, never for science. The same --seed always gives the same Sun and
byte-identical files. --start is included and --end excluded, as in every fdflare command:
--start 2011-01-01 --end 2011-01-29 --cadence 1h gives 28 x 24 = 672 images.
See docs/synth.md.

example:
  fdflare synth --out synth/ --start 2011-01-01T00:00 --end 2011-01-29T00:00 --cadence 1h
  fdflare label --catalog synth/catalog.csv --images synth/images --out synth/labels
"""


#: Settings of :class:`~fdflare.synth.config.SynthConfig` -> the option that sets them.
OPTIONS = {
    "start": "--start",
    "end": "--end",
    "cadence": "--cadence",
    "size": "--image-size",
    "fmt": "--format",
    "seed": "--seed",
    "flare_rate": "--flare-rate",
    "region_rate": "--region-rate",
    "b0": "--b0",
    "noise": "--noise",
    "stretch": "--stretch",
    "clip": "--clip",
    "missing": "--missing",
    "unlocated": "--unlocated",
    "jp2_size": "--jp2-size",
}

#: What synth writes inside --out (an input there would be overwritten).
WRITES = ("synth.json", "regions.csv", "catalog.csv", "geometry.csv", "images", "jp2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare synth``."""
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--start", default="2011-01-01T00:00", help="first image time, UTC (default %(default)s)"
    )
    p.add_argument(
        "--end",
        default=None,
        help="end of the time range, EXCLUDED: images at START, START + CADENCE, ... before "
        "END (default: START + 28 days)",
    )
    p.add_argument(
        "--cadence", default="1h", help="image spacing, e.g. 1h, 12min (default %(default)s)"
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=512,
        metavar="N",
        help="image width and height in pixels, 16 to 16384 (default %(default)s)",
    )
    add_deprecated_alias(p, "--size", "--image-size", dest="image_size", type=positive_int)
    p.add_argument(
        "--format",
        dest="fmt",
        default="png",
        choices=["png", "jpg"],
        help="image format (default %(default)s; jpg is lossy, quality 95)",
    )
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="the synthetic Sun (default %(default)s)",
    )
    p.add_argument(
        "--flare-rate",
        type=nonnegative_float,
        default=1.0,
        metavar="X",
        help="multiplies every region's flare rate; 1 gives roughly 15-40 %% of 24 h windows "
        "with a flare >= M1.0 (default %(default)s)",
    )
    p.add_argument(
        "--region-rate",
        type=nonnegative_float,
        default=1.5,
        metavar="X",
        help="active regions emerging per day over the whole Sun (default %(default)s)",
    )
    p.add_argument(
        "--b0",
        default="0",
        metavar="DEG|auto",
        help="observer's heliographic latitude in degrees, or 'auto' for the Earth's at each "
        "date (default %(default)s)",
    )
    p.add_argument(
        "--noise",
        type=nonnegative_float,
        default=10.0,
        metavar="G",
        help="white noise, gauss per pixel (default %(default)s)",
    )
    p.add_argument(
        "--stretch",
        type=nonnegative_float,
        default=8.0,
        metavar="S",
        help="asinh stretch of the 8-bit scale, 0 = Helioviewer's linear scale (default %(default)s)",
    )
    p.add_argument(
        "--clip",
        type=positive_float,
        default=1500.0,
        metavar="G",
        help="gauss mapped to 1 and 255 (default %(default)s)",
    )
    p.add_argument(
        "--missing",
        type=probability,
        default=0.0,
        metavar="FRACTION",
        help="fraction of image times left out, as data gaps (default %(default)s)",
    )
    p.add_argument(
        "--unlocated",
        type=probability,
        default=0.02,
        metavar="FRACTION",
        help="fraction of catalog flares without a location, as in real catalogs "
        "(default %(default)s)",
    )
    p.add_argument(
        "--jp2",
        action="store_true",
        help="also write Helioviewer-style JPEG 2000 files with the XML header under DIR/jp2/",
    )
    p.add_argument(
        "--jp2-size",
        type=positive_int,
        default=4096,
        metavar="N",
        help="JPEG 2000 width and height, 64 to 16384 (default %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes rendering images (default: up to 4, fewer for small runs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar; the summary still prints")
    add_json_option(p)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings, validated before anything is written (errors name the option)."""
    from fdflare.core.errors import InputError, UsageError
    from fdflare.synth.config import SynthConfig, last_image_time

    settings: dict[str, Any] = {
        "start": args.start,
        "cadence": args.cadence,
        "size": args.image_size,
        "seed": args.seed,
        "flare_rate": args.flare_rate,
        "region_rate": args.region_rate,
        "fmt": args.fmt,
        "b0": args.b0,
        "noise": args.noise,
        "clip": args.clip,
        "stretch": args.stretch,
        "missing": args.missing,
        "unlocated": args.unlocated,
        "jp2": args.jp2,
        "jp2_size": args.jp2_size,
    }
    try:
        settings["end"] = last_image_time(args.start, args.end, args.cadence)
        SynthConfig(**settings).resolved()
    except InputError as exc:
        if exc.path is None and exc.field in OPTIONS:
            raise UsageError(f"{OPTIONS[exc.field]}: {exc.message}") from None
        raise
    return settings


def run(args: argparse.Namespace) -> int:
    """Run the stage and print a summary."""
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.synth.writer import generate

    settings = _settings(args)
    check_output_dir(args.out, writes=WRITES)
    with output_lock(args.out, command="synth"):
        result = generate(
            args.out,
            **settings,
            workers=args.workers,
            progress=False if args.quiet or args.json else None,
        )
    c = result.counts
    cfg = result.config
    n_img = len(result.geometry)
    if args.json:
        from fdflare.commands._common import print_json

        print_json(
            {
                "out": str(result.out),
                "images": n_img,
                "start": cfg.start,
                "end": cfg.end,
                "cadence": cfg.cadence,
                "written": result.written,
                "skipped": result.skipped,
                "missing": result.missing,
                "regions": len(result.regions),
                "counts": dict(c),
            }
        )
        return 0
    print(
        f"synthetic data in {result.out}: {n_img} image(s) {cfg.start} .. {cfg.end} every "
        f"{cfg.cadence} ({result.written} written, {result.skipped} already there, "
        f"{result.missing} left out as gaps), {len(result.regions)} active regions"
    )
    from fdflare.core.disk import NEAR_LIMB_DEG

    print(
        f"catalog: {c['flares']} flares (C {c['C']}, M {c['M']}, X {c['X']}); near-limb "
        f"|lon| > {NEAR_LIMB_DEG:g}: {c['near_limb']}, behind the limb |lon| > 90: {c['behind_limb']}, "
        f"unlocated: {c['unlocated']}"
    )
    if c["hourly_instances"]:
        n = c["hourly_instances"]
        print(
            f"hourly 24 h windows with a flare >= M1.0: {c['positive_M']} of {n} "
            f"({100 * c['positive_M'] / n:.0f} %); >= C1.0: {c['positive_C']} "
            f"({100 * c['positive_C'] / n:.0f} %)"
        )
    return 0
