"""bf16 inference against float32 on real images (issue 14): top-1 agreement, accuracy and logit differences.

Two tests, both on the shared CIFAR-10 test images (``skiplab.data.load_dataset("cifar10", "test")``):

1. Trained CIFAR nets (the strong test): each cached trained net (``~/.cache/skiplab/nets/<name>-<hash>/
   net.safetensors``, written by the experiments' training runs; or ``--weights NAME=PATH``) runs all
   ``--images`` test images in float32 (eager, BN unfolded) and in bf16 — the folded channels_last copy cast to
   bfloat16 (``optimize_for_inference(dtype=torch.bfloat16)``, what ``skiplab bench infer`` times) and float32
   weights under ``torch.autocast("cpu", torch.bfloat16)``.  Reported: the share of images whose predicted class
   is the same as float32's, each one's test accuracy, and the largest logit difference (absolute and relative
   to the largest float32 logit).
2. ResNet-50 with random weights (He init, BN statistics set from a batch; a weak test: its 1000-class argmax
   has no meaning) on ``--r50-images`` test images upscaled to 224x224 (bilinear) — the net whose speed
   ``skiplab bench infer --model resnet50`` measures.

    .venv/bin/python benchmarks/bench_bf16_infer.py                    # 10,000 images, cached nets
    .venv/bin/python benchmarks/bench_bf16_infer.py --images 1000 --r50-images 256 --threads 1
"""
from __future__ import annotations

import argparse
import glob
import os
import time

import torch
import torch.nn.functional as F

from skiplab.data import BatchLoader, load_dataset
from skiplab.export import optimize_for_inference
from skiplab.registry import create_model
from skiplab.weights import load_weights

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
CACHE = os.path.expanduser("~/.cache/skiplab/nets")


def test_images(data_dir: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-10 test images (a fixed random subset, seed 0; all if ``n`` >= 10,000), normalised."""
    ds = load_dataset("cifar10", "test", data_dir=data_dir)
    if n < len(ds):
        ds = ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].sort().values)
    return next(iter(BatchLoader(ds, len(ds), shuffle=False)))


def cached_nets(names: list[str]) -> dict[str, str]:
    """The newest cached trained net per model name."""
    found = {}
    for name in names:
        paths = sorted(glob.glob(os.path.join(CACHE, f"{name}-*", "net.safetensors")), key=os.path.getmtime)
        if paths:
            found[name] = paths[-1]
    return found


@torch.inference_mode()
def logits_of(fn, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]).float() for i in range(0, len(x), batch)])


def compare(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None, batch: int) -> list[dict]:
    model = model.eval()
    want = logits_of(model, x, batch)
    copy16 = optimize_for_inference(model, dtype=torch.bfloat16)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def autocast(xb: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(xb)

    rows = []
    for label, got in (("float32 (eager)", want), ("bf16 copy of the folded net", logits_of(copy16, xcl, batch)),
                       ("bf16 autocast", logits_of(autocast, x, batch))):
        diff = (got - want).abs().max().item()
        rows.append({"variant": label, "agree": (got.argmax(1) == want.argmax(1)).float().mean().item(),
                     "acc": None if y is None else (got.argmax(1) == y).float().mean().item(),
                     "max_abs": diff, "max_rel": diff / want.abs().max().item(),
                     "loss": None if y is None else F.cross_entropy(got, y).item()})
    return rows


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'variant':30s} {'top-1 = fp32':>12s} {'accuracy':>9s} {'loss':>7s} {'max |diff|':>11s} "
          f"{'/ max |logit|':>13s}")
    for r in rows:
        acc = "" if r["acc"] is None else f"{100 * r['acc']:8.2f}%"
        loss = "" if r["loss"] is None else f"{r['loss']:7.4f}"
        print(f"  {r['variant']:30s} {100 * r['agree']:11.2f}% {acc:>9s} {loss:>7s} {r['max_abs']:11.2e} "
              f"{r['max_rel']:13.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=SHARED)
    ap.add_argument("--images", type=int, default=10_000, help="CIFAR-10 test images for the trained nets")
    ap.add_argument("--models", default="resnet20,resnet56,resnet110", help="cached trained nets to use")
    ap.add_argument("--weights", action="append", default=[], metavar="NAME=PATH", help="a trained net's file")
    ap.add_argument("--r50-images", type=int, default=256, help="images upscaled to 224 for ResNet-50 (0: skip)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from skiplab.speed import cpu_model, native_bf16

    native, why = native_bf16()
    print(f"{cpu_model()}; native bf16: {native} ({why}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    if not native:
        print("warning: bf16 is emulated on this CPU - the numbers hold, the bf16 runs are slow")
    t0 = time.perf_counter()
    nets = cached_nets(args.models.split(","))
    nets.update(dict(w.split("=", 1) for w in args.weights))
    x, y = test_images(args.data_dir, max(args.images, args.r50_images))
    if not nets:
        print(f"no trained nets found under {CACHE} (or given with --weights): test 1 skipped")
    for name, path in nets.items():
        model = create_model(name, num_classes=10)
        load_weights(model, path)
        show(f"{name}, trained ({path}), {min(args.images, len(x))} CIFAR-10 test images at 32x32",
             compare(model, x[:args.images], y[:args.images], 500))
    if args.r50_images:
        torch.manual_seed(0)
        r50 = create_model("resnet50")
        xs = F.interpolate(x[:args.r50_images], size=224, mode="bilinear", align_corners=False)
        from skiplab.analysis.hooks import calibrate_batchnorm

        calibrate_batchnorm(r50, xs[:64])  # BN statistics of real (upscaled) images, eval mode
        show(f"resnet50, random weights (BN statistics from {min(64, len(xs))} of the images), {len(xs)} CIFAR-10 "
             f"test images upscaled to 224x224 - argmax over 1000 meaningless classes: a weak test",
             compare(r50, xs, None, 32))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
