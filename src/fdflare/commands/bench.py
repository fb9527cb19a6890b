"""``fdflare bench``: every stage against the study's way of doing it, in the same run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fdflare.bench import ROW_NAMES
from fdflare.commands._common import (
    accelerator,
    add_accelerator_option,
    add_deprecated_alias,
    add_json_flag_or_legacy_file,
)

HELP = "measure each stage against the study's way of doing it (label, prepare, loader, train, predict)"
DESCRIPTION = f"""\
Run each stage the study's way and fdflare's way on the same data in the same run and
print a table: the study's figure, fdflare's, the speed-up, and (below the table) what
limits each row, with a ceiling measured on this machine in this run (matmul peak, memory
bandwidth, decode time). --quick uses tiny sizes and few repeats (25 s on 2 idle CPU
cores; say so when quoting it). The full run takes about 5 minutes on 2 CPU cores. See
docs/performance.md.

rows: {", ".join(ROW_NAMES[:4])},
      {", ".join(ROW_NAMES[4:])}

--out FILE also writes {{"machine": {{...}}, "rows": [...]}} to FILE; --json prints that object
on stdout instead of the table (--json FILE, the old spelling of --out FILE, still works for
one release with a warning).

exit status: 0 done; 2 bad arguments (an unknown row, --accelerator gpu without a GPU, an
unwritable --out file), checked before any work.

example:
  fdflare bench --quick
  fdflare bench --only label prepare --out bench.json
  fdflare bench --accelerator gpu --only train_alexnet train_vgg16 train_resnet34
"""


def _row(text: str) -> str:
    if text not in ROW_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown row {text!r}; the rows are {', '.join(ROW_NAMES)}"
        )
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare bench``."""
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few repeats: under a minute on 2 CPU cores (said in the notes)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        type=_row,
        metavar="ROW",
        help=f"run only these rows ({', '.join(ROW_NAMES)})",
    )
    add_accelerator_option(
        p, help="where the rows run (auto: a CUDA GPU where there is one, else the CPU)"
    )
    add_deprecated_alias(p, "--device", "--accelerator", dest="accelerator", type=accelerator)
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help='also write {"machine": {...}, "rows": [...]} to FILE',
    )
    add_json_flag_or_legacy_file(p)
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument(
        "--quiet", action="store_true", help="no line per row while it runs; the table still prints"
    )


def run(args: argparse.Namespace) -> int:
    """Run the rows asked for, print the table, write the JSON."""
    import json

    from fdflare.core.errors import UsageError
    from fdflare.core.io import write_text_atomic
    from fdflare.core.outputs import check_output_file

    out = check_output_file(args.out, option="--out") if args.out else None
    if out is not None and out.is_file() and out.stat().st_size > 0:
        _check_replaceable(out, args.out)
    device = {"gpu": "cuda"}.get(args.accelerator, args.accelerator)
    if device not in ("auto", "cpu", "cuda"):  # checked as the option was read: it is here
        raise UsageError(f"--accelerator {device}: bench measures on cpu or a CUDA GPU (gpu)")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"

    from fdflare.bench.measure import Settings
    from fdflare.bench.run import render_bench, run_bench

    names = None if args.only is None else list(dict.fromkeys(args.only))
    settings = Settings(quick=args.quick, device=device, progress=not (args.quiet or args.json))
    result = run_bench(names, settings)
    if out is not None:
        write_text_atomic(out, json.dumps(result, indent=2, allow_nan=False) + "\n")
    if args.json:
        from fdflare.commands._common import print_json

        print_json({**result, "out": None if out is None else str(out)})
        return 0
    print(render_bench(result, markdown=args.markdown))
    if out is not None:
        print(f"wrote {out}")
    return 0


def _check_replaceable(path: Path, shown: str) -> None:
    """Refuse to overwrite a file that is not an earlier ``fdflare bench --out`` result."""
    from fdflare.core.errors import OutputError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if not (isinstance(data, dict) and {"machine", "rows"} <= set(data)):
        raise OutputError(
            f"--out {shown} exists and is not a result of fdflare bench; refusing to overwrite it"
        )
