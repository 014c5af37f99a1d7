"""BatchLoader and Augment: normalisation, determinism, exact mid-epoch resume, DDP shards, batch augmentation."""
from __future__ import annotations

import pytest
import torch

from skiplab.data import Augment, BatchLoader, ImageDataset
from skiplab.data.augment import MASK_FILL


def _ds(n: int = 50, c: int = 3, hw: int = 8, seg: bool = False) -> ImageDataset:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, c, hw, hw), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (n, hw, hw) if seg else (n,), generator=g)
    return ImageDataset(images, labels, ["a", "b", "c", "d"], (0.5,) * c, (0.25,) * c, "toy",
                        "segmentation" if seg else "classification")


def _epoch(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_batches_are_normalised_float_and_cover_the_epoch() -> None:
    ds = _ds()
    loader = BatchLoader(ds, 16, shuffle=True, seed=3)
    batches = _epoch(loader)
    assert len(loader) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (16, 3, 8, 8) and y.dtype == torch.int64
    # undo the normalisation and find each image in the dataset: an exact permutation of all 50
    raw = torch.cat([b[0] for b in batches]) * 0.25 * 255 + 0.5 * 255
    idx = loader.indices(0)
    assert sorted(idx.tolist()) == list(range(50))
    assert torch.allclose(raw, ds.images[idx].float(), atol=1e-3)
    assert torch.equal(torch.cat([b[1] for b in batches]), ds.labels[idx])
    assert len(BatchLoader(ds, 16, shuffle=False, drop_last=True)) == 3
    assert BatchLoader(ds, 16, shuffle=False).indices(5).tolist() == list(range(50))


def test_determinism_per_seed_and_epoch() -> None:
    ds, aug = _ds(), Augment(crop_padding=2, flip=True, cutout=3)
    a = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=7)
    b = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=7)
    c = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=8)
    ea, eb, ec = _epoch(a), _epoch(b), _epoch(c)
    assert _same(ea, eb) and not _same(ea, ec)
    assert a.epoch == 1 and a.position == 0  # a finished epoch moves on to the next one
    assert not _same(_epoch(a), ea)  # epoch 1 is shuffled and augmented differently
    a.set_epoch(0)
    assert _same(_epoch(a), ea)  # and epoch 0 again is epoch 0


@pytest.mark.parametrize("stop", [0, 3, 6])
def test_exact_mid_epoch_resume(stop: int) -> None:
    ds, aug = _ds(), Augment(crop_padding=2, flip=True, cutout=2)
    ref = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=1)
    full = []
    for epoch in range(2):
        ref.set_epoch(epoch)
        full += _epoch(ref)
    # interrupted run: epoch 0 up to `stop` batches, state saved, then a fresh loader resumes
    first = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=1)
    got = []
    for i, (x, y) in enumerate(first if stop else []):
        got.append((x.clone(), y.clone()))
        if i + 1 == stop:
            break
    state = first.state_dict()
    assert state["epoch"] == 0 and state["batch"] == stop
    resumed = BatchLoader(ds, 8, shuffle=True, augment=aug, seed=1)
    resumed.load_state_dict(state)
    assert resumed.remaining == len(resumed) - stop
    for epoch in range(state["epoch"], 2):
        resumed.set_epoch(epoch)  # the trainer's loop: same epoch keeps the restored position
        got += _epoch(resumed)
    assert _same(got, full)


def test_state_at_epoch_end_resumes_at_next_epoch_and_mismatches_are_refused() -> None:
    ds = _ds()
    loader = BatchLoader(ds, 16, shuffle=True, seed=2)
    _epoch(loader)
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 0)
    other = BatchLoader(ds, 16, shuffle=True, seed=2)
    other.load_state_dict(state)
    other.set_epoch(1)
    loader.set_epoch(1)
    assert _same(_epoch(other), _epoch(loader))
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ds, 8, shuffle=True, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        BatchLoader(ds, 16, shuffle=True, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples"):
        BatchLoader(ds.subset(range(40)), 16, shuffle=True, seed=2).load_state_dict(state)


@pytest.mark.parametrize("n,world,drop_last", [(48, 2, False), (50, 3, False), (50, 3, True), (7, 4, False)])
def test_ddp_shards_disjoint_equal_and_match_one_process(n: int, world: int, drop_last: bool) -> None:
    ds, aug = _ds(n), Augment(crop_padding=2, flip=True, cutout=3)
    ranks = [BatchLoader(ds, 4, shuffle=True, augment=aug, seed=5, drop_last=drop_last, rank=r, world_size=world)
             for r in range(world)]
    assert len({len(r) for r in ranks}) == 1  # every rank yields the same number of batches
    shards = [r.indices(0) for r in ranks]
    assert len({len(s) for s in shards}) == 1
    flat = torch.cat(shards).tolist()
    pad = len(flat) - n
    if n % world == 0 or drop_last:
        assert len(set(flat)) == len(flat)  # disjoint
        assert len(flat) == n - n % world
    else:
        assert 0 < pad < world and set(flat) == set(range(n))  # all samples; at most world-1 wrapped repeats
    # rank r's batch i is exactly rows r::world of one process's batch i at batch 4*world, augmentation included
    single = _epoch(BatchLoader(ds, 4 * world, shuffle=True, augment=aug, seed=5, drop_last=drop_last))
    per_rank = [_epoch(r) for r in ranks]
    if not drop_last and n % world:
        return  # the padded tail has no one-process counterpart
    for i, (x, y) in enumerate(single):
        for r in range(world):
            assert torch.equal(per_rank[r][i][0], x[r::world]) and torch.equal(per_rank[r][i][1], y[r::world])


def test_augment_crop_flip_cutout_are_real_and_batchwise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    aug = Augment(crop_padding=2, flip=True)
    p = aug.sample(64, 8, 8, torch.Generator().manual_seed(1))
    out, _ = aug.geometric(x, p)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x) and p.flip.any() and not p.flip.all() and (p.dy != 2).any()
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):  # the reference: one image at a time
        ref = padded[i, :, p.dy[i]:p.dy[i] + 8, p.dx[i]:p.dx[i] + 8]
        assert torch.equal(out[i], ref.flip(-1) if p.flip[i] else ref)
    flip_only = Augment(crop_padding=0, flip=True)
    q = flip_only.sample(64, 8, 8, torch.Generator().manual_seed(2))
    out2, _ = flip_only.geometric(x, q)
    assert torch.equal(out2, torch.where(q.flip[:, None, None, None], x.flip(-1), x))
    xf = x.float()
    cut = Augment(crop_padding=0, flip=False, cutout=3)(xf.clone(), torch.Generator().manual_seed(3))
    zeros = (cut == 0).all(1).sum(dim=(1, 2))  # (B,) erased pixels per image, clipped at the border
    assert (zeros >= 2 * 2).all() and (zeros <= 9).all() and not torch.equal(cut, xf)
    with pytest.raises(TypeError, match="float"):
        Augment(cutout=2)(x)
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)


def test_segmentation_masks_follow_the_image_and_pad_with_ignore() -> None:
    ds = _ds(seg=True)
    # image channel 0 encodes each pixel's own mask value, so the two must stay aligned after crop/flip
    ds.images[:, 0] = ds.labels.to(torch.uint8) * 10
    loader = BatchLoader(ds, 50, shuffle=True, augment=Augment(crop_padding=3), seed=0)
    x, y = next(iter(loader))
    assert y.shape == (50, 8, 8) and y.dtype == torch.int64
    raw = torch.round(x[:, 0] * 0.25 * 255 + 0.5 * 255)
    inside = y != MASK_FILL
    assert (~inside).any() and torch.equal(raw[inside], (y[inside] * 10).float())
    assert (raw[~inside] == 0).all()  # padded image pixels are zero where the mask says "ignore"


def test_channels_last_and_arguments() -> None:
    ds = _ds()
    x, _ = next(iter(BatchLoader(ds, 8, shuffle=False, channels_last=True, augment=Augment())))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ds, 0, shuffle=True)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(ds, 8, shuffle=True, rank=2, world_size=2)


def test_dataset_subset_and_split() -> None:
    ds = _ds(50)
    tr, va = ds.split(10, seed=0)
    assert len(tr) == 40 and len(va) == 10 and tr.mean == ds.mean
    both = torch.cat([tr.images, va.images])
    assert sorted(map(bytes, both.flatten(1).numpy())) == sorted(map(bytes, ds.images.flatten(1).numpy()))
    tr2, va2 = ds.split(10, seed=0)
    assert torch.equal(va.images, va2.images) and not torch.equal(va.images, ds.split(10, seed=1)[1].images)
    assert torch.equal(ds.subset([3, -1]).labels, ds.labels[[3, 49]])
    with pytest.raises(ValueError, match="n_val"):
        ds.split(50, seed=0)
    with pytest.raises(TypeError, match="uint8"):
        ImageDataset(ds.images.float(), ds.labels, ds.classes, ds.mean, ds.std, "x")
    assert "n=50" in repr(ds)
