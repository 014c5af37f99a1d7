#!/usr/bin/env bash
# Every GPU check and benchmark in one call (issue 7, "GPU"), for a session that is lent the device machine.
#
# Prepare here (once):   mkdir -p .gpu_data && cp ../shared/data/cifar10-jpeg.tar.gz .gpu_data/   (in .gitignore)
# Then one device call:  run(command="bash benchmarks/gpu_suite.sh", carry=[".gpu_data"], timeout_s=540)
# and copy the tables from $OUT/*.txt into BENCHMARKS.md ("GPU").  Budget: ~6-8 minutes on an H200, most of it
# torch.compile; set SUITE_QUICK=1 to skip the compiled settings.
#
# The machine's python3 already holds CUDA torch, typer, rich, safetensors, matplotlib, torchvision and timm,
# so nothing is installed: the package runs from src/ on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 SKIPLAB_CACHE=/tmp/skiplab-cache
OUT="${OUT:-/tmp/gpu_suite}"
mkdir -p "$OUT"
DATA="${GPU_DATA:-.gpu_data/cifar10-jpeg.tar.gz}"
COMPILE="off,on"
[ "${SUITE_QUICK:-0}" = 1 ] && COMPILE="off"
status=0

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; } 2>&1 | tee "$OUT/machine.txt"

# 1. the real peers: torchvision / timm weights load into ours and give the same outputs (CPU, ~1 min)
python3 benchmarks/peer_check.py --json "$OUT/peers.json" 2>&1 | tee "$OUT/peers.txt" || status=1

# 2. the GPU test paths: CUDA device selection, autocast, fused optimizer, exact resume (tests marked for CUDA run
#    only where CUDA is present; the rest of the suite is CI's job)
python3 -m pytest -q -x -p no:cacheprovider tests/test_speed.py tests/test_train.py -k "cuda or fused or amp or resume" \
    2>&1 | tail -5 | tee "$OUT/tests.txt" || status=1

# 3. training step images/s: resnet20 and resnet56 at batch 128, float32 vs bf16 autocast, channels_last, compile
python3 benchmarks/bench_train.py --device cuda --models resnet20,resnet56 --data-dir "$DATA" --amp none,bf16 \
    --channels-last off,on --compile "$COMPILE" --warmup 5 --steps 30 --rounds 3 2>&1 | tee "$OUT/bench_train.txt" || status=1

# 4. end to end: `skiplab train` epochs on CIFAR-10 (data pipeline on the GPU, evaluation, checkpoints included)
for model in resnet20 resnet56; do
    python3 -m skiplab train --model "$model" --data cifar10 --data-dir "$DATA" --recipe fast --epochs 3 --warmup 1 \
        --amp bf16 --out "/tmp/gpu_runs/$model" --overwrite --progress lines 2>&1 | tail -6 | tee "$OUT/train_$model.txt" || status=1
    cp "/tmp/gpu_runs/$model/metrics.csv" "$OUT/train_${model}_metrics.csv" 2>/dev/null
done
exit $status
