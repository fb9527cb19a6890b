"""``fdflare synth``: a synthetic full-disk magnetogram data set with its flare catalog."""

from __future__ import annotations

import argparse
from typing import Any

from fdflare.commands._common import add_json_option, positive_int

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


#: What synth writes inside --out (an input there would be overwritten).
WRITES = ("synth.json", "regions.csv", "catalog.csv", "geometry.csv", "images", "jp2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare synth``: one per field of its config, and the run's."""
    from fdflare.commands._config import add_options
    from fdflare.synth.config import SynthConfig

    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    group = p.add_argument_group("settings (written to DIR/synth.json)")
    # the config's end is the last image (included); the command's --end is excluded
    group.add_argument(
        "--end",
        default=None,
        metavar="TIME",
        help="end of the time range, EXCLUDED: images at START, START + CADENCE, ... before "
        "END (default: START + 28 days)",
    )
    p.set_defaults(_settings=add_options(group, SynthConfig, exclude=("end",)))
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes rendering images (default: up to 4, fewer for small runs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar; the summary still prints")
    add_json_option(p)


def _config(args: argparse.Namespace) -> Any:
    """The run's settings, checked before anything is written (errors name the option)."""
    from fdflare.core.errors import InputError
    from fdflare.core.settings import given_values, option_error, updated
    from fdflare.synth.config import SynthConfig, last_image_time

    try:
        cfg = updated(SynthConfig(), given_values(args, SynthConfig, args._settings))
        end = last_image_time(cfg.start, args.end, cfg.cadence)
        return updated(cfg, {"end": end}).resolved()
    except InputError as exc:
        raise option_error(exc, SynthConfig) from None


def run(args: argparse.Namespace) -> int:
    """Run the stage and print a summary."""
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.synth.writer import generate

    config = _config(args)
    check_output_dir(args.out, writes=WRITES)
    with output_lock(args.out, command="synth"):
        result = generate(
            args.out,
            config,
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
