"""The inverted residual block of MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", arXiv:1801.04381): expand the channels ``t`` times with a 1x1 convolution, filter each channel with a
3x3 depthwise convolution (carrying the stride), project back with a linear 1x1 convolution (no activation after
it), and add the input when the shape is unchanged: ``x' = x + project(dw(expand(x)))``.

Where the stride or the channel count changes the paper has no shortcut, so such a block is plain even in the
residual net (``skip="none"``); the model decides per block.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from skiplab.blocks.residual import ResidualUnit
from skiplab.layers.norm_act import check_positive


class InvertedResidual(ResidualUnit):
    """``in_channels`` -> ``out_channels`` with ``stride`` and expansion ``expand_ratio`` (1: no expansion conv).
    ``bn_eps``: BatchNorm epsilon (torchvision 1e-5, Keras 1e-3).  ``padding``: "torch" (1 pixel on every side)
    or "tf" (TensorFlow's "same": a stride-2 convolution on an even size pads only the bottom and right)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, *,
                 skip: str = "residual", bn_eps: float = 1e-5, padding: str = "torch", gate_bias: float = -2.0,
                 drop_path: float = 0.0) -> None:
        super().__init__(skip)
        check_positive("expand_ratio", expand_ratio)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2; got {stride!r}")
        if skip != "none" and (stride != 1 or in_channels != out_channels):
            raise ValueError(f"an inverted residual block has a skip only where the shape is kept; got skip={skip!r} "
                             f"with {in_channels}->{out_channels} channels, stride {stride} (use skip='none')")
        hidden = in_channels * expand_ratio
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if expand_ratio != 1:
            layers.update(expand=nn.Conv2d(in_channels, hidden, 1, bias=False), bn1=nn.BatchNorm2d(hidden, eps=bn_eps),
                          act1=nn.ReLU6(inplace=True))
        layers.update(
            dwconv=depthwise3x3(hidden, stride, padding),
            bn2=nn.BatchNorm2d(hidden, eps=bn_eps), act2=nn.ReLU6(inplace=True),
            project=nn.Conv2d(hidden, out_channels, 1, bias=False), bn3=nn.BatchNorm2d(out_channels, eps=bn_eps),
        )
        self.preact = nn.Identity()
        self.branch = nn.Sequential(layers)
        self._make_skip(in_channels, out_channels, stride, shortcut="B" if skip != "none" else "none",
                        gate_bias=gate_bias, drop_path=drop_path)
        self.post = nn.Identity()  # linear bottleneck: no activation after the sum


class SamePad2d(nn.Module):
    """TensorFlow's "same" padding for a ``kernel`` x ``kernel`` window with ``stride``: ``max(k - s, 0)`` pixels
    on an even size (more of them at the bottom/right), ``k - 1`` on an odd one — computed from the input.
    ``value``: what to pad with (-inf before a max pool, as TensorFlow's pooling ignores the padding)."""

    def __init__(self, kernel: int, stride: int, *, value: float = 0.0) -> None:
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value  # value: -inf before a max pool

    def forward(self, x):  # noqa: ANN001, ANN201
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width first
            total = max((-(-size // self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.pad(x, pads, value=self.value)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def depthwise3x3(channels: int, stride: int, padding: str) -> nn.Module:
    """A 3x3 depthwise convolution, padded the torch way or TensorFlow's "same" way (see :class:`SamePad2d`)."""
    if padding == "torch":
        return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)
    if padding == "tf":
        return nn.Sequential(OrderedDict(pad=SamePad2d(3, stride),
                                         conv=nn.Conv2d(channels, channels, 3, stride, 0, groups=channels, bias=False)))
    raise ValueError(f"padding must be 'torch' or 'tf'; got {padding!r}")
