"""``mnist_strokes``: stroke segmentation on real handwritten digits — find the clean pen strokes of a degraded digit.

* **Source**: MNIST's official *test* set (the t10k files: 10,000 digits) — the MNIST split the shared data holds —
  so both splits come from it: ``torch.randperm(10000)`` from a generator seeded with ``seed`` (default 0) sends its
  first ``n_test`` (default 2,000) indices to ``test`` and the other 8,000 to ``train``, each part in the original
  order.  The digit labels are not used.
* **Target**: the clean stroke mask, pixel >= 128 (of 255) -> class 1 ``stroke``, else 0 ``background``.
* **Input**: the same digit degraded (``degradation``): ``"noise"`` (default) Gaussian pixel noise alone;
  ``"downup"`` 2x2 average pooling to 16x16 then bilinear upsampling back to 32x32 (half the resolution: one- and
  two-pixel strokes smear into their surroundings) before the noise; ``"blur"`` a Gaussian blur of sigma 1 pixel
  before the noise.  The noise: standard deviation ``noise`` (default 0.5, in [0, 1] pixel units, so a pixel alone
  says little: thresholding the input at its best level gets 0.61 mean IoU) from a generator seeded by (``seed``,
  split), then clipped to [0, 1] and rounded to uint8.  Pixel noise keeps the strokes' full-resolution positions in
  the input — the detail a long skip can carry — while making each pixel unreliable, so the net must use context.
* Both padded from 28x28 to **32x32** with 2 background pixels on each side (before degrading, so the 2x2 pooling
  grid covers the padded image), which suits a U-Net of depth up to 5.

Normalisation statistics come from the train split and are used for both.  :func:`stroke_width` gives each mask's
mean stroke width (2 * area / perimeter), the axis the ``unet_skips`` experiment plots errors against.

``synthetic_strokes``: the same task on the generated ``synthetic_digits`` (drawn without their pixel noise), no
files needed — ``n_train`` / ``n_test`` digits (default 2,000 / 500), ``degradation``, ``noise`` and ``seed`` as
above.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

from skiplab.data.dataset import ImageDataset, channel_stats
from skiplab.data.util import one_thread, seed_for

STROKE_CLASSES = ["background", "stroke"]
DEGRADATIONS = ("downup", "blur", "noise")
THRESHOLD = 128  # clean pixel value (0..255) from which a pixel is stroke
PAD = 2  # 28 + 2 * 2 = 32
SOURCE_SIZE = 10000  # MNIST's test set


def _degrade(clean: torch.Tensor, degradation: str, noise: float, g: torch.Generator) -> torch.Tensor:
    """``clean`` float (N, 1, S, S) in [0, 1] -> degraded float in [0, 1]."""
    x = clean
    if degradation == "downup":
        s = x.shape[-1]
        x = F.interpolate(F.avg_pool2d(x, 2), size=(s, s), mode="bilinear", align_corners=False)
    elif degradation == "blur":
        r = torch.arange(-3, 4, dtype=torch.float32)
        k = torch.exp(-r * r / 2)  # sigma 1
        k = k / k.sum()
        x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7))  # separable: rows, then columns
        x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1))
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def make_mnist_strokes(split: str = "train", *, data_dir: Any = None, download: bool = False,
                       degradation: str = "noise", noise: float = 0.5, n_test: int = 2000, seed: int = 0,
                       strict: bool = False, cache: bool = True) -> ImageDataset:
    """Split ``split`` of ``mnist_strokes`` (see the module docstring); ``data_dir``, ``download``, ``strict`` and
    ``cache`` are passed to the MNIST loader."""
    from skiplab.data.datasets import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"split: mnist_strokes has splits 'train' and 'test', got {split!r}")
    _check(degradation, noise)
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 0 < n_test < SOURCE_SIZE:
        raise ValueError(f"n_test: expected an int in [1, {SOURCE_SIZE - 1}] (test digits out of MNIST's "
                         f"{SOURCE_SIZE}); got {n_test!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0; got {seed!r}")
    digits = load_dataset("mnist", "test", data_dir=data_dir, download=download, strict=strict, cache=cache)
    if len(digits) != SOURCE_SIZE:
        raise ValueError(f"mnist_strokes: expected MNIST's {SOURCE_SIZE:,} test digits, found {len(digits):,} in "
                         f"{digits.meta.get('source')}")
    perm = torch.randperm(SOURCE_SIZE, generator=torch.Generator().manual_seed(seed))
    parts = {"test": perm[:n_test].sort().values, "train": perm[n_test:].sort().values}
    clean = {name: digits.images[idx] for name, idx in parts.items()}
    return _strokes_dataset("mnist_strokes", clean, split, degradation, float(noise), seed,
                            {"source": digits.meta.get("source"), "mnist_split": "test", "n_test": n_test})


def make_synthetic_strokes(split: str = "train", *, n_train: int = 2000, n_test: int = 500,
                           degradation: str = "noise", noise: float = 0.5, seed: int = 0) -> ImageDataset:
    """Split ``split`` of ``synthetic_strokes``: :func:`make_mnist_strokes`'s task on generated stroke digits."""
    if split not in ("train", "test"):
        raise ValueError(f"split: synthetic_strokes has splits 'train' and 'test', got {split!r}")
    _check(degradation, noise)
    clean = {name: _clean_digits(name, n_train if name == "train" else n_test, seed) for name in ("train", split)}
    return _strokes_dataset("synthetic_strokes", clean, split, degradation, float(noise), seed,
                            {"source": "generated", "n_train": n_train, "n_test": n_test})


@functools.lru_cache(maxsize=8)
def _clean_digits(split: str, n: int, seed: int) -> torch.Tensor:
    """Generated digits without pixel noise, uint8 (n, 1, 28, 28).  Cached in memory: drawing them is the slow part
    (~7 ms a digit on a busy CPU) and a training run loads its splits more than once; never written to."""
    from skiplab.data.synthetic import make_synthetic

    kw = {"n_train": n} if split == "train" else {"n_test": n}
    return make_synthetic("synthetic_digits", split, image_size=28, seed=seed, noise=0.0, **kw).images


def _check(degradation: str, noise: float) -> None:
    if degradation not in DEGRADATIONS:
        raise ValueError(f"degradation: expected one of {', '.join(map(repr, DEGRADATIONS))}; got {degradation!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise ValueError(f"noise: expected a standard deviation >= 0 (in [0, 1] pixel units); got {noise!r}")


def _strokes_dataset(name: str, clean: dict[str, torch.Tensor], split: str, degradation: str, noise: float,
                     seed: int, meta: dict[str, Any]) -> ImageDataset:
    """Degraded inputs and clean stroke masks of uint8 (n, 1, 28, 28) digits ``clean[split]``, normalised with the
    statistics of ``clean["train"]``'s inputs."""
    made: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with one_thread():  # one summation order whatever the thread count: the split is the same bit for bit
        for part in ("train", split) if split == "test" else ("train",):
            raw = F.pad(clean[part], (PAD, PAD, PAD, PAD))  # uint8 (n, 1, 32, 32)
            masks = (raw[:, 0] >= THRESHOLD).to(torch.int64)  # (n, 32, 32)
            g = torch.Generator().manual_seed(seed_for(name, seed, part, degradation))
            x = _degrade(raw.float() / 255, degradation, noise, g)
            made[part] = ((x * 255 + 0.5).to(torch.uint8), masks)
    mean, std = channel_stats(made["train"][0])
    images, masks = made[split]
    return ImageDataset(images, masks, list(STROKE_CLASSES), mean, std, name, "segmentation",
                        meta={**meta, "seed": seed, "degradation": degradation, "noise": noise})


def stroke_width(masks: torch.Tensor) -> torch.Tensor:
    """Mean stroke width of each mask ``(N, H, W)`` in pixels: 2 * area / perimeter of its foreground (label > 0),
    the perimeter counted as foreground/background pixel edges (outside the image is background).  For a stroke
    of width w and length L >> w this is w.  (N,) float; NaN for an empty mask."""
    fg = F.pad((masks > 0).float(), (1, 1, 1, 1))  # (N, H+2, W+2)
    area = fg.sum((1, 2))
    edges = (fg[:, 1:] != fg[:, :-1]).sum((1, 2)) + (fg[:, :, 1:] != fg[:, :, :-1]).sum((1, 2))
    return torch.where(edges > 0, 2 * area / edges.clamp_min(1), torch.full_like(area, math.nan))
