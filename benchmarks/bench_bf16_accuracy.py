"""Accuracy before speed: CIFAR-10 ResNet-20 trained in float32 and under bf16 autocast, same seeds, same recipe.

bf16 autocast is what ``amp="auto"`` picks on a CPU with native bf16 (and on CUDA); this measures what it costs in
accuracy before it is trusted as a default.  Parameters, BatchNorm statistics and the optimizer state stay float32
(autocast only lowers the convolutions' and matmuls' inputs).  Runs alternate precision so load on a shared
machine hits both alike; each run's final test accuracy and time are printed and written to ``--json``.

    .venv/bin/python benchmarks/bench_bf16_accuracy.py --epochs 3 --seeds 0 1 2 --json results/bf16_accuracy.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 (default: skiplab.data.locate_data_dir)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from skiplab.data import locate_data_dir
    from skiplab.speed import cpu_report
    from skiplab.train import TrainConfig, train

    data_dir = args.data_dir or str(locate_data_dir("cifar10"))
    runs = []
    for seed in args.seeds:
        for amp in (("none", "bf16") if seed % 2 == 0 else ("bf16", "none")):
            cfg = TrainConfig(model="resnet20", data="cifar10", data_dir=data_dir, epochs=args.epochs, batch_size=128,
                              lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle", warmup=0.15 * args.epochs,
                              amp=amp, seed=seed, num_threads=args.threads, progress="none", eval_every=args.epochs,
                              out=None)
            t0 = time.perf_counter()
            result = train(cfg)
            wall = time.perf_counter() - t0
            acc = float(result.final["test_acc"])
            runs.append({"seed": seed, "amp": amp, "test_acc": acc, "wall_s": wall})
            print(f"seed {seed} {amp:>4}: test accuracy {100 * acc:.2f}% in {wall:.0f} s", flush=True)
    summary = {}
    for amp in ("none", "bf16"):
        accs = [r["test_acc"] for r in runs if r["amp"] == amp]
        summary[amp] = {"mean_test_acc": statistics.mean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                        "mean_wall_s": statistics.mean(r["wall_s"] for r in runs if r["amp"] == amp)}
    diff = 100 * (summary["bf16"]["mean_test_acc"] - summary["none"]["mean_test_acc"])
    print(f"float32 {100 * summary['none']['mean_test_acc']:.2f}% vs bf16 {100 * summary['bf16']['mean_test_acc']:.2f}%"
          f" (mean of {len(args.seeds)} seeds): bf16 - float32 = {diff:+.2f} points; "
          f"{'within' if abs(diff) <= 0.3 else 'NOT within'} 0.3 points")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "what": "CIFAR-10 ResNet-20, float32 vs bf16 autocast, same seeds and recipe", "epochs": args.epochs,
            "recipe": "SGD 0.9, batch 128, one-cycle lr 0.1 (15% warmup), wd 5e-4, crop 4 + flip",
            "threads": args.threads, "runs": runs, "summary": summary, "bf16_minus_float32_points": diff,
            "machine": cpu_report(), "torch": torch.__version__, "command": " ".join(["python", *sys.argv]),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
