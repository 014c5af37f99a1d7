"""EfficientNet-B0...B7 (Tan & Le 2019, arXiv:1905.11946): MBConv blocks — an inverted residual
(:class:`~skiplab.blocks.inverted_residual.InvertedResidual`) with a squeeze-and-excitation gate and swish — with an
identity skip wherever a block keeps its shape, dropped per sample with the paper's "drop connect" rate (0.2 at the
last block, rising linearly from 0).  Widths and depths are scaled from the B0 table by ``round_filters`` /
``round_repeats``; parameters equal torchvision's and Keras' trainable counts (B0 5,288,548 ... B7 66,347,960).

Two layouts with the same parameters: ``efficientnet_b0``... (torchvision's: BatchNorm epsilon 1e-5, symmetric
padding; its checkpoints load) and ``efficientnet_b0_keras``... (Keras Applications': epsilon 1e-3, TensorFlow's
"same" padding on the stride-2 convolutions; Keras' .h5 weights give Keras' outputs).  Keras builds its input
scaling into the model (x/255, then a Normalization); skiplab's takes the scaled input (``keras_preprocess(x,
"torch")`` for ImageNet weights), and Keras' files load without the Normalization layer's statistics.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.inverted_residual import FusedInvertedResidual, InvertedResidual, SamePad2d
from skiplab.keras_weights import from_keras, looks_like_keras
from skiplab.layers.drop_path import check_drop_prob, set_drop_path_mode
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.mobilenet import looks_like_timm_mbconv, timm_mbconv_to_ours, torchvision_branch_key, \
    torchvision_features_key
from skiplab.models.resnet import define_twins

PAPER = "Tan & Le 2019, EfficientNet: Rethinking Model Scaling for CNNs, arXiv:1905.11946"
PAPER_V2 = "Tan & Le 2021, EfficientNetV2: Smaller Models and Faster Training, arXiv:2104.00298"
# per stage: (block, kernel, repeats, in, out, expansion, stride, squeeze-excite ratio of the block's input);
# "mb" = MBConv, "fused" = Fused-MBConv
B0 = tuple(("mb", k, n, cin, cout, t, s, 0.25) for k, n, cin, cout, t, s in (
    (3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2), (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)))
V2_S = (("fused", 3, 2, 24, 24, 1, 1, 0), ("fused", 3, 4, 24, 48, 4, 2, 0), ("fused", 3, 4, 48, 64, 4, 2, 0),
        ("mb", 3, 6, 64, 128, 4, 2, 0.25), ("mb", 3, 9, 128, 160, 6, 1, 0.25), ("mb", 3, 15, 160, 256, 6, 2, 0.25))
V2_M = (("fused", 3, 3, 24, 24, 1, 1, 0), ("fused", 3, 5, 24, 48, 4, 2, 0), ("fused", 3, 5, 48, 80, 4, 2, 0),
        ("mb", 3, 7, 80, 160, 4, 2, 0.25), ("mb", 3, 14, 160, 176, 6, 1, 0.25), ("mb", 3, 18, 176, 304, 6, 2, 0.25),
        ("mb", 3, 5, 304, 512, 6, 1, 0.25))
V2_L = (("fused", 3, 4, 32, 32, 1, 1, 0), ("fused", 3, 7, 32, 64, 4, 2, 0), ("fused", 3, 7, 64, 96, 4, 2, 0),
        ("mb", 3, 10, 96, 192, 4, 2, 0.25), ("mb", 3, 19, 192, 224, 6, 1, 0.25), ("mb", 3, 25, 224, 384, 6, 2, 0.25),
        ("mb", 3, 7, 384, 640, 6, 1, 0.25))
V2_B = (("fused", 3, 1, 32, 16, 1, 1, 0), ("fused", 3, 2, 16, 32, 4, 2, 0), ("fused", 3, 2, 32, 48, 4, 2, 0),
        ("mb", 3, 3, 48, 96, 4, 2, 0.25), ("mb", 3, 5, 96, 112, 6, 1, 0.25), ("mb", 3, 8, 112, 192, 6, 2, 0.25))
# variant -> (stages, width coefficient, depth coefficient, input side, dropout before the classifier)
VARIANTS = {"b0": (B0, 1.0, 1.0, 224, 0.2), "b1": (B0, 1.0, 1.1, 240, 0.2), "b2": (B0, 1.1, 1.2, 260, 0.3),
            "b3": (B0, 1.2, 1.4, 300, 0.3), "b4": (B0, 1.4, 1.8, 380, 0.4), "b5": (B0, 1.6, 2.2, 456, 0.4),
            "b6": (B0, 1.8, 2.6, 528, 0.5), "b7": (B0, 2.0, 3.1, 600, 0.5),
            "v2_s": (V2_S, 1.0, 1.0, 384, 0.2), "v2_m": (V2_M, 1.0, 1.0, 480, 0.3), "v2_l": (V2_L, 1.0, 1.0, 480, 0.4),
            "v2_b0": (V2_B, 1.0, 1.0, 224, 0.2), "v2_b1": (V2_B, 1.0, 1.1, 240, 0.2),
            "v2_b2": (V2_B, 1.1, 1.2, 260, 0.2), "v2_b3": (V2_B, 1.2, 1.4, 300, 0.2)}
KERAS_ONLY = ("v2_b0", "v2_b1", "v2_b2", "v2_b3")  # torchvision has EfficientNetV2-S/M/L only


def round_filters(filters: float, width: float, divisor: int = 8, *, keep_90_percent: bool = True) -> int:
    """The paper's channel rounding: ``filters * width`` to a multiple of 8, and (``keep_90_percent``, as in
    EfficientNet and torchvision; Keras' EfficientNetV2 skips it) never 10% below it."""
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if keep_90_percent and rounded < 0.9 * filters else rounded)


# layout -> BatchNorm epsilon (EfficientNet-B*; every V2 uses 1e-3) and padding: torchvision's (symmetric) and
# Keras' (TensorFlow's "same")
LAYOUTS = {"torchvision": (1e-5, "torch"), "keras": (1e-3, "tf")}


def mbconv(in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int, *,
           layout: str = "keras", se_ratio: float = 0.25, **kwargs: Any) -> InvertedResidual:
    """EfficientNet's MBConv: an inverted residual with swish and a squeeze-and-excitation gate (``se_ratio`` of
    the block's input channels); ``layout`` sets the padding and, unless given, BatchNorm's epsilon."""
    eps, padding = LAYOUTS[layout]
    kwargs.setdefault("bn_eps", eps)
    return InvertedResidual(in_channels, out_channels, stride, expand_ratio, kernel=kernel, act="silu",
                            se_channels=max(1, int(in_channels * se_ratio)), padding=padding, **kwargs)


class EfficientNet(SkipNet):
    """EfficientNet-B0...B7 and EfficientNetV2 (see the module docstring).

    Args:
        variant: "b0" ... "b7", "v2_s", "v2_m", "v2_l", "v2_b0" ... "v2_b3" (Keras' layout only).
        skip: "residual", "none" (plain twin) or "highway".
        drop_path_rate: the last block's drop-connect probability (the paper's 0.2; 0 turns it off).
        dropout: before the classifier (default: the variant's; Keras' EfficientNetV2 uses 0.2 for all).
    """

    def __init__(self, variant: str = "b0", *, layout: str = "torchvision", num_classes: int = 1000,
                 in_channels: int = 3, skip: str = "residual", drop_path_rate: float = 0.2, drop_path_mode: str = "row",
                 dropout: float | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"EfficientNet variant must be one of {', '.join(map(repr, VARIANTS))}; got {variant!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")
        if layout == "torchvision" and variant in KERAS_ONLY:
            raise ValueError(f"EfficientNet variant {variant!r} exists in Keras' layout only (layout='keras'); "
                             "torchvision's EfficientNetV2 variants are 'v2_s', 'v2_m', 'v2_l'")
        v2 = variant.startswith("v2")
        eps, padding = LAYOUTS[layout]
        eps = 1e-3 if v2 else eps
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        table, width, depth, side, default_dropout = VARIANTS[variant]
        dropout = (0.2 if v2 and layout == "keras" else default_dropout) if dropout is None else dropout
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.variant, self.skip, self.layout = variant, skip, layout
        self.default_input_size = (in_channels, side, side)
        rounding = partial(round_filters, width=width, keep_90_percent=not (v2 and layout == "keras"))
        stem = rounding(table[0][3])
        self.stem = nn.Sequential(OrderedDict(
            **({"pad": SamePad2d(3, 2)} if padding == "tf" else {}),
            conv=nn.Conv2d(in_channels, stem, 3, 2, 1 if padding == "torch" else 0, bias=False),
            bn=nn.BatchNorm2d(stem, eps=eps), act=nn.SiLU(inplace=True)))
        plan = []  # per stage: (block, in, out, kernel, stride, expansion, se ratio) per block
        for block, kernel, repeats, cin, cout, t, s, se in table:
            cin, cout = rounding(cin), rounding(cout)
            plan.append([(block, cin if i == 0 else cout, cout, kernel, s if i == 0 else 1, t, se)
                         for i in range(math.ceil(depth * repeats))])
        n = sum(map(len, plan))
        rate = check_drop_prob(drop_path_rate, "drop_path_rate")
        stages, k = [], 0
        for stage in plan:
            blocks = []
            for block, cin, cout, kernel, s, t, se in stage:
                keeps = s == 1 and cin == cout
                opts = dict(skip=skip if keeps else "none", bn_eps=eps,
                            drop_path=rate * k / n if keeps and skip != "none" else 0.0)  # Keras' rule
                blocks.append(mbconv(cin, cout, kernel, s, t, layout=layout, se_ratio=se, **opts) if block == "mb"
                              else FusedInvertedResidual(cin, cout, s, t, kernel=kernel, padding=padding, **opts))
                k += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        top = rounding(1280)
        self.num_features = top
        self.head = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(plan[-1][-1][2], top, 1, bias=False), bn=nn.BatchNorm2d(top, eps=eps),
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
        """torchvision's EfficientNet keys (``features.*``, ``classifier.1``), timm's (``conv_stem``, ``blocks.*``:
        efficientnet_bN into the torchvision layout, tf_efficientnet_bN / tf_efficientnetv2_* into the Keras one) or
        Keras Applications' EfficientNet weights (read from .h5; without Keras' input Normalization statistics) ->
        ours; anything else unchanged."""
        if "features.0.0.weight" in state_dict and "classifier.1.weight" in state_dict:
            return {torchvision_key_to_ours(k, self.stages) or k: v for k, v in state_dict.items()}
        if looks_like_timm_mbconv(state_dict):  # efficientnet_b0 -> ours, tf_efficientnet_b0 -> our Keras layout
            return timm_mbconv_to_ours(state_dict, [(f"stages.{i}.{j}", b) for i, stage in enumerate(self.stages)
                                                    for j, b in enumerate(stage)])
        keras = {k: v for k, v in state_dict.items() if not re.fullmatch(r"normalization(_\d+)?/.+", k)}
        if not looks_like_keras(keras):
            return state_dict
        return from_keras(keras, partial(keras_module, counts=[len(s) for s in self.stages]), self.state_dict())


def torchvision_key_to_ours(key: str, stages: nn.ModuleList) -> str | None:
    """``features.2.0.block.1.0.weight`` -> ``stages.1.0.branch.dwconv.weight``: torchvision's features.0 is the
    stem, features.1-7 the stages, features.8 the head's convolution (see :func:`torchvision_branch_key` for the
    keys inside a block)."""
    def inner(f: int, rest: str) -> str | None:
        m = re.match(r"^(\d+)\.(.+)$", rest)
        if m is None or int(m[1]) >= len(stages[f - 1]):
            return None
        key_in_block = torchvision_branch_key(stages[f - 1][int(m[1])], m[2])
        return f"stages.{f - 1}.{m[1]}.{key_in_block}" if key_in_block else None

    return torchvision_features_key(key, len(stages), inner)


_KERAS_BLOCK = re.compile(r"^block(?P<stage>\d)(?P<letter>[a-z])_(?P<part>expand_conv|expand_bn|dwconv2?|bn|se_reduce|"
                          r"se_expand|project_conv|project_bn)$")
_KERAS_PARTS = {"expand_conv": "expand", "expand_bn": "bn1", "dwconv": "dwconv", "dwconv2": "dwconv", "bn": "bn2",
                "se_reduce": "se.reduce", "se_expand": "se.expand", "project_conv": "project", "project_bn": "bn3"}


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
    for layout, suffix, who in (("torchvision", "", "torchvision"), ("keras", "_keras", "Keras Applications")):
        for variant, (_, _, _, side, _) in VARIANTS.items():
            if layout == "torchvision" and variant in KERAS_ONLY:
                continue
            title = f"EfficientNetV2-{variant[3:].upper()} (Tan & Le 2021)" if variant.startswith("v2") else \
                f"EfficientNet-{variant.upper()} (Tan & Le 2019)"
            define_twins(f"efficientnet_{variant}{suffix}", partial(efficientnet, variant, layout=layout),
                         module=__name__, family="efficientnet", input_size=(3, side, side),
                         paper=PAPER_V2 if variant.startswith("v2") else PAPER,
                         doc=f"{title}, the {who} layout. kwargs: num_classes, in_channels, skip, drop_path_rate, "
                             "drop_path_mode, dropout.")


_register()
