"""40 residual conv blocks on MNIST beside the same 40 blocks without the skip (Keras 3, skiplab.keras).

    Residual(layers.Conv2D(8, 3, padding="same", activation="tanh"))               # y = x + tanh(conv(x))
    Residual(layers.Conv2D(8, 3, padding="same", activation="tanh"), plain=True)   # y = tanh(conv(x))

The Keras twin of examples/mnist_residual_conv_torch.py (same nets, same data split; read that file for why the
activation is tanh): a stride-2 stem conv to 14x14, 40 blocks, global average pooling, a softmax classifier; Keras'
default init, no normalisation, Adam.  Runs on any Keras backend (KERAS_BACKEND=torch, jax or tensorflow; torch,
which skiplab always has, by default).

Data: real MNIST digits.  The shared copy (../shared/data/mnist) holds only MNIST's official test file, 10,000
digits, split by a fixed seed into 8,000 for training and 2,000 held out (skiplab's loader, fed to Keras as numpy).

    python examples/mnist_residual_conv_keras.py            # the full run (see README: Examples)
    python examples/mnist_residual_conv_keras.py --quick    # a smoke test: a few steps
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


def conv_stack(depth: int, width: int, *, plain: bool) -> keras.Model:
    """stem -> ``depth`` x Residual(conv 3x3 + tanh) (or its plain twin) -> pool -> softmax."""
    inp = keras.Input((28, 28, 1))  # channels last: Keras' default
    h = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(inp)  # (N, 14, 14, width)
    for _ in range(depth):
        h = Residual(layers.Conv2D(width, 3, padding="same", activation="tanh"), plain=plain)(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(h), name="plain" if plain else "residual")


def as_numpy(ds: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 28, 28) -> normalised float32 (N, 28, 28, 1), and int64 labels."""
    x = ds.images.numpy().transpose(0, 2, 3, 1).astype("float32")
    return (x - ds.mean[0] * 255) / (ds.std[0] * 255), ds.labels.numpy()


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
    p.add_argument("--quick", action="store_true", help="smoke test: 5 steps")
    args = p.parse_args()
    if args.quick:
        args.steps = 5

    data_dir = args.data_dir or locate_data_dir("mnist")
    full = load_dataset("mnist", "test", data_dir=data_dir)  # the only MNIST file shared here: 10,000 digits
    train_ds, held_ds = full.split(args.held_out, seed=0)
    (x, y), (xv, yv) = as_numpy(train_ds), as_numpy(held_ds)
    # exactly `steps` minibatches: seeded reshuffles of the training set, laid end to end
    rng = np.random.default_rng(args.seed)
    n = args.steps * args.batch_size
    order = np.concatenate([rng.permutation(len(x)) for _ in range(n // len(x) + 1)])[:n]
    print(f"Keras {keras.__version__} ({keras.backend.backend()} backend); MNIST from {data_dir}: {len(x)} training "
          f"digits, {len(xv)} held out; {args.depth} blocks of {args.width} channels, {args.steps} steps of "
          f"{args.batch_size}")
    for plain in (True, False):
        keras.utils.set_random_seed(args.seed)
        model = conv_stack(args.depth, args.width, plain=plain)
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        start = time.perf_counter()
        hist = model.fit(x[order], y[order], batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
        _, acc = model.evaluate(xv, yv, batch_size=500, verbose=0)
        print(f"{model.name:8s}: held-out accuracy {100 * acc:5.1f}%  (training loss {hist.history['loss'][-1]:.3f} "
              f"averaged over the run, {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
