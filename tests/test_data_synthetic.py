"""The generated datasets: deterministic from their seed, right shapes and label ranges, splits differ."""
from __future__ import annotations

import torch

from skiplab.data import load_dataset


def test_synthetic_is_deterministic_and_seeded() -> None:
    a = load_dataset("synthetic", "train", n_train=300, seed=1)
    b = load_dataset("synthetic", "train", n_train=300, seed=1)
    c = load_dataset("synthetic", "train", n_train=300, seed=2)
    t = load_dataset("synthetic", "test", n_test=300, seed=1)
    assert a.images.shape == (300, 3, 32, 32) and a.images.dtype == torch.uint8 and a.num_classes == 10
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.mean == b.mean
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, t.images)
    assert a.mean == t.mean  # both splits normalised with the same train statistics
    assert set(a.labels.tolist()) == set(range(10))
    assert a.images.float().std() > 30  # not blank


def test_synthetic_first_images_do_not_depend_on_split_size() -> None:
    # chunks of 512 are generated from their own seeds: a bigger split only appends images
    small = load_dataset("synthetic", "train", n_train=520, seed=4)
    big = load_dataset("synthetic", "train", n_train=600, seed=4)
    assert torch.equal(small.images[:512], big.images[:512])
    assert not torch.equal(small.images[512:], big.images[512:520])  # the last, partial chunk is drawn by size
    assert small.mean == big.mean


def test_synthetic_seg_and_digits() -> None:
    seg = load_dataset("synthetic_seg", "train", n_train=40, image_size=32)
    assert seg.task == "segmentation" and seg.labels.shape == (40, 32, 32) and seg.classes[0] == "background"
    assert 0 <= int(seg.labels.min()) and int(seg.labels.max()) < 6 and (seg.labels > 0).float().mean() > 0.05
    dig = load_dataset("synthetic_digits", "test", n_test=50, seed=3)
    assert dig.images.shape == (50, 1, 28, 28) and len(dig.mean) == 1
    assert torch.equal(dig.images, load_dataset("synthetic_digits", "test", n_test=50, seed=3).images)
