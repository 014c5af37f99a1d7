"""The squeeze-and-excitation gate (Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv:1709.01507): each
channel scaled by a gate computed from the global average of all channels — in EfficientNet's MBConv, MobileNetV3's
blocks and RegNet-Y's bottlenecks."""
from __future__ import annotations

import torch
import torch.nn as nn

# the activation inside the gate (and the blocks' activations, skiplab.blocks.inverted_residual)
ACTS = {"relu6": lambda: nn.ReLU6(inplace=True), "silu": lambda: nn.SiLU(inplace=True),
        "relu": lambda: nn.ReLU(inplace=True), "hardswish": lambda: nn.Hardswish(inplace=True)}
GATES = {"sigmoid": torch.sigmoid, "hardsigmoid": nn.functional.hardsigmoid}


class SqueezeExcite(nn.Module):
    """``x * gate(W2 act(W1 mean_hw(x)))`` (Hu et al. 2018), ``reduced`` channels in the middle.  EfficientNet:
    swish and sigmoid; MobileNetV3: ReLU and the hard sigmoid ``relu6(z + 3) / 6``; RegNet-Y: ReLU and sigmoid."""

    def __init__(self, channels: int, reduced: int, *, act: str = "silu", gate: str = "sigmoid") -> None:
        super().__init__()
        if act not in ACTS:
            raise ValueError(f"squeeze-excite act must be one of {', '.join(map(repr, ACTS))}; got {act!r}")
        if gate not in GATES:
            raise ValueError(f"squeeze-excite gate must be one of {', '.join(map(repr, GATES))}; got {gate!r}")
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = ACTS[act]()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * GATES[self.gate](self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))

    def extra_repr(self) -> str:
        return f"gate={self.gate}"
