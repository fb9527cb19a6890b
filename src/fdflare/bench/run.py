"""The benchmark run: the rows by name, the run over a selection, its table and JSON.

:func:`run_bench` measures the machine's ceilings once (:func:`measure_ceilings`), then each
row asked for, and returns ``{"machine": {...}, "rows": [...]}``, the document that
``fdflare bench --out`` writes (and ``--json`` prints); :func:`render_bench` prints it as a table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from fdflare.bench import ROW_NAMES
from fdflare.bench.measure import Ceilings, Row, Settings, machine_info, measure_ceilings
from fdflare.bench.stages import (
    label_row,
    loader_row,
    prepare_fits_binned_row,
    prepare_fits_row,
    prepare_row,
)
from fdflare.bench.steps import forecast_row, predict_row, train_row
from fdflare.core.table import render_table

__all__ = ["ROWS", "render_bench", "run_bench"]

RowFn = Callable[[Settings, Ceilings], Row]

#: Every row, in the order of the table.
ROWS: dict[str, RowFn] = {
    "label": label_row,
    "prepare": prepare_row,
    "prepare_fits": prepare_fits_row,
    "prepare_fits_binned": prepare_fits_binned_row,
    "loader": loader_row,
    "train_alexnet": partial(train_row, "alexnet"),
    "train_vgg16": partial(train_row, "vgg16"),
    "train_resnet34": partial(train_row, "resnet34"),
    "predict_latency": predict_row,
    "forecast_latency": forecast_row,
}
assert tuple(ROWS) == ROW_NAMES


def run_bench(names: Sequence[str] | None, settings: Settings) -> dict[str, Any]:
    """Measure the ceilings, then the rows ``names`` (all when ``None``), in table order.

    Returns:
        ``{"machine": {...}, "rows": [{"name", "unit", "baseline", "fdflare", "ratio",
        "limit", "note"}, ...]}``; ``machine`` holds the ceilings and the run's seconds.
    """
    import torch

    wanted = [n for n in ROWS if names is None or n in names]
    t0 = time.perf_counter()
    machine = machine_info(settings)
    if settings.progress:
        print("fdflare bench: measuring the ceilings (matmul, memory)", file=sys.stderr)
    ceilings = measure_ceilings(settings)
    machine["ceilings"] = ceilings.to_dict()
    rows = []
    for name in wanted:
        if settings.progress:
            print(f"fdflare bench: {name}", file=sys.stderr, flush=True)
        r0 = time.perf_counter()
        row = ROWS[name](settings, ceilings)
        record = row.to_dict()
        record["seconds"] = round(time.perf_counter() - r0, 2)
        rows.append(record)
    machine["seconds"] = round(time.perf_counter() - t0, 1)
    machine["torch_threads"] = torch.get_num_threads()
    return {"machine": machine, "rows": rows}


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return f"{value:,.1f}x" if value < 100 else f"{value:,.0f}x"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_bench(result: dict[str, Any], *, markdown: bool = False) -> str:
    """The table of a :func:`run_bench` result (one line per row, ``limit`` and ``note`` below)."""
    head = ["row", "unit", "study", "fdflare", "speed-up"]
    cells = [
        [
            r["name"],
            r["unit"],
            _num(r["baseline"]),
            _num(r["fdflare"]),
            _num(r["ratio"], "x"),
        ]
        for r in result["rows"]
    ]
    notes = []
    for r in result["rows"]:
        text = "; ".join(t for t in (r["limit"] and f"limit: {r['limit']}", r["note"]) if t)
        notes.append(f"{r['name']}: {text}")
    m = result["machine"]
    c = m.get("ceilings", {})
    where = m.get("gpu") or f"{m['cores']} CPU core(s)"
    if m.get("cpu_capability"):
        where += f", torch kernels {m['cpu_capability']}"
    if m.get("kernels_limited"):
        where += (
            " (limited by " + ", ".join(f"{k}={v}" for k, v in m["kernels_limited"].items()) + ")"
        )
    bf16 = c.get("bf16_gflops")
    bf16_text = (
        f"bf16 {bf16:,.0f} GFLOP/s"
        if bf16 is not None
        else "bf16 not measured (AVX-512 and AMX switched off for torch's kernels)"
        if m.get("kernels_limited")
        else "bf16 not measured (this CPU has no native bf16: it is emulated, far slower)"
    )
    notes.append(
        f"machine: {m['cpu']}, {where}, torch {m['torch']} ({m['torch_threads']} threads), "
        f"{m['date']}{', --quick (tiny sizes)' if m['quick'] else ''}; ceilings: fp32 matmul "
        f"{c.get('fp32_gflops', 0):,.0f} GFLOP/s, {bf16_text}, "
        f"memory {c.get('memory_gbs', 0):.1f} GB/s; {m['seconds']} s in all"
    )
    return render_table(head, cells, markdown=markdown, notes=notes)
