"""Xception's residual block (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions",
arXiv:1610.02357): ``x' = shortcut(x) + pool(BN(sep(ReLU(... BN(sep(ReLU(x)))))))`` — two or three depthwise
separable 3x3 convolutions, each with BatchNorm and preceded by a ReLU (not in place: the shortcut reads the same
``x``), then a 3x3/2 max pool in the blocks that downsample, whose shortcut is a strided 1x1 projection + BN.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from skiplab.blocks.inverted_residual import SamePad2d
from skiplab.blocks.residual import ResidualUnit
from skiplab.layers.norm_act import check_positive


class SeparableConv2d(nn.Sequential):
    """A depthwise 3x3 convolution (``dw``) then a pointwise 1x1 (``pw``), no biases — Keras' SeparableConv2D."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            dw=nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            pw=nn.Conv2d(in_channels, out_channels, 1, bias=False)))


class MaxPoolSame(nn.Sequential):
    """3x3/2 max pooling with TensorFlow's "same" padding (-inf, more of it at the bottom/right on even sizes)."""

    def __init__(self) -> None:
        super().__init__(OrderedDict(pad=SamePad2d(3, 2, value=float("-inf")), pool=nn.MaxPool2d(3, 2)))


class XceptionBlock(ResidualUnit):
    """``channels``: the separable convolutions' outputs in order (the first reads ``in_channels``); ``stride`` 2
    ends the branch with a max pool and projects the shortcut; ``first_relu=False`` for the block after the stem
    (whose output has just been through a ReLU)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], stride: int = 1, *, first_relu: bool = True,
                 skip: str = "residual", bn_eps: float = 1e-3, gate_bias: float = -2.0, drop_path: float = 0.0
                 ) -> None:
        super().__init__(skip)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        prev = check_positive("in_channels", in_channels)
        for i, c in enumerate(channels, 1):
            if i > 1 or first_relu:
                layers[f"act{i}"] = nn.ReLU(inplace=i > 1)  # the first one reads the block's input
            layers[f"sep{i}"] = SeparableConv2d(prev, check_positive("channels", c))
            layers[f"bn{i}"] = nn.BatchNorm2d(c, eps=bn_eps)
            prev = c
        if stride == 2:
            layers["pool"] = MaxPoolSame()
        self.preact = nn.Identity()
        self.branch = nn.Sequential(layers)
        self._make_skip(in_channels, prev, stride, shortcut="B", gate_bias=gate_bias, drop_path=drop_path)
        for m in self.shortcut.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = bn_eps
        self.post = nn.Identity()
