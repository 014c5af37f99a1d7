"""Batch augmentation as tensor ops: random crop with zero padding, horizontal flip, cutout.

The standard CIFAR recipe of He et al. 2015 (pad 4, random 32x32 crop, random horizontal flip), plus cutout
(DeVries & Taylor 2017).  Crop and flip are one ``gather`` over a padded batch — the flip is folded into the
column index — so there is no per-image Python loop, and it runs wherever the batch lives (CPU or CUDA).

Randomness is split from the ops: :meth:`Augment.sample` draws every parameter of a batch from a CPU generator
(so the draws do not depend on the device), :meth:`Augment.apply` only applies them.  The loader draws for a
whole global batch and gives each DDP rank its own rows, so a 2-process run sees the same augmentations as a
1-process run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Padded pixels of a segmentation mask are "no label": PyTorch's default ignore_index for cross_entropy.
MASK_FILL = -100


@dataclass(frozen=True)
class AugmentParams:
    """One batch's draws (CPU or device tensors, first dim = batch)."""

    dy: torch.Tensor  # int64 (B,) crop offset in [0, 2 * padding]
    dx: torch.Tensor  # int64 (B,)
    flip: torch.Tensor  # bool (B,)
    cy: torch.Tensor  # int64 (B,) cutout centre
    cx: torch.Tensor  # int64 (B,)

    def select(self, index: torch.Tensor | slice) -> AugmentParams:
        return AugmentParams(self.dy[index], self.dx[index], self.flip[index], self.cy[index], self.cx[index])

    def to(self, device: torch.device | str) -> AugmentParams:
        tensors = (self.dy, self.dx, self.flip, self.cy, self.cx)
        return AugmentParams(*(t.to(device, non_blocking=True) for t in tensors))


@dataclass(frozen=True)
class Augment:
    """Random crop after ``crop_padding`` zero pixels on each side, horizontal flip with p=0.5, and a
    ``cutout`` x ``cutout`` square set to zero (0 = the mean colour once normalised; clipped at the borders)."""

    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0

    def __post_init__(self) -> None:
        for name in ("crop_padding", "cutout"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"Augment.{name}: expected an int >= 0, got {v!r}")
        if not isinstance(self.flip, bool):
            raise TypeError(f"Augment.flip: expected a bool, got {self.flip!r}")

    @property
    def is_identity(self) -> bool:
        return self.crop_padding == 0 and not self.flip and self.cutout == 0

    def sample(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the parameters of ``n`` images of ``height`` x ``width`` from ``generator`` (CPU); always five draws
        in a fixed order, so the stream does not depend on which augmentations are switched on."""
        span = 2 * self.crop_padding + 1
        dy = torch.randint(0, span, (n,), generator=generator)
        dx = torch.randint(0, span, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        cy = torch.randint(0, height, (n,), generator=generator)
        cx = torch.randint(0, width, (n,), generator=generator)
        return AugmentParams(dy, dx, flip & self.flip, cy, cx)

    def geometric(self, x: torch.Tensor, p: AugmentParams, mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Crop and flip ``x`` (B, C, H, W), any dtype, and a segmentation ``mask`` (B, H, W) alike."""
        if self.crop_padding == 0 and not self.flip:
            return x, mask
        b, c, h, w = x.shape
        pad = self.crop_padding
        hp, wp = h + 2 * pad, w + 2 * pad
        rows = p.dy[:, None] + torch.arange(h, device=x.device)  # (B, H) rows of the padded image
        col = torch.arange(w, device=x.device)
        cols = p.dx[:, None] + torch.where(p.flip[:, None], w - 1 - col, col)  # (B, W), flip folded in
        index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w)  # (B, 1, H*W) into padded H*W
        padded = F.pad(x, (pad, pad, pad, pad)) if pad else x  # (B, C, Hp, Wp)
        out = padded.reshape(b, c, hp * wp).gather(2, index.expand(b, c, h * w)).reshape(b, c, h, w)
        if mask is not None:
            mpad = F.pad(mask, (pad, pad, pad, pad), value=MASK_FILL) if pad else mask  # (B, Hp, Wp)
            mask = mpad.reshape(b, hp * wp).gather(1, index[:, 0]).reshape(b, h, w)
        return out, mask

    def erase(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Cutout: zero a ``cutout``-sized square around each image's centre draw (in place on float ``x``)."""
        if self.cutout == 0:
            return x
        _, _, h, w = x.shape
        lo_y, lo_x = p.cy - self.cutout // 2, p.cx - self.cutout // 2  # (B,)
        ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        out_y = (ar_h < lo_y[:, None]) | (ar_h >= lo_y[:, None] + self.cutout)  # (B, H) rows outside the square
        out_x = (ar_w < lo_x[:, None]) | (ar_w >= lo_x[:, None] + self.cutout)  # (B, W)
        keep = (out_y[:, :, None] | out_x[:, None, :]).to(x.dtype)  # (B, H, W): 0 inside the square
        return x.mul_(keep[:, None])  # a multiply broadcasts over C ~3x faster than masked_fill_ on CPU

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Augment one batch: crop/flip, then cutout (which needs a float ``x``).  Returns ``x``, or
        ``(x, mask)`` when a segmentation mask is given."""
        p = self.sample(x.shape[0], x.shape[2], x.shape[3], generator).to(x.device)
        out, mask = self.geometric(x, p, mask)
        if self.cutout:
            if not out.is_floating_point():
                raise TypeError("Augment: cutout needs a float batch (normalise first); got " + str(out.dtype))
            out = self.erase(out.clone() if out is x else out, p)
        return out if mask is None else (out, mask)
