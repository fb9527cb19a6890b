"""``fdflare label``: hourly instances labelled from a flare catalog, in 4 quarterly folds."""

from __future__ import annotations

import argparse

HELP = "label image instances from a GOES flare catalog and split them into quarterly folds"
DESCRIPTION = """\
Label every instance time t (from --start, every --cadence, before --end) that has an image
with the largest flare starting in (t, t + window - 1 s], and split the instances into 4 folds
by calendar quarter. Writes DIR/Fold{k}_train.csv and DIR/Fold{k}_val.csv (the study's format:
label,goes_class with the binary target), DIR/labels.csv (the full table) and
DIR/summary.json. The defaults reproduce the study (2010-12-01 .. 2018-12-30 23:00, >= M1.0).

example:
  fdflare label --catalog flares.csv --images hmi_jpgs_512/ --mode M --out labels/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare label``."""
    from fdflare.label import LabelConfig

    d = LabelConfig()
    p.add_argument("--catalog", required=True, help="flare catalog CSV (study, HEK-style or SWPC)")
    p.add_argument(
        "--images",
        required=True,
        help="image directory tree (YYYY/MM/DD/HMI.m*.jpg|png|jp2) or a text file of relative paths",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--mode", default=d.mode, help="M: >= M1.0 is positive; C: >= C1.0 (default %(default)s)"
    )
    p.add_argument("--start", default=d.start, help="first instance time (default %(default)s)")
    p.add_argument(
        "--end", default=d.end, help="instances strictly before this time (default %(default)s)"
    )
    p.add_argument("--cadence", default=d.cadence, help="instance spacing (default %(default)s)")
    p.add_argument(
        "--window", default=d.window, help="prediction window length (default %(default)s)"
    )
    p.add_argument(
        "--gap-hours",
        type=float,
        default=None,
        metavar="N",
        help="purge training instances whose window overlaps the validation quarter or that lie "
        "within N hours after it (off by default, as the study)",
    )
    p.add_argument(
        "--catalog-format", default="auto", choices=["auto", "study", "hek", "swpc", "noaa"]
    )


def run(args: argparse.Namespace) -> int:
    """Run the stage and print a summary."""
    from fdflare.acquire.catalog import read_catalog
    from fdflare.core.errors import InputError
    from fdflare.label import LabelConfig, make_labels, read_image_list, write_labels

    config = LabelConfig(
        start=args.start,
        end=args.end,
        cadence=args.cadence,
        window=args.window,
        mode=args.mode,
        gap_hours=args.gap_hours,
    )
    catalog = read_catalog(args.catalog, fmt=args.catalog_format)
    names = read_image_list(args.images)
    result = make_labels(catalog, names, config)
    if result.counts["instances"] == 0:
        raise InputError(
            f"no image matches an instance time between {config.start} and {config.end} "
            f"({len(names)} image name(s) found)",
            path=args.images,
        )
    write_labels(result, args.out, config)
    c = result.counts
    print(
        f"labelled {c['instances']} instances ({c['positives']} positive, >= {config.mode}) "
        f"from {c['flares_in_catalog']} flares; {c['instances_without_image']} instance times "
        f"had no image"
    )
    for k, (train, val) in result.folds.items():
        extra = f", {result.purged[k]} training instances purged" if k in result.purged else ""
        print(
            f"  fold {k}: train {len(train)} ({int(train['target'].sum())} positive), "
            f"val {len(val)} ({int(val['target'].sum())} positive){extra}"
        )
    for note in result.notes:
        print(f"  note: {note}")
    print(
        f"wrote {args.out}/Fold{{1..{len(result.folds)}}}_{{train,val}}.csv, labels.csv, summary.json"
    )
    return 0
