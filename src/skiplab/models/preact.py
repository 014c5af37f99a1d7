"""Pre-activation ResNets for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual Networks",
arXiv:1603.05027), following the authors' ResNet-164/1001 code (github.com/KaimingHe/resnet-1k-layers).

Bottleneck nets have depth ``9n + 2``: a 3x3 conv (16 channels), three stages of ``n`` bottleneck units with
16/64, 32/128, 64/256 (inner/output) channels, then BN-ReLU, global average pooling and a linear classifier.
With 10 classes: preact_resnet164 1,703,258 parameters and preact_resnet1001 10,327,706 (the paper's "1.7M"
and "10.2M").  Basic-unit nets (``unit="basic"``, depth ``6n + 2``, 16/32/64 channels) serve the ordering
study on ResNet-110.

``ordering=`` builds any of the five unit orderings of the paper's Fig. 4 (see :mod:`skiplab.blocks.preact`);
the stem and head follow the ordering so each activation appears once between convolutions:

=================================  =====================  ==========================
ordering                           stem                   head (before pool + fc)
=================================  =====================  ==========================
original, bn_after_add,            conv-BN-ReLU           —
relu_before_add
relu_preact                        conv-BN                ReLU
full_preact                        conv                   BN-ReLU
=================================  =====================  ==========================
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch.nn as nn

from skiplab.blocks.base import zero_init_last
from skiplab.blocks.preact import PreActBasicBlock, PreActBottleneck, check_ordering
from skiplab.layers.norm_act import check_positive, get_act, get_norm2d
from skiplab.models.base import SkipNet
from skiplab.models.cifar import blocks_per_stage
from skiplab.models.resnet import check_width, define_twins, init_resnet_weights, resnet_stages, scaled

PAPER = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"
UNITS = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}
PREACT_DEPTHS = (164, 1001)


class PreActResNet(SkipNet):
    """CIFAR ResNet built from units of any ordering (default: full pre-activation bottlenecks).

    Args:
        depth: 9n+2 (bottleneck) or 6n+2 (basic).  unit: "bottleneck" or "basic".
        ordering: "original", "bn_after_add", "relu_before_add", "relu_preact" or "full_preact".
        skip: "residual", "none" (plain twin) or "highway".  shortcut: "B" (default), "A" or "C".
        stride_in_1x1: bottleneck stride on the first 1x1 (the authors' code, default) or on the 3x3.
        width: multiplies every channel count.  zero_init_residual: start every unit as the identity.
        drop_path_rate: stochastic depth, the last unit's drop probability (linear decay before it).
        drop_path_mode: "row" (per sample) or "batch" (whole batch; dropped branches are not computed).
    """

    def __init__(self, depth: int, *, unit: str = "bottleneck", ordering: str = "full_preact",
                 num_classes: int = 10, in_channels: int = 3, skip: str = "residual", shortcut: str = "B",
                 stride_in_1x1: bool = True, width: float = 1.0, zero_init_residual: bool = False,
                 drop_path_rate: float = 0.0, drop_path_mode: str = "row", norm: str = "batch",
                 act: str = "relu") -> None:
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(map(repr, UNITS))}; got {unit!r}")
        n = blocks_per_stage(depth, layers_per_block=3 if unit == "bottleneck" else 2)
        self.ordering = check_ordering(ordering)
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width = check_width(width)
        self.default_input_size = (in_channels, 32, 32)
        self.depth, self.unit, self.skip = depth, unit, skip
        block = UNITS[unit]
        stem_channels = scaled(16, width)
        out_channels = [scaled(c, width) * block.expansion for c in (16, 32, 64)]
        block_kwargs: dict[str, Any] = dict(ordering=ordering, skip=skip, shortcut=shortcut, norm=norm, act=act)
        if unit == "bottleneck":
            block_kwargs["stride_in_1x1"] = stride_in_1x1

        stem: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)
        )
        if ordering != "full_preact":  # full pre-activation units normalise their own input
            stem["bn"] = get_norm2d(norm, stem_channels)
        if ordering not in ("relu_preact", "full_preact"):
            stem["act"] = get_act(act)
        self.stem = nn.Sequential(stem)
        self.stages = resnet_stages(block, (n, n, n), out_channels, stem_channels, drop_path_rate=drop_path_rate,
                                    drop_path_mode=drop_path_mode, **block_kwargs)
        self.num_features = out_channels[-1]
        head: OrderedDict[str, nn.Module] = OrderedDict()
        if ordering == "full_preact":  # the last unit's sum is not normalised yet
            head["bn"] = get_norm2d(norm, self.num_features)
        if ordering in ("relu_preact", "full_preact"):
            head["act"] = get_act(act)
        head.update(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1), fc=nn.Linear(self.num_features, num_classes))
        self.head = nn.Sequential(head)
        init_resnet_weights(self)
        if zero_init_residual:
            zero_init_last(self)


def preact_resnet(depth: int, **kwargs: Any) -> PreActResNet:
    """A pre-activation (or any-ordering) CIFAR ResNet of ``depth``; kwargs go to :class:`PreActResNet`."""
    return PreActResNet(depth, **kwargs)


def _register_preact() -> None:
    for depth in PREACT_DEPTHS:
        define_twins(f"preact_resnet{depth}", partial(preact_resnet, depth), module=__name__, family="preact_resnet",
                     input_size=(3, 32, 32), paper=PAPER,
                     doc=f"Pre-activation ResNet-{depth} for CIFAR (He et al. 2016; bottleneck units, "
                         f"{(depth - 2) // 9} per stage). kwargs: ordering, num_classes, in_channels, skip, shortcut, "
                         "stride_in_1x1, width, zero_init_residual, drop_path_rate, drop_path_mode.")


_register_preact()
