"""The residual Inception unit of Inception-ResNet (Szegedy et al. 2017, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning", arXiv:1602.07261): parallel convolution paths, concatenated, projected
back to the input width by a 1x1 convolution, scaled down (0.1-0.3: the paper found wide residual Inception nets
"died" early in training without it) and added to the input: ``x' = ReLU(x + s * up(concat(paths(x))))``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn

from skiplab.blocks.residual import ResidualUnit


class Concat(nn.Module):
    """Run ``paths`` on the same input and concatenate their outputs along the channels (an Inception module)."""

    def __init__(self, paths: Sequence[nn.Module]) -> None:
        super().__init__()
        self.paths = nn.ModuleList(paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.paths], 1)


class InceptionResidual(ResidualUnit):
    """``post(x + scale * up(concat(paths(x))))``; ``paths`` give ``mixed_channels`` together, ``up`` is a biased
    1x1 convolution back to ``channels``.  ``last_act=False``: no ReLU after the sum (the net's last unit)."""

    def __init__(self, channels: int, paths: Sequence[nn.Module], mixed_channels: int, *, scale: float,
                 skip: str = "residual", last_act: bool = True, gate_bias: float = -2.0,
                 drop_path: float = 0.0) -> None:
        super().__init__(skip)
        self.preact = nn.Identity()
        self.branch = nn.Sequential(OrderedDict(mix=Concat(paths), up=nn.Conv2d(mixed_channels, channels, 1)))
        self.branch_scale = float(scale)
        self._make_skip(channels, channels, 1, shortcut="A", gate_bias=gate_bias, drop_path=drop_path)
        self.post = nn.ReLU(inplace=True) if last_act else nn.Identity()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.branch_scale}"
