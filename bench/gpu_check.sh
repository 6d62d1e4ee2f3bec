#!/usr/bin/env bash
# The CUDA check: the paths that only run on a GPU (autocast bf16/fp16,
# GradScaler, pinned memory, NCCL, SyncBatchNorm), in one short script.
#
#   bash bench/gpu_check.sh [ACDC_DIR] [OUT_DIR]
#
# 1. the tests that take a device, with --device cuda;
# 2. the speed benchmark in the default mode (quick: 3D at 64³, up to 100 predict cases);
# 3. one ACDC pretrain + train-classifier on CUDA (the examples/acdc specs, fewer epochs),
#    skipped when ACDC_DIR is not given or absent;
# 4. two-process DDP with NCCL (torchrun), which needs two GPUs: skipped, and said so, on
#    a machine with one.
# Each step's log goes to OUT_DIR (default gpu-check/); the last lines say what passed.
# Without CUDA every step but the CPU-side ones is skipped, so the script can be tried here.
set -u
cd "$(dirname "$0")/.."
ACDC=${1:-}
OUT=${2:-gpu-check}
if [ -z "${PY:-}" ]; then  # the project's virtual environment (make install), else python
    PY=python
    [ -x .venv/bin/python ] && PY=.venv/bin/python
fi
mkdir -p "$OUT"
declare -a SUMMARY=()
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, record the outcome
    local name=$1; shift
    local t0=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then
        SUMMARY+=("$name: ok ($((SECONDS - t0)) s)")
    else
        SUMMARY+=("$name: FAILED ($((SECONDS - t0)) s), see $OUT/$name.log")
    fi
    tail -n 3 "$OUT/$name.log"
}

if ! GPUS=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"); then
    echo "no torch in $PY: run make install, or set PY to a python with segfew installed" >&2
    exit 1
fi
$PY -c "import torch, segfew.runtime as r; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'GPUs', torch.cuda.device_count()); print('runtime', r.describe('auto'))" | tee "$OUT/device.txt"
DEVICE=cpu
[ "$GPUS" -ge 1 ] && DEVICE=cuda

# 1. tests that take a device
step tests $PY -m pytest -q -p no:cacheprovider --device "$DEVICE" \
    tests/train/test_train.py tests/inference/test_run.py tests/test_runtime.py tests/train/test_memory.py

# 2. the benchmark in the default mode
step bench $PY bench/bench_speed.py --device "$DEVICE" --quick

# 3. ACDC pretrain + train-classifier
if [ -n "$ACDC" ] && [ -d "$ACDC/images" ]; then
    step acdc-pretrain $PY -m segfew pretrain --spec examples/acdc/pretrain.toml \
        --images "$ACDC/images" --labels "$ACDC/labels" --channels frame01,frame02 \
        --out "$OUT/acdc-seg.pt" --epochs 8 --device "$DEVICE" --no-progress
    step acdc-classifier $PY -m segfew train-classifier --spec examples/acdc/classifier.toml \
        --table "$ACDC/labels.csv" --images "$ACDC/images" --features "$OUT/acdc-seg.pt" \
        --out "$OUT/acdc-clf.pt" --epochs 20 --device "$DEVICE" --no-progress
    $PY - "$OUT" <<'PY' | tee "$OUT/acdc-summary.txt"
import json, sys
from pathlib import Path
from segfew.modelfile import read_model_file
out = Path(sys.argv[1])
for name in ("acdc-seg", "acdc-clf"):
    meta, _ = read_model_file(out / f"{name}.pt")
    run = json.loads((out / f"{name}-run" / "run.json").read_text())
    print(name, "runtime", run.get("runtime"), "metrics", {k: v for k, v in meta.metrics.items()
          if not isinstance(v, list)})
PY
else
    SUMMARY+=("acdc: skipped (give the ACDC folder as the first argument)")
fi

# 4. two-process DDP with NCCL
if [ "$GPUS" -ge 2 ]; then
    step ddp-nccl $PY -m pytest -q -p no:cacheprovider --device cuda tests/train/test_distributed.py
else
    SUMMARY+=("ddp-nccl: skipped (needs 2 GPUs, this machine has $GPUS; NCCL refuses two ranks on one GPU)")
fi

echo
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
