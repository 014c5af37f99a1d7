"""Shortcut (skip-path) modules for residual blocks, following He et al. 2015, "Deep Residual Learning for Image
Recognition" (arXiv:1512.03385), section 3.3 / Table 3:

* "A": identity when shapes match; otherwise subsample by ``stride`` and zero-pad the extra channels
  (parameter-free; the CIFAR nets of section 4.2 use it).
* "B": identity when shapes match; otherwise a 1x1 convolution with ``stride`` + BN projection (torchvision).
* "C": a 1x1 projection on every block, even where the identity would fit.
* "D": identity when shapes match; otherwise average-pool by ``stride``, then a stride-1 1x1 convolution + BN
  (He et al. 2019, "Bag of Tricks for Image Classification", arXiv:1812.01187, ResNet-D; timm's ``avg_down``): a
  strided 1x1 convolution reads one input pixel in four, the pooled one sees them all.
* "none": the plain twin's placeholder — an ``nn.Identity`` where shapes match (used only to lesion the
  block) and a parameter-free :class:`NoShortcut` otherwise.

Every factory returns a module, so a block's ``self.shortcut`` is always a module.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.layers.norm_act import check_positive, conv1x1, get_norm2d

SHORTCUT_KINDS = ("A", "B", "C", "D", "none")


class ZeroPadShortcut(nn.Module):
    """Option "A": keep every ``stride``-th pixel and append zero channels up to ``out_channels``.

    Parameter-free.  ``out_channels`` must be >= ``in_channels`` (zero padding cannot remove channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"shortcut 'A' pads channels with zeros, so out_channels must be >= in_channels; "
                f"got in_channels={in_channels}, out_channels={out_channels} (use shortcut='B' to project)"
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]  # N, C_in, ceil(H/s), ceil(W/s) — matches a padded 3x3 conv
        extra = self.out_channels - self.in_channels
        # F.pad pads the last dims first: (W_left, W_right, H_top, H_bottom, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x  # N, C_out, H', W'

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class ProjectionShortcut(nn.Sequential):
    """Options "B"/"C": a 1x1 convolution with ``stride`` followed by a norm layer (``norm="none"`` omits it,
    as the pre-activation nets of He et al. 2016 do, whose shortcut sees an already normalised input).

    Submodules are named ``conv`` and ``bn`` so checkpoints read ``shortcut.conv.weight``, ``shortcut.bn.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, norm: str = "batch") -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv1x1(in_channels, out_channels, stride))
        if norm != "none":
            layers["bn"] = get_norm2d(norm, out_channels)
        super().__init__(layers)


class AvgDownShortcut(nn.Sequential):
    """Option "D": ``stride`` x ``stride`` average pooling (windows cut by the border count only what they cover),
    then a 1x1 convolution and a norm layer.  Submodules ``pool`` (absent at stride 1), ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, norm: str = "batch") -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if stride > 1:
            layers["pool"] = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
        layers["conv"] = conv1x1(in_channels, out_channels)
        if norm != "none":
            layers["bn"] = get_norm2d(norm, out_channels)
        super().__init__(layers)


class NoShortcut(nn.Module):
    """The shortcut slot of a plain block whose shape changes: it has no skip path, so it cannot be lesioned."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "this plain (skip='none') block changes shape, so it has no skip path to fall back on; "
            "it cannot be lesioned (see SkipBlock.can_lesion())"
        )


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int = 1, *, norm: str = "batch") -> nn.Module:
    """The shortcut module for a block mapping ``in_channels`` to ``out_channels`` with ``stride``.

    ``kind``: "A", "B", "C" (He et al. 2015), "D" (He et al. 2019) or "none" (plain twin); see the module
    docstring.
    ``norm``: the projection's norm layer ("batch", "group" or "none").
    """
    if kind not in SHORTCUT_KINDS:
        raise ValueError(f"shortcut must be one of {', '.join(map(repr, SHORTCUT_KINDS))}; got {kind!r}")
    check_positive("in_channels", in_channels)
    check_positive("out_channels", out_channels)
    check_positive("stride", stride)
    same_shape = stride == 1 and in_channels == out_channels
    if kind == "none":
        return nn.Identity() if same_shape else NoShortcut()
    if kind == "C" or (kind == "B" and not same_shape):
        return ProjectionShortcut(in_channels, out_channels, stride, norm=norm)
    if kind == "D" and not same_shape:
        return AvgDownShortcut(in_channels, out_channels, stride, norm=norm)
    if same_shape:
        return nn.Identity()
    return ZeroPadShortcut(in_channels, out_channels, stride)
