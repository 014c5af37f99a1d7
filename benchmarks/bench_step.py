"""Training-step throughput, ours vs the plain reference (benchmarks/reference.py), measured in the same run.

A step is forward, cross-entropy, backward and an SGD step (momentum 0.9, weight decay 1e-4) on a fixed random
batch: resnet20/56/110 at 32x32, batch 128, and resnet50 at 224x224, batch 32, 10 classes.  Each side runs in its
own worker process (so process-wide settings — allocator, threads, compile caches — stay with their side) and
the two take turns: per round one side runs ``--steps`` steps, then the other, the order swapping every round.
Reported: median time per step, images/s, the ratio reference/ours from the paired rounds, and achieved GFLOP/s
(training-step FLOPs counted by torch.utils.flop_counter) as a fraction of the machine's float32 matmul peak and,
where bf16 variants run, of its bf16 matmul peak — both measured in the same run with the same thread count.

    .venv/bin/python benchmarks/bench_step.py                              # the four nets, ref vs ours
    .venv/bin/python benchmarks/bench_step.py --models resnet20 --ablation # each option's effect
    .venv/bin/python benchmarks/bench_step.py --threads 1 --clock cpu      # on a loaded machine
    .venv/bin/python benchmarks/bench_step.py --variants cl+malloc+bf16,cl+malloc+fpmath  # bf16 ways (BF16 CPU)

Variants are '+'-joined options: ``cl`` (channels_last), ``fused`` (fused SGD), ``malloc``
(skiplab.speed.tune_malloc), ``compile`` (torch.compile), ``item`` (loss.item() every step), ``bf16`` (the forward
under ``torch.autocast("cpu", torch.bfloat16)``, the loss in float32 — what ``train()``'s ``amp="auto"`` does on a
CPU with native bf16; weights, BatchNorm statistics and optimizer state stay float32), ``fpmath`` (oneDNN's bf16
"fpmath mode": float32 tensors everywhere, convolutions and matmuls computed with bf16 inputs and float32
accumulation inside oneDNN — ``torch.backends.mkldnn.{conv,matmul}.fp32_precision = "bf16"``); ``eager`` is none
of them; ``ref`` is the reference and ``ref+malloc`` the reference with the allocator tuning (what that
process-wide setting alone gives any code).  ``--clock cpu`` times process CPU time instead of wall time: with
one thread it is immune to other processes taking the core, which wall time on a shared machine is not.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {"resnet20": (128, 32), "resnet56": (128, 32), "resnet110": (128, 32), "resnet50": (32, 224)}
OPTIONS = ("cl", "fused", "malloc", "compile", "item", "bf16", "fpmath")
BEST = "cl+malloc"  # what train() does on CPU in float32 (the fused step only pays on CUDA)
BEST_BF16 = "cl+malloc+bf16"  # what train() does on a CPU with native bf16 (amp="auto": bf16 autocast)
ABLATION = ("eager", "cl", "cl+malloc", "cl+fused+malloc", "cl+malloc+compile", "ref+malloc")


def parse_variant(spec: str) -> tuple[bool, set[str]]:
    """``"ref+malloc"`` -> (True, {"malloc"}); ``"cl+fused"`` -> (False, {"cl", "fused"})."""
    parts = [p for p in spec.split("+") if p]
    is_ref = bool(parts) and parts[0] == "ref"
    opts = set(parts[1:] if is_ref else parts) - {"eager"}
    bad = opts - set(OPTIONS)
    if bad or (is_ref and opts - {"malloc"}):
        raise SystemExit(f"bad variant {spec!r}: options are {', '.join(OPTIONS)} (ref takes only malloc)")
    return is_ref, opts


# ------------------------------------------------------------------------------------------------------ worker
def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    is_ref, opts = parse_variant(args.variant)
    if "malloc" in opts:
        from skiplab.speed import tune_malloc

        if not tune_malloc():
            raise SystemExit("tune_malloc() did not apply on this platform")
    if "fpmath" in opts:  # oneDNN computes float32 convolutions / matmuls from bf16-rounded inputs
        torch.backends.mkldnn.conv.fp32_precision = "bf16"
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    batch, size = SHAPES[args.model]
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if is_ref:
        sys.path.insert(0, HERE)
        from reference import ReferenceTrainer, reference_model

        trainer = ReferenceTrainer(reference_model(args.model, num_classes=10))
        step = lambda: trainer.step(x, y)  # noqa: E731
    else:
        import skiplab
        from skiplab.speed import optimizer_kwargs, prepare_for_training, to_channels_last

        model = skiplab.create_model(args.model, num_classes=10).train()
        fwd = prepare_for_training(model, channels_last="cl" in opts, compile="compile" in opts)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                              **optimizer_kwargs(torch.optim.SGD, "cpu", fused="fused" in opts))
        if "cl" in opts:
            x = to_channels_last(x)
        log_item = "item" in opts
        bf16 = "bf16" in opts

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as train.loop.make_train_step
                loss = F.cross_entropy(fwd(x).float(), y)
            loss.backward()
            opt.step()
            if log_item:
                loss.item()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    print("@@" + json.dumps({"warm_s": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        times = []
        for _ in range(int(cmd[1])):
            w, c = time.perf_counter(), time.process_time()
            step()
            times.append((time.perf_counter() - w, time.process_time() - c))
        print("@@" + json.dumps({"times": times}), flush=True)


class Worker:
    def __init__(self, model: str, variant: str, args: argparse.Namespace) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model, "--variant", variant,
               "--threads", str(args.threads), "--warmup", str(args.warmup)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.warm_s = self._read()["warm_s"]

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"worker exited with status {self.proc.wait()}")

    def run(self, steps: int) -> list[tuple[float, float]]:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self._read()["times"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait()


# ------------------------------------------------------------------------------------------------------ parent
def step_flops(model: str) -> int:
    """FLOPs of one training step (forward + backward) at the benchmark's batch, counted on the meta device."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    import skiplab

    batch, size = SHAPES[model]
    with torch.device("meta"):
        m = skiplab.create_model(model, num_classes=10).train()
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(m(x), y).backward()
    return counter.get_total_flops()


def compare(model: str, variant: str, ref: Worker, args: argparse.Namespace) -> dict:
    ours = Worker(model, variant, args)
    k = 0 if args.clock == "wall" else 1
    pairs = []
    try:
        for r in range(args.rounds):
            order = (ref, ours) if r % 2 == 0 else (ours, ref)
            got = {id(w): w.run(args.steps) for w in order}
            pairs.append((got[id(ref)], got[id(ours)]))
    finally:
        ours.close()
    ref_t = statistics.median(t[k] for p in pairs for t in p[0])
    our_t = statistics.median(t[k] for p in pairs for t in p[1])
    ratios = [statistics.median(t[k] for t in p[0]) / statistics.median(t[k] for t in p[1]) for p in pairs]
    return {"variant": variant, "ref_s": ref_t, "ours_s": our_t, "ratio": ref_t / our_t,
            "ratio_lo": min(ratios), "ratio_hi": max(ratios), "warm_s": ours.warm_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,resnet56,resnet110,resnet50")
    p.add_argument("--variants", default=None, help=f"comma-separated, e.g. {BEST} or eager,cl (default: {BEST}, "
                   f"and {BEST_BF16} where the CPU has native bf16)")
    p.add_argument("--ablation", action="store_true", help=f"variants {','.join(ABLATION)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per side per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads, both sides (default: all cores)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads is None:
        args.threads = os.cpu_count() or 1
    if args.worker:
        return worker(args)
    import torch

    from skiplab.speed import matmul_peak_gflops, native_bf16

    native, why = native_bf16()
    if args.ablation:
        variants = list(ABLATION) + ([BEST_BF16, "cl+malloc+fpmath", "cl+malloc+bf16+compile"] if native else [])
    else:
        variants = args.variants.split(",") if args.variants else [BEST] + ([BEST_BF16] if native else [])
    for v in variants:
        parse_variant(v)
    with_bf16 = any(parse_variant(v)[1] & {"bf16", "fpmath"} for v in variants)

    models = args.models.split(",")
    for m in models:
        if m not in SHAPES:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(SHAPES)}")
    from skiplab.speed import cpu_flags, cpu_model

    peak = matmul_peak_gflops(args.threads, clock=args.clock)
    peak16 = matmul_peak_gflops(args.threads, clock=args.clock, dtype=torch.bfloat16) if with_bf16 else None
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    print(f"{cpu_model()} ({', '.join(simd) or 'flags unknown'}; native bf16: {native}, {why}); "
          f"torch {torch.__version__}, {args.threads} thread(s), {args.clock} clock, load average "
          f"{os.getloadavg()[0]:.1f}; 2048^2 matmul peak float32 {peak:.1f} GFLOP/s"
          + (f", bfloat16 {peak16:.1f} GFLOP/s" if peak16 else "")
          + f"; {args.rounds} alternating rounds x {args.steps} steps per side")
    results = []
    for model in models:
        batch, size = SHAPES[model]
        flops = step_flops(model)
        print(f"\n{model}: batch {batch} at {size}x{size}, {flops / 1e9:.1f} GFLOP per training step")
        print(f"{'variant':<26} {'ms/step':>9} {'images/s':>9} {'vs ref':>7} {'(range)':>13} "
              f"{'GFLOP/s':>8} {'% peak':>7} {'warmup s':>9}" + (f" {'% bf16 peak':>11}" if peak16 else ""))
        ref = Worker(model, "ref", args)
        ref_times = []
        try:
            for variant in variants:
                r = compare(model, variant, ref, args)
                ref_times.append(r["ref_s"])
                gf = flops / r["ours_s"] / 1e9
                span = f"({r['ratio_lo']:.2f}-{r['ratio_hi']:.2f})"
                print(f"{variant:<26} {r['ours_s'] * 1e3:9.0f} {batch / r['ours_s']:9.1f} {r['ratio']:6.2f}x "
                      f"{span:>13} {gf:8.1f} {100 * gf / peak:6.1f}% {r['warm_s']:9.1f}"
                      + (f" {100 * gf / peak16:10.1f}%" if peak16 else ""), flush=True)
                results.append({"model": model, "flops": flops, "peak_gflops": peak, "peak_bf16_gflops": peak16,
                                **r})
        finally:
            ref.close()
        ref_s = statistics.median(ref_times)
        gf = flops / ref_s / 1e9
        print(f"{'ref (reference.py)':<26} {ref_s * 1e3:9.0f} {batch / ref_s:9.1f} {1:6.2f}x {'':>13} "
              f"{gf:8.1f} {100 * gf / peak:6.1f}% {ref.warm_s:9.1f}"
              + (f" {100 * gf / peak16:10.1f}%" if peak16 else ""), flush=True)
    peak_end = matmul_peak_gflops(args.threads, clock=args.clock)
    peak16_end = matmul_peak_gflops(args.threads, clock=args.clock, dtype=torch.bfloat16) if with_bf16 else None
    print(f"\nmatmul peak at the end: float32 {peak_end:.1f} GFLOP/s (start {peak:.1f})"
          + (f", bfloat16 {peak16_end:.1f} GFLOP/s (start {peak16:.1f})" if peak16 else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "peak_gflops": [peak, peak_end], "peak_bf16_gflops": [peak16, peak16_end],
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
