#!/usr/bin/env bash
# Every GPU measurement of docs/performance.md in one run: under 8 minutes on one H200.
#
#   pip install -e ".[all]"            # once, with a CUDA build of torch
#   OUT=gpu_check_out bash benchmarks/gpu_check.sh
#
# Writes under $OUT (default ./gpu_check_out):
#   machine.txt           nvidia-smi, torch, CUDA
#   bench_cuda.json/.md   fdflare bench --accelerator cuda: img/s of each study model at
#                         batch 64 (the study's fp32 NCHW step and fdflare's bf16,
#                         channels-last, torch.compile step), share of the measured bf16
#                         peak, peak memory (torch.cuda.max_memory_allocated), one JP2's
#                         prediction latency, and the loader's per-worker rate on this host
#   epoch/                a real `fdflare train` from an array store (synth --jp2 ->
#                         prepare -> label -> train) with GPU utilisation sampled by
#                         nvidia-smi every 200 ms (gpu_util.csv), metrics.csv, summary.json
#   tss/                  one small synthetic set trained with the same seed on GPU bf16,
#                         GPU fp32 and CPU fp32: validation TSS per epoch of each
#   summary.json          the numbers of all of the above, in one file
#   log.txt               what ran, when, and what failed
#
# Each part has its own time limit and the script carries on past a failed part (it is
# recorded in log.txt and summary.json). GPU_CHECK_ACCELERATOR=cpu GPU_CHECK_SMALL=1 runs
# the same plumbing on a CPU with tiny sizes (a check of the script, not a measurement).
set -uo pipefail

OUT="${OUT:-./gpu_check_out}"
ACC="${GPU_CHECK_ACCELERATOR:-cuda}"
SMALL="${GPU_CHECK_SMALL:-0}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$OUT/work"
mkdir -p "$WORK"
LOG="$OUT/log.txt"
: > "$LOG"
START=$(date +%s)
FAILED=()

log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG" >&2; }

BUDGET="${GPU_CHECK_BUDGET:-460}"  # seconds for all parts: the whole script stays under 8 min

part() {  # part NAME SECONDS COMMAND...: run with a time limit, record a failure
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 15 ]; then
        FAILED+=("$name:skipped")
        log "SKIPPED $name (the time budget of ${BUDGET}s is spent)"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "start $name (limit ${limit}s): $*"
    timeout --signal=INT --kill-after=20 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        FAILED+=("$name:$rc")
        log "FAILED $name (exit $rc)"
    else
        log "done $name"
    fi
    return $rc
}

if [ "$SMALL" = 1 ]; then
    EPOCH_END=2011-07-01; EPOCH_CADENCE=24h; EPOCH_SIZE=64; JP2_SIZE=256; EPOCH_EPOCHS=1
    TSS_END=2011-07-01; TSS_CADENCE=24h; TSS_EPOCHS=1; BENCH_QUICK=(--quick); WORKERS=2
else
    EPOCH_END=2012-01-01; EPOCH_CADENCE=6h; EPOCH_SIZE=512; JP2_SIZE=1024; EPOCH_EPOCHS=4
    TSS_END=2012-01-01; TSS_CADENCE=12h; TSS_EPOCHS=10; BENCH_QUICK=(); WORKERS=8
fi
CORES=$(nproc)

# --------------------------------------------------------------------------- the machine
{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
    echo "cores: $CORES"
} > "$OUT/machine.txt" 2>&1
if [ "$ACC" = cuda ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    log "no CUDA GPU visible to torch: nothing to measure (see $OUT/machine.txt)"
    exit 2
fi

# --------------------------------------------------------------------------- 1. bench rows
# one fdflare bench per row, so that a row that runs out of time loses only itself
if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
    for spec in loader:40 train_alexnet:75 train_resnet34:90 train_vgg16:110 predict_latency:35 \
                forecast_latency:35; do
        row=${spec%%:*}
        part "bench_$row" "${spec##*:}" fdflare bench --accelerator "$ACC" "${BENCH_QUICK[@]}" \
            --quiet --only "$row" --out "$OUT/bench_$row.json"
    done
    python - "$OUT" > "$OUT/bench_cuda.md" <<'EOF'
import json, sys
from pathlib import Path
from fdflare.bench import ROW_NAMES
from fdflare.bench.run import render_bench
out = Path(sys.argv[1])
docs = [json.loads((out / f"bench_{n}.json").read_text()) for n in ROW_NAMES
        if (out / f"bench_{n}.json").is_file()]
if docs:
    merged = {"machine": docs[0]["machine"], "rows": [r for d in docs for r in d["rows"]]}
    merged["machine"]["seconds"] = round(sum(d["machine"]["seconds"] for d in docs), 1)
    (out / "bench_cuda.json").write_text(json.dumps(merged, indent=2) + "\n")
    print(render_bench(merged, markdown=True))
EOF
fi

# --------------------------------------------------------------------------- 2. a real epoch
E="$OUT/epoch"
mkdir -p "$E"
part epoch_data 60 bash -c "
    fdflare synth --out '$WORK/sun' --start 2011-01-01 --end $EPOCH_END --cadence $EPOCH_CADENCE \
        --image-size $EPOCH_SIZE --jp2 --jp2-size $JP2_SIZE --workers $CORES --quiet &&
    fdflare prepare --source '$WORK/sun/jp2' --out '$WORK/prepared' --image-size $EPOCH_SIZE \
        --workers $CORES --quiet &&
    fdflare label --catalog '$WORK/sun/catalog.csv' --images '$WORK/prepared' --out '$WORK/labels' \
        --start 2011-01-01 --end $EPOCH_END --cadence $EPOCH_CADENCE"
if [ -f "$WORK/prepared/images.npy" ]; then
    SAMPLER=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used \
            --format=csv,noheader,nounits -lms 200 > "$E/gpu_util.csv" 2>>"$LOG" &
        SAMPLER=$!
    fi
    date +%s.%N > "$E/train_start"
    part epoch_train 90 fdflare train --model alexnet --no-pretrained --fold 1 \
        --labels "$WORK/labels" --images "$WORK/prepared" --image-size $EPOCH_SIZE \
        --epochs $EPOCH_EPOCHS --batch-size 64 --workers $WORKERS --accelerator "$ACC" \
        --out "$E/run" --quiet
    date +%s.%N > "$E/train_end"
    if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; fi
fi

# --------------------------------------------------------------------------- 3. TSS, same seed
T="$OUT/tss"
mkdir -p "$T"
part tss_data 30 bash -c "
    fdflare synth --out '$WORK/small' --start 2011-01-01 --end $TSS_END --cadence $TSS_CADENCE \
        --image-size 64 --workers $CORES --quiet &&
    fdflare label --catalog '$WORK/small/catalog.csv' --images '$WORK/small/images' \
        --out '$WORK/small_labels' --start 2011-01-01 --end $TSS_END --cadence $TSS_CADENCE"
RECIPE=(--model smallcnn --no-pretrained --fold 1 --labels "$WORK/small_labels"
        --images "$WORK/small/images" --image-size 64 --epochs $TSS_EPOCHS --batch-size 32
        --optimizer adamw --max-lr 0.001 --seed 0 --workers 2 --quiet)
if [ "$ACC" = cuda ]; then
    # eager on the GPU (--no-compile): the numbers of bf16 against fp32, without compile time
    part tss_gpu_bf16 60 fdflare train "${RECIPE[@]}" --accelerator gpu --no-compile \
        --out "$T/gpu_bf16"
    part tss_gpu_fp32 60 fdflare train "${RECIPE[@]}" --accelerator gpu --precision 32-true \
        --no-compile --out "$T/gpu_fp32"
fi
part tss_cpu_fp32 60 fdflare train "${RECIPE[@]}" --accelerator cpu --out "$T/cpu_fp32"

# --------------------------------------------------------------------------- summary
log "summary"
python - "$OUT" "${FAILED[*]:-}" <<'EOF' >>"$LOG" 2>&1
import csv, json, sys
from pathlib import Path

out, failed = Path(sys.argv[1]), sys.argv[2].split()
summary = {"failed_parts": failed}
try:
    summary["machine"] = (out / "machine.txt").read_text()
except OSError:
    pass
bench = out / "bench_cuda.json"
if bench.is_file():
    doc = json.loads(bench.read_text())
    summary["bench"] = {
        r["name"]: {
            "study": r["baseline"], "fdflare": r["fdflare"], "ratio": r["ratio"], "unit": r["unit"],
            **{k: r.get("extra", {}).get(k) for k in ("peak_share", "peak_memory_gib",
               "peak_memory_gib_study", "alternative_img_s", "gflop_per_image", "batch")},
        }
        for r in doc["rows"]
    }
    summary["ceilings"] = doc["machine"].get("ceilings")


def metrics(run):
    path = run / "metrics.csv"
    if not path.is_file():
        return None
    return list(csv.DictReader(path.open()))


e = out / "epoch"
rows = metrics(e / "run")
if rows:
    s = json.loads((e / "run" / "summary.json").read_text())
    n = s["counts"]["train_samples"]
    summary["epoch"] = {
        "train_samples": n,
        "runtime": s.get("runtime"),
        "epochs": [
            {"epoch": int(r["epoch"]), "train_seconds": float(r["train_seconds"]),
             "img_s": n / float(r["train_seconds"]), "val_seconds": float(r["val_seconds"])}
            for r in rows
        ],
    }
util = e / "gpu_util.csv"
if util.is_file():
    vals = []
    for line in util.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[1].isdigit():
            vals.append((int(parts[1]), int(parts[2]), float(parts[3])))
    busy = [v for v in vals if v[0] > 0]
    if busy:
        first = vals.index(busy[0]); last = len(vals) - 1 - vals[::-1].index(busy[-1])
        window = [v[0] for v in vals[first:last + 1]]
        summary["gpu_utilisation"] = {
            "samples": len(vals), "busy_window_samples": len(window),
            "mean_percent_in_busy_window": sum(window) / len(window),
            "share_of_window_at_90_percent_or_more": sum(u >= 90 for u in window) / len(window),
            "max_memory_used_mib": max(v[2] for v in vals),
        }
tss = {}
for name in ("gpu_bf16", "gpu_fp32", "cpu_fp32"):
    rows = metrics(out / "tss" / name)
    if rows:
        tss[name] = [float(r["val_tss"]) if r["val_tss"] else None for r in rows]
if tss:
    summary["tss"] = {"val_tss_per_epoch": tss}
    ref = tss.get("cpu_fp32")
    for name in ("gpu_bf16", "gpu_fp32"):
        if ref and tss.get(name) and ref[-1] is not None and tss[name][-1] is not None:
            summary["tss"][f"last_epoch_{name}_minus_cpu_fp32"] = tss[name][-1] - ref[-1]
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: v for k, v in summary.items() if k != "machine"}, indent=2))
EOF
log "finished in $(( $(date +%s) - START )) s; failed parts: ${FAILED[*]:-none}"
cat "$OUT/summary.json" 2>/dev/null | head -c 6000
[ ${#FAILED[@]} -eq 0 ]
