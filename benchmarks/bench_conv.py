"""Where a CIFAR ResNet training step's time goes, and how close each part runs to the machine's limit.

1. The step by operator: ``torch.profiler`` over ``--steps`` steps of ours (channels_last, tune_malloc, SGD),
   self CPU time per aten op, largest first.
2. The 3x3 convolution of each CIFAR stage (16 channels at 32x32, 32 at 16x16, 64 at 8x8; batch 128) in its three
   directions — forward, gradient of the input, gradient of the weight — in NHWC and NCHW, as GFLOP/s against the
   float32 matmul peak measured in the same run.  The training step is three of these per convolution, so this
   is the ceiling the step's speed can reach.

    .venv/bin/python benchmarks/bench_conv.py              # 2 threads
    .venv/bin/python benchmarks/bench_conv.py --threads 1 --model resnet56
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from skiplab.registry import create_model
from skiplab.speed import matmul_peak_gflops, tune_malloc

STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, spatial size) of the CIFAR ResNets' three stages


def best_ms(fn, reps: int = 20, rounds: int = 3) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return 1e3 * best


def step_profile(model_name: str, batch: int, steps: int, rows: int) -> None:
    model = create_model(model_name, num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\n{model_name}, batch {batch}, {steps} steps: self CPU time by aten op (share of all aten self time)")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]:
        print(f"  {e.key:34s} {100 * e.self_cpu_time_total / total:5.1f}%  {e.count // steps:4d} calls/step")


def conv_directions(batch: int, peak: float) -> None:
    print(f"\n3x3 convolution, stride 1, batch {batch}: GFLOP/s (% of the matmul peak {peak:.1f})")
    print(f"{'stage':14s} {'layout':6s} {'forward':>16s} {'grad input':>16s} {'grad weight':>16s}")
    for c, h in STAGES:
        flops = 2 * batch * c * c * 9 * h * h
        for fmt, name in ((torch.channels_last, "NHWC"), (torch.contiguous_format, "NCHW")):
            x = torch.randn(batch, c, h, h).contiguous(memory_format=fmt)
            w = torch.randn(c, c, 3, 3).contiguous(memory_format=fmt)
            go = torch.randn(batch, c, h, h).contiguous(memory_format=fmt)

            def backward(mask: list[bool]):  # noqa: B023 (used at once)
                return lambda: torch.ops.aten.convolution_backward(go, x, w, None, [1, 1], [1, 1], [1, 1], False,
                                                                   [0, 0], 1, mask)

            cells = []
            for fn in (lambda: F.conv2d(x, w, padding=1), backward([True, False, False]),  # noqa: B023
                       backward([False, True, False])):
                rate = flops / best_ms(fn) / 1e6
                cells.append(f"{rate:7.1f} ({100 * rate / peak:3.0f}%)")
            print(f"{c:3d} ch {h:2d}x{h:<2d}    {name:6s} {cells[0]:>16s} {cells[1]:>16s} {cells[2]:>16s}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="profiled steps")
    ap.add_argument("--rows", type=int, default=10, help="ops listed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()
    peak = matmul_peak_gflops(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {torch.backends.cpu.get_cpu_capability()}; "
          f"float32 2048^2 matmul peak {peak:.1f} GFLOP/s")
    step_profile(args.model, args.batch, args.steps, args.rows)
    conv_directions(args.batch, max(peak, matmul_peak_gflops(args.threads)))


if __name__ == "__main__":
    main()
