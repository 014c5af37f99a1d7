"""Peak memory of one training step with and without segment checkpointing (skiplab.checkpointing).

Each measurement runs in a fresh process (so one run's freed memory cannot hide in another's peak): build the
model, an SGD optimizer with momentum, and one step (forward, cross-entropy, backward, SGD step) on a random
CIFAR-sized batch; the peak resident set size is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``.

    .venv/bin/python benchmarks/bench_memory.py                           # resnet1202, preact_resnet1001, batch 64
    .venv/bin/python benchmarks/bench_memory.py --models resnet110 --batch 128 --segments 4

Without checkpointing these nets need many GiB at batch 64.  Before running the plain step the script estimates
its need (the bytes autograd saves for backward, counted on the meta device); where that would not fit in
``MemAvailable`` with a margin, it measures the plain step at batch/4 and batch/2 instead and extrapolates
linearly to the batch (activation memory is linear in the batch; the table marks such rows), unless ``--force``.

Resident memory is not live memory: glibc keeps freed heap memory, so with its default settings a checkpointed
step's RSS stays near the high-water mark of everything it ever allocated.  Each run is therefore made under
glibc's default and under ``skiplab.speed.set_malloc_policy("memory")`` (freed memory goes back to the OS at
once), and the checkpointed peaks are compared with the lower of the two plain peaks.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    import skiplab

    if args.policy != "default":
        from skiplab.speed import set_malloc_policy

        if not set_malloc_policy(args.policy):
            raise SystemExit(f"set_malloc_policy({args.policy!r}) did not apply on this platform")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = skiplab.create_model(args.model).train()
    if args.segments:
        model.set_checkpointing(args.segments)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print("@@" + json.dumps({"before_mib": before / 1024, "peak_mib": peak / 1024, "step_s": secs,
                             "loss": loss.item()}), flush=True)


def run_worker(model: str, batch: int, segments: int, threads: int, policy: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model, "--batch", str(batch),
           "--segments", str(segments), "--threads", str(threads), "--policy", policy]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    raise RuntimeError(f"worker failed (status {out.returncode}): {out.stderr[-2000:]}")


def saved_activation_bytes(model: str, batch: int) -> tuple[int, int]:
    """(bytes autograd saves for backward in one forward pass at ``batch``, number of feature units), counted
    on the meta device — an upper bound on the activations' memory (a tensor saved by two ops counts twice)."""
    import torch

    import skiplab
    from skiplab.checkpointing import feature_units

    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.device("meta"):
        m = skiplab.create_model(model).train()
        x = torch.empty(batch, 3, 32, 32)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x)
    return total, len(feature_units(m))


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet1202,preact_resnet1001")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--segments", default="auto", help="checkpoint segments, or auto (about sqrt of the units)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--policies", default="default,memory",
                   help="allocator policies to run each way: default (glibc's) and/or skiplab.speed's speed, memory")
    p.add_argument("--force", action="store_true", help="run the plain step at full batch whatever it needs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--policy", default="default", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.segments = int(args.segments)
        return worker(args)
    policies = args.policies.split(",")
    print(f"one training step at batch {args.batch} (CIFAR 32x32), {args.threads} thread(s); peak RSS per fresh "
          f"process; MemAvailable {mem_available() / 2**30:.1f} GiB")
    print(f"{'model':<18} {'segments':>8} {'malloc':>8} {'peak RSS MiB':>13} {'step s':>7} {'vs plain':>9}  note")
    for model in args.models.split(","):
        saved, units = saved_activation_bytes(model, args.batch)
        segments = round(math.sqrt(units)) if args.segments == "auto" else int(args.segments)
        need = saved * 1.1 + 2**30
        plain_peaks = []
        for policy in policies:
            if args.force or need < 0.8 * mem_available():
                plain = run_worker(model, args.batch, 0, args.threads, policy)
                peak, secs = plain["peak_mib"], f"{plain['step_s']:7.1f}"
                note = f"measured (autograd saves <= {saved / 2**30:.1f} GiB)"
            else:
                b1, b2 = max(1, args.batch // 4), max(2, args.batch // 2)
                r1 = run_worker(model, b1, 0, args.threads, policy)
                r2 = run_worker(model, b2, 0, args.threads, policy)
                peak = r2["peak_mib"] + (r2["peak_mib"] - r1["peak_mib"]) / (b2 - b1) * (args.batch - b2)
                secs = "      -"
                note = (f"EXTRAPOLATED from batch {b1}: {r1['peak_mib']:.0f} and {b2}: {r2['peak_mib']:.0f} MiB "
                        f"(autograd saves <= {saved / 2**30:.1f} GiB: > 80% of MemAvailable; --force measures)")
            plain_peaks.append(peak)
            print(f"{model:<18} {'none':>8} {policy:>8} {peak:13.0f} {secs} {'':>9}  {note}", flush=True)
        base = min(plain_peaks)  # the stricter comparison: the plain run's lowest peak
        for policy in policies:
            ck = run_worker(model, args.batch, segments, args.threads, policy)
            print(f"{model:<18} {segments:>8} {policy:>8} {ck['peak_mib']:13.0f} {ck['step_s']:7.1f} "
                  f"{ck['peak_mib'] / base:8.2f}x  vs the lowest plain peak; {ck['before_mib']:.0f} MiB before "
                  "the step (interpreter, torch, model)", flush=True)


if __name__ == "__main__":
    main()
