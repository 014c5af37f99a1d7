"""40 residual conv blocks on MNIST beside the same 40 blocks without the skip (PyTorch).

    block = Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()))     # y = x + tanh(conv(x))
    twin  = Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()), skip="none")   # y = tanh(conv(x))

Both nets: a stride-2 stem conv (1 -> 8 channels, 28x28 -> 14x14, which keeps the run to minutes on a CPU), the 40
blocks, global average pooling, a linear classifier; no normalisation layers, PyTorch's default init, Adam.  The
plain stack's signal and gradients fade through 40 layers and it stays at chance; the residual stack trains
(He et al. 2015, arXiv:1512.03385).

Why tanh: with ReLU, every one of the 40 un-normalised blocks adds a non-negative term to the signal, which grows
so large at init that the residual net's first loss was ~2,900 and it too stayed at chance for 400 steps (measured
with this script's settings).  A zero-centred, bounded activation keeps the identity path's sum in range; with ReLU
use a normalisation layer in the block or a zero-initialised branch scale (``Residual(..., scale="learnable")``,
ReZero).

Data: real MNIST digits.  The shared copy (../shared/data/mnist) holds only MNIST's official test file, 10,000
digits, so it is split by a fixed seed into 8,000 for training and 2,000 held out for the accuracy printed here.

    python examples/mnist_residual_conv_torch.py               # the full run (see README: Examples)
    python examples/mnist_residual_conv_torch.py --quick       # a smoke test: a few steps
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.blocks.wrap import Residual
from skiplab.data import ImageDataset, load_dataset, locate_data_dir


def conv_stack(depth: int, width: int, *, skip: str) -> nn.Sequential:
    """stem -> ``depth`` x [conv 3x3 + tanh] (each wrapped in a Residual, or its plain twin) -> pool -> linear."""
    blocks = [Residual(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.Tanh()), skip=skip)
              for _ in range(depth)]
    return nn.Sequential(
        nn.Conv2d(1, width, 3, stride=2, padding=1), nn.ReLU(),  # (N, 1, 28, 28) -> (N, width, 14, 14)
        *blocks,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),  # -> (N, 10)
    )


def as_float(ds: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> normalised float32 (N, 1, 28, 28), and int64 labels."""
    mean, std = ds.mean[0] * 255, ds.std[0] * 255
    return (ds.images.float() - mean) / std, ds.labels


def train_and_evaluate(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                       held_out: tuple[torch.Tensor, torch.Tensor], args: argparse.Namespace) -> tuple[float, float]:
    """Adam for ``args.steps`` minibatches; returns (held-out accuracy, final training loss)."""
    x, y = train
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.cat([torch.randperm(len(x), generator=g) for _ in range(args.steps * args.batch_size // len(x) + 1)])
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(args.steps):
        idx = order[step * args.batch_size:(step + 1) * args.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        xv, yv = held_out
        pred = torch.cat([model(xv[i:i + 500]).argmax(1) for i in range(0, len(xv), 500)])
    return (pred == yv).float().mean().item(), loss.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: skiplab's search path, "
                                                    "e.g. ../shared/data)")
    p.add_argument("--depth", type=int, default=40, help="number of conv blocks")
    p.add_argument("--width", type=int, default=8, help="channels of every block")
    p.add_argument("--steps", type=int, default=600, help="training minibatches per net")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--held-out", type=int, default=2000, help="digits kept out of training for the accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="smoke test: 5 steps")
    args = p.parse_args()
    if args.quick:
        args.steps = 5
    if args.threads:
        torch.set_num_threads(args.threads)

    data_dir = args.data_dir or locate_data_dir("mnist")
    full = load_dataset("mnist", "test", data_dir=data_dir)  # the only MNIST file shared here: 10,000 digits
    train_ds, held_ds = full.split(args.held_out, seed=0)
    train, held_out = as_float(train_ds), as_float(held_ds)
    print(f"MNIST from {data_dir}: {len(train_ds)} training digits, {len(held_ds)} held out; "
          f"{args.depth} blocks of {args.width} channels, {args.steps} steps of {args.batch_size}")
    for skip in ("none", "residual"):
        torch.manual_seed(args.seed)
        model = conv_stack(args.depth, args.width, skip=skip)
        start = time.perf_counter()
        acc, loss = train_and_evaluate(model, train, held_out, args)
        name = "plain   " if skip == "none" else "residual"
        print(f"{name}: held-out accuracy {100 * acc:5.1f}%  (final training loss {loss:.3f}, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
