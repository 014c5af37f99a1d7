"""MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381): a stack of inverted residual blocks
(:class:`~skiplab.blocks.inverted_residual.InvertedResidual`), in two layouts with the same parameters:

* ``mobilenet_v2`` — torchvision's (3,504,872 parameters): BatchNorm epsilon 1e-5, every 3x3 padded by one pixel;
  torchvision checkpoints load.
* ``mobilenet_v2_keras`` — Keras Applications' ``MobileNetV2`` (3,538,984 values with the BatchNorm statistics,
  Keras' count): epsilon 1e-3 and TensorFlow's "same" padding on the stride-2 convolutions (on an even size only
  the bottom and right are padded), so Keras' weights (.h5) give Keras' outputs at any input size.  No dropout
  before the classifier (torchvision has 0.2).

Stem: 3x3/2 convolution to 32 channels + BN + ReLU6.  Seven stages of (expansion t, channels c, blocks n, stride s)
= (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1).  Head: 1x1 convolution to 1280
channels + BN + ReLU6, global average pool, (dropout,) Linear.  ``width`` scales the channels, rounded to multiples
of 8 as in the paper (the head's 1280 only grows).  Only the 10 blocks that keep their shape have a skip; the plain
twin drops those, the highway twin gates them.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from skiplab.blocks.inverted_residual import InvertedResidual, SamePad2d
from skiplab.keras_weights import from_keras, looks_like_keras
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import check_width, define_twins

PAPER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks, arXiv:1801.04381"
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
LAYOUTS = {"torchvision": {"bn_eps": 1e-5, "padding": "torch", "dropout": 0.2},
           "keras": {"bn_eps": 1e-3, "padding": "tf", "dropout": 0.0}}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value`` (the paper's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2(SkipNet):
    """MobileNetV2 (see the module docstring).

    Args:
        layout: "torchvision" or "keras".  skip: "residual", "none" (plain twin) or "highway".
        width: the paper's width multiplier α.  dropout: before the classifier (default: the layout's).
        drop_path_rate / drop_path_mode: stochastic depth over the blocks that have a skip.
    """

    def __init__(self, layout: str = "torchvision", *, num_classes: int = 1000, in_channels: int = 3,
                 skip: str = "residual", width: float = 1.0, dropout: float | None = None,
                 drop_path_rate: float = 0.0, drop_path_mode: str = "row") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width = check_width(width)
        opts = LAYOUTS[layout]
        dropout = opts["dropout"] if dropout is None else dropout
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.layout, self.skip = layout, skip
        self.default_input_size = (in_channels, 224, 224)
        eps, pad = opts["bn_eps"], opts["padding"]
        stem_channels = make_divisible(32 * width)
        stem_conv = nn.Conv2d(in_channels, stem_channels, 3, 2, 1 if pad == "torch" else 0, bias=False)
        self.stem = nn.Sequential(OrderedDict(
            **({"pad": SamePad2d(3, 2)} if pad == "tf" else {}), conv=stem_conv,
            bn=nn.BatchNorm2d(stem_channels, eps=eps), act=nn.ReLU6(inplace=True)))
        plan = []  # (in, out, stride, t) per block
        channels = stem_channels
        for t, c, n, s in SETTINGS:
            out = make_divisible(c * width)
            plan.append([(channels if i == 0 else out, out, s if i == 0 else 1, t) for i in range(n)])
            channels = out
        n_skips = sum(1 for stage in plan for cin, cout, s, _ in stage if s == 1 and cin == cout)
        rates = iter(linear_decay(check_drop_prob(drop_path_rate, "drop_path_rate"), n_skips) if drop_path_rate
                     else [0.0] * n_skips)
        stages = []
        for stage in plan:
            blocks = []
            for cin, cout, s, t in stage:
                keeps_shape = s == 1 and cin == cout
                blocks.append(InvertedResidual(cin, cout, s, t, skip=skip if keeps_shape else "none", bn_eps=eps,
                                               padding=pad, drop_path=next(rates) if keeps_shape else 0.0))
            stages.append(nn.Sequential(*blocks))
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        last = make_divisible(1280 * max(1.0, width))
        self.num_features = last
        self.head = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(channels, last, 1, bias=False), bn=nn.BatchNorm2d(last, eps=eps),
            act=nn.ReLU6(inplace=True), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
            **({"dropout": nn.Dropout(dropout)} if dropout else {}), fc=nn.Linear(last, num_classes)))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _block_index(self) -> list[tuple[int, int]]:
        """(stage, block) of the network's 17 blocks in order."""
        return [(i, j) for i, stage in enumerate(self.stages) for j in range(len(stage))]

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's MobileNetV2 keys (``features.*``, ``classifier.1``), timm's (``conv_stem``, ``blocks.*``)
        or Keras Applications' MobileNetV2 weights (read from .h5) -> ours; anything else unchanged."""
        index = self._block_index()
        if looks_like_timm_mbconv(state_dict):  # timm's mobilenetv2_100 ...
            return timm_mbconv_to_ours(state_dict, [(f"stages.{i}.{j}", self.stages[i][j]) for i, j in index])
        if looks_like_keras(state_dict):
            return from_keras(state_dict, partial(keras_module, index=index), self.state_dict())
        if "features.0.0.weight" in state_dict and "classifier.1.weight" in state_dict:
            return {torchvision_key_to_ours(k, index) or k: v for k, v in state_dict.items()}
        return state_dict


_TV_EXPANDING = {"conv.0.0": "expand", "conv.0.1": "bn1", "conv.1.0": "dwconv", "conv.1.1": "bn2", "conv.2": "project",
                 "conv.3": "bn3"}
_TV_FIRST = {"conv.0.0": "dwconv", "conv.0.1": "bn2", "conv.1": "project", "conv.2": "bn3"}  # t = 1: no expansion


def conv_norm_key(module: str, rest: str) -> str | None:
    """Keys inside torchvision's Conv2dNormActivation (``0.weight``, ``1.running_mean``) -> ours under ``module``
    (``{module}.conv.weight``, ``{module}.bn.running_mean``)."""
    part, _, param = rest.partition(".")
    return f"{module}.{('conv', 'bn')[int(part)]}.{param}" if part in ("0", "1") else None


_BRANCH_PARTS = {"expand": ("expand", "bn1"), "dwconv": ("dwconv", "bn2"), "project": ("project", "bn3")}


def torchvision_branch_key(block: InvertedResidual, rest: str) -> str | None:
    """A key inside torchvision's MBConv/MobileNetV3 block (``block.J.0.weight``, ``block.J.1.running_var``,
    ``block.J.fc1.bias``) -> ours under ``branch``: ``block.J`` counts the block's parts in order — the expansion
    (where it has one), the depthwise convolution, the squeeze-excite gate (fc1, fc2; where it has one) and the
    projection — each a conv + norm pair but the gate."""
    m = re.match(r"^block\.(\d+)\.(\w+)\.(.+)$", rest)
    parts = [n for n in ("expand", "dwconv", "se", "project") if n in block.branch._modules]
    if m is None or int(m[1]) >= len(parts):
        return None
    part, sub, param = parts[int(m[1])], m[2], m[3]
    if part == "se":
        sub = {"fc1": "reduce", "fc2": "expand"}.get(sub)
        return f"branch.se.{sub}.{param}" if sub else None
    return f"branch.{_BRANCH_PARTS[part][int(sub)]}.{param}" if sub in ("0", "1") else None


# timm's block attributes -> ours, by whether our block expands (timm's InvertedResidual / EdgeResidual) or not
# (timm's DepthwiseSeparableConv / ConvBnAct)
_TIMM_EXPANDING = {"conv_pw": "expand", "bn1": "bn1", "conv_dw": "dwconv", "bn2": "bn2", "se.conv_reduce": "se.reduce",
                   "se.conv_expand": "se.expand", "conv_pwl": "project", "bn3": "bn3"}
_TIMM_EXPANDING_FUSED = {"conv_exp": "expand", "bn1": "bn1", "conv_pwl": "project", "bn2": "bn3"}
_TIMM_SEPARABLE = {"conv_dw": "dwconv", "bn1": "bn2", "se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand",
                   "conv_pw": "project", "bn2": "bn3"}
_TIMM_SINGLE_CONV = {"conv": "project", "bn1": "bn3"}


def looks_like_timm_mbconv(state_dict: dict[str, torch.Tensor]) -> bool:
    """timm's EfficientNet / MobileNet family (``conv_stem``, ``blocks.S.B.*``, ``conv_head``)."""
    return "conv_stem.weight" in state_dict and any(k.startswith("blocks.") for k in state_dict)


def timm_mbconv_to_ours(state_dict: dict[str, torch.Tensor], blocks: list[tuple[str, nn.Module]], *,
                        head_hidden: bool = False) -> dict[str, torch.Tensor]:
    """timm's EfficientNet-family keys -> ours.  ``blocks``: (our key prefix, block) in order; timm's
    ``blocks.S.B`` are taken in the same order (its stages may be cut differently).  One timm block more than ours
    is the 1x1 convolution MobileNetV3 keeps in its last stage: our ``head.conv``/``head.bn``.  ``head_hidden``:
    timm's ``conv_head`` is a 1x1 convolution on pooled features, our ``head.hidden`` Linear (MobileNetV3)."""
    pairs = sorted({tuple(map(int, k.split(".")[1:3])) for k in state_dict if re.match(r"^blocks\.\d+\.\d+\.", k)})
    order = {pair: i for i, pair in enumerate(pairs)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _timm_key(key, order, blocks, head_hidden)
        if new == "head.hidden.weight":
            value = value.flatten(1)  # a 1x1 convolution on a 1x1 map is a Linear
        out[new or key] = value
    return out


def _timm_key(key: str, order: dict[tuple[int, int], int], blocks: list[tuple[str, nn.Module]],
              head_hidden: bool) -> str | None:
    top = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.hidden" if head_hidden else "head.conv",
           "bn2": "head.bn", "classifier": "head.fc"}
    first, _, rest = key.partition(".")
    if first in top:
        return f"{top[first]}.{rest}"
    m = re.match(r"^blocks\.(\d+)\.(\d+)\.(.+)\.(\w+)$", key)
    if m is None:
        return None
    k, module, param = order[int(m[1]), int(m[2])], m[3], m[4]
    if k == len(blocks):  # MobileNetV3's last 1x1 convolution (timm: a ConvBnAct block)
        return {"conv": f"head.conv.{param}", "bn1": f"head.bn.{param}"}.get(module)
    if k > len(blocks):
        return None
    prefix, block = blocks[k]
    parts = block.branch._modules
    fused = "dwconv" not in parts
    table = (_TIMM_EXPANDING_FUSED if fused else _TIMM_EXPANDING) if "expand" in parts else \
        (_TIMM_SINGLE_CONV if fused else _TIMM_SEPARABLE)
    return f"{prefix}.branch.{table[module]}.{param}" if module in table else None


def torchvision_features_key(key: str, n_middle: int, inner: Callable[[int, str], str | None],
                             classifier: dict[str, str] | None = None) -> str | None:
    """A key of torchvision's ``features`` / ``classifier`` model trees (MobileNetV2/V3, EfficientNet) -> ours:
    ``features.0`` is the stem and ``features.{n_middle + 1}`` the head's convolution (Conv2dNormActivation
    each), ``inner(f, rest)`` maps ``features.f.rest`` for 1 <= f <= n_middle, and ``classifier`` maps prefixes
    of the classifier (default: ``classifier.1.`` -> ``head.fc.``)."""
    for old, new in (classifier or {"classifier.1.": "head.fc."}).items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"^features\.(\d+)\.(.+)$", key)
    if m is None:
        return None
    f, rest = int(m[1]), m[2]
    if f in (0, n_middle + 1):
        return conv_norm_key("stem" if f == 0 else "head", rest)
    return inner(f, rest) if 1 <= f <= n_middle else None


def torchvision_key_to_ours(key: str, index: list[tuple[int, int]]) -> str | None:
    """``features.3.conv.1.0.weight`` -> ``stages.2.0.branch.dwconv.weight``; ``index`` lists (stage, block) of
    torchvision's ``features.1`` ... ``features.17``."""
    return torchvision_features_key(key, len(index), partial(_torchvision_v2_block_key, index=index))


def _torchvision_v2_block_key(f: int, rest: str, *, index: list[tuple[int, int]]) -> str | None:
    stage, block = index[f - 1]
    table = _TV_FIRST if f == 1 else _TV_EXPANDING
    for old, new in table.items():
        if rest.startswith(old + "."):
            return f"stages.{stage}.{block}.branch.{new}{rest[len(old):]}"
    return None


_KERAS_BLOCK = re.compile(r"^(?:block_(?P<id>\d+)|expanded_conv)_(?P<part>expand|depthwise|project)(?P<bn>_BN)?$")


def keras_module(layer: str, var: str, *, index: list[tuple[int, int]]) -> str | None:
    """Keras Applications' MobileNetV2 layer names (``Conv1``, ``block_3_depthwise_BN``, ``Conv_1_bn``,
    ``predictions``) -> our modules."""
    fixed = {"Conv1": "stem.conv", "bn_Conv1": "stem.bn", "Conv_1": "head.conv", "Conv_1_bn": "head.bn",
             "predictions": "head.fc"}
    if layer in fixed:
        return fixed[layer]
    m = _KERAS_BLOCK.match(layer)
    if m is None:
        return None
    k = int(m["id"]) if m["id"] else 0
    if k >= len(index):
        return None
    stage, block = index[k]
    if m["bn"]:
        name = {"expand": "bn1", "depthwise": "bn2", "project": "bn3"}[m["part"]]
    else:
        name = {"expand": "expand", "depthwise": "dwconv", "project": "project"}[m["part"]]
    return f"stages.{stage}.{block}.branch.{name}"


def build_mobilenet_v2(layout: str, **kwargs: Any) -> MobileNetV2:
    return MobileNetV2(layout, **kwargs)


def _register() -> None:
    for layout, name in (("torchvision", "mobilenet_v2"), ("keras", "mobilenet_v2_keras")):
        define_twins(name, partial(build_mobilenet_v2, layout), module=__name__, family="mobilenet",
                     input_size=(3, 224, 224), paper=PAPER,
                     doc=f"MobileNetV2 (Sandler et al. 2018) in {'torchvision' if layout == 'torchvision' else 'Keras'}"
                         "'s layout. kwargs: num_classes, in_channels, skip, width, dropout, drop_path_rate, "
                         "drop_path_mode.")


_register()
