"""ResNet-V2 for ImageNet in Keras Applications' layout (``keras.applications.ResNet50V2/101V2/152V2``): the
full pre-activation units of He et al. 2016 ("Identity Mappings in Deep Residual Networks", arXiv:1603.05027).

What Keras' layout fixes, and this module follows (so parameter counts match: 25,613,800 / 44,675,560 /
60,380,648 values with the BatchNorm running statistics, which Keras counts as non-trainable weights):

* stem: a biased 7x7/2 convolution with no norm or activation (every unit normalises its own input), then a 3x3/2
  max pool over zero padding;
* each stage ("stack2"): the FIRST unit projects the channels with a biased 1x1 convolution on the pre-activated
  input (stride 1); the LAST unit downsamples — its 3x3 has the stride and its shortcut subsamples the raw input
  (a 1x1 max pool with stride 2); the last stage does not downsample;
* each unit's last 1x1 convolution has a bias; BatchNorm epsilon 1.001e-5;
* head: BatchNorm + ReLU after the last unit (the sum is not normalised yet), global average pool, Linear.

Plain and highway twins (``plain_resnet50v2``...) keep the same branches, as everywhere in skiplab.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.residual import ResidualUnit
from skiplab.keras_weights import from_keras, looks_like_keras, resnet_module
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import check_positive, conv1x1, conv3x3, get_act, get_norm2d
from skiplab.models.base import SkipNet
from skiplab.models.resnet import check_width, define_twins, init_resnet_weights, scaled

PAPER = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"
KERAS_BN_EPS = 1.001e-5
STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class KerasV2Bottleneck(ResidualUnit):
    """Full pre-activation bottleneck ``x' = h(x) + W3 ReLU(BN(W2 ReLU(BN(W1 ReLU(BN(x))))))`` with the stride on
    the 3x3.  ``project``: the shortcut is a biased 1x1 conv on the pre-activated input, which the branch then
    shares (Keras' ``conv_shortcut=True``); otherwise the shortcut is the raw input, subsampled when
    ``stride`` > 1."""

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, project: bool = False,
                 skip: str = "residual", norm: str = "batch", act: str = "relu", gate_bias: float = -2.0,
                 drop_path: float = 0.0) -> None:
        super().__init__(skip)
        check_positive("stride", stride)
        mid = out_channels // self.expansion
        if project and stride != 1:
            raise ValueError(f"a projecting unit keeps the resolution in this layout; got stride={stride}")
        preact = OrderedDict(bn0=get_norm2d(norm, in_channels), act0=get_act(act))
        body = OrderedDict(
            conv1=conv1x1(in_channels, mid), bn1=get_norm2d(norm, mid), act1=get_act(act),
            conv2=conv3x3(mid, mid, stride), bn2=get_norm2d(norm, mid), act2=get_act(act),
            conv3=conv1x1(mid, out_channels, bias=True),
        )
        shared = project and skip != "none"  # a plain twin has no second path to share it with
        self.preact = nn.Sequential(preact) if shared else nn.Identity()
        self.branch = nn.Sequential(body if shared else OrderedDict([*preact.items(), *body.items()]))
        self._make_skip(in_channels, out_channels, stride, shortcut="B" if project else "A", shortcut_norm="none",
                        gate_bias=gate_bias, drop_path=drop_path)
        if shared:
            self.shortcut = nn.Sequential(OrderedDict(conv=conv1x1(in_channels, out_channels, bias=True)))
        self.post = nn.Identity()


class ResNetV2(SkipNet):
    """Keras Applications' ResNet-V2 (see the module docstring).

    Args:
        depth: 50, 101 or 152.  skip: "residual", "none" (plain twin) or "highway".
        width: multiplies every channel count.  drop_path_rate / drop_path_mode: stochastic depth (linear decay).
    """

    def __init__(self, depth: int = 50, *, num_classes: int = 1000, in_channels: int = 3, skip: str = "residual",
                 width: float = 1.0, drop_path_rate: float = 0.0, drop_path_mode: str = "row", norm: str = "batch",
                 act: str = "relu") -> None:
        super().__init__()
        if depth not in STAGES:
            raise ValueError(f"ResNet-V2 depth must be one of {sorted(STAGES)}; got {depth!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width = check_width(width)
        self.default_input_size = (in_channels, 224, 224)
        self.depth, self.skip = depth, skip
        stem_channels = scaled(64, width)
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=True),
            pad=nn.ZeroPad2d(1),  # Keras pads with zeros before the pool (no activation precedes it)
            pool=nn.MaxPool2d(3, stride=2),
        ))
        blocks = STAGES[depth]
        rates = linear_decay(check_drop_prob(drop_path_rate, "drop_path_rate"), sum(blocks)) if drop_path_rate \
            else [0.0] * sum(blocks)
        stages, channels, k = [], stem_channels, 0
        for i, n in enumerate(blocks):
            out = scaled(64 * 2 ** i, width) * KerasV2Bottleneck.expansion
            last_stride = 2 if i < len(blocks) - 1 else 1
            units = []
            for j in range(n):
                units.append(KerasV2Bottleneck(channels, out, last_stride if j == n - 1 else 1, project=j == 0,
                                               skip=skip, norm=norm, act=act, drop_path=rates[k]))
                channels, k = out, k + 1
            stages.append(nn.Sequential(*units))
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        self.num_features = channels
        self.head = nn.Sequential(OrderedDict(
            bn=get_norm2d(norm, channels), act=get_act(act), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
            fc=nn.Linear(channels, num_classes),
        ))
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = KERAS_BN_EPS
        init_resnet_weights(self)


    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keras' ResNet50V2/101V2/152V2 weights (read from their .h5 files) -> ours; anything else unchanged."""
        if not looks_like_keras(state_dict):
            return state_dict

        def preact(stage: int, block: int) -> str:  # shared with the projection, or the branch's first layer
            try:
                shared = isinstance(self.stages[stage][block].preact, nn.Sequential)
            except IndexError:  # a deeper net's file: the key stays unknown and is reported
                shared = False
            return "preact.bn0" if shared else "branch.bn0"

        return from_keras(state_dict, partial(resnet_module, preact=preact))


def resnet_v2(depth: int, **kwargs: Any) -> ResNetV2:
    return ResNetV2(depth, **kwargs)


def _register() -> None:
    for depth in STAGES:
        define_twins(f"resnet{depth}v2", partial(resnet_v2, depth), module=__name__, family="resnet_v2",
                     input_size=(3, 224, 224), paper=PAPER,
                     doc=f"ResNet{depth}V2, Keras Applications' pre-activation ImageNet layout. kwargs: num_classes, "
                         "in_channels, skip, width, drop_path_rate, drop_path_mode, norm, act.")


_register()
