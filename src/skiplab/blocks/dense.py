"""Dense connectivity (Huang, Liu, van der Maaten & Weinberger 2017, "Densely Connected Convolutional Networks",
arXiv:1608.06993).

Layer ``l`` of a dense block sees the concatenation of every earlier feature map in the block,
``x_l = H_l([x_0, x_1, ..., x_{l-1}])``.  We write that as a skip per layer: :class:`DenseLayer` returns
``cat(x, H(x))`` — the concatenating skip — so a block of ``L`` layers with growth rate ``k`` maps ``c`` input
channels to ``c + L*k``.

Plain twin (``skip="none"``): each layer sees only the previous layer's output.  To keep everything outside
the layers identical (stem, transitions, head, and every feature-map width the network passes along), a plain
layer takes the same ``c + l*k`` input channels as its dense counterpart and outputs ``c + (l+1)*k`` channels
itself instead of concatenating ``k`` new ones.  Only the layer's last convolution changes shape
(``-> c + (l+1)*k`` instead of ``-> k``), so the plain twin has *more* parameters than the DenseNet
(plain_densenet121 44.3M vs 8.0M, plain_densenet201 132.3M vs 20.0M, plain_densenet_bc_100_12 4.6M vs 0.77M):
the comparison is at equal depth and feature widths, and any extra capacity favours the plain twin.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn

from skiplab.blocks.base import SkipBlock, check_skip
from skiplab.layers.norm_act import check_positive

DENSE_SKIPS = ("dense", "none")


def merge_concat(shortcut: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The concatenating skip: stack the skip's channels and the branch's channels (dim 1)."""
    return torch.cat([shortcut, out], dim=1)


def check_drop_rate(drop_rate: float) -> float:
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be a float in [0, 1); got {drop_rate!r}")
    return float(drop_rate)


class DenseLayer(SkipBlock):
    """One layer of a dense block: ``cat(x, H(x))`` with ``H`` producing ``growth_rate`` new channels.

    ``H`` is BN-ReLU-Conv3x3, or with ``bn_size`` set (the "B" of DenseNet-BC) BN-ReLU-Conv1x1(``bn_size*k``)-
    BN-ReLU-Conv3x3.  ``drop_rate > 0`` adds dropout after each convolution (the paper's setting for CIFAR
    without augmentation).  Layer names ``norm1, relu1, conv1, norm2, relu2, conv2`` follow torchvision's.

    ``out_channels`` is ``in_channels + growth_rate`` for both skips (see the module docstring for the plain twin).
    Lesioning a dense layer (``branch_enabled = False``) replaces its new channels by zeros.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        *,
        bn_size: int | None = 4,
        drop_rate: float = 0.0,
        skip: str = "dense",
    ) -> None:
        super().__init__()
        self.skip = check_skip(skip, DENSE_SKIPS)
        self.in_channels = check_positive("in_channels", in_channels)
        self.growth_rate = check_positive("growth_rate", growth_rate)
        if bn_size is not None:
            check_positive("bn_size", bn_size)
        drop_rate = check_drop_rate(drop_rate)
        self.out_channels = in_channels + growth_rate
        branch_out = growth_rate if self.has_skip else self.out_channels

        layers: list[tuple[str, nn.Module]] = [("norm1", nn.BatchNorm2d(in_channels)), ("relu1", nn.ReLU(inplace=True))]
        if bn_size is None:
            layers.append(("conv1", nn.Conv2d(in_channels, branch_out, 3, padding=1, bias=False)))
        else:
            width = bn_size * growth_rate
            layers.append(("conv1", nn.Conv2d(in_channels, width, 1, bias=False)))
            if drop_rate > 0:
                layers.append(("drop1", nn.Dropout(drop_rate)))
            layers += [
                ("norm2", nn.BatchNorm2d(width)),
                ("relu2", nn.ReLU(inplace=True)),
                ("conv2", nn.Conv2d(width, branch_out, 3, padding=1, bias=False)),
            ]
        if drop_rate > 0:
            layers.append(("drop2" if bn_size is not None else "drop1", nn.Dropout(drop_rate)))
        self.branch = nn.Sequential(OrderedDict(layers))
        self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)  # (N, c, H, W): the skip carries every earlier feature map forward
        if not self.has_skip:
            return self.branch(x)  # (N, c + k, H, W)
        if not self.branch_enabled:
            n, _, h, w = x.shape
            return merge_concat(shortcut, x.new_zeros(n, self.growth_rate, h, w))
        out = self.branch(x)  # (N, k, H, W)
        if self.branch_scale != 1.0:
            out = self.branch_scale * out
        return merge_concat(shortcut, out)  # (N, c + k, H, W)

    def can_lesion(self) -> bool:
        # A plain layer changes the channel count, so it cannot be replaced by its input.
        return self.has_skip

    def zero_init_last(self) -> None:
        """Zero the last convolution: the layer starts by adding ``k`` zero channels."""
        convs = [m for m in self.branch if isinstance(m, nn.Conv2d)]
        nn.init.zeros_(convs[-1].weight)

    def extra_repr(self) -> str:
        return f"skip={self.skip!r}, in_channels={self.in_channels}, growth_rate={self.growth_rate}"


class DenseBlock(nn.Sequential):
    """``num_layers`` :class:`DenseLayer` s named ``denselayer1..L``: ``c`` channels in, ``c + L*k`` out.

    Each layer concatenates its ``k`` new maps onto its input in its own ``forward`` (the skip), so running
    the layers in sequence gives layer ``l`` the maps of the block input and of all ``l - 1`` earlier layers.
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        num_layers: int,
        *,
        bn_size: int | None = 4,
        drop_rate: float = 0.0,
        skip: str = "dense",
    ) -> None:
        check_positive("num_layers", num_layers)
        layers = OrderedDict(
            (f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size=bn_size,
                                              drop_rate=drop_rate, skip=skip))
            for i in range(num_layers)
        )
        super().__init__(layers)
        self.in_channels = in_channels
        self.out_channels = in_channels + num_layers * growth_rate


def compressed_channels(in_channels: int, compression: float) -> int:
    """Output width of a transition layer: ``floor(theta * c)`` (the paper's compression factor theta)."""
    if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not 0.0 < compression <= 1.0:
        raise ValueError(f"compression must be a float in (0, 1]; got {compression!r}")
    return max(1, math.floor(compression * in_channels))


class Transition(nn.Sequential):
    """Between dense blocks: BN-ReLU-Conv1x1 to ``out_channels``, then 2x2 average pooling (halves H and W).

    Names ``norm, relu, conv, pool`` follow torchvision's.  ``drop_rate > 0`` adds dropout after the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, *, drop_rate: float = 0.0) -> None:
        check_positive("in_channels", in_channels)
        check_positive("out_channels", out_channels)
        layers: list[tuple[str, nn.Module]] = [
            ("norm", nn.BatchNorm2d(in_channels)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
        ]
        if check_drop_rate(drop_rate) > 0:
            layers.append(("drop", nn.Dropout(drop_rate)))
        layers.append(("pool", nn.AvgPool2d(kernel_size=2, stride=2)))
        super().__init__(OrderedDict(layers))
        self.in_channels = in_channels
        self.out_channels = out_channels
