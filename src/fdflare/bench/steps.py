"""The network rows: a training step of each study model, and one magnetogram's prediction.

* ``train_alexnet``, ``train_vgg16``, ``train_resnet34``: images per second of one training
  step (forward, NLL loss with class weights, backward, SGD with momentum) on one batch
  already in memory. The study's step takes float32 NCHW batches in fp32. fdflare's is the
  step ``fdflare train`` runs by default on this device (resolved by
  :func:`fdflare.training.config.resolve_runtime`): uint8 batches (pinned, copied
  asynchronously on CUDA) scaled on the device, channels-last, bf16 autocast and
  ``torch.compile`` on CUDA. The other memory format is measured too and reported in the
  note. The share of the matmul peak is FLOPs per image (forward + backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the meta device) times images per second
  over the peak measured in this run.
* ``predict_latency``: one Helioviewer JP2 to P(flare) with a loaded AlexNet: the study's
  full decode, area resize and fp32 NCHW forward against
  :func:`fdflare.prepare.decode.decode_with_geometry` and fdflare's inference forward
  (uint8 to the device, ``inference_mode``, bf16 autocast on CUDA).
* ``forecast_latency``: one forecast from a JP2 on disk with an ensemble of fold models
  (``fdflare.forecast.service``, the fetch left out) against the study's per-image path run
  once per fold model.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fdflare.bench.measure import Ceilings, Row, Settings, median_seconds

__all__ = [
    "StepSpec",
    "flops_per_image",
    "forecast_row",
    "predict_row",
    "step_rate",
    "train_row",
]


class StepSpec:
    """How one training step is run.

    Args:
        channels_last: weights and batches in channels-last memory format.
        uint8: the batch is uint8 (scaled on the device) instead of float32.
        bf16: bf16 autocast.
        compile: ``torch.compile`` the network.
        pinned: the host batch is in pinned memory (copied asynchronously).
    """

    def __init__(
        self,
        *,
        channels_last: bool = False,
        uint8: bool = False,
        bf16: bool = False,
        compile: bool = False,
        pinned: bool = False,
    ) -> None:
        self.channels_last, self.uint8, self.bf16 = channels_last, uint8, bf16
        self.compile, self.pinned = compile, pinned

    def describe(self) -> str:
        """A short description, e.g. ``uint8, channels-last, bf16, compiled``."""
        parts = ["uint8" if self.uint8 else "float32"]
        parts.append("channels-last" if self.channels_last else "NCHW")
        parts.append("bf16 autocast" if self.bf16 else "fp32")
        if self.compile:
            parts.append("torch.compile")
        return ", ".join(parts)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def flops_per_image(model: str, image_size: int) -> float:
    """FLOPs of one image's forward and backward pass, counted on the meta device."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from fdflare.models.networks import create_model

    with torch.device("meta"):
        net = create_model(model, pretrained=False)
        x = torch.zeros(1, 1, image_size, image_size)
        y = torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.nll_loss(net(x), y).backward()
    return float(counter.get_total_flops())


def step_rate(
    model: Any,
    spec: StepSpec,
    *,
    device: str,
    image_size: int,
    batch: int,
    steps: int,
    warmup: int,
    seed: int = 0,
) -> dict[str, float]:
    """Time ``steps`` training steps after ``warmup`` untimed ones.

    ``model`` is a registered name or a built network (a copy of it is trained, so one
    network serves every variant of a row).

    Returns:
        ``img_s`` (batch over the fastest step's time) and, on CUDA, ``peak_memory_gib``
        (``torch.cuda.max_memory_allocated`` over the run).
    """
    import torch
    import torch.nn.functional as F

    from fdflare.models.networks import create_model

    torch.manual_seed(seed)
    if isinstance(model, str):
        net = create_model(model, pretrained=False).to(device)
    else:
        net = copy.deepcopy(model).to(device)
    if spec.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    step_net: Callable[[Any], Any] = net
    if spec.compile:
        import torch._dynamo as dynamo

        dynamo.config.suppress_errors = True  # as fdflare train: eager where it cannot compile
        step_net = torch.compile(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-3)
    weights = torch.tensor([0.4, 0.6], device=device)
    g = torch.Generator().manual_seed(seed)
    host_u8 = torch.randint(
        0, 256, (batch, 1, image_size, image_size), dtype=torch.uint8, generator=g
    )
    host: torch.Tensor = host_u8 if spec.uint8 else host_u8.float().div_(255.0)
    if spec.pinned and device == "cuda":
        host = host.pin_memory()
    y = torch.randint(0, 2, (batch,), generator=g).to(device)
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16)
        if spec.bf16
        else contextlib.nullcontext()
    )

    def one_step() -> None:
        x = host.to(device, non_blocking=spec.pinned)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.nll_loss(step_net(x).float(), y, weight=weights)
        loss.backward()
        optimizer.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        one_step()
    _sync(device)
    times = []
    for _ in range(max(1, steps)):
        t0 = time.perf_counter()
        one_step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    # the fastest step: other jobs on the machine only ever slow a step down
    out = {"img_s": batch / min(times)}
    if device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def fdflare_spec(device: str) -> StepSpec:
    """The step ``fdflare train`` runs by default on ``device`` (its resolved runtime)."""
    from fdflare.training.config import TrainConfig, resolve_runtime

    runtime = resolve_runtime(TrainConfig(accelerator="cuda" if device == "cuda" else "cpu"))
    return StepSpec(
        channels_last=runtime.channels_last,
        uint8=True,
        bf16=runtime.precision.startswith("bf16"),
        compile=runtime.compile,
        pinned=device == "cuda",
    )


def train_row(model: str, settings: Settings, ceilings: Ceilings) -> Row:
    """A ``train_MODEL`` row: the study's fp32 NCHW step against fdflare's default step."""
    cuda = settings.device == "cuda"
    if cuda:
        size, batch, steps, warmup = settings.pick((256, 64, 5, 3), (512, 64, 10, 3))
    else:
        size = settings.pick(64, 512)
        batch = settings.pick(2, {"alexnet": 16, "resnet34": 8}.get(model, 4))
        steps = settings.pick(1, {"alexnet": 4, "resnet34": 3}.get(model, 2))
        warmup = 1
    kw: dict[str, Any] = {
        "device": settings.device,
        "image_size": size,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
    }
    import torch

    from fdflare.models.networks import create_model

    torch.manual_seed(0)
    net = create_model(model, pretrained=False)
    study_spec = StepSpec()
    ours = fdflare_spec(settings.device)

    def measured(spec: StepSpec, *, fewer: bool = False) -> dict[str, float]:
        # the alternatives beside the two compared steps get one step less (the run's time)
        steps = max(1, kw["steps"] - 1) if fewer else kw["steps"]
        out = step_rate(net, spec, **{**kw, "steps": steps})
        if cuda:  # the next variant starts from an empty cache (and its own peak memory)
            gc.collect()
            torch.cuda.empty_cache()
        return out

    first = measured(study_spec)
    fast = measured(ours)
    # the alternative measured beside it: on a GPU without torch.compile (eager), on a CPU
    # the other memory format
    other = StepSpec(
        channels_last=ours.channels_last if cuda else not ours.channels_last,
        uint8=True,
        bf16=ours.bf16,
        compile=False,
        pinned=ours.pinned,
    )
    alt = measured(other, fewer=True) if not settings.quick else None
    from fdflare.bench.measure import bf16_measured

    bf16_cpu = None
    # the bf16 autocast step, for CPUs that compute bf16 natively (AVX-512 BF16, AMX)
    if not cuda and not settings.quick and bf16_measured("cpu"):
        bf16_spec = StepSpec(channels_last=ours.channels_last, uint8=True, bf16=True)
        bf16_cpu = measured(bf16_spec, fewer=True)["img_s"]
    # the study's step again, last: the faster of its two runs is kept, so that the order of
    # the runs (a cold first run) cannot favour fdflare's
    again = measured(study_spec) if not settings.quick else first
    study = max(first, again, key=lambda r: r["img_s"])
    flops = flops_per_image(model, size)
    dtype = "bf16" if ours.bf16 else "fp32"
    peak = ceilings.peak(dtype)
    share = flops * fast["img_s"] / (max(peak, 1e-9) * 1e9)
    share_study = flops * study["img_s"] / (ceilings.fp32_gflops * 1e9)
    extra: dict[str, Any] = {
        "image_size": size,
        "batch": batch,
        "gflop_per_image": flops / 1e9,
        "peak_share": share,
        "peak_share_study": share_study,
        "fdflare_step": ours.describe(),
    }
    if alt is not None:
        extra["alternative_step"] = other.describe()
        extra["alternative_img_s"] = alt["img_s"]
    bf16_text = ""
    if bf16_cpu is not None:
        extra["bf16_autocast_img_s"] = bf16_cpu
        bf16_text = f"; --precision bf16-mixed: {bf16_cpu:.2f} img/s"
    mem = ""
    if cuda:
        extra["peak_memory_gib"] = fast["peak_memory_gib"]
        extra["peak_memory_gib_study"] = study["peak_memory_gib"]
        mem = (
            f"; peak memory {fast['peak_memory_gib']:.1f} GiB "
            f"(study's {study['peak_memory_gib']:.1f} GiB)"
        )
    alt_name = "eager (no torch.compile)" if cuda else other.describe()
    return Row(
        name=f"train_{model}",
        unit="img/s",
        baseline=study["img_s"],
        fdflare=fast["img_s"],
        higher_is_better=True,
        limit=(
            f"{dtype} matmul peak {peak:,.0f} GFLOP/s: fdflare's step reaches {share:.0%} of "
            f"it ({flops / 1e9:.1f} GFLOP per image, forward + backward), the study's "
            f"{share_study:.0%} of the fp32 peak"
        ),
        note=(
            f"{size} x {size}, batch {batch}, the fastest of {steps} step(s) after {warmup}; "
            + ("" if settings.quick else "the study's step run first and last, the faster kept; ")
            + f"fdflare: {ours.describe()}"
            + (f"; {alt_name} instead: {alt['img_s']:.2f} img/s" if alt is not None else "")
            + f"{bf16_text}{mem}"
        ),
        extra=extra,
    )


# --------------------------------------------------------------------------- predict


def study_probability(net: Any, path: Path, size: int, device: str) -> float:
    """The study's way from one JP2 to P(flare): full decode, area resize, fp32 NCHW forward."""
    import torch

    from fdflare.bench.stages import study_decode

    img = study_decode(path, size)
    x = torch.from_numpy(img.copy()).float().div(255.0)[None, None].to(device)
    with torch.no_grad():
        return float(torch.exp(net(x))[0, 1])


def predict_row(settings: Settings, ceilings: Ceilings) -> Row:
    """One JP2 to P(flare): the study's full decode and fp32 forward against fdflare's path."""
    import torch

    from fdflare.bench.stages import synthetic_jp2
    from fdflare.inference.images import predict_array
    from fdflare.inference.predict import load_model
    from fdflare.models.networks import create_model
    from fdflare.prepare.decode import decode_with_geometry

    device = settings.device
    src, size = settings.pick((2048, 256), (4096, 512))
    repeat = settings.pick(3, 7)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory(prefix="fdflare-bench-") as tmp:
        path = Path(tmp) / "HMI.m2012.03.07_00.00.00.jp2"
        synthetic_jp2(path, src)
        ckpt = Path(tmp) / "alexnet.pt"
        torch.manual_seed(0)
        torch.save(create_model("alexnet", pretrained=False).state_dict(), ckpt)
        t0 = time.perf_counter()
        net = load_model(ckpt, model="alexnet", image_size=size).net.to(device).eval()
        load_s = time.perf_counter() - t0

        def study() -> float:
            return study_probability(net, path, size, device)

        def forward(x_u8: torch.Tensor) -> float:
            autocast = (
                torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                x = x_u8.to(device, non_blocking=True).float().div_(255.0)
                return float(net.predict_proba(x)[0])

        def ours() -> float:
            img, _geometry = decode_with_geometry(path, size)
            return float(predict_array(net, img, device=device)[0])

        base = median_seconds(study, repeat)
        fast = median_seconds(ours, repeat)
        decode = median_seconds(lambda: decode_with_geometry(path, size), repeat)
        img = decode_with_geometry(path, size)[0]
        fwd = median_seconds(lambda: predict_array(net, img, device=device), repeat)
        agree = abs(study() - ours())
        # the same forward in the NCHW memory format, as the study runs it
        u8 = torch.from_numpy(img.copy())[None, None]
        fwd_cl = median_seconds(lambda: forward(u8), repeat)
    return Row(
        name="predict_latency",
        unit="ms",
        baseline=base * 1e3,
        fdflare=fast * 1e3,
        limit=(
            f"decode with geometry {decode * 1e3:.1f} ms + forward {fwd * 1e3:.1f} ms "
            f"(AlexNet, {'bf16' if bf16 else 'fp32'}, channels-last, one image on {device})"
        ),
        note=(
            f"{src} x {src} lossy JP2 -> {size} x {size} -> P(flare) with an AlexNet loaded "
            f"once by inference.predict.load_model ({load_s:.2f} s, not counted); median of "
            f"{repeat}; P(flare) differs from the study's path by {agree:.1e}; the forward in "
            f"NCHW instead: {fwd_cl * 1e3:.1f} ms"
        ),
    )


def forecast_row(settings: Settings, ceilings: Ceilings) -> Row:
    """One forecast from a JP2 on disk with an ensemble of fold models (no network).

    The study had no forecast service: its way is its per-image path (full decode, area
    resize, fp32 forward) once for each fold model. fdflare's is what ``fdflare forecast``
    does once the JP2 is fetched: one decode with geometry
    (:func:`fdflare.prepare.decode.decode_with_geometry`) into an
    :class:`~fdflare.forecast.service.Observation`, then
    :func:`~fdflare.forecast.service.predict_members` over the ensemble. The fetch from
    Helioviewer is left out (it is the network's time, not this machine's).
    """
    try:
        from fdflare.forecast.service import Observation, load_members, predict_members
    except ImportError as exc:
        return Row(
            name="forecast_latency",
            unit="ms",
            baseline=None,
            fdflare=None,
            limit="",
            note=f"needs fdflare.forecast.service, which did not import ({exc}): not measured",
        )
    import pandas as pd
    import torch

    from fdflare.bench.stages import synthetic_jp2
    from fdflare.models.networks import create_model
    from fdflare.prepare.decode import decode_with_geometry

    device = settings.device
    src, size = settings.pick((2048, 256), (4096, 512))
    n_members, repeat = settings.pick((2, 2), (4, 5))
    with tempfile.TemporaryDirectory(prefix="fdflare-bench-") as tmp:
        path = Path(tmp) / "HMI.m2012.03.07_00.00.00.jp2"
        synthetic_jp2(path, src)
        checkpoints = []
        for k in range(n_members):
            torch.manual_seed(k)
            checkpoints.append(Path(tmp) / f"fold{k + 1}.pt")
            torch.save(create_model("alexnet", pretrained=False).state_dict(), checkpoints[-1])
        members = load_members(checkpoints, model="alexnet", image_size=size)
        nets = [m.loaded.net.to(device).eval() for m in members]

        def study() -> float:
            # each fold model runs the study's whole per-image path on its own
            probs = [study_probability(net, path, size, device) for net in nets]
            return sum(probs) / len(probs)

        def ours() -> float:
            img, geometry = decode_with_geometry(path, size)
            obs = Observation(
                source="local",
                image_id="0",
                time=pd.Timestamp("2012-03-07T00:00:05Z"),
                images={size: img},
                geometry={size: geometry},
            )
            return predict_members(members, obs, accelerator=device)[0]

        base = median_seconds(study, repeat)
        fast = median_seconds(ours, repeat)
        agree = abs(study() - ours())
    return Row(
        name="forecast_latency",
        unit="ms",
        baseline=base * 1e3,
        fdflare=fast * 1e3,
        limit=(
            f"{n_members} AlexNet forwards of one image; fdflare decodes once for all of "
            "them (predict_latency's row has the decode and forward times)"
        ),
        note=(
            f"{src} x {src} lossy JP2 on disk -> ensemble of {n_members} fold models -> mean "
            f"P(flare); the fetch from Helioviewer left out; median of {repeat}; the means "
            f"differ by {agree:.1e}"
        ),
    )
