"""Loss-landscape speed (issue 7, "Analysis speed"): grid points per second on resnet20, ours
(:class:`skiplab.analysis.landscape.GridEvaluator`; its onnxruntime engine where installed) against the
straightforward loop
(:func:`skiplab.analysis.landscape.naive_surface`: write θ + aδ + bη into the model, run the data loader
through it in eval mode under no_grad, one ``.item()`` per batch, restore θ at the end), and one process
against ``--procs`` processes under torchrun (points split, results all-reduced).

    .venv/bin/python benchmarks/bench_landscape.py                     # 256 images, 3x3 grid, 3 rounds
    .venv/bin/python benchmarks/bench_landscape.py --images 512 --grid 4 --rounds 5 --threads 1

Every method evaluates the same points on the same images (the synthetic 32x32 set), the model's BatchNorm
statistics set from one batch (speed does not depend on training).  Methods run in interleaved rounds and
the table shows each one's median and best round, because the machine is shared; the loss values of ours and
the reference are compared too.  The ablation rows switch off one of ours' choices at a time.  The
multi-process rows launch ``torchrun --standalone`` (gloo) with ``--threads`` threads per process; their time
excludes start-up (it is taken from a barrier after the model, data and directions are ready to the end of the
all-reduce).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from skiplab.analysis.hooks import calibrate_batchnorm
from skiplab.analysis.landscape import GridEvaluator, axis, evaluate_surface, naive_surface, random_direction
from skiplab.data import BatchLoader, load_dataset
from skiplab.registry import create_model
from skiplab.speed import matmul_peak_gflops


def setup(args: argparse.Namespace):
    torch.manual_seed(0)
    ds = load_dataset("synthetic", "train", n_train=args.images, n_test=1)
    model = create_model(args.model, num_classes=ds.num_classes)
    x, y = next(iter(BatchLoader(ds, len(ds), shuffle=False)))
    calibrate_batchnorm(model, x)  # realistic BN statistics, eval mode
    dirs = [random_direction(model, seed=s) for s in (1, 2)]
    xs = axis(args.grid, 1.0)
    return ds, model, x, y, dirs, xs


def worker(args: argparse.Namespace) -> None:
    """One process of the torchrun measurement: rank 0 prints the JSON line."""
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    _, model, x, y, dirs, xs = setup(args)
    ev = GridEvaluator(model, dirs, x, y, chunk=args.chunk, engine=args.engine)
    ev([[0.0, 0.0]])  # warm-up: oneDNN picks its kernels
    times = []
    for _ in range(args.rounds):
        dist.barrier()
        t0 = time.perf_counter()
        loss, _ = evaluate_surface(ev, xs, xs)
        times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        print(json.dumps({"world": dist.get_world_size(), "points": len(xs) ** 2, "times": times,
                          "loss": loss.tolist()}), flush=True)
    dist.destroy_process_group()


def run_torchrun(args: argparse.Namespace, procs: int) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={procs}", __file__, "--worker",
           "--images", str(args.images), "--grid", str(args.grid), "--rounds", str(args.rounds),
           "--threads", str(args.threads), "--chunk", str(args.chunk), "--model", args.model, "--engine", args.engine]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"torchrun failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--images", type=int, default=256, help="evaluation images per point")
    ap.add_argument("--grid", type=int, default=3, help="grid side (grid x grid points per measurement)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (per process)")
    ap.add_argument("--chunk", type=int, default=64, help="images per forward pass in ours")
    ap.add_argument("--batch-size", type=int, default=128, help="the reference loader's batch size")
    ap.add_argument("--procs", type=int, default=2, help="processes for the torchrun rows (0: skip them)")
    ap.add_argument("--engine", default="auto", help="ours' engine: torch, onnxruntime or auto (the default)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    torch.set_num_threads(args.threads)
    ds, model, x, y, dirs, xs = setup(args)
    n_points = len(xs) ** 2
    loader = BatchLoader(ds, args.batch_size, shuffle=False)
    methods = {
        "reference (naive loop)": lambda: naive_surface(model, dirs, loader, xs, xs)[0],
        "ours": GridEvaluator(model, dirs, x, y, chunk=args.chunk, engine=args.engine),
        "ours, torch engine": GridEvaluator(model, dirs, x, y, chunk=args.chunk),
        "ours, torch, without BN folding": GridEvaluator(model, dirs, x, y, chunk=args.chunk, fold_bn=False),
        "ours, torch, without channels_last": GridEvaluator(model, dirs, x, y, chunk=args.chunk,
                                                            channels_last=False),
        f"ours, torch, one pass of {args.images} images": GridEvaluator(model, dirs, x, y, chunk=args.images),
    }
    print(f"ours: engine {methods['ours'].engine}")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x[:1])
    point_flops = counter.get_total_flops() * args.images  # one grid point: a forward pass over every image
    peak = matmul_peak_gflops(args.threads)
    times: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    values: dict[str, np.ndarray] = {}
    for fn in methods.values():  # warm-up
        fn() if not isinstance(fn, GridEvaluator) else fn([[0.0, 0.0]])
    for _ in range(args.rounds):
        for name, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            values[name] = fn() if not isinstance(fn, GridEvaluator) else evaluate_surface(fn, xs, xs)[0]
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    ref = statistics.median(times["reference (naive loop)"])
    ref_cpu = statistics.median(cpu["reference (naive loop)"])
    print(f"{args.model}, {args.images} images/point, {n_points} points/round, {args.rounds} rounds, "
          f"{args.threads} thread(s); torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
    peak_end = matmul_peak_gflops(args.threads)
    print("points/s: wall clock, median and best round; per CPU-s: points per second of this process's CPU time "
          "(steadier than wall time on a shared machine when one thread runs); GFLOP/s: forward FLOPs "
          f"(torch.utils.flop_counter, {point_flops / 1e9:.2f} G per point) / median time; % peak: of the float32 "
          f"matmul peak at {args.threads} thread(s), {peak:.1f} GFLOP/s at the start, {peak_end:.1f} at the end")
    peak = max(peak, peak_end)
    print(f"{'method':42s} {'points/s':>9s} {'best':>7s} {'vs ref':>7s} {'per CPU-s':>10s} {'vs ref':>7s} "
          f"{'GFLOP/s':>8s} {'% peak':>7s} {'max rel Δloss':>14s}")
    scale = np.abs(values["reference (naive loop)"])
    for name, ts in times.items():
        med, med_cpu = statistics.median(ts), statistics.median(cpu[name])
        diff = float((np.abs(values[name] - values["reference (naive loop)"]) / scale).max())
        gflops = n_points * point_flops / med / 1e9
        print(f"{name:42s} {n_points / med:9.2f} {n_points / min(ts):7.2f} {ref / med:6.2f}x "
              f"{n_points / med_cpu:10.2f} {ref_cpu / med_cpu:6.2f}x {gflops:8.1f} {100 * gflops / peak:6.1f}% "
              f"{diff:14.2e}")
    if args.procs > 1:
        one, many = run_torchrun(args, 1), run_torchrun(args, args.procs)
        t1, tn = statistics.median(one["times"]), statistics.median(many["times"])
        diff = float(np.abs(np.asarray(many["loss"]) - np.asarray(one["loss"])).max())  # same code: exact
        print(f"{'ours, torchrun 1 process':42s} {n_points / t1:9.2f} {n_points / min(one['times']):7.2f} "
              f"{ref / t1:6.2f}x")
        print(f"{f'ours, torchrun {args.procs} processes':42s} {n_points / tn:9.2f} "
              f"{n_points / min(many['times']):7.2f} {ref / tn:6.2f}x {'':10s} {'':7s} {diff:14.2e}")
        print(f"{args.procs} processes / 1 process: {t1 / tn:.2f}x (median), "
              f"{min(one['times']) / min(many['times']):.2f}x (best rounds); same surface: max |Δloss| {diff:.1e}")


if __name__ == "__main__":
    main()
