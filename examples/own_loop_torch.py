"""skiplab from your own PyTorch code: a registry model and a Residual layer in a plain training loop.

No skiplab trainer: ``skiplab.create_model`` gives an ordinary ``nn.Module`` (here ResNet-20, He et al. 2015, built
for 1-channel digits), ``Residual`` wraps any shape-preserving module, and the rest is the usual PyTorch loop.

Data: real MNIST digits.  The shared copy (../shared/data/mnist) holds only MNIST's official test file, 10,000
digits, split by a fixed seed into 8,000 for training and 2,000 held out.

    python examples/own_loop_torch.py            # the full run (see README: Examples)
    python examples/own_loop_torch.py --quick    # a smoke test: a few steps
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.wrap import Residual
from skiplab.data import load_dataset, locate_data_dir

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: skiplab's search path)")
p.add_argument("--steps", type=int, default=200)
p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
p.add_argument("--quick", action="store_true", help="smoke test: 3 steps, accuracy on 500 held-out digits")
args = p.parse_args()
steps = 3 if args.quick else args.steps
if args.threads:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)

# ---- data: uint8 (N, 1, 28, 28) digits from skiplab's loader, as normalised floats
digits = load_dataset("mnist", "test", data_dir=args.data_dir or locate_data_dir("mnist"))
train, held_out = digits.split(2000, seed=0)
mean, std = digits.mean[0] * 255, digits.std[0] * 255
x, y = (train.images.float() - mean) / std, train.labels
xv, yv = (held_out.images.float() - mean) / std, held_out.labels
if args.quick:
    xv, yv = xv[:500], yv[:500]

# ---- model: a registry ResNet-20 giving 64 features, then a residual MLP head (y = h + MLP(h))
model = nn.Sequential(
    skiplab.create_model("resnet20", in_channels=1, num_classes=64),
    nn.ReLU(),
    Residual(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))),
    nn.Linear(64, 10),
)

# ---- the loop
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
start = time.perf_counter()
model.train()
for step in range(steps):
    idx = torch.randint(len(x), (64,))
    loss = F.cross_entropy(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 50 == 0 or step == steps - 1:
        print(f"step {step:4d}  loss {loss.item():.3f}", flush=True)
model.eval()
with torch.no_grad():
    acc = torch.cat([model(xv[i:i + 500]).argmax(1) for i in range(0, len(xv), 500)]).eq(yv).float().mean().item()
print(f"held-out accuracy {100 * acc:.1f}% on {len(xv)} digits after {steps} steps "
      f"({time.perf_counter() - start:.0f} s)")
