"""CIFAR ResNets of He et al. 2015 (arXiv:1512.03385) section 4.2, with their plain and highway twins.

A 3x3 conv (16 channels), three stages of ``n`` basic blocks at 16, 32, 64 channels (32x32, 16x16, 8x8 maps),
global average pooling and a linear classifier: depth ``6n + 2``.  Shortcuts are option "A" (identity, or
subsample + zero-pad where the shape changes), so the residual nets have exactly as many parameters as their
plain twins.  With 10 classes: resnet20 269,722; resnet32 464,154; resnet44 658,586; resnet56 853,018;
resnet110 1,727,962; resnet1202 19,421,274.

Entry points follow the paper's names: ``resnet20``, ``plain20``, ``highway20``, ... ``resnet1202``,
``plain1202``, ``highway1202``.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch.nn as nn

from skiplab.blocks.base import zero_init_last
from skiplab.blocks.residual import BasicBlock
from skiplab.layers.norm_act import check_positive, get_act, get_norm2d
from skiplab.models.base import SkipNet
from skiplab.models.resnet import PAPER, check_width, define_twins, init_resnet_weights, resnet_stages, scaled

CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def blocks_per_stage(depth: int, *, layers_per_block: int = 2) -> int:
    """``n`` from ``depth = 3 * layers_per_block * n + 2``; raises a ValueError naming valid depths otherwise."""
    step = 3 * layers_per_block
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < step + 2 or (depth - 2) % step:
        examples = ", ".join(str(step * n + 2) for n in (1, 2, 3, 18))
        raise ValueError(f"depth must be {step}n+2 for a positive integer n (e.g. {examples}); got {depth!r}")
    return (depth - 2) // step


class CifarResNet(SkipNet):
    """The CIFAR ResNet (and twins) of He et al. 2015 section 4.2; see the module docstring.

    Args:
        depth: 6n+2.  skip: "residual", "none" (plain twin) or "highway".  shortcut: "A" (default), "B", "C".
        width: multiplies the 16/32/64 channel counts.
        zero_init_residual: zero each block's last BN scale so every block starts as the identity.
        drop_path_rate: stochastic depth (Huang et al. 2016 use 0.5 on ResNet-110), linear decay over blocks.
        drop_path_mode: "row" (per sample) or "batch" (whole batch, the paper's; dropped branches not computed).
    """

    def __init__(self, depth: int, *, num_classes: int = 10, in_channels: int = 3, skip: str = "residual",
                 shortcut: str = "A", width: float = 1.0, zero_init_residual: bool = False,
                 drop_path_rate: float = 0.0, drop_path_mode: str = "row", norm: str = "batch",
                 act: str = "relu") -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width = check_width(width)
        self.default_input_size = (in_channels, 32, 32)
        self.depth, self.skip = depth, skip
        channels = [scaled(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            bn=get_norm2d(norm, channels[0]),
            act=get_act(act),
        ))
        self.stages = resnet_stages(BasicBlock, (n, n, n), channels, channels[0], skip=skip, shortcut=shortcut,
                                    norm=norm, act=act, drop_path_rate=drop_path_rate, drop_path_mode=drop_path_mode)
        self.num_features = channels[-1]
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1), fc=nn.Linear(self.num_features, num_classes)
        ))
        init_resnet_weights(self)
        if zero_init_residual:
            zero_init_last(self)


def cifar_resnet(depth: int, **kwargs: Any) -> CifarResNet:
    """A CIFAR ResNet of any ``depth = 6n + 2`` (a clear ValueError otherwise); kwargs go to :class:`CifarResNet`."""
    return CifarResNet(depth, **kwargs)


def _register_cifar() -> None:
    prefixes = {"residual": "resnet", "none": "plain", "highway": "highway"}
    for depth in CIFAR_DEPTHS:
        define_twins(f"resnet{depth}", partial(cifar_resnet, depth), module=__name__, family="cifar_resnet",
                     input_size=(3, 32, 32), paper=PAPER, names=lambda skip, d=depth: f"{prefixes[skip]}{d}",
                     doc=f"ResNet-{depth} for CIFAR (He et al. 2015 section 4.2, {(depth - 2) // 6} blocks per stage). "
                         "kwargs: num_classes, in_channels, skip, shortcut, width, zero_init_residual, drop_path_rate, "
                         "drop_path_mode.")


_register_cifar()
