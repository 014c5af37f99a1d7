"""A training step's time when another process wants a core: 2 threads vs 1, OpenMP's wait policy active vs
passive, quiet vs one busy process beside it.

Each setting runs in a fresh process (the OpenMP runtime reads ``OMP_WAIT_POLICY`` once, at start-up): ``--steps``
steps of ours (resnet20, batch 128, channels_last, tune_malloc, SGD) after 3 untimed ones.  "busy" starts a
pure-Python spin loop (one core) for the duration of the measurement.

    .venv/bin/python benchmarks/bench_contention.py
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WORKER = """
import time, torch, torch.nn.functional as F
from skiplab.registry import create_model
from skiplab.speed import tune_malloc
torch.set_num_threads({threads})
tune_malloc()
m = create_model("{model}", num_classes=10).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,))
def step():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
    opt.step()
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range({steps}):
    step()
print((time.perf_counter() - t) / {steps})
"""


def seconds_per_step(threads: int, passive: bool, busy: bool, args: argparse.Namespace) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)
        out = subprocess.run([sys.executable, "-c", WORKER.format(threads=threads, model=args.model, steps=args.steps)],
                             env=env, capture_output=True, text=True, check=True).stdout
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    print(f"{args.model}, batch 128, {args.steps} steps per setting, {os.cpu_count()} CPUs")
    print(f"{'threads':>7} {'OMP_WAIT_POLICY':>16} {'quiet ms/step':>14} {'one busy process':>17}")
    for threads, passive in ((2, False), (2, True), (1, False)):
        quiet = seconds_per_step(threads, passive, False, args)
        busy = seconds_per_step(threads, passive, True, args)
        print(f"{threads:>7} {'PASSIVE' if passive else '(default)':>16} {1e3 * quiet:14.0f} {1e3 * busy:17.0f}")


if __name__ == "__main__":
    main()
