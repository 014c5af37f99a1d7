"""EfficientNet-B0...B7 (Tan & Le 2019, arXiv:1905.11946) in Keras Applications' layout: MBConv blocks — an inverted
residual (:mod:`skiplab.blocks.inverted_residual`'s shape) with a squeeze-and-excitation gate and swish — and an
identity skip wherever a block keeps its shape, dropped per sample with the paper's "drop connect" rate (0.2 at the
last block, rising linearly from 0).

As in Keras (``keras.applications.EfficientNetB0``...): BatchNorm epsilon 1e-3; stride-2 depthwise convolutions
padded TensorFlow's way (:class:`~skiplab.blocks.inverted_residual.SamePad2d`); widths and depths scaled by
``round_filters`` / ``round_repeats`` from the B0 table.  Trainable parameters equal Keras' and torchvision's
(B0 5,288,548 ... B7 66,347,960).  Keras builds its input scaling into the model (x/255, then a Normalization);
skiplab's takes the scaled input (``keras_preprocess(x, "torch")`` for ImageNet weights), and Keras' .h5 weights
load without the Normalization layer's statistics.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.inverted_residual import InvertedResidual, SamePad2d
from skiplab.keras_weights import from_keras, looks_like_keras
from skiplab.layers.drop_path import check_drop_prob, set_drop_path_mode
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import define_twins

PAPER = "Tan & Le 2019, EfficientNet: Rethinking Model Scaling for CNNs, arXiv:1905.11946"
EPS = 1e-3
# B0: (kernel, repeats, in, out, expansion, stride) per stage; every block has SE with ratio 0.25 of its input
B0 = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2), (5, 3, 80, 112, 6, 1),
      (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
# variant -> (width coefficient, depth coefficient, input side, dropout before the classifier)
VARIANTS = {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
            "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
            "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5)}


def round_filters(filters: float, width: float, divisor: int = 8) -> int:
    """The paper's channel rounding: ``filters * width`` to a multiple of 8, never 10% below it."""
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * filters else rounded)


def mbconv(in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int, **kwargs: Any
           ) -> InvertedResidual:
    """EfficientNet's MBConv: an inverted residual with swish, a squeeze-and-excitation gate (0.25 of the block's
    input channels), BatchNorm epsilon 1e-3 and TensorFlow's padding."""
    return InvertedResidual(in_channels, out_channels, stride, expand_ratio, kernel=kernel, act="silu", se_ratio=0.25,
                            bn_eps=EPS, padding="tf", **kwargs)


class EfficientNet(SkipNet):
    """EfficientNet (see the module docstring).

    Args:
        variant: "b0" ... "b7".  skip: "residual", "none" (plain twin) or "highway".
        drop_path_rate: the last block's drop-connect probability (the paper's 0.2; 0 turns it off).
        dropout: before the classifier (default: the variant's).
    """

    def __init__(self, variant: str = "b0", *, num_classes: int = 1000, in_channels: int = 3, skip: str = "residual",
                 drop_path_rate: float = 0.2, drop_path_mode: str = "row", dropout: float | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"EfficientNet variant must be one of {', '.join(map(repr, VARIANTS))}; got {variant!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width, depth, side, default_dropout = VARIANTS[variant]
        dropout = default_dropout if dropout is None else dropout
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.variant, self.skip = variant, skip
        self.default_input_size = (in_channels, side, side)
        stem = round_filters(32, width)
        self.stem = nn.Sequential(OrderedDict(
            pad=SamePad2d(3, 2), conv=nn.Conv2d(in_channels, stem, 3, 2, bias=False),
            bn=nn.BatchNorm2d(stem, eps=EPS), act=nn.SiLU(inplace=True)))
        plan = []  # per stage: (in, out, kernel, stride, expansion) per block
        for kernel, repeats, cin, cout, t, s in B0:
            cin, cout = round_filters(cin, width), round_filters(cout, width)
            plan.append([(cin if i == 0 else cout, cout, kernel, s if i == 0 else 1, t)
                         for i in range(math.ceil(depth * repeats))])
        n = sum(map(len, plan))
        rate = check_drop_prob(drop_path_rate, "drop_path_rate")
        stages, k = [], 0
        for stage in plan:
            blocks = []
            for cin, cout, kernel, s, t in stage:
                keeps = s == 1 and cin == cout
                blocks.append(mbconv(cin, cout, kernel, s, t, skip=skip if keeps else "none",
                                     drop_path=rate * k / n if keeps and skip != "none" else 0.0))  # Keras' rule
                k += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        top = round_filters(1280, width)
        self.num_features = top
        self.head = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(plan[-1][-1][1], top, 1, bias=False), bn=nn.BatchNorm2d(top, eps=EPS),
            act=nn.SiLU(inplace=True), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
            **({"dropout": nn.Dropout(dropout)} if dropout else {}), fc=nn.Linear(top, num_classes)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1 / math.sqrt(m.out_features), 1 / math.sqrt(m.out_features))
                nn.init.zeros_(m.bias)

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keras Applications' EfficientNet weights (read from .h5) -> ours, without Keras' input Normalization
        statistics; anything else unchanged."""
        keras = {k: v for k, v in state_dict.items() if not re.fullmatch(r"normalization(_\d+)?/.+", k)}
        if not looks_like_keras(keras):
            return state_dict
        out = from_keras(keras, partial(keras_module, counts=[len(s) for s in self.stages]))
        return {k: v.transpose(0, 1).contiguous() if k.endswith(".dwconv.weight") and v.shape[0] == 1 else v
                for k, v in out.items()}


_KERAS_BLOCK = re.compile(r"^block(?P<stage>\d)(?P<letter>[a-z])_(?P<part>expand_conv|expand_bn|dwconv|bn|se_reduce|"
                          r"se_expand|project_conv|project_bn)$")
_KERAS_PARTS = {"expand_conv": "expand", "expand_bn": "bn1", "dwconv": "dwconv", "bn": "bn2", "se_reduce": "se.reduce",
                "se_expand": "se.expand", "project_conv": "project", "project_bn": "bn3"}


def keras_module(layer: str, var: str, *, counts: list[int]) -> str | None:
    """Keras Applications' EfficientNet layer names (``stem_conv``, ``block2a_expand_conv``, ``top_bn``,
    ``predictions``) -> our modules."""
    fixed = {"stem_conv": "stem.conv", "stem_bn": "stem.bn", "top_conv": "head.conv", "top_bn": "head.bn",
             "predictions": "head.fc"}
    if layer in fixed:
        return fixed[layer]
    m = _KERAS_BLOCK.match(layer)
    if m is None:
        return None
    stage, block = int(m["stage"]) - 1, ord(m["letter"]) - ord("a")
    if not (0 <= stage < len(counts) and block < counts[stage]):
        return None
    return f"stages.{stage}.{block}.branch.{_KERAS_PARTS[m['part']]}"


def efficientnet(variant: str, **kwargs: Any) -> EfficientNet:
    return EfficientNet(variant, **kwargs)


def _register() -> None:
    for variant, (_, _, side, _) in VARIANTS.items():
        define_twins(f"efficientnet_{variant}", partial(efficientnet, variant), module=__name__,
                     family="efficientnet", input_size=(3, side, side), paper=PAPER,
                     doc=f"EfficientNet-{variant.upper()} (Tan & Le 2019) in Keras Applications' layout. kwargs: "
                         "num_classes, in_channels, skip, drop_path_rate, drop_path_mode, dropout.")


_register()
