"""MobileNetV3-Large and -Small (Howard et al. 2019, "Searching for MobileNetV3", arXiv:1905.02244): inverted
residual blocks (:class:`~skiplab.blocks.inverted_residual.InvertedResidual`) with the widths the architecture search
found, ReLU in the early blocks and hard-swish ``x * relu6(x + 3) / 6`` in the late ones, and in some blocks a
squeeze-and-excitation gate with a hard sigmoid (a quarter of the expanded width, rounded to a multiple of 8).  As
in MobileNetV2, only a block that keeps its shape has a skip (Large: 10 of 15, Small: 6 of 11).

Two layouts with the same parameters:

* ``mobilenet_v3_large`` / ``mobilenet_v3_small`` — torchvision's (5,483,032 / 2,542,856 parameters): symmetric
  padding; torchvision checkpoints load.  ``width`` scales every width, the classifier's hidden layer included.
* ``mobilenet_v3_large_keras`` / ``..._small_keras`` — Keras Applications' ``MobileNetV3Large/Small``: TensorFlow's
  "same" padding on the stride-2 convolutions (so Keras' .h5 weights give Keras' outputs at any input size);
  Keras' 1x1 convolutions on the pooled features are Linear layers here.  Keras builds its input scaling into the
  model (x / 127.5 - 1); skiplab's takes the scaled input (``keras_preprocess(x, "tf")``).  ``width`` follows
  Keras' ``alpha``: the stem stays 16 wide, each block expands its scaled input by the table's ratio, and below 1
  the classifier's hidden layer keeps its 1280/1024 channels.

Both: BatchNorm epsilon 1e-3 (momentum 0.01 in PyTorch's convention, 0.99 in Keras'); stem 3x3/2 convolution to 16
channels + BN + hard-swish; head 1x1 convolution to 6x the last block's width + BN + hard-swish, global average
pool, Linear to 1280 (Large) / 1024 (Small) + hard-swish, dropout 0.2, Linear classifier.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.inverted_residual import InvertedResidual, SamePad2d
from skiplab.keras_weights import from_keras, looks_like_keras
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.mobilenet import looks_like_timm_mbconv, make_divisible, timm_mbconv_to_ours, \
    torchvision_branch_key, torchvision_features_key
from skiplab.models.resnet import check_width, define_twins

PAPER = "Howard et al. 2019, Searching for MobileNetV3, arXiv:1905.02244"
RE, HS = "relu", "hardswish"
# per block: (kernel, expanded width, output width, squeeze-excite, activation, stride) — the paper's Tables 1 and 2;
# a new stage starts at every stride-2 block
LARGE = ((3, 16, 16, False, RE, 1), (3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1), (5, 72, 40, True, RE, 2),
         (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1), (3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1),
         (3, 184, 80, False, HS, 1), (3, 184, 80, False, HS, 1), (3, 480, 112, True, HS, 1),
         (3, 672, 112, True, HS, 1), (5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1), (5, 960, 160, True, HS, 1))
SMALL = ((3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1), (5, 96, 40, True, HS, 2),
         (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1), (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1),
         (5, 288, 96, True, HS, 2), (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1))
VARIANTS = {"large": (LARGE, 1280), "small": (SMALL, 1024)}
LAYOUTS = ("torchvision", "keras")
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


class MobileNetV3(SkipNet):
    """MobileNetV3 (see the module docstring).

    Args:
        variant: "large" or "small".  layout: "torchvision" or "keras".
        skip: "residual", "none" (plain twin) or "highway".  width: the width multiplier.
        dropout: before the classifier (0.2).  bn_eps: BatchNorm's epsilon (1e-3 in torchvision, Keras and timm's
        ``tf_`` nets; timm's own ``mobilenetv3_*`` use 1e-5).  drop_path_rate / drop_path_mode: stochastic depth
        over the blocks that have a skip (off by default, as in the libraries).
    """

    def __init__(self, variant: str = "large", *, layout: str = "torchvision", num_classes: int = 1000,
                 in_channels: int = 3, skip: str = "residual", width: float = 1.0, dropout: float = 0.2,
                 bn_eps: float = BN_EPS, drop_path_rate: float = 0.0, drop_path_mode: str = "row") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"MobileNetV3 variant must be one of {', '.join(map(repr, VARIANTS))}; got {variant!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width = check_width(width)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.variant, self.layout, self.skip = variant, layout, skip
        self.default_input_size = (in_channels, 224, 224)
        table, hidden_features = VARIANTS[variant]
        padding = "torch" if layout == "torchvision" else "tf"
        if not (isinstance(bn_eps, float) and 0 < bn_eps < 1):
            raise ValueError(f"bn_eps must be a float in (0, 1); got {bn_eps!r}")
        bn = partial(nn.BatchNorm2d, eps=bn_eps, momentum=BN_MOMENTUM)

        stem = make_divisible(16 * width) if layout == "torchvision" else 16  # Keras never scales its stem
        self.stem = nn.Sequential(OrderedDict(
            **({"pad": SamePad2d(3, 2)} if padding == "tf" else {}),
            conv=nn.Conv2d(in_channels, stem, 3, 2, 1 if padding == "torch" else 0, bias=False), bn=bn(stem),
            act=nn.Hardswish(inplace=True)))
        plan, channels = [], stem  # per block: (in, out, kernel, expanded, squeeze-excite, act, stride)
        base_in = 16
        for kernel, expanded, out, se, act, stride in table:
            # torchvision scales the table's expanded width; Keras applies the expansion ratio to the (scaled) input
            wide = make_divisible(expanded * width) if layout == "torchvision" else \
                make_divisible(channels * expanded / base_in)
            plan.append((channels, make_divisible(out * width), kernel, wide, se, act, stride))
            channels, base_in = make_divisible(out * width), out
        n_skips = sum(1 for cin, cout, *_, s in plan if s == 1 and cin == cout)
        rate = check_drop_prob(drop_path_rate, "drop_path_rate")
        rates = iter(linear_decay(rate, n_skips) if rate else [0.0] * n_skips)
        stages: list[list[nn.Module]] = []
        for cin, cout, kernel, expanded, se, act, stride in plan:
            keeps = stride == 1 and cin == cout
            block = InvertedResidual(cin, cout, stride, 1, kernel=kernel, act=act, hidden=expanded,
                                     se_channels=make_divisible(expanded // 4) if se else 0, se_act="relu",
                                     se_gate="hardsigmoid", skip=skip if keeps else "none", bn_eps=bn_eps,
                                     padding=padding, drop_path=next(rates) if keeps else 0.0)
            if stride == 2 or not stages:
                stages.append([])
            stages[-1].append(block)
        self.stages = set_drop_path_mode(nn.ModuleList(nn.Sequential(*s) for s in stages), drop_path_mode)
        for m in self.stages.modules():  # the blocks' norms have PyTorch's default; torchvision trains with 0.01
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM

        last = 6 * channels if layout == "torchvision" else make_divisible(6 * channels)
        if layout == "torchvision" or width > 1.0:  # Keras only ever widens the hidden layer
            hidden_features = make_divisible(hidden_features * width)
        self.num_features = last
        self.head = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(channels, last, 1, bias=False), bn=bn(last), act=nn.Hardswish(inplace=True),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1), hidden=nn.Linear(last, hidden_features),
            hidden_act=nn.Hardswish(inplace=True), **({"dropout": nn.Dropout(dropout)} if dropout else {}),
            fc=nn.Linear(hidden_features, num_classes)))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _blocks(self) -> list[tuple[str, InvertedResidual]]:
        """(our key prefix, block) of every block in order — torchvision's features.1 ... / Keras' block ids."""
        return [(f"stages.{i}.{j}", b) for i, stage in enumerate(self.stages) for j, b in enumerate(stage)]

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's MobileNetV3 keys (``features.*``, ``classifier.0/3``), timm's (``conv_stem``, ``blocks.*``)
        or Keras Applications' MobileNetV3 weights (read from .h5) -> ours; anything else unchanged."""
        blocks = self._blocks()
        if "features.0.0.weight" in state_dict and "classifier.3.weight" in state_dict:
            return {torchvision_key_to_ours(k, blocks) or k: v for k, v in state_dict.items()}
        if looks_like_timm_mbconv(state_dict):  # tf_mobilenetv3_* -> the Keras layout; mobilenetv3_*: bn_eps=1e-5
            return timm_mbconv_to_ours(state_dict, blocks, head_hidden=True)
        if looks_like_keras(state_dict):
            return from_keras(state_dict, partial(keras_module, blocks=blocks), self.state_dict())
        return state_dict


def torchvision_key_to_ours(key: str, blocks: list[tuple[str, InvertedResidual]]) -> str | None:
    """``features.4.block.2.fc1.weight`` -> ``stages.2.0.branch.se.reduce.weight``: torchvision's features.0 is
    the stem, features.1 ... the blocks, the last one the head's convolution; classifier.0 / .3 the two Linears."""
    def inner(f: int, rest: str) -> str | None:
        prefix, block = blocks[f - 1]
        key_in_block = torchvision_branch_key(block, rest)
        return f"{prefix}.{key_in_block}" if key_in_block else None

    return torchvision_features_key(key, len(blocks), inner,
                                    classifier={"classifier.0.": "head.hidden.", "classifier.3.": "head.fc."})


_KERAS_BLOCK = re.compile(r"^expanded_conv_(?:(?P<id>\d+)_)?(?P<part>expand|expand_bn|depthwise|depthwise_bn|"
                          r"squeeze_excite_conv|squeeze_excite_conv_1|project|project_bn)$")
_KERAS_PARTS = {"expand": "expand", "expand_bn": "bn1", "depthwise": "dwconv", "depthwise_bn": "bn2",
                "squeeze_excite_conv": "se.reduce", "squeeze_excite_conv_1": "se.expand", "project": "project",
                "project_bn": "bn3"}


def keras_module(layer: str, var: str, *, blocks: list[tuple[str, InvertedResidual]]) -> str | None:
    """Keras Applications' MobileNetV3 layer names (``conv``, ``expanded_conv_3_squeeze_excite_conv``,
    ``conv_1_bn``, ``conv_2``, ``logits``) -> our modules."""
    fixed = {"conv": "stem.conv", "conv_bn": "stem.bn", "conv_1": "head.conv", "conv_1_bn": "head.bn",
             "conv_2": "head.hidden", "logits": "head.fc"}
    if layer in fixed:
        return fixed[layer]
    m = _KERAS_BLOCK.match(layer)
    if m is None:
        return None
    k = int(m["id"]) if m["id"] else 0
    return f"{blocks[k][0]}.branch.{_KERAS_PARTS[m['part']]}" if k < len(blocks) else None


def mobilenet_v3(variant: str, **kwargs: Any) -> MobileNetV3:
    return MobileNetV3(variant, **kwargs)


def _register() -> None:
    for layout, suffix, who in (("torchvision", "", "torchvision"), ("keras", "_keras", "Keras Applications")):
        for variant in VARIANTS:
            define_twins(f"mobilenet_v3_{variant}{suffix}", partial(mobilenet_v3, variant, layout=layout),
                         module=__name__, family="mobilenet", input_size=(3, 224, 224), paper=PAPER,
                         doc=f"MobileNetV3-{variant.capitalize()} (Howard et al. 2019), the {who} layout. kwargs: "
                             "num_classes, in_channels, skip, width, dropout, bn_eps, drop_path_rate, drop_path_mode.")


_register()
