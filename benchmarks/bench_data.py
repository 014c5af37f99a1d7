"""Input-pipeline figures for BENCHMARKS.md.

    python benchmarks/bench_data.py                 # augmentation + loader images/s, cached CIFAR-10 load, synthetic
    python benchmarks/bench_data.py --cold          # also the first (uncached) decode of the shared CIFAR-10 copy
    python benchmarks/bench_data.py --hardness 4    # how hard `synthetic` is: linear / tiny net / resnet8 / resnet20

Augmented images/s are for CIFAR-size batches (128 x 3 x 32 x 32, uint8 in, normalised float32 out) on every
available device.  The shared copy is located relative to the repository (../shared/data/cifar10-jpeg.tar.gz).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from skiplab.data import Augment, BatchLoader, ImageDataset, load_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(fn, device: torch.device, seconds: float) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process) running ``fn`` (returns images done)."""
    fn()  # warm-up
    _sync(device)
    count, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        count += fn()
    _sync(device)
    return count / (time.perf_counter() - t0), count / max(1e-9, time.process_time() - c0)


def bench_augment(device: torch.device, seconds: float = 3.0) -> None:
    """Images/s of the augmentation ops alone and of the whole loader (gather + augment + normalise)."""
    g = torch.Generator().manual_seed(0)
    n = 50000
    ds = ImageDataset(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)], (0.49, 0.48, 0.45),
                      (0.25, 0.24, 0.26), "bench")
    x = ds.images[:128].to(device)
    gen = torch.Generator().manual_seed(1)

    def ops(aug: Augment) -> int:
        p = aug.sample(128, 32, 32, gen).to(device)
        out, _ = aug.geometric(x, p)
        aug.erase(out.float(), p)
        return 128

    def run_loader(loader: BatchLoader) -> int:
        it = getattr(loader, "_bench_iter", None)
        try:
            xb, _ = next(it) if it is not None else next(iter(()))
        except StopIteration:
            loader._bench_iter = iter(loader)  # type: ignore[attr-defined]
            xb, _ = next(loader._bench_iter)  # type: ignore[attr-defined]
        return xb.shape[0]

    cases = [("ops only", "crop+flip", lambda: ops(Augment(4, True, 0))),
             ("ops only", "crop+flip+cutout8", lambda: ops(Augment(4, True, 8)))]
    for label, aug, cl in (("none", None, False), ("crop+flip", Augment(4, True, 0), False),
                           ("crop+flip+cutout8", Augment(4, True, 8), False),
                           ("crop+flip ch_last", Augment(4, True, 0), True)):
        loader = BatchLoader(ds, 128, shuffle=True, augment=aug, device=device, drop_last=True, channels_last=cl)
        cases.append(("BatchLoader", label, lambda loader=loader: run_loader(loader)))
    threads = [1, torch.get_num_threads()] if device.type == "cpu" and torch.get_num_threads() > 1 else [None]
    for what, label, fn in cases:
        cells = []
        for t in threads:
            before = torch.get_num_threads()
            if t is not None:
                torch.set_num_threads(t)
            wall, cpu = _rate(fn, device, seconds)
            torch.set_num_threads(before)
            cells.append(f"{wall:>9,.0f}/s wall" + (f" {cpu:>9,.0f}/CPU-s" if device.type == "cpu" else "")
                         + (f" [{t} thr]" if t else ""))
        print(f"  {device.type:4s} {what:11s} {label:18s} " + "   ".join(cells))


def bench_cifar_load(cold: bool) -> None:
    if not SHARED.is_file():
        print(f"  shared CIFAR-10 copy not found at {SHARED}; skipped")
        return
    if cold:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["SKIPLAB_CACHE"], before = tmp, os.environ.get("SKIPLAB_CACHE")
            t0 = time.perf_counter()
            load_dataset("cifar10", "train", data_dir=SHARED.parent)
            print(f"  first load (decode 60,000 JPEGs + cache both splits): {time.perf_counter() - t0:.1f} s")
            if before is None:
                del os.environ["SKIPLAB_CACHE"]
            else:
                os.environ["SKIPLAB_CACHE"] = before
    load_dataset("cifar10", "train", data_dir=SHARED.parent)  # make sure the cache exists
    for split in ("train", "test"):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            ds = load_dataset("cifar10", split, data_dir=SHARED.parent)
            times.append(time.perf_counter() - t0)
        print(f"  cached load cifar10 {split:5s} ({len(ds):,} images): best {min(times) * 1000:.0f} ms "
              f"of 3 (fingerprint of the archive + safetensors read)")


def bench_synthetic() -> None:
    for name, opts in (("synthetic", {}), ("synthetic_seg", {}), ("synthetic_digits", {})):
        t0 = time.perf_counter()
        ds = load_dataset(name, "train", **opts)
        print(f"  generate {name:16s} train {len(ds):,} x {'x'.join(map(str, ds.image_shape))}: "
              f"{time.perf_counter() - t0:.1f} s")


# ------------------------------------------------------------------------------------------------- hardness
def _evaluate(model: torch.nn.Module, loader: BatchLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    model.train()
    return correct / total


def _train(model: torch.nn.Module, train: ImageDataset, test: ImageDataset, epochs: int, lr: float,
           augment: Augment | None, batch: int = 128) -> tuple[list[float], float]:
    """SGD + Nesterov momentum, 50 warm-up steps then cosine to zero over ``epochs``; returns (test accuracy after
    each epoch, seconds)."""
    loader = BatchLoader(train, batch, shuffle=True, augment=augment, seed=0, drop_last=True)
    test_loader = BatchLoader(test, 500, shuffle=False)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    total, step, accs, t0 = epochs * len(loader), 0, [], time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            for grp in opt.param_groups:
                grp["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        accs.append(_evaluate(model, test_loader))
    return accs, time.perf_counter() - t0


def bench_hardness(epochs: int, names: list[str]) -> None:
    from skiplab.models.cifar import cifar_resnet

    torch.manual_seed(0)
    train, test = load_dataset("synthetic", "train"), load_dataset("synthetic", "test")
    builders = {
        "linear": (lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)), 0.01),
        "tiny": (lambda: torch.nn.Sequential(  # one conv layer, global pooling, linear
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)), 0.1),
        **{f"{p}{d}": (lambda d=d, p=p: cifar_resnet(d, skip="residual" if p == "resnet" else "none"), 0.1)
           for d in (8, 20, 56) for p in ("resnet", "plain")},
    }
    print(f"  synthetic: {len(train):,} train / {len(test):,} test, chance 10%, {epochs} epochs each, crop+flip, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for name in names:
        if name not in builders:
            raise SystemExit(f"--models: unknown {name!r}; choose from {', '.join(builders)}")
        build, lr = builders[name]
        accs, secs = _train(build(), train, test, epochs, lr, Augment(crop_padding=4, flip=True))
        print(f"  {name:8s} test accuracy per epoch: {' '.join(f'{a * 100:4.1f}' for a in accs)} %  "
              f"({secs:.0f} s, {epochs * len(train) / secs:,.0f} train images/s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", action="store_true", help="also time the first, uncached decode of the shared copy")
    ap.add_argument("--hardness", type=int, default=0, metavar="EPOCHS",
                    help="train each of --models on `synthetic` for EPOCHS epochs and print test accuracy per epoch")
    ap.add_argument("--models", default="linear,tiny,resnet8,resnet20",
                    help="comma-separated, from linear, tiny, resnet8/20/56, plain8/20/56")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput measurement")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print("augmentation throughput, batches of 128 x 3 x 32 x 32:")
    bench_augment(torch.device("cpu"), args.seconds)
    if torch.cuda.is_available():
        bench_augment(torch.device("cuda"), args.seconds)
    print("CIFAR-10 shared copy:")
    bench_cifar_load(args.cold)
    print("synthetic datasets (default sizes):")
    bench_synthetic()
    if args.hardness:
        print("synthetic hardness:")
        bench_hardness(args.hardness, args.models.split(","))


if __name__ == "__main__":
    main(sys.argv[1:])
