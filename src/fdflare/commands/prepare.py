"""``fdflare prepare``: Helioviewer JP2 tree -> small 8-bit images plus disk geometry."""

from __future__ import annotations

import argparse
import sys

HELP = "decode a JP2 tree to small PNG/JPG images and read each image's disk geometry"
DESCRIPTION = """\
Convert every SRC_DIR/<rel>/<name>.jp2 to --size x --size 8-bit images at DIR/<rel>/<name>.png
(or .jpg: the study's layout), decoding at reduced resolution and area-averaging the rest of
the way. Writes DIR/geometry.csv (observation time, disk centre and radius in output pixels,
from each JP2's Helioviewer XML header) and DIR/bad_files.csv (files that could not be read;
the batch carries on and the exit status is 1). Re-running skips up-to-date images.
With --array-store, also packs all images into DIR/images.npy (N x size x size, uint8) with
DIR/images_index.csv (row -> path) for fast training. See docs/prepare.md.

example:
  fdflare prepare hmi_jp2/ --out hmi_512/ --format jpg
  fdflare prepare hmi_jp2/ --out hmi_256/ --size 256 --array-store --workers 8
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare prepare``."""
    p.add_argument(
        "src", metavar="SRC_DIR", help="root of the JP2 tree (e.g. from fdflare download)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (may be SRC_DIR)")
    p.add_argument(
        "--size",
        type=_positive_int,
        default=512,
        help="output side in pixels (default %(default)s)",
    )
    p.add_argument(
        "--format",
        choices=["png", "jpg"],
        default="png",
        help="png (lossless, default) or jpg (the study's layout)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="processes to use (default: all available CPUs)",
    )
    p.add_argument(
        "--array-store",
        action="store_true",
        help="also pack the images into DIR/images.npy with DIR/images_index.csv",
    )
    p.add_argument(
        "--full-decode",
        action="store_true",
        help="decode at full resolution then area-resize, as the study did (40-130x slower)",
    )
    p.add_argument(
        "--jpeg-quality",
        type=int,
        default=95,
        metavar="Q",
        help="JPEG quality for --format jpg (default %(default)s, the study's)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args: argparse.Namespace) -> int:
    """Run the stage; exit status 1 when some files could not be prepared."""
    from fdflare.prepare.pipeline import BAD_FILES_FILE, GEOMETRY_FILE, prepare

    result = prepare(
        args.src,
        args.out,
        size=args.size,
        fmt=args.format,
        workers=args.workers,
        full_decode=args.full_decode,
        jpeg_quality=args.jpeg_quality,
        array_store=args.array_store,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(
            f"{result.total} JP2 file(s): {result.prepared} prepared, {result.up_to_date} up to "
            f"date, {result.failed} failed; {len(result.geometry)} image(s) in "
            f"{result.out / GEOMETRY_FILE}"
        )
        if result.ignored:
            print(f"ignored {result.ignored} file(s) that are not .jp2 under {args.src}")
        if result.kept:
            print(
                f"kept {result.kept} geometry row(s) of images whose JP2 is no longer in {args.src}"
            )
        if result.store is not None:
            extra = (
                f" ({result.store_excluded} of another size left out)"
                if result.store_excluded
                else ""
            )
            print(f"array store: {result.store}{extra}")
    if result.failed:
        print(
            f"fdflare prepare: {result.failed} file(s) could not be prepared; see "
            f"{result.out / BAD_FILES_FILE}",
            file=sys.stderr,
        )
        return 1
    return 0
