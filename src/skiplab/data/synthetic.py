"""Procedural image datasets that need no files: deterministic from their seed, fast to generate.

``synthetic`` (classification, 10 classes, 3xSxS): each image holds one *target* object whose class is its shape
(disk, square, triangle, ring, cross) times the texture filling it (stripes or checks).  Position, size,
rotation, colours, texture period/orientation and phase are random; the background is a smooth random colour
field with a faint texture of its own; a solid shape of another kind may sit behind the target, line segments
cross in front, and pixel noise covers everything.  Colour and position carry no class information, so a linear
classifier stays near chance; telling stripes from checks *inside* a rotated shape needs features composed over
several layers, which is where depth and skip connections show.  Measured (benchmarks/bench_data.py --hardness 4,
10k/2k images, crop+flip, SGD, 4 epochs; chance 10%): a linear classifier on pixels 10-11%, a one-conv-layer net
16%, a CIFAR ResNet-8 29/46/65/68% after epochs 1-4.

``synthetic_seg`` (segmentation, 6 classes incl. background): 2-4 textured shapes; the mask labels each pixel
with the shape class of the topmost object covering it.

``synthetic_digits`` (1x28x28, 10 classes): stroke-drawn digits under random affine jitter, stroke width and
noise; an MNIST stand-in.

Images are generated in chunks of 512, each from its own generator seeded by (kind, seed, split, chunk index),
so a split is reproducible bit for bit and the train and test splits never share a draw.
"""
from __future__ import annotations

import functools
import math

import torch

from skiplab.data.dataset import ImageDataset, channel_stats
from skiplab.data.util import one_thread, seed_for

SHAPES = ["disk", "square", "triangle", "ring", "cross"]
TEXTURES = ["stripes", "checks"]
SYNTHETIC_CLASSES = [f"{s}_{t}" for s in SHAPES for t in TEXTURES]
SEG_CLASSES = ["background", *SHAPES]
DIGIT_CLASSES = [str(i) for i in range(10)]
CHUNK = 512
_STATS_CHUNKS = 2  # normalisation statistics come from the first 1024 train images, whatever n_train is


# ---------------------------------------------------------------------------------------------------- primitives
def _u(g: torch.Generator, m: int, lo: float, hi: float, *rest: int) -> torch.Tensor:
    """Uniform draws in [lo, hi), shape (m, *rest)."""
    return lo + (hi - lo) * torch.rand(m, *rest, generator=g)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    return ys[None], xs[None]  # (1, S, S) pixel-centre coordinates


def _shape_sdf(ys: torch.Tensor, xs: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, r: torch.Tensor,
               theta: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Signed distance in pixels (negative inside) of a shape of type ``kind`` per image; all (m, S, S)."""
    out = torch.empty(kind.shape[0], *ys.shape[-2:])
    for k in range(len(SHAPES)):  # each image's distance is computed only for its own shape
        idx = (kind == k).nonzero()[:, 0]
        if idx.numel():
            out[idx] = _one_sdf(k, ys - cy[idx, None, None], xs - cx[idx, None, None], r[idx, None, None], theta[idx])
    return out


def _one_sdf(k: int, dy: torch.Tensor, dx: torch.Tensor, r: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    if k in (0, 3):  # disk, ring
        d = torch.sqrt(dx * dx + dy * dy)
        return d - r if k == 0 else torch.maximum(d - r, 0.55 * r - d)
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated frame of the shape
    if k == 1:  # square
        return torch.maximum(u.abs(), v.abs()) - 0.8 * r
    if k == 2:  # equilateral triangle: three half-planes at the inradius r/2
        half = [u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
        return torch.maximum(torch.maximum(half[0], half[1]), half[2]) - 0.5 * r
    au, av, w = u.abs(), v.abs(), 0.3 * r  # cross: union of two bars
    return torch.minimum(torch.maximum(au - r, av - w), torch.maximum(au - w, av - r))


def _texture(ys: torch.Tensor, xs: torch.Tensor, kind: torch.Tensor, period: torch.Tensor, phi: torch.Tensor,
             phase: torch.Tensor) -> torch.Tensor:
    """Texture value in [0, 1] per pixel, (m, S, S): kind 0 = stripes, 1 = checks; soft edges against aliasing."""
    c, s = phi.cos()[:, None, None], phi.sin()[:, None, None]
    u, v = c * xs + s * ys, -s * xs + c * ys
    k = (2 * math.pi / period)[:, None, None]
    a = torch.sin(k * u + phase[:, None, None])
    b = torch.sin(k * v + 0.7 * phase[:, None, None])
    wave = torch.where(kind[:, None, None] == 0, a, a * b * 2.0)  # checks = product of two crossed waves
    return (0.5 + 2.0 * wave).clamp(0, 1)


def _colour_pair(g: torch.Generator, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two colours per image, (m, 3, 1, 1) each, at least 0.35 apart in brightness so textures stay visible."""
    c1 = torch.rand(m, 3, generator=g)
    shift = _u(g, m, 0.35, 0.6, 1)
    sign = torch.where(c1.mean(1, keepdim=True) > 0.5, -1.0, 1.0)
    c2 = (c1 + sign * shift + _u(g, m, -0.15, 0.15, 3)).clamp(0, 1)
    return c1[:, :, None, None], c2[:, :, None, None]


def _background(g: torch.Generator, m: int, size: int, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """A smooth random colour field plus a faint texture of random kind, (m, 3, S, S) in [0, 1]."""
    base = _u(g, m, 0.15, 0.85, 3, 1, 1)
    low = torch.rand(m, 3, 4, 4, generator=g) - 0.5
    field = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    tex = _texture(ys, xs, torch.randint(0, 2, (m,), generator=g), _u(g, m, 3.0, 7.0), _u(g, m, 0, math.pi),
                   _u(g, m, 0, 2 * math.pi))
    return (base + 0.5 * field + _u(g, m, 0.05, 0.12, 1, 1, 1) * (tex[:, None] - 0.5)).clamp(0, 1)


def _paste(img: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Alpha-composite ``colour`` (m, 3, S, S or broadcastable) over ``img`` where ``alpha`` (m, S, S) is 1."""
    return torch.lerp(img, colour.expand_as(img), alpha[:, None])


def _lines(g: torch.Generator, img: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, count: int) -> torch.Tensor:
    """Draw ``count`` random thin line segments of random colour over every image."""
    m, _, size, _ = img.shape
    for _ in range(count):
        p0, p1 = _u(g, m, 0, size, 2), _u(g, m, 0, size, 2)
        present = (torch.rand(m, generator=g) < 0.7).float()[:, None, None]
        d = _segment_distance(ys, xs, p0[:, None, :], p1[:, None, :])[:, 0]  # (m, S, S)
        alpha = (_u(g, m, 0.7, 1.4)[:, None, None] - d).clamp(0, 1) * present
        img = _paste(img, alpha, torch.rand(m, 3, 1, 1, generator=g))
    return img


def _segment_distance(ys: torch.Tensor, xs: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from every pixel to segments a->b; a, b (m, K, 2) as (y, x); returns (m, K, S, S)."""
    p = torch.stack([ys, xs], dim=-1)[:, None]  # (1, 1, S, S, 2)
    a, b = a[:, :, None, None, :], b[:, :, None, None, :]
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0, 1)
    return (p - (a + t[..., None] * ab)).norm(dim=-1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


# --------------------------------------------------------------------------------------------------- generators
def _classification_chunk(g: torch.Generator, m: int, size: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = _grid(size)
    labels = torch.randint(0, len(SYNTHETIC_CLASSES), (m,), generator=g)
    shape, texture = labels // len(TEXTURES), labels % len(TEXTURES)
    img = _background(g, m, size, ys, xs)
    # a solid shape of another kind behind the target half of the time: shape alone does not give the class
    other = (shape + torch.randint(1, len(SHAPES), (m,), generator=g)) % len(SHAPES)
    r2 = _u(g, m, 0.14, 0.22) * size
    sdf2 = _shape_sdf(ys, xs, _u(g, m, 0, size), _u(g, m, 0, size), r2, _u(g, m, 0, 2 * math.pi), other)
    keep = (torch.rand(m, generator=g) < 0.5).float()[:, None, None]
    img = _paste(img, (0.5 - sdf2).clamp(0, 1) * keep, torch.rand(m, 3, 1, 1, generator=g))
    # the target: textured shape at a random place, size and angle
    r = _u(g, m, 0.22, 0.36) * size
    cy, cx = r * 0.6 + _u(g, m, 0, 1) * (size - 1.2 * r), r * 0.6 + _u(g, m, 0, 1) * (size - 1.2 * r)
    sdf = _shape_sdf(ys, xs, cy, cx, r, _u(g, m, 0, 2 * math.pi), shape)
    tex = _texture(ys, xs, texture, _u(g, m, 3.5, 6.0) * size / 32, _u(g, m, 0, math.pi), _u(g, m, 0, 2 * math.pi))
    c1, c2 = _colour_pair(g, m)
    img = _paste(img, (0.5 - sdf).clamp(0, 1), c1 + (c2 - c1) * tex[:, None])
    img = _lines(g, img, ys, xs, count=2)
    img = img + noise * _u(g, m, 0.5, 1.5, 1, 1, 1) * torch.randn(img.shape, generator=g)
    return _to_uint8(img), labels


def _segmentation_chunk(g: torch.Generator, m: int, size: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = _grid(size)
    img = _background(g, m, size, ys, xs)
    mask = torch.zeros(m, size, size, dtype=torch.int64)
    n_obj = torch.randint(2, 5, (m,), generator=g)
    for k in range(4):
        shape = torch.randint(0, len(SHAPES), (m,), generator=g)
        r = _u(g, m, 0.14, 0.3) * size
        sdf = _shape_sdf(ys, xs, _u(g, m, 0, size), _u(g, m, 0, size), r, _u(g, m, 0, 2 * math.pi), shape)
        tex = _texture(ys, xs, torch.randint(0, 2, (m,), generator=g), _u(g, m, 3.5, 6.0) * size / 32,
                       _u(g, m, 0, math.pi), _u(g, m, 0, 2 * math.pi))
        c1, c2 = _colour_pair(g, m)
        alpha = (0.5 - sdf).clamp(0, 1) * (k < n_obj).float()[:, None, None]
        img = _paste(img, alpha, c1 + (c2 - c1) * tex[:, None])
        mask = torch.where(alpha >= 0.5, shape[:, None, None] + 1, mask)  # the topmost object owns the pixel
    img = img + noise * torch.randn(img.shape, generator=g)
    return _to_uint8(img), mask


# Digit strokes as polylines in a unit box (y down), drawn at random affine jitter.
_DIGITS = {
    0: [[(0.1, 0.5), (0.25, 0.22), (0.5, 0.12), (0.75, 0.22), (0.9, 0.5), (0.75, 0.78), (0.5, 0.88), (0.25, 0.78),
         (0.1, 0.5)]],
    1: [[(0.25, 0.35), (0.1, 0.5), (0.9, 0.5)]],
    2: [[(0.3, 0.2), (0.12, 0.35), (0.12, 0.65), (0.3, 0.8), (0.9, 0.2), (0.9, 0.8)]],
    3: [[(0.15, 0.2), (0.15, 0.8), (0.45, 0.45), (0.65, 0.8), (0.88, 0.65), (0.85, 0.2)]],
    4: [[(0.9, 0.65), (0.1, 0.65), (0.65, 0.15), (0.65, 0.85)]],
    5: [[(0.12, 0.8), (0.12, 0.25), (0.45, 0.22), (0.45, 0.7), (0.7, 0.8), (0.9, 0.65), (0.88, 0.2)]],
    6: [[(0.1, 0.7), (0.45, 0.3), (0.75, 0.22), (0.9, 0.4), (0.85, 0.7), (0.6, 0.75), (0.5, 0.5), (0.65, 0.25)]],
    7: [[(0.12, 0.2), (0.12, 0.8), (0.9, 0.4)]],
    8: [[(0.1, 0.5), (0.28, 0.75), (0.48, 0.5), (0.28, 0.25), (0.1, 0.5)],
        [(0.48, 0.5), (0.7, 0.8), (0.9, 0.5), (0.7, 0.2), (0.48, 0.5)]],
    9: [[(0.35, 0.75), (0.5, 0.5), (0.35, 0.25), (0.12, 0.35), (0.12, 0.65), (0.35, 0.75), (0.9, 0.7)]],
}


def _digit_segments() -> tuple[torch.Tensor, torch.Tensor]:
    """(10, K, 2, 2) segment endpoints as (y, x) and (10, K) validity, padded to the longest digit."""
    segs = {d: [(p, q) for line in lines for p, q in zip(line, line[1:])] for d, lines in _DIGITS.items()}
    k = max(len(s) for s in segs.values())
    ends = torch.zeros(10, k, 2, 2)
    valid = torch.zeros(10, k, dtype=torch.bool)
    for d, s in segs.items():
        ends[d, : len(s)] = torch.tensor(s)
        valid[d, : len(s)] = True
    return ends, valid


def _digits_chunk(g: torch.Generator, m: int, size: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = _grid(size)
    labels = torch.randint(0, 10, (m,), generator=g)
    ends, valid = _digit_segments()
    pts = ends[labels] - 0.5  # (m, K, 2, 2), centred
    ang, shear = _u(g, m, -0.3, 0.3), _u(g, m, -0.3, 0.3)
    sy, sx = _u(g, m, 0.55, 0.72) * size, _u(g, m, 0.4, 0.6) * size
    c, s = ang.cos(), ang.sin()
    # A = R(angle) @ Shear @ diag(sy, sx), acting on (y, x) column vectors
    a = torch.stack([torch.stack([c * sy, (c * shear - s) * sx], -1), torch.stack([s * sy, (s * shear + c) * sx], -1)],
                    -2)  # (m, 2, 2)
    centre = size / 2 + _u(g, m, -2.0, 2.0, 2)
    pts = torch.einsum("mij,mkej->mkei", a, pts) + centre[:, None, None, :]
    d = _segment_distance(ys, xs, pts[:, :, 0], pts[:, :, 1])  # (m, K, S, S)
    d = torch.where(valid[labels][:, :, None, None], d, torch.full_like(d, 1e4)).amin(1)
    ink = (_u(g, m, 0.8, 1.8)[:, None, None] - d + 0.5).clamp(0, 1) * _u(g, m, 0.75, 1.0)[:, None, None]
    img = ink[:, None] + noise * torch.randn(m, 1, size, size, generator=g)
    return _to_uint8(img), labels


_KINDS = {
    "synthetic": (_classification_chunk, 3, SYNTHETIC_CLASSES, "classification", 32, 10000, 2000, 0.06),
    "synthetic_seg": (_segmentation_chunk, 3, SEG_CLASSES, "segmentation", 64, 2000, 500, 0.04),
    "synthetic_digits": (_digits_chunk, 1, DIGIT_CLASSES, "classification", 28, 10000, 2000, 0.08),
}
SYNTHETIC_NAMES = tuple(_KINDS)


def _generate(kind: str, split: str, n: int, size: int, seed: int, noise: float,
              chunks: range | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    fn = _KINDS[kind][0]
    images, labels = [], []
    with one_thread():
        for i in chunks if chunks is not None else range(math.ceil(n / CHUNK)):
            g = torch.Generator().manual_seed(seed_for(kind, seed, split, i))
            x, y = fn(g, min(CHUNK, n - i * CHUNK) if chunks is None else CHUNK, size, noise)
            images.append(x)
            labels.append(y)
    c = _KINDS[kind][1]
    if not images:
        return torch.zeros(0, c, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    return torch.cat(images), torch.cat(labels)


@functools.lru_cache(maxsize=32)
def _stats(kind: str, size: int, seed: int, noise: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stats_images, _ = _generate(kind, "train", 0, size, seed, noise, chunks=range(_STATS_CHUNKS))
    return channel_stats(stats_images)


def make_synthetic(kind: str, split: str = "train", *, n_train: int | None = None, n_test: int | None = None,
                   image_size: int | None = None, seed: int = 0, noise: float | None = None) -> ImageDataset:
    """Generate split ``split`` ("train" or "test") of synthetic dataset ``kind`` (see the module docstring).

    Defaults per kind: ``synthetic`` 10,000/2,000 images of 32x32, ``synthetic_seg`` 2,000/500 of 64x64,
    ``synthetic_digits`` 10,000/2,000 of 28x28.  Normalisation statistics come from the first 1,024 train images
    of the same seed, so both splits are normalised alike whatever their sizes.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown synthetic dataset {kind!r}; expected one of {SYNTHETIC_NAMES}")
    _, channels, classes, task, d_size, d_train, d_test, d_noise = _KINDS[kind]
    if split not in ("train", "test"):
        raise ValueError(f"split: {kind} has splits 'train' and 'test', got {split!r} "
                         "(for a validation set use ds.split(n_val, seed))")
    size = d_size if image_size is None else image_size
    n = (d_train if n_train is None else n_train) if split == "train" else (d_test if n_test is None else n_test)
    noise = d_noise if noise is None else float(noise)
    for arg, val, lo in (("image_size", size, 8), ("n_train" if split == "train" else "n_test", n, 0)):
        if not isinstance(val, int) or isinstance(val, bool) or val < lo:
            raise ValueError(f"{arg}: expected an int >= {lo}, got {val!r}")
    if not isinstance(seed, int) or noise < 0:
        raise ValueError(f"seed must be an int and noise >= 0, got seed={seed!r}, noise={noise!r}")
    images, labels = _generate(kind, split, n, size, seed, noise)
    mean, std = _stats(kind, size, seed, noise)
    return ImageDataset(images, labels, list(classes), mean, std, kind, task,
                        meta={"source": "generated", "seed": seed, "image_size": size, "noise": noise})
