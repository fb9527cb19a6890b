"""fdflare bench: the real command on its quickest row, its argument checks, and the pieces
its rows are made of (the study's baselines do the same job as fdflare's code). No test
asserts a time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clitools import run_cli
from fdflare.bench import ROW_NAMES
from fdflare.bench.measure import Row, Settings
from fdflare.bench.run import ROWS, render_bench
from fdflare.bench.stages import (
    study_decode,
    study_label_loop,
    study_training_set,
    synthetic_catalog,
    synthetic_jp2,
    write_images,
)
from fdflare.bench.steps import StepSpec, fdflare_spec, flops_per_image, forecast_row, step_rate
from fdflare.cli import main

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"name", "unit", "baseline", "fdflare", "ratio", "limit", "note"}


def test_quick_label_through_the_cli_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "label", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:5] == ["row", "unit", "study", "fdflare", "speed-up"]
    assert "label" in printed and "--quick" in printed
    doc = json.loads(out.read_text())
    assert set(doc) == {"machine", "rows"}
    for key in ("cpu", "cores", "torch", "torch_threads", "device", "quick", "ceilings"):
        assert key in doc["machine"]
    assert doc["machine"]["device"] == "cpu" and doc["machine"]["quick"] is True
    assert doc["machine"]["ceilings"]["fp32_gflops"] > 0
    assert doc["machine"]["ceilings"]["memory_gbs"] > 0
    (row,) = doc["rows"]
    assert ROW_KEYS <= set(row)
    assert row["name"] == "label" and row["unit"] == "s"
    assert row["baseline"] > 0 and row["fdflare"] > 0 and row["ratio"] > 0
    assert row["ratio"] == pytest.approx(row["baseline"] / row["fdflare"])
    assert "label_windows" in row["limit"] and "scaled" in row["note"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--only", "bogus"], ["--only", "unknown row 'bogus'", "train_resnet34"]),
        (["--only"], ["--only", "expected at least one argument"]),
        (["--accelerator", "tpu"], ["--accelerator", "tpu: no TPU runtime"]),
        (["--accelerator", "quantum"], ["--accelerator", "expected auto, cpu, gpu"]),
        (["--quick", "--out", "{tmp}"], ["--out", "is a folder"]),
        (["--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(argv, words, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, err = run_cli(["bench", *argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("fdflare bench: error:", "fdflare: error:"))
    for w in words:
        assert w in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("option", ["--accelerator", "--device"])
def test_cuda_without_a_gpu_is_refused_before_any_work(option, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, err = run_cli(["bench", option, "cuda", "--out", str(out)], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"fdflare bench: error: argument {option}")
    assert "cuda: this machine has no CUDA GPU (use auto or cpu)" in errors[0]
    assert not out.exists()


def test_every_row_is_named_and_in_table_order():
    assert tuple(ROWS) == ROW_NAMES
    assert ROW_NAMES[:5] == ("label", "prepare", "prepare_fits", "prepare_fits_binned", "loader")
    assert {"train_alexnet", "train_vgg16", "train_resnet34", "predict_latency"} <= set(ROWS)


def test_ratio_is_a_speed_up_for_times_and_rates():
    assert Row("a", "s", 10.0, 2.0, "", "").ratio == 5.0
    assert Row("b", "img/s", 10.0, 20.0, "", "", higher_is_better=True).ratio == 2.0
    missing = Row("c", "ms", None, None, "", "needs x")
    assert missing.ratio is None and missing.to_dict()["ratio"] is None
    assert list(missing.to_dict()) == [
        "name",
        "unit",
        "baseline",
        "fdflare",
        "ratio",
        "limit",
        "note",
    ]


def test_the_table_shows_each_row_with_its_limit_and_the_machine():
    doc = {
        "machine": {
            "cpu": "Some CPU",
            "cores": 2,
            "torch": "2.x",
            "torch_threads": 2,
            "date": "2026-01-01 00:00 UTC",
            "quick": False,
            "seconds": 1.0,
            "ceilings": {"fp32_gflops": 100.0, "bf16_gflops": 900.0, "memory_gbs": 10.0},
        },
        "rows": [
            Row("label", "s", 100.0, 0.25, "pandas", "n1").to_dict(),
            Row("forecast_latency", "ms", None, None, "", "not measured").to_dict(),
        ],
    }
    text = render_bench(doc)
    assert "400x" in text and "n/a" in text
    assert "note: label: limit: pandas; n1" in text
    assert "fp32 matmul 100 GFLOP/s" in text
    assert "| label | s |" in render_bench(doc, markdown=True)


def test_forecast_row_runs_an_ensemble_on_a_local_jp2():
    row = forecast_row(Settings(quick=True, progress=False), None)  # type: ignore[arg-type]
    assert row.name == "forecast_latency" and row.unit == "ms"
    assert row.baseline is not None and row.fdflare is not None and row.ratio is not None
    assert "2 fold models" in row.note


def test_prepare_fits_row_measures_both_forms_of_one_record():
    from fdflare.bench.stages import prepare_fits_row

    row = prepare_fits_row(Settings(quick=True, progress=False), None)  # type: ignore[arg-type]
    assert row.name == "prepare_fits" and row.baseline and row.fdflare
    assert row.extra["ratio_to_jp2"] == pytest.approx(row.fdflare / row.baseline)
    import re

    mean = float(re.search(r"full decode by ([\d.]+) grey", row.note).group(1))
    assert mean < 1.0  # the same image from FITS as from the JP2's full decode
    assert {"one_row_ms", "two_rows_ms", "astropy_ms"} <= set(row.extra)
    assert f"FITS / JP2 = {row.extra['ratio_to_jp2']:.1f}x" in row.note


def test_prepare_fits_binned_row_times_the_record_jsoc_binned():
    import re

    from fdflare.bench.stages import prepare_fits_binned_row

    row = prepare_fits_binned_row(Settings(quick=True, progress=False), None)  # type: ignore[arg-type]
    assert row.name == "prepare_fits_binned" and row.baseline and row.fdflare
    assert row.extra["ratio_to_jp2"] == pytest.approx(row.fdflare / row.baseline)
    grey = float(re.search(r"([\d.]+) grey levels from the full-resolution", row.note).group(1))
    assert grey < 1.5  # close to the full-resolution image of the same record
    assert "--rebin 4" in row.note and row.extra["mb"] < 0.5


def test_the_study_label_loop_gives_the_same_targets_as_make_labels():
    from fdflare.core.paths import image_relpaths
    from fdflare.label import LabelConfig, make_labels

    catalog = synthetic_catalog(seed=1)
    start, end = "2014-01-01", "2014-03-01"
    times = pd.date_range(start, end, freq="1h", inclusive="left").as_unit("ns")
    ours = make_labels(catalog, list(image_relpaths(times)), LabelConfig(start=start, end=end))
    study = study_label_loop(catalog, times)
    study_target = [int(r[1] != "NF" and r[1][0] in "MX") for r in study]
    assert ours.table["target"].tolist() == study_target
    assert 0 < sum(study_target) < len(study_target)


def test_the_study_decode_and_the_reduced_decode_give_nearly_the_same_image(tmp_path):
    from fdflare.prepare.decode import decode_jp2

    path = tmp_path / "HMI.m2012.03.07_00.00.00.jp2"
    synthetic_jp2(path, 512)
    base = study_decode(path, 128)
    fast, k = decode_jp2(path, 128)
    assert base.shape == fast.shape == (128, 128) and k == 2
    assert np.abs(base.astype(int) - fast.astype(int)).mean() < 3


def test_the_study_training_set_has_the_same_samples_as_fdflares(tmp_path):
    from fdflare.data.dataset import FlareDataset
    from fdflare.data.sources import open_images

    root = tmp_path / "images"
    table = write_images(root, 8, size=32)
    study = study_training_set(table, root)
    ours = FlareDataset(
        table.rename(columns={"goes_class": "target"}),
        open_images(root),
        image_size=32,
        augment=True,
    )
    assert len(study) == len(ours) == 4 * 2 + 2 * 6
    x_study, y_study = study[0]  # the first flare instance, unchanged
    x_ours, y_ours = ours[0]
    assert int(y_study) == int(y_ours) == 1
    torch.testing.assert_close(x_study, x_ours)


def test_flops_are_counted_for_forward_and_backward():
    small = flops_per_image("alexnet", 64)
    assert small > 0
    assert flops_per_image("alexnet", 128) > 2 * small  # convolutions grow with the area
    assert flops_per_image("resnet34", 64) > small


def test_a_training_step_variant_runs_and_reports_a_rate():
    spec = StepSpec(channels_last=True, uint8=True)
    assert spec.describe() == "uint8, channels-last, fp32"
    out = step_rate("smallcnn", spec, device="cpu", image_size=32, batch=2, steps=1, warmup=1)
    assert out["img_s"] > 0


def test_fdflares_cpu_step_is_the_default_train_runtime():
    from fdflare.training.runtime import cpu_prefers_channels_last

    spec = fdflare_spec("cpu")
    assert spec.uint8 and not spec.bf16 and not spec.compile
    assert spec.channels_last is cpu_prefers_channels_last()  # AVX-512: yes; AVX2 only: no


def test_gpu_check_script_parses():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


def test_out_never_overwrites_a_file_that_is_not_a_bench_result(tmp_path, capsys):
    precious = tmp_path / "pyproject.toml"
    precious.write_text("[project]\nname = 'x'\n")
    code, err = run_cli(["bench", "--quick", "--only", "label", "--out", str(precious)], capsys)
    assert code == 2 and "not a result of fdflare bench" in err and err.count("\n") == 1
    # the old spelling --json FILE is --out FILE, with one warning
    code, err = run_cli(["bench", "--quick", "--only", "label", "--json", str(precious)], capsys)
    assert code == 2 and "--out " + str(precious) in err and "not a result of" in err
    assert "warning: --json FILE is deprecated" in err and "use --out FILE" in err
    assert precious.read_text() == "[project]\nname = 'x'\n"


AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
XEON = AVX2 | {"avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_cpu_defaults_follow_the_instruction_set():
    from fdflare.training.config import cpu_has_native_bf16, cpu_prefers_channels_last

    assert not cpu_has_native_bf16(AVX2) and not cpu_prefers_channels_last(AVX2)
    assert cpu_has_native_bf16(XEON) and cpu_prefers_channels_last(XEON)
    assert cpu_prefers_channels_last(AVX2 | {"avx512f"}) and not cpu_has_native_bf16(
        AVX2 | {"avx512f"}
    )


def test_a_cpu_without_native_bf16_skips_bf16_and_says_so(tmp_path, capsys, monkeypatch):
    from fdflare.training import runtime as training_config

    monkeypatch.setattr(training_config, "cpu_flags", lambda: AVX2)
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "label", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # --json: the one object, no table
    doc = json.loads(out.read_text())
    assert printed == {**doc, "out": str(out)}
    assert doc["machine"]["ceilings"]["bf16_gflops"] is None


def test_training_runtime_records_the_memory_format_chosen_for_the_cpu(monkeypatch):
    from fdflare.training import runtime as training_config
    from fdflare.training.config import TrainConfig, resolve_runtime

    cfg = TrainConfig(accelerator="cpu")
    monkeypatch.setattr(training_config, "cpu_flags", lambda: AVX2)
    assert resolve_runtime(cfg).to_dict()["channels_last"] is False
    monkeypatch.setattr(training_config, "cpu_flags", lambda: XEON)
    assert resolve_runtime(cfg).to_dict()["channels_last"] is True
    cfg = TrainConfig(accelerator="cpu", channels_last=False)
    assert resolve_runtime(cfg).channels_last is False


def test_ctrl_c_stops_the_bench_between_timed_calls_and_writes_nothing(tmp_path):
    """One SIGINT once the bench is measuring ends it with status 130 and no result file (it
    used to hold on through two of them for over a minute)."""
    import os
    import signal
    import sys

    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fdflare", "bench", "--quick", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the event: the bench says it has started measuring
            if line.startswith("fdflare bench: measuring"):
                break
        else:
            pytest.fail("the bench ended before it started measuring")
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(timeout=300)  # a bound on a hang, not a speed check
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130, rest
    assert rest.strip().splitlines()[-1] == "fdflare bench: interrupted", rest
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("env", "off"),
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
        ({"DNNL_MAX_CPU_ISA": "avx2_vnni"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, True),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "DEFAULT"}, False),
        ({}, False),
    ],
)
def test_kernels_limited_to_avx2_choose_the_avx2_defaults(monkeypatch, env, off):
    """ONEDNN_MAX_CPU_ISA=AVX2 (or ATEN_CPU_CAPABILITY=avx2) runs a Xeon as an AVX2-only CPU:
    the defaults follow, so bf16 is not measured or chosen and NCHW is kept."""
    from fdflare.training import runtime

    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert runtime.avx512_switched_off() is off
    flags = runtime.cpu_flags()
    if off:
        assert not any(f.startswith(("avx512", "amx")) for f in flags)
        assert not runtime.cpu_has_native_bf16() and not runtime.cpu_prefers_channels_last()
