"""Residual bidirectional LSTMs on sequential MNIST (Keras 3, skiplab.keras).

    Residual(layers.Bidirectional(layers.LSTM(16, return_sequences=True)))     # y = x + [fwd(x), bwd(x)]

Each digit is read as a sequence: its 28 rows are 28 time steps of 28 pixels (no text corpus is reachable offline;
sequential MNIST is the usual stand-in for a sequence task).  A Dense layer maps the 28 pixels of a row to 32
features, then ``--layers`` residual bidirectional LSTM layers (16 units each way, concatenated: 32 features, so the
identity skip fits without a projection), mean over time, softmax.  The plain twin (``plain=True``) has the same
layers without the skips; both accuracies are printed.

Data: real MNIST digits.  The shared copy (../shared/data/mnist) holds only MNIST's official test file, 10,000
digits, split by a fixed seed into 8,000 for training and 2,000 held out.

    python examples/seq_mnist_bilstm_keras.py            # the full run (see README: Examples)
    python examples/seq_mnist_bilstm_keras.py --quick    # a smoke test: a few steps
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported: it picks its backend once

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from skiplab.data import ImageDataset, load_dataset, locate_data_dir  # noqa: E402
from skiplab.keras import Residual  # noqa: E402


def bilstm_classifier(num_layers: int, width: int, *, plain: bool) -> keras.Model:
    """rows (N, 28, 28) -> Dense(width) -> ``num_layers`` x Residual(BiLSTM(width / 2 each way)) -> mean -> softmax."""
    inp = keras.Input((28, 28))  # (batch, time = rows, features = pixels)
    h = layers.Dense(width)(inp)  # (N, 28, width)
    for _ in range(num_layers):
        lstm = layers.LSTM(width // 2, return_sequences=True)
        h = Residual(layers.Bidirectional(lstm), plain=plain)(h)  # concat of both directions: (N, 28, width)
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(h), name="plain" if plain else "residual")


def as_rows(ds: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 28, 28) -> float32 (N, 28, 28) in [0, 1]: rows as time steps; int64 labels."""
    return ds.images[:, 0].numpy().astype("float32") / 255.0, ds.labels.numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: skiplab's search path, "
                                                    "e.g. ../shared/data)")
    p.add_argument("--layers", type=int, default=2, help="residual BiLSTM layers")
    p.add_argument("--width", type=int, default=32, help="features per time step (LSTM units: width / 2 each way)")
    p.add_argument("--steps", type=int, default=300, help="training minibatches per net")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--held-out", type=int, default=2000, help="digits kept out of training for the accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 3 steps")
    args = p.parse_args()
    if args.quick:
        args.steps = 3
    if args.width % 2:
        p.error(f"--width must be even (two LSTM directions of width / 2 units); got {args.width}")

    data_dir = args.data_dir or locate_data_dir("mnist")
    full = load_dataset("mnist", "test", data_dir=data_dir)  # the only MNIST file shared here: 10,000 digits
    train_ds, held_ds = full.split(args.held_out, seed=0)
    (x, y), (xv, yv) = as_rows(train_ds), as_rows(held_ds)
    rng = np.random.default_rng(args.seed)  # exactly `steps` minibatches: seeded reshuffles laid end to end
    n = args.steps * args.batch_size
    order = np.concatenate([rng.permutation(len(x)) for _ in range(n // len(x) + 1)])[:n]
    print(f"Keras {keras.__version__} ({keras.backend.backend()} backend); sequential MNIST from {data_dir}: "
          f"{len(x)} training digits, {len(xv)} held out, 28 steps of 28 pixels; {args.layers} BiLSTM layers, "
          f"{args.steps} steps of {args.batch_size}")
    for plain in (True, False):
        keras.utils.set_random_seed(args.seed)
        model = bilstm_classifier(args.layers, args.width, plain=plain)
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        start = time.perf_counter()
        hist = model.fit(x[order], y[order], batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
        _, acc = model.evaluate(xv, yv, batch_size=500, verbose=0)
        print(f"{model.name:8s}: held-out accuracy {100 * acc:5.1f}%  (training loss {hist.history['loss'][-1]:.3f} "
              f"averaged over the run, {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
