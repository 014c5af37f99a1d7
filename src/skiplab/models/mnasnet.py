"""MNASNet-A1 without squeeze-excite, torchvision's ``mnasnet0_5`` ... ``mnasnet1_3`` (Tan et al. 2019, "MnasNet:
Platform-Aware Neural Architecture Search for Mobile", arXiv:1807.11626): a separable-convolution stem and six
stages of ReLU inverted residual blocks (:class:`~skiplab.blocks.inverted_residual.InvertedResidual`), a skip on
every block that keeps its shape (10 of 16).  ``alpha`` scales every width (rounded to multiples of 8, never 10%
below); the head stays 1280 wide.  Parameters equal torchvision's (mnasnet1_0: 4,383,312); its checkpoints load,
and timm's (mnasnet_100: the same net).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.inverted_residual import InvertedResidual
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.mobilenet import looks_like_timm_mbconv, make_divisible, timm_mbconv_to_ours
from skiplab.models.resnet import define_twins

PAPER = "Tan et al. 2019, MnasNet: Platform-Aware Neural Architecture Search for Mobile, arXiv:1807.11626"
WIDTHS = (32, 16, 24, 40, 80, 96, 192, 320)  # stem, its separable block, then each stage's output
# per stage: (kernel, stride, expansion, blocks)
STAGES = ((3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4), (3, 1, 6, 1))
BN_MOMENTUM = 1 - 0.9997  # torchvision's (TensorFlow's decay 0.9997)
ALPHAS = {"0_5": 0.5, "0_75": 0.75, "1_0": 1.0, "1_3": 1.3}


class MNASNet(SkipNet):
    """MNASNet (see the module docstring).

    Args:
        alpha: the width multiplier (torchvision's names: 0.5, 0.75, 1.0, 1.3).  skip: "residual", "none" (plain
        twin) or "highway".  dropout: before the classifier (0.2).  drop_path_rate / drop_path_mode: stochastic
        depth over the blocks that have a skip (off by default, as in torchvision).
    """

    def __init__(self, alpha: float = 1.0, *, num_classes: int = 1000, in_channels: int = 3, skip: str = "residual",
                 dropout: float = 0.2, drop_path_rate: float = 0.0, drop_path_mode: str = "row") -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha must be a positive number (the width multiplier); got {alpha!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.alpha, self.skip = float(alpha), skip
        self.default_input_size = (in_channels, 224, 224)
        w = [make_divisible(c * alpha) for c in WIDTHS]
        bn = partial(nn.BatchNorm2d, momentum=BN_MOMENTUM)
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, w[0], 3, 2, 1, bias=False), bn=bn(w[0]), act=nn.ReLU(inplace=True),
            dwconv=nn.Conv2d(w[0], w[0], 3, 1, 1, groups=w[0], bias=False), bn2=bn(w[0]), act2=nn.ReLU(inplace=True),
            project=nn.Conv2d(w[0], w[1], 1, bias=False), bn3=bn(w[1])))
        plan = []  # per stage: (in, out, kernel, stride, expansion) per block
        for i, (kernel, stride, t, n) in enumerate(STAGES):
            cin, cout = w[i + 1], w[i + 2]
            plan.append([(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, t) for j in range(n)])
        n_skips = sum(1 for stage in plan for cin, cout, _, s, _ in stage if s == 1 and cin == cout)
        rate = check_drop_prob(drop_path_rate, "drop_path_rate")
        rates = iter(linear_decay(rate, n_skips) if rate else [0.0] * n_skips)
        stages = []
        for stage in plan:
            blocks = []
            for cin, cout, kernel, s, t in stage:
                keeps = s == 1 and cin == cout
                blocks.append(InvertedResidual(cin, cout, s, t, kernel=kernel, act="relu",
                                               skip=skip if keeps else "none", drop_path=next(rates) if keeps else 0.0))
            stages.append(nn.Sequential(*blocks))
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        for m in self.stages.modules():  # the blocks' norms have PyTorch's default momentum
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM
        self.num_features = 1280
        self.head = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(w[-1], 1280, 1, bias=False), bn=bn(1280), act=nn.ReLU(inplace=True),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
            **({"dropout": nn.Dropout(dropout)} if dropout else {}), fc=nn.Linear(1280, num_classes)))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, mode="fan_out", nonlinearity="sigmoid")
                nn.init.zeros_(m.bias)

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's MNASNet keys (``layers.N``, ``layers.8.0.layers.3``, ``classifier.1``) or timm's
        (``conv_stem``, ``blocks.S.B.*``: mnasnet_100 ...) -> ours; anything else unchanged."""
        if "layers.0.weight" in state_dict and "classifier.1.weight" in state_dict:
            return {torchvision_key_to_ours(k, len(self.stages)) or k: v for k, v in state_dict.items()}
        if looks_like_timm_mbconv(state_dict):  # timm's mnasnet_100 ...: its first block is our stem's tail
            stem = {f"blocks.0.0.{old}.": f"stem.{new}." for old, new in
                    (("conv_dw", "dwconv"), ("bn1", "bn2"), ("conv_pw", "project"), ("bn2", "bn3"))}
            renamed = {}
            for key, value in state_dict.items():
                prefix = next((p for p in stem if key.startswith(p)), None)
                renamed[stem[prefix] + key[len(prefix):] if prefix else key] = value
            return timm_mbconv_to_ours(renamed, [(f"stages.{i}.{j}", b) for i, stage in enumerate(self.stages)
                                                 for j, b in enumerate(stage)])
        return state_dict


_TV_STEM = {0: "stem.conv", 1: "stem.bn", 3: "stem.dwconv", 4: "stem.bn2", 6: "stem.project", 7: "stem.bn3"}
_TV_BLOCK = {0: "expand", 1: "bn1", 3: "dwconv", 4: "bn2", 6: "project", 7: "bn3"}
_TV_FIRST_STAGE = 8  # torchvision's layers.8 ... layers.13 are the stages; then the head's conv and norm


def torchvision_key_to_ours(key: str, n_stages: int) -> str | None:
    """``layers.9.1.layers.3.weight`` -> ``stages.1.1.branch.dwconv.weight``; ``layers.14`` / ``15`` -> the head."""
    if key.startswith("classifier.1."):
        return "head.fc." + key[len("classifier.1."):]
    m = re.match(r"^layers\.(\d+)\.(.+)$", key)
    if m is None:
        return None
    i, rest = int(m[1]), m[2]
    head = _TV_FIRST_STAGE + n_stages
    if i < _TV_FIRST_STAGE:
        return f"{_TV_STEM[i]}.{rest}" if i in _TV_STEM else None
    if i in (head, head + 1):
        return f"head.{'conv' if i == head else 'bn'}.{rest}"
    m = re.match(r"^(\d+)\.layers\.(\d+)\.(.+)$", rest)
    if m is None or i >= head or int(m[2]) not in _TV_BLOCK:
        return None
    return f"stages.{i - _TV_FIRST_STAGE}.{m[1]}.branch.{_TV_BLOCK[int(m[2])]}.{m[3]}"


def mnasnet(alpha: float, **kwargs: Any) -> MNASNet:
    return MNASNet(alpha, **kwargs)


def _register() -> None:
    for name, alpha in ALPHAS.items():
        define_twins(f"mnasnet{name}", partial(mnasnet, alpha), module=__name__, family="mnasnet",
                     input_size=(3, 224, 224), paper=PAPER,
                     doc=f"MNASNet (Tan et al. 2019), width {alpha}, torchvision's layout. kwargs: num_classes, "
                         "in_channels, skip, dropout, drop_path_rate, drop_path_mode.")


_register()
