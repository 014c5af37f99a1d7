"""The inverted residual block of MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", arXiv:1801.04381) — with a squeeze-and-excitation gate and swish, EfficientNet's MBConv: expand the
channels ``t`` times with a 1x1 convolution, filter each channel with a 3x3 depthwise convolution (carrying the
stride), project back with a linear 1x1 convolution (no activation after it), and add the input when the shape is
unchanged: ``x' = x + project(dw(expand(x)))``.

Where the stride or the channel count changes the paper has no shortcut, so such a block is plain even in the
residual net (``skip="none"``); the model decides per block.  MobileNetV3 (Howard et al. 2019) uses the same block
with hard-swish, explicit expanded widths and a hard-sigmoid squeeze-and-excitation gate.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from skiplab.blocks.residual import ResidualUnit
from skiplab.layers.norm_act import check_positive
from skiplab.layers.squeeze_excite import ACTS, SqueezeExcite


def _check_args(what: str, in_channels: int, out_channels: int, stride: int, expand_ratio: int, act: str,
                padding: str, skip: str) -> None:
    check_positive("expand_ratio", expand_ratio)
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2; got {stride!r}")
    if act not in ACTS:
        raise ValueError(f"act must be one of {', '.join(map(repr, ACTS))}; got {act!r}")
    if padding not in ("torch", "tf"):
        raise ValueError(f"padding must be 'torch' or 'tf'; got {padding!r}")
    if skip != "none" and (stride != 1 or in_channels != out_channels):
        raise ValueError(f"{what} has a skip only where the shape is kept; got skip={skip!r} with "
                         f"{in_channels}->{out_channels} channels, stride {stride} (use skip='none')")


class InvertedResidual(ResidualUnit):
    """``in_channels`` -> ``out_channels`` with ``stride`` and expansion ``expand_ratio`` (1: no expansion conv).

    ``hidden``: the expanded width itself (MobileNetV3's table gives it; overrides ``expand_ratio``; equal to
    ``in_channels``: no expansion conv).  ``kernel``: the depthwise convolution's size.  ``act``: "relu6"
    (MobileNetV2), "silu" (swish, EfficientNet), "relu" or "hardswish" (MobileNetV3).
    ``se_channels`` > 0: a squeeze-and-excitation gate after the depthwise convolution with that many channels in
    the middle (EfficientNet's MBConv: a quarter of the input; MobileNetV3: a quarter of ``hidden``), its middle
    activation ``se_act`` and its gate ``se_gate`` ("sigmoid" or "hardsigmoid").  ``bn_eps``: BatchNorm epsilon
    (torchvision 1e-5, Keras 1e-3).
    ``padding``: "torch" (``kernel // 2`` on every side) or "tf" (TensorFlow's "same": a stride-2 convolution on an
    even size pads one pixel less at the top and left; a ``pad`` layer before ``dwconv``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, *, kernel: int = 3,
                 act: str = "relu6", hidden: int | None = None, se_channels: int = 0, se_act: str = "silu",
                 se_gate: str = "sigmoid", skip: str = "residual", bn_eps: float = 1e-5, padding: str = "torch",
                 gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        super().__init__(skip)
        _check_args("an inverted residual block", in_channels, out_channels, stride, expand_ratio, act, padding, skip)
        hidden = in_channels * expand_ratio if hidden is None else check_positive("hidden", hidden)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if hidden != in_channels:
            layers.update(expand=nn.Conv2d(in_channels, hidden, 1, bias=False), bn1=nn.BatchNorm2d(hidden, eps=bn_eps),
                          act1=ACTS[act]())
        if padding == "tf":
            layers["pad"] = SamePad2d(kernel, stride)
        layers.update(
            dwconv=nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2 if padding == "torch" else 0, groups=hidden,
                             bias=False),
            bn2=nn.BatchNorm2d(hidden, eps=bn_eps), act2=ACTS[act](),
            **({"se": SqueezeExcite(hidden, se_channels, act=se_act, gate=se_gate)} if se_channels > 0 else {}),
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


class FusedInvertedResidual(ResidualUnit):
    """EfficientNetV2's Fused-MBConv (Tan & Le 2021, arXiv:2104.00298): MBConv's 1x1 expansion and depthwise
    convolution fused into one full ``kernel`` x ``kernel`` convolution (carrying the stride), then a linear 1x1
    projection; at expansion 1 the one convolution goes straight to ``out_channels`` (with its activation).  As
    in MBConv, a skip only where the shape is kept: ``x' = x + project(expand(x))``.

    ``act``, ``bn_eps``, ``padding`` as :class:`InvertedResidual`; no squeeze-excite (none of the published nets
    gives this block one)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, *, kernel: int = 3,
                 act: str = "silu", skip: str = "residual", bn_eps: float = 1e-3, padding: str = "torch",
                 gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        super().__init__(skip)
        _check_args("a fused inverted residual block", in_channels, out_channels, stride, expand_ratio, act, padding,
                    skip)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if padding == "tf":
            layers["pad"] = SamePad2d(kernel, stride)
        full = dict(kernel_size=kernel, stride=stride, padding=kernel // 2 if padding == "torch" else 0, bias=False)
        if expand_ratio != 1:
            hidden = in_channels * expand_ratio
            layers.update(expand=nn.Conv2d(in_channels, hidden, **full), bn1=nn.BatchNorm2d(hidden, eps=bn_eps),
                          act1=ACTS[act](), project=nn.Conv2d(hidden, out_channels, 1, bias=False),
                          bn3=nn.BatchNorm2d(out_channels, eps=bn_eps))
        else:
            layers.update(project=nn.Conv2d(in_channels, out_channels, **full),
                          bn3=nn.BatchNorm2d(out_channels, eps=bn_eps), act3=ACTS[act]())
        self.preact = nn.Identity()
        self.branch = nn.Sequential(layers)
        self._make_skip(in_channels, out_channels, stride, shortcut="B" if skip != "none" else "none",
                        gate_bias=gate_bias, drop_path=drop_path)
        self.post = nn.Identity()  # linear bottleneck: no activation after the sum
