"""What the benchmark rows share: the row record, timers, the machine and its ceilings.

A row compares the study's way of doing a stage with fdflare's, measured in the same run
on the same data. Its ``ratio`` is always a speed-up (above 1: fdflare is faster), whatever
the unit: for a time it is ``baseline / fdflare``, for a rate ``fdflare / baseline``. Its
``limit`` names what bounds the row, with a ceiling measured on this machine in this run
(:class:`Ceilings`): the matmul peak, the memory bandwidth, or the time of the one step
that cannot be made faster here (a decode).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Ceilings",
    "Row",
    "Settings",
    "best_rate",
    "machine_info",
    "measure_ceilings",
    "median_seconds",
]


@dataclass
class Settings:
    """How one benchmark run is sized.

    Args:
        quick: tiny sizes and few repeats (under a minute on 2 CPU cores).
        device: ``cpu`` or ``cuda``.
        progress: print a line on stderr as each row starts.
    """

    quick: bool = False
    device: str = "cpu"
    progress: bool = True

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` under ``--quick``, else ``full``."""
        return quick if self.quick else full


@dataclass
class Row:
    """One line of the benchmark table (the ``rows`` of the JSON output).

    ``baseline`` and ``fdflare`` are in ``unit``; ``higher_is_better`` says whether the unit
    is a rate (img/s) or a time (s, ms). Rows that could not run keep ``None`` values and
    say why in ``note``.
    """

    name: str
    unit: str
    baseline: float | None
    fdflare: float | None
    limit: str
    note: str
    higher_is_better: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """The speed-up of fdflare over the baseline (above 1: faster)."""
        if self.baseline is None or self.fdflare is None or self.baseline <= 0 or self.fdflare <= 0:
            return None
        if self.higher_is_better:
            return self.fdflare / self.baseline
        return self.baseline / self.fdflare

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: name, unit, baseline, fdflare, ratio, limit, note (and extra)."""
        d = asdict(self)
        d.pop("higher_is_better")
        extra = d.pop("extra")
        d["ratio"] = self.ratio
        ordered = {k: d[k] for k in ("name", "unit", "baseline", "fdflare", "ratio", "limit")}
        ordered["note"] = d["note"]
        if extra:
            ordered["extra"] = extra
        return ordered


def median_seconds(fn: Callable[[], object], repeat: int, *, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def best_rate(fn: Callable[[], int], repeat: int) -> float:
    """Best items per second over ``repeat`` calls of ``fn`` (which returns the item count)."""
    best = 0.0
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        n = fn()
        best = max(best, n / max(time.perf_counter() - t0, 1e-9))
    return best


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_info(settings: Settings) -> dict[str, Any]:
    """The machine a run measured: CPU, cores, library versions, threads and device."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": _usable_cores(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": settings.device,
        "quick": settings.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # torch's own view of the vector unit (ATEN_CPU_CAPABILITY can lower it)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    from fdflare.training.runtime import avx512_switched_off

    if avx512_switched_off():
        info["kernels_limited"] = {
            k: os.environ[k]
            for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
            if os.environ.get(k)
        }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if settings.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


# --------------------------------------------------------------------------- ceilings


@dataclass
class Ceilings:
    """Ceilings of this machine, measured in this run.

    Attributes:
        fp32_gflops: best dense fp32 matmul rate on the bench device (all threads), GFLOP/s.
        bf16_gflops: the same in bf16; None where the CPU has no native bf16 (not measured).
        memory_gbs: host memory bandwidth from a large numpy copy (bytes read + written), GB/s.
        matmul_n: the largest matrix side tried (the best of the sizes tried is kept).
    """

    fp32_gflops: float
    bf16_gflops: float | None
    memory_gbs: float
    matmul_n: int

    def peak(self, dtype: str) -> float:
        """The matmul peak (GFLOP/s) that bounds a step run in ``dtype`` (fp32 or bf16)."""
        if dtype == "bf16" and self.bf16_gflops is not None:
            return self.bf16_gflops
        return self.fp32_gflops

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


#: the most seconds one ceiling's timed repeats may take (the first call always runs)
CEILING_BUDGET_S = 3.0


def matmul_gflops(
    device: str, dtype: str, n: int, repeat: int = 5, budget_s: float = CEILING_BUDGET_S
) -> float:
    """Best measured rate of an ``n x n`` by ``n x n`` matmul on ``device`` (GFLOP/s, 2 n^3 each).

    The repeats stop once ``budget_s`` seconds have gone, so a slow dtype on a slow machine
    cannot hold the bench (and Ctrl-C, which lands between calls) for minutes.
    """
    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.rand(n, n, generator=g).to(device=device, dtype=dt)
    b = torch.rand(n, n, generator=g).to(device=device, dtype=dt)
    reps = 20 if device == "cuda" else 1
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False

    def run() -> None:
        for _ in range(reps):
            torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    run()  # warm up
    best = math.inf
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - t0) / reps)
        if time.perf_counter() - start > budget_s:
            break
    return 2.0 * n**3 / best / 1e9


def memory_bandwidth(mib: int, repeat: int = 5) -> float:
    """Host memory bandwidth (GB/s) of copying a ``mib`` MiB numpy array (read + write), best."""
    src = np.ones(mib * 2**20, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = math.inf
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def bf16_measured(device: str) -> bool:
    """Whether bf16 is measured on ``device``: on GPUs, and on CPUs that compute it natively."""
    from fdflare.training.config import cpu_has_native_bf16

    return device != "cpu" or cpu_has_native_bf16()


def measure_ceilings(settings: Settings) -> Ceilings:
    """Measure the matmul peaks (fp32, bf16) of the bench device and the memory bandwidth.

    bf16 is left out (None) on a CPU without native bf16, where it is emulated about 100
    times slower than fp32 and no default uses it.
    """
    sizes = [8192] if settings.device == "cuda" else settings.pick([1024], [1024, 2048])
    repeat = settings.pick(5, 10)  # the best of them: a peak, on a machine others may load
    bf16 = bf16_measured(settings.device)
    return Ceilings(
        fp32_gflops=max(matmul_gflops(settings.device, "fp32", n, repeat) for n in sizes),
        bf16_gflops=(
            max(matmul_gflops(settings.device, "bf16", n, repeat) for n in sizes) if bf16 else None
        ),
        memory_gbs=memory_bandwidth(settings.pick(64, 512)),
        matmul_n=sizes[-1],
    )
