"""Where and how a run computes: the accelerator, precision, strategy and memory format.

:func:`resolve_runtime` turns a :class:`~fdflare.training.config.TrainConfig` into a
:class:`Runtime` for this machine; :func:`accelerator_problem` refuses, before any work, an
accelerator the machine lacks; the ``cpu_*`` functions read the CPU's instruction set, from
which the CPU defaults are chosen (channels-last with AVX-512, bf16 only where native).
Nothing here imports torch or Lightning at module level.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fdflare.core.errors import UsageError

if TYPE_CHECKING:
    from fdflare.training.config import TrainConfig


@dataclass
class Runtime:
    """How Lightning will run: resolved from the config and the machine."""

    accelerator: str
    devices: int | str
    n_devices: int
    num_nodes: int
    strategy: str
    precision: str
    deterministic: bool
    slurm: bool
    channels_last: bool = False
    compile: bool = False
    device_augment: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags this machine's CPU offers to torch.

    Read from ``/proc/cpuinfo`` (empty elsewhere), less the AVX-512 and AMX extensions when
    they are switched off for torch's kernels: ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``)
    set to an AVX2 level or below, or ``ATEN_CPU_CAPABILITY`` set to ``avx2`` or ``default``.
    So a run told to use AVX2 kernels only also chooses the defaults of an AVX2-only CPU.
    """
    flags: frozenset[str] = frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = frozenset(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if avx512_switched_off():
        flags = frozenset(f for f in flags if not f.startswith(("avx512", "amx")))
    return flags


def avx512_switched_off() -> bool:
    """Whether the environment limits torch's CPU kernels to AVX2 or below."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    isa = isa.strip().upper()  # oneDNN's names: SSE41, AVX, AVX2, AVX2_VNNI, AVX512_CORE, ...
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return isa.startswith(("SSE", "AVX2")) or isa == "AVX" or aten in ("avx2", "default")


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere it is emulated.

    Without it a bf16 matmul runs about 100 times slower than fp32 (0.7 against 60 GFLOP/s
    measured on an AMD EPYC with AVX2 only), so bf16 is neither measured nor chosen there.
    """
    f = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & f)


def cpu_prefers_channels_last(flags: frozenset[str] | None = None) -> bool:
    """Whether channels-last is the faster memory format on this CPU (AVX-512: measured so).

    Measured with ``fdflare bench``: on a Xeon with AVX-512 and AMX, channels-last was faster
    for all three study models (1.1-1.2x a training step); on an AMD EPYC with AVX2 only it
    was slower for ResNet34 (0.41 against 0.49 img/s) and about even for AlexNet (2.5 against
    2.4), so NCHW is kept there.
    """
    f = cpu_flags() if flags is None else flags
    return "avx512f" in f


def _no_cuda_here() -> bool:
    """True when this machine surely has no CUDA driver (known without importing torch)."""
    import ctypes.util

    signs = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")
    return not any(os.path.exists(p) for p in signs) and ctypes.util.find_library("cuda") is None


#: every --accelerator's choices (training passes gpu/cuda to Lightning; the commands that
#: run on one torch device take tpu only where they can use it)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def accelerator_problem(accelerator: str, devices: int | str = "auto") -> str | None:
    """Say why ``accelerator`` (with ``devices`` of them) cannot run on this machine, or ``None``.

    A machine without any CUDA driver is told apart without importing torch, so the refusal
    comes at once.
    """
    if accelerator in ("gpu", "cuda") and _no_cuda_here():
        return f"{accelerator}: this machine has no CUDA GPU (use auto or cpu)"
    import torch

    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            return f"{accelerator}: this machine has no CUDA GPU (use auto or cpu)"
        n = torch.cuda.device_count()
        if isinstance(devices, int) and devices > n:
            return f"{accelerator}: {devices} devices asked for, this machine has {n} GPU(s)"
    elif accelerator == "mps":
        if not torch.backends.mps.is_available():
            return "mps: Apple's Metal (MPS) backend is not available here (use auto or cpu)"
    elif accelerator == "tpu":
        import importlib.util

        if importlib.util.find_spec("torch_xla") is None:
            return "tpu: no TPU runtime (torch_xla) on this machine (use auto or cpu)"
    return None


def check_hardware(config: TrainConfig) -> None:
    """Refuse, before any work, an accelerator this machine does not have.

    Raises:
        UsageError: naming ``--accelerator``.
    """
    problem = accelerator_problem(config.accelerator, config.devices)
    if problem:
        raise UsageError(f"--accelerator {problem}")


def resolve_runtime(config: TrainConfig) -> Runtime:
    """Pick accelerator, precision and strategy for this machine (see :class:`TrainConfig`)."""
    import torch
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    acc = config.accelerator
    cuda = torch.cuda.is_available() and acc in ("auto", "gpu", "cuda")
    mps = not cuda and acc in ("auto", "mps") and torch.backends.mps.is_available()
    on_cpu = not cuda and not mps and acc != "tpu"
    if config.precision != "auto":
        precision = config.precision
    elif cuda and torch.cuda.is_bf16_supported():
        precision = "bf16-mixed"
    else:
        precision = "32-true"
    if isinstance(config.devices, int):
        n_devices = config.devices
    elif cuda:
        n_devices = torch.cuda.device_count()
    else:
        n_devices = 1
    strategy = "ddp" if n_devices > 1 or config.num_nodes > 1 else "auto"
    deterministic = on_cpu if config.deterministic is None else config.deterministic
    default_cl = cuda or (on_cpu and cpu_prefers_channels_last())
    channels_last = default_cl if config.channels_last is None else bool(config.channels_last)
    compile_net = cuda if config.torch_compile is None else bool(config.torch_compile)
    device_augment = cuda if config.device_augment is None else bool(config.device_augment)
    return Runtime(
        accelerator="cpu" if on_cpu and acc == "auto" else acc,
        devices=config.devices,
        n_devices=n_devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=precision,
        deterministic=deterministic,
        slurm=SLURMEnvironment.detect(),
        channels_last=channels_last,
        compile=compile_net,
        device_augment=device_augment,
    )
