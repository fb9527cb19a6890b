"""``fdflare prepare``: Helioviewer JP2 tree -> small 8-bit images plus disk geometry."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fdflare.commands._common import add_deprecated_alias, add_json_option, positive_int

HELP = "decode a JP2 tree to small PNG/JPG images and read each image's disk geometry"
DESCRIPTION = """\
Convert every SRC/<rel>/<name>.jp2 (Helioviewer) or .fits (JSOC's field in gauss, turned
north up and scaled by --fits-scale) to --image-size x --image-size 8-bit images at
DIR/<rel>/<name>.png (or .jpg: the study's layout), decoding at reduced resolution and
area-averaging the rest of the way. Writes DIR/geometry.csv (observation time, disk centre
and radius in output pixels, B0, from each file's header) and DIR/bad_files.csv
(files and folders that could not be read; the batch carries on and the exit status is 1).
Re-running skips up-to-date images. Also packs all images into DIR/images.npy
(N x size x size, uint8) with DIR/images_index.csv (row -> path), the array store that
fdflare train and predict read by default (about 7x the per-core rate of decoding the image
files; --no-array-store: the image files only). See docs/prepare.md.

exit status: 0 done; 1 done, but some files or folders could not be read (listed in
DIR/bad_files.csv), or SRC holds no .jp2 file; 2 bad arguments.

example:
  fdflare prepare --source hmi_jp2/ --out hmi_512/ --format jpg
  fdflare prepare --source hmi_jp2/ --out hmi_256/ --image-size 256 --workers 8
"""

#: What prepare writes inside --out besides the images (an input there would be overwritten).
WRITES = ("geometry.csv", "bad_files.csv", "images.npy", "images_index.csv")


def _jpeg_quality(text: str) -> int:
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"expected 1 to 100, got {value}")
    return value


def _fits_scale(text: str) -> str:
    """``helioviewer`` or ``clip:N`` with N > 0 gauss (checked here, before any import)."""
    value = text.strip().lower()
    if value == "helioviewer":
        return value
    if value.startswith("clip:"):
        try:
            clip = float(value[5:])
        except ValueError:
            clip = float("nan")
        if clip > 0 and clip != float("inf"):
            return value
    raise argparse.ArgumentTypeError(f"expected helioviewer or clip:N (N gauss > 0), got {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare prepare``."""
    p.add_argument(
        "--source",
        metavar="SRC",
        default=None,
        help="folder of the JP2 tree (e.g. from fdflare download); required",
    )
    # the old spelling: `fdflare prepare SRC_DIR --out DIR` (deprecated, warns)
    p.add_argument("src", nargs="?", default=None, metavar="SRC_DIR", help=argparse.SUPPRESS)
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (another than --source; it may lie inside it)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=512,
        metavar="N",
        help="output width and height in pixels (default %(default)s)",
    )
    add_deprecated_alias(p, "--size", "--image-size", dest="image_size", type=positive_int)
    p.add_argument(
        "--format",
        choices=["png", "jpg"],
        default="png",
        help="png (lossless, default) or jpg (the study's layout)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes (default: all available CPUs)",
    )
    p.add_argument(
        "--array-store",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also pack the images into DIR/images.npy with DIR/images_index.csv, the fast "
        "path of train and predict (default; --no-array-store: the image files only)",
    )
    p.add_argument(
        "--full-decode",
        action="store_true",
        help=(
            "decode at full resolution then area-resize, as the study did (40-130x slower); "
            "FITS: read the whole image with astropy and resize it with Pillow"
        ),
    )
    p.add_argument(
        "--jpeg-quality",
        type=_jpeg_quality,
        default=95,
        metavar="Q",
        help="JPEG quality for --format jpg, 1 to 100 (default %(default)s, the study's)",
    )
    p.add_argument(
        "--fits-scale",
        type=_fits_scale,
        default="helioviewer",
        metavar="NAME",
        help="how FITS magnetograms (gauss) become 8 bits: helioviewer (+-250 G, Helioviewer's "
        "grey levels, default) or clip:N (+-N gauss); see docs/prepare.md",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar; the summary still prints")
    add_json_option(p)


def _source(args: argparse.Namespace) -> Path:
    """The source folder, from --source or the deprecated positional, checked."""
    from fdflare.core.errors import MissingDataError, UsageError

    if args.src is not None and args.source is not None:
        raise UsageError(
            f"give the source once: --source {args.source} (the positional {args.src} is the "
            "deprecated spelling of --source)"
        )
    if args.src is not None:
        print(
            "fdflare prepare: warning: the positional SRC_DIR is deprecated and will be removed "
            "in the next release; use --source SRC_DIR",
            file=sys.stderr,
        )
    given = args.source if args.source is not None else args.src
    if given is None:
        raise UsageError("the following argument is required: --source SRC")
    src = Path(given)
    if src.is_file():
        raise UsageError(f"--source {given} is a file; expected a folder of JP2 files")
    if not src.is_dir():
        raise MissingDataError(f"--source {given}: folder not found")
    if not os.access(src, os.R_OK | os.X_OK):
        raise UsageError(f"--source {given}: the folder cannot be read (permission denied)")
    return src


def run(args: argparse.Namespace) -> int:
    """Run the stage; exit status 1 when some files could not be prepared or none was found."""
    from fdflare.core.outputs import check_output_dir, output_lock
    from fdflare.prepare.pipeline import BAD_FILES_FILE, GEOMETRY_FILE, prepare

    src = _source(args)
    check_output_dir(args.out, inputs=[src], writes=WRITES)
    with output_lock(args.out, command="prepare"):
        result = prepare(
            src,
            args.out,
            size=args.image_size,
            fmt=args.format,
            workers=args.workers,
            full_decode=args.full_decode,
            jpeg_quality=args.jpeg_quality,
            array_store=args.array_store,
            progress=not (args.quiet or args.json),
            fits_scale=args.fits_scale,
        )
    kind = (
        "JP2"
        if not result.fits
        else "FITS"
        if result.fits == result.total
        else f"JP2 and FITS ({result.fits} FITS)"
    )
    lines = [
        f"{result.total} {kind} file(s): {result.prepared} prepared, {result.up_to_date} up to "
        f"date, {result.failed} failed; {len(result.geometry)} image(s) in "
        f"{result.out / GEOMETRY_FILE}"
    ]
    if result.ignored:
        lines.append(f"ignored {result.ignored} file(s) that are not .jp2 or FITS under {src}")
    if result.kept:
        lines.append(
            f"kept {result.kept} geometry row(s) of images whose JP2 is no longer in {src}"
        )
    if result.store is not None:
        extra = (
            f" ({result.store_excluded} of another size left out)" if result.store_excluded else ""
        )
        lines.append(f"array store: {result.store}{extra}")
    if args.json:
        from fdflare.commands._common import print_json

        print_json(
            {
                "out": str(result.out),
                "geometry": str(result.out / GEOMETRY_FILE),
                "images": len(result.geometry),
                "files": result.total,
                "fits": result.fits,
                "prepared": result.prepared,
                "up_to_date": result.up_to_date,
                "failed": result.failed,
                "ignored": result.ignored,
                "kept": result.kept,
                "unreadable": list(result.unreadable),
                "upsampled": result.upsampled,
                "array_store": None if result.store is None else str(result.store),
                "store_excluded": result.store_excluded,
                "bad_files": str(result.out / BAD_FILES_FILE)
                if result.failed or result.unreadable
                else None,
            }
        )
    else:
        print("\n".join(lines))
    if result.upsampled:
        print(
            f"fdflare prepare: warning: {result.upsampled} image(s) come from files smaller than "
            f"--image-size {args.image_size} (the smallest {result.smallest_source}): they were "
            "upsampled, which adds no detail",
            file=sys.stderr,
        )
    status = 0
    if result.unreadable:
        shown = ", ".join(result.unreadable[:5]) + (" ..." if len(result.unreadable) > 5 else "")
        print(
            f"fdflare prepare: {len(result.unreadable)} folder(s) or link(s) under {src} could "
            f"not be read (see {result.out / BAD_FILES_FILE}), so any JP2 in them is missing: "
            f"{shown}",
            file=sys.stderr,
        )
        status = 1
    if result.failed:
        print(
            f"fdflare prepare: {result.failed} file(s) or folder(s) could not be prepared; see "
            f"{result.out / BAD_FILES_FILE}",
            file=sys.stderr,
        )
        status = 1
    if result.total == 0 and not result.unreadable:
        print(
            f"fdflare prepare: warning: no .jp2 file under {src}"
            + (f" ({result.ignored} other file(s) ignored)" if result.ignored else "")
            + "; nothing prepared",
            file=sys.stderr,
        )
        status = 1
    return status
