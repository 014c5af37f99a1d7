"""Inception-ResNet-v2 (Szegedy et al. 2017, arXiv:1602.07261) in Keras Applications' layout
(``InceptionResNetV2``): 10 Inception-ResNet-A units (35x35 grid, scale 0.17), 20 B units (17x17, scale 0.1) and
10 C units (8x8, scale 0.2; the last one with scale 1 and no ReLU) — each a
:class:`~skiplab.blocks.inception.InceptionResidual` — between the stem with Inception-A mixing (``mixed_5b``) and
the two reduction modules (``mixed_6a``, ``mixed_7a``), which have no skip.  Every convolution is followed by
BatchNorm without a scale (epsilon 1e-3) and ReLU, except the units' biased 1x1 up-projections.

55,813,192 parameters; with the BatchNorm statistics 55,873,736 = Keras' count.  Keras' .h5 weights give Keras'
outputs (its unnamed convolutions are matched in creation order).  Input at least 75x75; ImageNet weights expect
``keras_preprocess(x, "tf")`` (scaled to [-1, 1]).  stages: [A units], [mixed_6a, B units], [mixed_7a, C units].
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.inception import Concat, InceptionResidual
from skiplab.keras_weights import from_keras, looks_like_keras, unnamed_layers
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import BatchNorm2dNoScale, check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import define_twins

PAPER = "Szegedy et al. 2017, Inception-v4, Inception-ResNet and the Impact of Residual Connections, arXiv:1602.07261"
EPS = 1e-3
# (units, width, scale) of the three residual stages
UNITS = ((10, 320, 0.17), (20, 1088, 0.1), (10, 2080, 0.2))


def cbr(cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, *, valid: bool = False) -> nn.Sequential:
    """Convolution (no bias) + BatchNorm without scale + ReLU; "same" padding (stride 1) unless ``valid``."""
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad = (0, 0) if valid else (k[0] // 2, k[1] // 2)
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(cin, cout, k, stride, pad, bias=False),
                                     bn=BatchNorm2dNoScale(cout, eps=EPS), act=nn.ReLU(inplace=True)))


def chain(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


def mixed_5b() -> Concat:  # Inception-A mixing: 192 -> 320 channels
    return Concat([cbr(192, 96, 1), chain(cbr(192, 48, 1), cbr(48, 64, 5)),
                   chain(cbr(192, 64, 1), cbr(64, 96, 3), cbr(96, 96, 3)),
                   chain(nn.AvgPool2d(3, 1, 1, count_include_pad=False), cbr(192, 64, 1))])


def mixed_6a() -> Concat:  # reduction A: 35 -> 17, 320 -> 1088 channels
    return Concat([cbr(320, 384, 3, 2, valid=True), chain(cbr(320, 256, 1), cbr(256, 256, 3),
                                                          cbr(256, 384, 3, 2, valid=True)), nn.MaxPool2d(3, 2)])


def mixed_7a() -> Concat:  # reduction B: 17 -> 8, 1088 -> 2080 channels
    return Concat([chain(cbr(1088, 256, 1), cbr(256, 384, 3, 2, valid=True)),
                   chain(cbr(1088, 256, 1), cbr(256, 288, 3, 2, valid=True)),
                   chain(cbr(1088, 256, 1), cbr(256, 288, 3), cbr(288, 320, 3, 2, valid=True)), nn.MaxPool2d(3, 2)])


def unit_paths(stage: int) -> tuple[list[nn.Module], int]:
    """The parallel paths of an A/B/C unit and their concatenated width."""
    if stage == 0:  # block35
        return [cbr(320, 32, 1), chain(cbr(320, 32, 1), cbr(32, 32, 3)),
                chain(cbr(320, 32, 1), cbr(32, 48, 3), cbr(48, 64, 3))], 128
    if stage == 1:  # block17
        return [cbr(1088, 192, 1), chain(cbr(1088, 128, 1), cbr(128, 160, (1, 7)), cbr(160, 192, (7, 1)))], 384
    return [cbr(2080, 192, 1), chain(cbr(2080, 192, 1), cbr(192, 224, (1, 3)), cbr(224, 256, (3, 1)))], 448


class InceptionResNetV2(SkipNet):
    """Inception-ResNet-v2 (see the module docstring).

    Args:
        skip: "residual", "none" (plain twin: each unit computes ``ReLU(s * up(...))``) or "highway".
        drop_path_rate / drop_path_mode: stochastic depth over the 40 units (off by default, as in Keras).
    """

    min_input_size = 75  # unpadded stem and reductions: 75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3, skip: str = "residual",
                 drop_path_rate: float = 0.0, drop_path_mode: str = "row") -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        self.skip = skip
        self.default_input_size = (in_channels, 299, 299)
        self.stem = nn.Sequential(OrderedDict(
            conv1=cbr(in_channels, 32, 3, 2, valid=True), conv2=cbr(32, 32, 3, valid=True), conv3=cbr(32, 64, 3),
            pool1=nn.MaxPool2d(3, 2), conv4=cbr(64, 80, 1, valid=True), conv5=cbr(80, 192, 3, valid=True),
            pool2=nn.MaxPool2d(3, 2), mixed_5b=mixed_5b()))
        n_units = sum(n for n, _, _ in UNITS)
        rate = check_drop_prob(drop_path_rate, "drop_path_rate")
        rates = iter(linear_decay(rate, n_units) if rate else [0.0] * n_units)
        stages = []
        for i, (n, width, scale) in enumerate(UNITS):
            units: list[nn.Module] = [mixed_6a()] if i == 1 else [mixed_7a()] if i == 2 else []
            for j in range(n):
                last = i == 2 and j == n - 1
                paths, mixed = unit_paths(i)
                units.append(InceptionResidual(width, paths, mixed, scale=1.0 if last else scale, skip=skip,
                                               last_act=not last, drop_path=next(rates)))
            stages.append(nn.Sequential(*units))
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        self.num_features = 1536
        self.head = nn.Sequential(OrderedDict(conv_7b=cbr(2080, 1536, 1), pool=nn.AdaptiveAvgPool2d(1),
                                              flatten=nn.Flatten(1), fc=nn.Linear(1536, num_classes)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keras Applications' InceptionResNetV2 weights (read from .h5) -> ours; anything else unchanged."""
        if not looks_like_keras(state_dict):
            return state_dict
        # every conv + BN pair but the units' up-projections and conv_7b is unnamed (conv2d_N,
        # batch_normalization_N): matched in creation order, which is our module order
        ours = [name for name, m in self.named_modules() if isinstance(m, nn.Sequential) and "bn" in m._modules
                and not name.startswith("head.")]
        names = {**{k: f"{p}.conv" for k, p in zip(unnamed_layers(state_dict, "conv2d"), ours)},
                 **{k: f"{p}.bn" for k, p in zip(unnamed_layers(state_dict, "batch_normalization"), ours)}}
        units = [f"stages.{i}.{j}" for i, stage in enumerate(self.stages) for j, u in enumerate(stage)
                 if isinstance(u, InceptionResidual)]
        return from_keras(state_dict, partial(keras_module, unnamed=names, units=units), self.state_dict())


_UP = re.compile(r"^block(?P<kind>35|17|8)_(?P<i>\d+)_conv$")
_FIRST_UNIT = {"35": 0, "17": 10, "8": 30}  # index of each kind's first unit among the 40


def keras_module(layer: str, var: str, *, unnamed: dict[str, str], units: list[str]) -> str | None:
    """Keras Applications' InceptionResNetV2 layer names -> our modules."""
    fixed = {"conv_7b": "head.conv_7b.conv", "conv_7b_bn": "head.conv_7b.bn", "predictions": "head.fc"}
    if layer in fixed:
        return fixed[layer]
    if layer in unnamed:
        return unnamed[layer]
    m = _UP.match(layer)
    if m is None:
        return None
    k = _FIRST_UNIT[m["kind"]] + int(m["i"]) - 1
    return f"{units[k]}.branch.up" if k < len(units) else None


def inception_resnet_v2(**kwargs: Any) -> InceptionResNetV2:
    return InceptionResNetV2(**kwargs)


def _register() -> None:
    define_twins("inception_resnet_v2", inception_resnet_v2, module=__name__, family="inception_resnet",
                 input_size=(3, 299, 299), paper=PAPER,
                 doc="Inception-ResNet-v2 (Szegedy et al. 2017), Keras Applications' layout. kwargs: num_classes, "
                     "in_channels, skip, drop_path_rate, drop_path_mode.")


_register()
