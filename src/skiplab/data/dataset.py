"""ImageDataset: a whole dataset as one uint8 tensor plus labels, classes and normalisation statistics."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

TASKS = ("classification", "segmentation")


@dataclass(eq=False, repr=False)
class ImageDataset:
    """A dataset held in memory as tensors, the form :class:`~skiplab.data.BatchLoader` batches from.

    Contract: ``images`` is uint8 ``(N, C, H, W)``, contiguous, on the CPU; ``labels`` is int64 ``(N,)`` for
    classification or ``(N, H, W)`` masks for segmentation; ``mean``/``std`` are per-channel in [0, 1] units (the
    training split's statistics, also on the test split, so both are normalised alike).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    task: str = "classification"
    meta: dict = field(default_factory=dict)  # where it came from (source path, cache file), for manifests

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TypeError(f"ImageDataset.images: expected a uint8 tensor (N, C, H, W), got {_describe(self.images)}")
        if self.task not in TASKS:
            raise ValueError(f"ImageDataset.task: expected one of {TASKS}, got {self.task!r}")
        n, c, h, w = self.images.shape
        want = (n,) if self.task == "classification" else (n, h, w)
        if not isinstance(self.labels, torch.Tensor) or tuple(self.labels.shape) != want:
            what = " (masks of the images' height and width)" if self.task == "segmentation" else ""
            raise ValueError(f"ImageDataset.labels: expected shape {want} for {self.task}{what}, "
                             f"got {_describe(self.labels)}")
        self.images = self.images.cpu().contiguous()
        self.labels = self.labels.cpu().to(torch.int64).contiguous()
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"ImageDataset.mean/std: expected {c} values (one per channel), "
                             f"got {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageDataset.std: every channel's std must be > 0, got {self.std}")
        self.classes = list(self.classes)
        k = len(self.classes)
        # A label past the class list fails only at the loss, deep in torch ("Target 12 is out of bounds").
        if self.task == "classification" and k and n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= k):
            raise ValueError(f"ImageDataset.labels: expected class indices in [0, {k}) ({k} classes), got values in "
                             f"[{int(self.labels.min())}, {int(self.labels.max())}]")
        if self.task == "segmentation" and k and n:  # -100: unlabelled (the loader's crop padding writes it)
            labelled = self.labels[self.labels != -100]
            if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= k):
                raise ValueError(f"ImageDataset.labels: expected mask values in [0, {k}) ({k} classes) or -100 "
                                 f"(unlabelled), got values in [{int(labelled.min())}, {int(labelled.max())}]")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, task={self.task!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, classes={len(self.classes)})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """One sample's (C, H, W)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray | slice) -> ImageDataset:
        """The samples at ``indices`` (any order, repeats allowed), as a new dataset with the same statistics."""
        if isinstance(indices, slice):
            idx = torch.arange(len(self))[indices]
        else:
            idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"ImageDataset.subset: indices must lie in [-{n}, {n}), "
                             f"got range [{int(idx.min())}, {int(idx.max())}]")
        idx = torch.where(idx < 0, idx + n, idx)
        return replace(self, images=self.images.index_select(0, idx), labels=self.labels.index_select(0, idx),
                       meta={**self.meta, "subset_of": n})

    def split(self, n_val: int, seed: int) -> tuple[ImageDataset, ImageDataset]:
        """A random ``(train, val)`` partition with ``n_val`` validation samples (e.g. He et al. 2015's 45k/5k).

        Deterministic from ``seed``; each part keeps the original order, so the partition is all the seed decides.
        """
        if isinstance(n_val, bool) or not isinstance(n_val, numbers.Integral) or not 0 < n_val < len(self):
            raise ValueError(f"ImageDataset.split: n_val must be an int in [1, {len(self) - 1}], got {n_val!r}")
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(len(self), generator=g)
        val_idx, train_idx = perm[:int(n_val)].sort().values, perm[int(n_val):].sort().values
        return self.subset(train_idx), self.subset(val_idx)


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units, accumulated in float64 by chunks."""
    from skiplab.data.util import one_thread

    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    with one_thread():  # one summation order, so the statistics are bitwise the same whatever the thread count
        for part in images.split(chunk):
            x = part.to(torch.float64)  # (n, C, H, W)
            s += x.sum(dim=(0, 2, 3))
            s2 += (x * x).sum(dim=(0, 2, 3))
    count = max(1, images.shape[0] * images.shape[2] * images.shape[3])
    mean = s / count
    var = (s2 / count - mean * mean).clamp_min(0)
    std = var.sqrt() / 255.0
    # A constant channel would divide by zero when normalising; 1.0 leaves it unscaled instead.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple((mean / 255.0).tolist()), tuple(std.tolist())


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
