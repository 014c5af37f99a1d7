#!/usr/bin/env bash
# Every CPU figure of BENCHMARKS.md in one go, on a quiet machine (nothing else running: two OpenMP threads
# sharing a core with another process run many times slower, and the tables would show that instead).
#
#   bash benchmarks/cpu_suite.sh [OUT_DIR]        # default bench_out/; ~35 minutes on the 2-core machine
#
# Each table is also written to OUT_DIR/<name>.txt.  SUITE_SKIP="memory demo" skips the named parts (step, step1,
# ablation, conv, train, epoch, infer, memory, landscape, contention, data, demo).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT="${1:-bench_out}"
mkdir -p "$OUT"
skip() { [[ " ${SUITE_SKIP:-} " == *" $1 "* ]]; }
status=0
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/machine.txt"

# training step, ours vs the plain reference, 2 threads (the issue's floors); then the same at 1 thread, CPU clock
skip step || { $PY benchmarks/bench_step.py --json "$OUT/step.json" 2>&1 | tee "$OUT/step.txt" || status=1; }
skip step1 || { $PY benchmarks/bench_step.py --threads 1 --clock cpu --models resnet20,resnet50 2>&1 \
    | tee "$OUT/step_1thread.txt" || status=1; }
# each speed option's effect (channels_last, fused SGD, allocator, compile, per-step .item()), resnet20
skip ablation || { $PY benchmarks/bench_step.py --models resnet20 --ablation 2>&1 | tee "$OUT/step_ablation.txt" \
    || status=1; }
# where the step's time goes: profile by op, each convolution direction's GFLOP/s against the matmul peak
skip conv || { $PY benchmarks/bench_conv.py 2>&1 | grep -v USDT | tee "$OUT/conv.txt" || status=1; }
# training-loop throughput (loader + step) and projected epoch time, resnet20/56 on the shared CIFAR-10
skip train || { $PY benchmarks/bench_train.py --amp none --channels-last off,on 2>&1 | tee "$OUT/train.txt" || status=1; }
# a whole `skiplab train` epoch (data, evaluation, checkpoint) against pure model steps, resnet20, ~7 minutes
skip epoch || { $PY benchmarks/bench_epoch.py 2>&1 | tee "$OUT/epoch.txt" || status=1; }
# inference: eager vs folded+channels_last vs compiled vs onnxruntime
skip infer || { .venv/bin/skiplab bench infer --model resnet50 2>&1 | tee "$OUT/infer.txt" || status=1; }
# peak memory with and without gradient checkpointing
skip memory || { $PY benchmarks/bench_memory.py 2>&1 | tee "$OUT/memory.txt" || status=1; }
# loss-landscape points/s, ours vs the straightforward loop, and 2 processes vs 1
skip landscape || { $PY benchmarks/bench_landscape.py 2>&1 | tee "$OUT/landscape.txt" || status=1; }
# a step beside a busy process: 2 threads vs 1, OMP_WAIT_POLICY active vs passive
skip contention || { $PY benchmarks/bench_contention.py 2>&1 | tee "$OUT/contention.txt" || status=1; }
# the input pipeline
skip data || { $PY benchmarks/bench_data.py 2>&1 | tee "$OUT/data.txt" || status=1; }
# `make demo`'s job end to end (budget: 10 minutes)
skip demo || { /usr/bin/time -v .venv/bin/skiplab demo > "$OUT/demo.txt" 2>&1 || status=1; \
    grep -E "Elapsed|Maximum resident" "$OUT/demo.txt"; }
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
exit $status
