"""Training throughput: images/s and projected epoch time for CIFAR ResNets — float32 vs bf16 autocast,
channels_last on/off, torch.compile on/off — through the training loop's own step
(:func:`skiplab.train.loop.make_train_step`: augmented batch from the BatchLoader, forward, float32 loss,
backward, SGD update).

    .venv/bin/python benchmarks/bench_train.py                           # resnet20 + resnet56, shared CIFAR-10
    .venv/bin/python benchmarks/bench_train.py --models resnet20 --amp none,bf16 --compile off,on --device cuda

The machine this was written on is shared (2 cores, other jobs come and go), so settings are measured in
interleaved rounds — every setting runs ``--steps`` steps per round, ``--rounds`` times — and the table shows
each setting's best round (closest to an unloaded machine) and its median.  ``--warmup`` steps per setting
(allocation, oneDNN kernel choice, compilation) are not timed.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import torch
import torch.nn as nn

from skiplab.data import Augment, BatchLoader, load_dataset
from skiplab.registry import create_model
from skiplab.train import TrainConfig, resolve_amp, resolve_device
from skiplab.train.loop import make_train_step
from skiplab.train.optim import build_optimizer

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                       "cifar10-jpeg.tar.gz"))


class Setting:
    """One (model, amp, channels_last, compile) combination: its model, optimizer, loader and step."""

    def __init__(self, model: str, amp: str, channels_last: bool, compile: bool, ds, args, device) -> None:
        self.name = (model, amp, "on" if channels_last else "off", "on" if compile else "off")
        self.batch = args.batch_size
        self.device = device
        cfg = TrainConfig(model=model, amp=amp, channels_last=channels_last, compile=compile, lr=0.05)
        net = create_model(model, num_classes=ds.num_classes).to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = build_optimizer(net, cfg)
        fwd = torch.compile(net) if compile else net
        self.step = make_train_step(fwd, opt, nn.CrossEntropyLoss(), device=device, amp=resolve_amp(amp, device))
        self.loader = BatchLoader(ds, args.batch_size, shuffle=True, augment=Augment(crop_padding=4, flip=True),
                                  device=device, drop_last=True, channels_last=channels_last)
        self.batches = iter(())
        self.ips: list[float] = []

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps (loader included)."""
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = self._next()
            loss, _ = self.step(x, y)
        float(loss)  # wait for the device
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--data-dir", default=SHARED)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--amp", default="none,bf16", help="comma-separated: none, bf16, fp16")
    p.add_argument("--channels-last", default="off,on")
    p.add_argument("--compile", default="off", help="off, on or off,on")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bf16-steps", type=int, default=2, help="steps per round for bf16 (slow on CPUs without it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ds = load_dataset(args.data, "train", data_dir=args.data_dir)
    print(f"torch {torch.__version__} on {device} ({torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}), load average {os.getloadavg()[0]:.1f}; batch "
          f"{args.batch_size}, {args.rounds} rounds of {args.steps} steps per setting", flush=True)
    for model in args.models.split(","):
        settings = [Setting(model, amp, cl == "on", comp == "on", ds, args, device) for amp, cl, comp in
                    itertools.product(args.amp.split(","), args.channels_last.split(","), args.compile.split(","))]
        for s in settings:
            s.run(args.warmup)
        for _ in range(args.rounds):
            for s in settings:
                n = args.bf16_steps if s.name[1] == "bf16" and device.type == "cpu" else args.steps
                s.ips.append(n * s.batch / s.run(n))
        print(f"\n{'model':<10} {'amp':<5} {'channels_last':<14} {'compile':<8} {'best img/s':>11} "
              f"{'median':>7} {'epoch (50k, best)':>18}")
        for s in settings:
            best, med = max(s.ips), statistics.median(s.ips)
            print(f"{s.name[0]:<10} {s.name[1]:<5} {s.name[2]:<14} {s.name[3]:<8} {best:>11.0f} {med:>7.0f} "
                  f"{50000 / best:>16.0f} s", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
