"""Residual bidirectional LSTMs on sequential MNIST (PyTorch): the twin of seq_mnist_bilstm_keras.py.

    Residual(nn.LSTM(32, 16, batch_first=True, bidirectional=True))   # (x + [fwd(x), bwd(x)], (h_n, c_n))

skiplab's ``Residual`` puts the skip on the LSTM's output sequence and passes its final state through.  Each digit's
28 rows are 28 time steps of 28 pixels; a Linear maps a row to 32 features, ``--layers`` residual BiLSTM layers
(16 units each way: 32 features), mean over time, a linear classifier.  The plain twin (``skip="none"``) has the
same layers without the skips.

``--model rnn_classifier`` trains skiplab's registered residual recurrent classifier (and ``plain_rnn_classifier``)
on the same sequences instead: ``skiplab.create_model("rnn_classifier", input_size=28, ...)`` — the way to train
it, since ``skiplab train`` feeds image datasets.

Data: real MNIST digits.  The shared copy (../shared/data/mnist) holds only MNIST's official test file, 10,000
digits, split by a fixed seed into 8,000 for training and 2,000 held out.

    python examples/seq_mnist_bilstm_torch.py            # the full run (see README: Examples)
    python examples/seq_mnist_bilstm_torch.py --quick    # a smoke test: a few steps
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.wrap import Residual
from skiplab.data import ImageDataset, load_dataset, locate_data_dir


class BiLSTMClassifier(nn.Module):
    """rows (N, 28, 28) -> Linear(width) -> ``num_layers`` x Residual(BiLSTM) -> mean over time -> Linear(10)."""

    def __init__(self, num_layers: int, width: int, *, skip: str) -> None:
        super().__init__()
        self.stem = nn.Linear(28, width)
        self.layers = nn.ModuleList(
            Residual(nn.LSTM(width, width // 2, batch_first=True, bidirectional=True), skip=skip)
            for _ in range(num_layers)
        )
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # (N, 28, width)
        for layer in self.layers:
            h, _state = layer(h)  # the skip is on the sequence; (h_n, c_n) passes through
        return self.fc(h.mean(dim=1))


def build(model: str, num_layers: int, width: int, *, skip: str) -> nn.Module:
    if model == "bilstm":
        return BiLSTMClassifier(num_layers, width, skip=skip)
    return skiplab.create_model("rnn_classifier", input_size=28, hidden_size=width, num_layers=num_layers,
                                pool="mean", skip=skip)


def as_rows(ds: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 1, 28, 28) -> float32 (N, 28, 28) in [0, 1]: rows as time steps; int64 labels."""
    return ds.images[:, 0].float() / 255.0, ds.labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: skiplab's search path, "
                                                    "e.g. ../shared/data)")
    p.add_argument("--model", choices=("bilstm", "rnn_classifier"), default="bilstm")
    p.add_argument("--layers", type=int, default=2, help="residual recurrent layers")
    p.add_argument("--width", type=int, default=32, help="features per time step")
    p.add_argument("--steps", type=int, default=300, help="training minibatches per net")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--held-out", type=int, default=2000, help="digits kept out of training for the accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 steps")
    args = p.parse_args()
    if args.quick:
        args.steps = 3
    if args.width % 2:
        p.error(f"--width must be even (two LSTM directions of width / 2 units); got {args.width}")
    if args.threads:
        torch.set_num_threads(args.threads)

    data_dir = args.data_dir or locate_data_dir("mnist")
    full = load_dataset("mnist", "test", data_dir=data_dir)  # the only MNIST file shared here: 10,000 digits
    train_ds, held_ds = full.split(args.held_out, seed=0)
    (x, y), (xv, yv) = as_rows(train_ds), as_rows(held_ds)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.cat([torch.randperm(len(x), generator=g) for _ in range(args.steps * args.batch_size // len(x) + 1)])
    print(f"sequential MNIST from {data_dir}: {len(x)} training digits, {len(xv)} held out, 28 steps of 28 pixels; "
          f"{args.model}, {args.layers} layers, {args.steps} steps of {args.batch_size}")
    for skip in ("none", "residual"):
        torch.manual_seed(args.seed)
        model = build(args.model, args.layers, args.width, skip=skip)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        start = time.perf_counter()
        model.train()
        for step in range(args.steps):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        name = "plain   " if skip == "none" else "residual"
        print(f"{name}: held-out accuracy {100 * acc:5.1f}%  (final training loss {loss.item():.3f}, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
