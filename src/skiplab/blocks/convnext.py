"""The ConvNeXt block (Liu et al. 2022, "A ConvNet for the 2020s", arXiv:2201.03545):
``x' = x + drop_path(γ · Linear(GELU(Linear(LN(DWConv7x7(x))))))`` — a residual unit whose branch is a 7x7 depthwise
convolution and an inverted-bottleneck MLP (4x) on each pixel, scaled per channel by a learned γ ("layer scale",
initialised to 1e-6 so that every block starts near the identity).  The shape never changes inside a stage, so
the skip is always the identity; the plain twin drops it, the highway twin gates it.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from skiplab.blocks.residual import ResidualUnit
from skiplab.layers.norm_act import Permute, check_positive


class LayerScale(nn.Module):
    """Multiply each channel of (N, C, ...) by a learned ``gamma`` (C,), initialised to ``init``."""

    def __init__(self, channels: int, init: float = 1e-6, *, channel_dim: int = 1) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        return x * self.gamma.view(shape)


class ConvNeXtBlock(ResidualUnit):
    """One ConvNeXt block on ``channels`` channels (see the module docstring).  ``layer_scale``: γ's initial value
    (0 or None: no layer scale); ``eps``: the LayerNorm's epsilon (1e-6 as in the paper)."""

    def __init__(self, channels: int, *, skip: str = "residual", mlp_ratio: int = 4, layer_scale: float | None = 1e-6,
                 eps: float = 1e-6, gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        super().__init__(skip)
        check_positive("channels", channels)
        hidden = check_positive("mlp_ratio", mlp_ratio) * channels
        self.preact = nn.Identity()
        self.branch = nn.Sequential(OrderedDict(
            dwconv=nn.Conv2d(channels, channels, 7, padding=3, groups=channels),
            to_nhwc=Permute(0, 2, 3, 1),
            norm=nn.LayerNorm(channels, eps=eps),
            pwconv1=nn.Linear(channels, hidden),
            act=nn.GELU(),
            pwconv2=nn.Linear(hidden, channels),
            to_nchw=Permute(0, 3, 1, 2),
            **({"scale": LayerScale(channels, layer_scale)} if layer_scale else {}),
        ))
        self._make_skip(channels, channels, 1, shortcut="B", gate_bias=gate_bias, drop_path=drop_path)
        self.post = nn.Identity()
