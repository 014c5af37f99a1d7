#!/usr/bin/env bash
# The real-data ("cifar") setting of every experiment, written to results/cifar/ (one folder each + index.html).
#
#   bash benchmarks/cifar_set.sh            # one worker: every experiment in turn
#   bash benchmarks/cifar_set.sh 2          # two workers (one thread each) sharing the net cache: on a 2-core
#                                           # machine about twice as fast; a net one worker trains the other waits
#                                           # for or skips to the next (file locks in $SKIPLAB_CACHE/nets)
#
# Trained nets are cached in $SKIPLAB_CACHE/nets (default ~/.cache/skiplab/nets) with epoch checkpoints: a stopped
# set continues where it stopped when started again.  Finished experiments are kept (--reuse); the page is
# rebuilt from the saved results at the end.  Wall times land in each folder's manifest.json and in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-1}
SKIPLAB=${SKIPLAB:-.venv/bin/skiplab}
OUT=${OUT:-results/cifar}
# Worker 0 writes every result: identity first (its plain-20, plain-56 and ResNet-56 are degradation's shallowest
# and deepest nets, which lesion, landscape and stochastic depth reuse), then those analyses, then the comparisons.
# Extra workers only train the comparisons' nets (the cost), degradation first, ahead of worker 0.
ORDER="identity lesion landscape features unet_skips degradation variants stochastic_depth orderings"
TRAINING="degradation variants stochastic_depth orderings"
mkdir -p "$OUT" "$OUT/.logs"

worker() {  # $1: worker index; worker 0 writes the results, the others only train nets into the shared cache
  local w=$1
  for name in $([ "$w" = 0 ] && echo "$ORDER" || echo "$TRAINING"); do
    if [ "$w" = 0 ]; then
      [ -f "$OUT/$name/result.json" ] && { echo "$name: kept"; continue; }
      /usr/bin/time -f "$name %e s" "$SKIPLAB" experiment "$name" --setting cifar --out "$OUT/$name" \
        > "$OUT/.logs/$name.log" 2>&1 || { echo "$name FAILED (see $OUT/.logs/$name.log)"; continue; }
      tail -1 "$OUT/.logs/$name.log"
    else
      "$SKIPLAB" experiment "$name" --setting cifar --out "$(mktemp -d)/$name" > /dev/null 2>&1 || true
    fi
  done
}

export OMP_NUM_THREADS=$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))
for ((w = 1; w < WORKERS; w++)); do worker "$w" & done
worker 0
wait
"$SKIPLAB" report --setting cifar --out "$OUT" --reuse
# RESULTS.md at the top of the repository: the same rows, linked into results/cifar/
.venv/bin/python - "$OUT" <<'PY'
import sys
from skiplab.experiments import experiments
from skiplab.report.markdown import results_markdown
out = sys.argv[1]
intro = (f"One row per claim of the real-data setting (`--setting cifar`), from the results saved in `{out}/` "
         f"(page: [{out}/index.html]({out}/index.html)). Verdicts are computed from each run's numbers; a claim that "
         "did not hold at this budget says so. Produced by `bash benchmarks/cifar_set.sh 2`; budgets and wall times "
         "per experiment are in the rows and in each folder's manifest.json.")
open("RESULTS.md", "w").write(results_markdown(out, experiments(), title="Results on real data", intro=intro,
                                               link_base=f"{out}/"))
PY
