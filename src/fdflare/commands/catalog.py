"""``fdflare catalog``: a GOES flare catalog with locations, from HEK or from files."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from fdflare.commands._common import (
    add_deprecated_alias,
    add_http_options,
    add_json_option,
    nonnegative_float,
    positive_float,
    print_json,
)

HELP = "make a GOES flare catalog (start_time,goes_class,fl_lon,fl_lat) from HEK or flare lists"
DESCRIPTION = """\
Write the GOES flares that start in [--start, --end) (--start included, --end excluded,
as in every fdflare command) to --out in the study's catalog
schema start_time,goes_class,fl_lon,fl_lat (Stonyhurst degrees, west and north positive,
empty when unknown).

--source hek queries the Heliophysics Events Knowledgebase month by month for the flares
of NOAA SWPC's reports (retrying a failed month; finished months are kept in --cache so
a rerun resumes). --source FILE [FILE ...] reads flare lists instead: the study's CSV,
HEK-style CSV, NOAA SWPC CSV or NOAA's fixed-width goes-xrs-report_YYYY.txt files, in any
mix. A flare listed twice (same start time, peak flux and location), within a file or across
files, is kept once, and the summary says how many repeats were dropped.

exit status: 0 done; 2 bad arguments or input (nothing written); 3 HEK could not be queried
(after the retries; the months fetched stay in --cache for the rerun).

examples:
  fdflare catalog --start 2011-01-01 --end 2011-03-01 --source hek --min-class C1.0 \\
      --out flares.csv
  fdflare catalog --source goes-xrs-report_2011.txt goes-xrs-report_2012.txt \\
      --min-class C1.0 --out flares.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare catalog``."""
    p.add_argument(
        "--source",
        required=True,
        nargs="+",
        metavar="hek|FILE",
        help="'hek', or one or more flare list files",
    )
    p.add_argument("--out", required=True, help="output catalog CSV")
    p.add_argument(
        "--start",
        help="first flare start time kept, e.g. 2011-01-01 (UTC; required for hek)",
    )
    p.add_argument(
        "--end",
        help="flares starting before this time are kept (UTC; required for hek)",
    )
    p.add_argument(
        "--min-class",
        default=None,
        metavar="CLASS",
        help="lowest GOES class kept, e.g. C1.0 or M (default: all)",
    )
    p.add_argument(
        "--catalog-format",
        default="auto",
        choices=["auto", "study", "hek", "swpc", "noaa"],
        help="format of the source files (default: detected from each file's content)",
    )
    add_deprecated_alias(p, "--source-format", "--catalog-format", dest="catalog_format")
    hek = p.add_argument_group("HEK")
    hek.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="HEK base URL (default: $FDFLARE_HEK_URL, else https://www.lmsal.com/hek/her)",
    )
    add_deprecated_alias(hek, "--hek-url", "--base-url", dest="base_url")
    hek.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep fetched months here for reruns (default: OUT.parts/, removed on success)",
    )
    add_http_options(hek, retries=3)
    hek.add_argument(
        "--backoff",
        type=nonnegative_float,
        default=2.0,
        metavar="SECONDS",
        help="seconds before the first retry, doubled for each further one, with jitter; a "
        "server's Retry-After is honoured (default %(default)s)",
    )
    hek.add_argument(
        "--backoff-max",
        type=nonnegative_float,
        default=60.0,
        metavar="SECONDS",
        help="longest back-off (default %(default)s)",
    )
    add_deprecated_alias(hek, "--retry-wait", "--backoff", dest="backoff", type=nonnegative_float)
    add_deprecated_alias(
        hek,
        "--timeout",
        "--connect-timeout and --read-timeout",
        dest="legacy_timeout",
        type=positive_float,
    )
    add_json_option(p)
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar; the final summary still prints"
    )


def _time(value: str | None, flag: str) -> Any:
    from fdflare.core.timeparse import option_time

    return None if value is None else option_time(value, flag, whole_seconds=False)


def _remove_cache(cache: Path) -> None:
    for f in cache.glob("hek-*.json"):
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        cache.rmdir()  # only if nothing else is in it


def run(args: argparse.Namespace) -> int:
    """Run the stage and print a summary."""
    import pandas as pd

    from fdflare.acquire.catalog import read_catalog, select_flares, write_catalog
    from fdflare.core.errors import UsageError
    from fdflare.core.outputs import check_output_dir, check_output_file
    from fdflare.core.recipe import parse_threshold

    start, end = _time(args.start, "--start"), _time(args.end, "--end")
    if start is not None and end is not None and end <= start:
        raise UsageError(
            f"--end {args.end} is not after --start {args.start} (the range is [--start, --end): "
            "--start included, --end excluded)"
        )
    if args.min_class:
        parse_threshold(args.min_class, what="--min-class")  # malformed or below A1.0: exit 2
    sources = list(args.source)
    use_hek = any(s.lower() == "hek" for s in sources)
    if use_hek and len(sources) != 1:
        raise UsageError("--source hek cannot be combined with files")
    if use_hek and (start is None or end is None):
        raise UsageError("--source hek needs both --start and --end")
    files = [] if use_hek else sources
    check_output_file(args.out, inputs=files, option="--out")
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out.with_name(out.name + ".parts")
    if use_hek:
        check_output_dir(cache, inputs=[args.out], option="--cache")
    lines: list[str] = []

    if use_hek:
        from fdflare.acquire.hek import HEKFlareClient, fetch_hek_catalog

        legacy = getattr(args, "legacy_timeout", None)  # --timeout: both waits
        client = HEKFlareClient(
            retries=args.retries,
            backoff=args.backoff,
            backoff_max=args.backoff_max,
            connect_timeout=legacy or args.connect_timeout,
            timeout=legacy or args.read_timeout,
        )
        catalog = fetch_hek_catalog(
            start,
            end,
            min_class=args.min_class,
            url=args.base_url,
            cache_dir=cache,
            client=client,
            progress=not (args.quiet or args.json),
        )
        c = catalog.attrs["counts"]
        lines.append(
            f"  HEK {catalog.attrs['source']}: {c['records']} records in {c['months']} "
            f"month(s) ({c['months_cached']} from the cache)"
        )
        lines.append(
            f"  locations: {c['location_hgs']} from hgs, {c['location_hpc']} converted from "
            f"hpc, {c['off_disk']} off the disk, {c['placeholder_locations']} (0,0) "
            "placeholders"
        )
        left = [
            f"{c['bad_time']} without a valid start time" if c["bad_time"] else "",
            f"{c['unclassified']} without a GOES class" if c["unclassified"] else "",
            f"{c['bad_class']} with a malformed class" if c["bad_class"] else "",
        ]
        if any(left):
            lines.append("  records left out: " + ", ".join(x for x in left if x))
    else:
        parts = []
        for s in sources:
            cat = read_catalog(s, fmt=args.catalog_format)
            extra = []
            if cat.attrs.get("duplicates_dropped"):
                extra.append(f"{cat.attrs['duplicates_dropped']} duplicate rows dropped")
            if cat.attrs.get("unclassified"):
                extra.append(f"{cat.attrs['unclassified']} records without an X-ray class left out")
            note = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"  {s}: {len(cat)} flares, format {cat.attrs.get('format')}{note}")
            parts.append(cat)
        merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        catalog = select_flares(merged, start, end, args.min_class)
        if args.cache:
            lines.append("  note: --cache applies to --source hek only")
        c = catalog.attrs["counts"]
        within = sum(int(p.attrs.get("duplicates_dropped", 0)) for p in parts)
        if within or c["duplicates"]:
            lines.append(
                f"  duplicates dropped: {within + c['duplicates']} ({within} within files, "
                f"{c['duplicates']} across files)"
            )

    summary = [
        f"{c['outside_range']} outside the time range" if c["outside_range"] else "",
        f"{c['below_min_class']} below {args.min_class}" if c["below_min_class"] else "",
        f"{c['duplicates']} duplicates removed" + (" across files" if files else "")
        if c["duplicates"]
        else "",
    ]
    if any(summary):
        lines.append("  " + ", ".join(x for x in summary if x))
    write_catalog(catalog, out)
    if sources[0].lower() == "hek" and not args.cache:
        _remove_cache(out.with_name(out.name + ".parts"))

    span = (
        f"{catalog['start_time'].min():%Y-%m-%d %H:%M} .. {catalog['start_time'].max():%Y-%m-%d %H:%M}"
        if len(catalog)
        else "no flares"
    )
    if args.json:
        print_json(
            {
                "out": str(out),
                "flares": int(c["kept"]),
                "first": None if not len(catalog) else catalog["start_time"].min().isoformat(),
                "last": None if not len(catalog) else catalog["start_time"].max().isoformat(),
                "unknown_location": int(c["unknown_location"]),
                "counts": dict(c),
                "notes": [line.strip() for line in lines],
            }
        )
        return 0
    print(f"wrote {out}: {c['kept']} flares ({span}), {c['unknown_location']} without a location")
    for line in lines:
        print(line)
    return 0
