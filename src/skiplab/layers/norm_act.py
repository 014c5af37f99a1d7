"""Small factories for convolutions, normalisation and activations, chosen by name."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
    "identity": nn.Identity,
}


def get_act(name: str) -> nn.Module:
    """A fresh activation module by name (relu, tanh, sigmoid, gelu, silu, identity)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[name]()


NORMS_2D: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "group": lambda c: nn.GroupNorm(min(32, c), c),
    "none": lambda c: nn.Identity(),
}
NORMS_1D: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm1d,
    "layer": nn.LayerNorm,
    "none": lambda c: nn.Identity(),
}


def get_norm2d(name: str, channels: int) -> nn.Module:
    if name not in NORMS_2D:
        raise ValueError(f"norm must be one of {', '.join(NORMS_2D)}; got {name!r}")
    return NORMS_2D[name](channels)


def get_norm1d(name: str, features: int) -> nn.Module:
    if name not in NORMS_1D:
        raise ValueError(f"norm must be one of {', '.join(NORMS_1D)}; got {name!r}")
    return NORMS_1D[name](features)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, *, bias: bool = False, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias, groups=groups)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, *, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


def check_positive(name: str, value: int) -> int:
    """Validate a width/depth/count argument: a positive int, else a message naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) tensor (ConvNeXt's norm; torchvision's
    ``LayerNorm2d``): the statistics are per sample and position, not over the whole feature map."""

    def forward(self, x):  # noqa: ANN001, ANN201 — the base class's signature
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Permute(nn.Module):
    """``x.permute(*dims)`` as a layer (ConvNeXt's branch runs its MLP in channels-last order)."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x):  # noqa: ANN001, ANN201
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return ", ".join(map(str, self.dims))


class BatchNorm2dNoScale(nn.BatchNorm2d):
    """BatchNorm with a learned shift but no scale — Keras' ``BatchNormalization(scale=False)``, which
    Inception-ResNet-v2 uses after every convolution (a ReLU follows, so a scale would only rescale the next
    layer's weights)."""

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.bias = nn.Parameter(torch.zeros(num_features))  # weight stays None: _BatchNorm.forward takes both
