"""RegNetX and RegNetY (Radosavovic et al. 2020, "Designing Network Design Spaces", arXiv:2003.13678): ResNeXt
bottleneck units (:class:`~skiplab.blocks.residual.Bottleneck` with bottleneck ratio 1 and a fixed group width;
RegNetY adds a squeeze-and-excitation gate with a quarter of the unit's input width) whose per-stage widths and
depths come from the paper's quantized linear rule: block ``j`` of ``d`` gets width ``w0 + wa * j``, snapped to
``w0 * wm^k`` and to a multiple of 8; consecutive blocks of equal width form a stage (each halving the resolution).

Parameters equal torchvision's (regnet_x_400mf 5,495,976 ... regnet_y_32gf 145,046,770); torchvision's checkpoints
load, and timm's of the same nets (``regnetx_004`` = ``regnet_x_400mf`` ... ``regnety_320`` = ``regnet_y_32gf``).
Stem: 3x3/2 convolution to 32 channels + BN + ReLU; head: global average pool + Linear.  ``regnet_y_128gf``
(644,812,894 parameters; torchvision's SWAG weights) builds like the others; its generated tests run only under
the ``slow`` marker (they need ~10 GB of memory).
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.residual import Bottleneck
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.mobilenet import make_divisible
from skiplab.models.resnet import define_twins, init_resnet_weights

PAPER = "Radosavovic et al. 2020, Designing Network Design Spaces, arXiv:2003.13678"
# name -> (depth d, initial width w0, slope wa, width multiplier wm, group width g, SE) — the paper's Tables and
# torchvision's settings
VARIANTS = {
    "x_400mf": (22, 24, 24.48, 2.54, 16, False), "x_800mf": (16, 56, 35.73, 2.28, 16, False),
    "x_1_6gf": (18, 80, 34.01, 2.25, 24, False), "x_3_2gf": (25, 88, 26.31, 2.25, 48, False),
    "x_8gf": (23, 80, 49.56, 2.88, 120, False), "x_16gf": (22, 216, 55.59, 2.1, 128, False),
    "x_32gf": (23, 320, 69.86, 2.0, 168, False),
    "y_400mf": (16, 48, 27.89, 2.09, 8, True), "y_800mf": (14, 56, 38.84, 2.4, 16, True),
    "y_1_6gf": (27, 48, 20.71, 2.65, 24, True), "y_3_2gf": (21, 80, 42.63, 2.66, 24, True),
    "y_8gf": (17, 192, 76.82, 2.19, 56, True), "y_16gf": (18, 200, 106.23, 2.48, 112, True),
    "y_32gf": (20, 232, 115.89, 2.53, 232, True), "y_128gf": (27, 456, 160.83, 2.52, 264, True),
}
STEM_WIDTH = 32


def regnet_stages(depth: int, w0: int, wa: float, wm: float, group_width: int) -> list[tuple[int, int, int]]:
    """(width, blocks, group width) per stage from the quantized linear rule.  Computed in float32 tensors as
    torchvision does, so that a width exactly between two steps rounds the same way."""
    if wa < 0 or w0 <= 0 or wm <= 1 or w0 % 8:
        raise ValueError(f"RegNet needs wa >= 0, w0 > 0 a multiple of 8 and wm > 1; got w0={w0}, wa={wa}, wm={wm}")
    continuous = torch.arange(depth, device="cpu") * wa + w0  # cpu even when models are built on "meta"
    steps = torch.round(torch.log(continuous / w0) / math.log(wm))
    widths = (torch.round(torch.divide(w0 * torch.pow(wm, steps), 8)) * 8).int().tolist()
    stages: list[list[int]] = []  # [width, blocks]
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, n in stages:  # the group width cannot exceed the width; the width must be a multiple of it
        g = min(group_width, w)
        out.append((make_divisible(w, g), n, g))
    return out


class RegNet(SkipNet):
    """RegNetX/Y (see the module docstring).

    Args:
        variant: "x_400mf" ... "y_32gf".  skip: "residual", "none" (plain twin) or "highway".
        drop_path_rate / drop_path_mode: stochastic depth (off by default, as in torchvision).
    """

    def __init__(self, variant: str = "y_400mf", *, num_classes: int = 1000, in_channels: int = 3,
                 skip: str = "residual", drop_path_rate: float = 0.0, drop_path_mode: str = "row") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"RegNet variant must be one of {', '.join(map(repr, VARIANTS))}; got {variant!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        depth, w0, wa, wm, group_width, se = VARIANTS[variant]
        self.variant, self.skip = variant, skip
        self.default_input_size = (in_channels, 224, 224)
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, STEM_WIDTH, 3, 2, 1, bias=False), bn=nn.BatchNorm2d(STEM_WIDTH),
            act=nn.ReLU(inplace=True)))
        plan = regnet_stages(depth, w0, wa, wm, group_width)
        rate = check_drop_prob(drop_path_rate, "drop_path_rate")
        rates = iter(linear_decay(rate, depth) if rate else [0.0] * depth)
        stages, channels = [], STEM_WIDTH
        for width, blocks, g in plan:
            units = []
            for i in range(blocks):
                cin = channels if i == 0 else width
                units.append(Bottleneck(cin, width, 2 if i == 0 else 1, skip=skip, mid_channels=width,
                                        groups=width // g, se_channels=round(0.25 * cin) if se else 0,
                                        drop_path=next(rates)))
            stages.append(nn.Sequential(*units))
            channels = width
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        self.num_features = channels
        self.head = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
                                              fc=nn.Linear(channels, num_classes)))
        init_resnet_weights(self)  # torchvision's: He-normal (fan_out) convolutions, BN 1/0
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's RegNet keys (``stem.0``, ``trunk_output.block1.block1-0.f.a.0``, ``fc``) or timm's
        (``stem.conv``, ``s1.b1.conv1.conv``, ``head.fc``: regnetx_004 ... regnety_320 are these nets) -> ours;
        anything else unchanged."""
        if "stem.0.weight" in state_dict and any(k.startswith("trunk_output.") for k in state_dict):
            return {layout_key_to_ours(k, "torchvision") or k: v for k, v in state_dict.items()}
        if "stem.conv.weight" in state_dict and "s1.b1.conv1.conv.weight" in state_dict:
            return {layout_key_to_ours(k, "timm") or k: v for k, v in state_dict.items()}
        return state_dict


# a unit's submodules -> ours, in torchvision's layout (``f.a.0``, ``proj.1``) and timm's (``conv1.conv``)
_TV_UNIT = {"f.a.0": "branch.conv1", "f.a.1": "branch.bn1", "f.b.0": "branch.conv2", "f.b.1": "branch.bn2",
            "f.c.0": "branch.conv3", "f.c.1": "branch.bn3", "f.se.fc1": "branch.se.reduce",
            "f.se.fc2": "branch.se.expand", "proj.0": "shortcut.conv", "proj.1": "shortcut.bn"}
_TIMM_UNIT = {"conv1.conv": "branch.conv1", "conv1.bn": "branch.bn1", "conv2.conv": "branch.conv2",
              "conv2.bn": "branch.bn2", "conv3.conv": "branch.conv3", "conv3.bn": "branch.bn3",
              "se.fc1": "branch.se.reduce", "se.fc2": "branch.se.expand", "downsample.conv": "shortcut.conv",
              "downsample.bn": "shortcut.bn"}
# (top-level prefixes, unit key pattern -> (stage from 1, block, submodule, parameter), first block's number, units)
_LAYOUTS = {
    "torchvision": ({"stem.0.": "stem.conv.", "stem.1.": "stem.bn.", "fc.": "head.fc."},
                    re.compile(r"^trunk_output\.block(\d+)\.block\1-(\d+)\.(.+)\.(\w+)$"), 0, _TV_UNIT),
    "timm": ({"stem.conv.": "stem.conv.", "stem.bn.": "stem.bn.", "head.fc.": "head.fc."},
             re.compile(r"^s(\d+)\.b(\d+)\.(.+)\.(\w+)$"), 1, _TIMM_UNIT),
}


def layout_key_to_ours(key: str, layout: str) -> str | None:
    """A torchvision (``trunk_output.block2.block2-0.f.se.fc1.weight``) or timm (``s2.b1.se.fc1.weight``) RegNet
    key -> ours (``stages.1.0.branch.se.reduce.weight``); None if it has no counterpart."""
    top, pattern, first_block, units = _LAYOUTS[layout]
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = pattern.match(key)
    if m is None or m[3] not in units:
        return None
    return f"stages.{int(m[1]) - 1}.{int(m[2]) - first_block}.{units[m[3]]}.{m[4]}"


def regnet(variant: str, **kwargs: Any) -> RegNet:
    return RegNet(variant, **kwargs)


def _register() -> None:
    for variant in VARIANTS:
        kind, size = variant.split("_", 1)
        define_twins(f"regnet_{variant}", partial(regnet, variant), module=__name__, family="regnet",
                     input_size=(3, 224, 224), paper=PAPER,
                     doc=f"RegNet{kind.upper()}-{size.replace('_', '.').upper()} (Radosavovic et al. 2020), "
                         "torchvision's layout. kwargs: num_classes, in_channels, skip, drop_path_rate, "
                         "drop_path_mode.")


_register()
