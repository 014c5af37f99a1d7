"""Highway connections (Srivastava, Greff & Schmidhuber 2015, "Highway Networks", arXiv:1505.00387).

    y = H(x) * T(x) + x * (1 - T(x)),    T(x) = sigmoid(W_T x + b_T)

The transform gate T starts biased negative (the paper suggests -1 to -3; we default to -2), so at init the
layer mostly carries its input — the gated ancestor of the residual identity skip.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from skiplab.blocks.base import SkipBlock


class HighwayGate(nn.Module):
    """The transform gate T(x) in (0, 1): a Linear (``conv=False``) or 1x1 Conv (``conv=True``) + sigmoid,
    mapping ``in_channels`` to ``out_channels`` gates, bias initialised to ``gate_bias``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, conv: bool, gate_bias: float = -2.0) -> None:
        super().__init__()
        self.proj: nn.Module = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True)
            if conv
            else nn.Linear(in_channels, out_channels, bias=True)
        )
        nn.init.constant_(self.proj.bias, gate_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(x))


def merge_highway(shortcut: torch.Tensor, out: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Gated merge: ``out * T + shortcut * (1 - T)``, written as a lerp (one fused op)."""
    return torch.lerp(shortcut, out, gate)


class Highway(SkipBlock):
    """A highway layer around any ``branch`` H whose output shape equals its input shape.

    ``gate_features``: channels (``conv=True``, input N,C,H,W) or features (``conv=False``, input N,F).
    """

    skip = "highway"

    def __init__(self, branch: nn.Module, gate_features: int, *, conv: bool = False, gate_bias: float = -2.0) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = nn.Identity()
        self.gate = HighwayGate(gate_features, gate_features, conv=conv, gate_bias=gate_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if not self.branch_enabled:
            return shortcut
        return merge_highway(shortcut, self.branch_scale * self.branch(x), self.gate(x))

    def zero_init_last(self) -> None:
        # A strongly closed gate is the highway analogue of a zero-initialised residual branch.
        nn.init.constant_(self.gate.proj.bias, -10.0)
