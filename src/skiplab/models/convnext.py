"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s", arXiv:2201.03545) in torchvision's / Keras Applications'
layout: ``convnext_tiny/small/base/large`` (28,589,128 / 50,223,688 / 88,591,464 / 197,767,336 parameters, equal
to torchvision's) and ``convnext_xlarge`` (350,196,968: timm's and Keras'), with plain and highway twins.

* stem: a 4x4 convolution with stride 4 ("patchify") and a LayerNorm over channels;
* four stages of :class:`~skiplab.blocks.convnext.ConvNeXtBlock` (3-3-9-3 blocks for T, 3-3-27-3 for S/B/L); each
  later stage starts with a downsampling layer — LayerNorm, then a 2x2 convolution with stride 2 — as element 0
  of its Sequential (the blocks follow as elements 1...);
* head: global average pool, LayerNorm, Linear.

LayerNorm epsilon 1e-6 everywhere; weights drawn from a truncated normal (std 0.02), biases zero, layer scale 1e-6.
Stochastic depth (``drop_path_rate``: block l of L drops with l/L of it, Huang et al.'s rule; torchvision starts
at 0 for the first block) is off by default here, as for every
skiplab model; the paper trains T/S/B/L with 0.1/0.4/0.5/0.5.  Checkpoints of torchvision and Keras Applications'
ConvNeXt (``.h5``) and timm's ConvNeXt load through :meth:`ConvNeXt.remap_state_dict`.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.convnext import ConvNeXtBlock
from skiplab.keras_weights import from_keras, looks_like_keras
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import LayerNorm2d, check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import check_width, define_twins, scaled

PAPER = "Liu et al. 2022, A ConvNet for the 2020s, arXiv:2201.03545"
EPS = 1e-6
# name -> (blocks per stage, channels per stage)
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),  # timm's and Keras' (350,196,968); not in torchvision
}


class ConvNeXt(SkipNet):
    """ConvNeXt (see the module docstring).

    Args:
        variant: "tiny", "small", "base", "large" or "xlarge".  skip: "residual", "none" (plain twin) or "highway".
        width: multiplies every channel count.  layer_scale: γ's initial value (0: none).
        drop_path_rate / drop_path_mode: stochastic depth, the last block's drop probability (linear decay).
    """

    def __init__(self, variant: str = "tiny", *, num_classes: int = 1000, in_channels: int = 3,
                 skip: str = "residual", width: float = 1.0, layer_scale: float = 1e-6, drop_path_rate: float = 0.0,
                 drop_path_mode: str = "row") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"ConvNeXt variant must be one of {', '.join(map(repr, VARIANTS))}; got {variant!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width = check_width(width)
        self.variant, self.skip = variant, skip
        self.default_input_size = (in_channels, 224, 224)
        self.min_input_size = 32  # four halvings after the 4x4/4 stem
        blocks, base_channels = VARIANTS[variant]
        channels = [scaled(c, width) for c in base_channels]
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, channels[0], 4, stride=4),
            norm=LayerNorm2d(channels[0], eps=EPS),
        ))
        rates = linear_decay(check_drop_prob(drop_path_rate, "drop_path_rate"), sum(blocks)) if drop_path_rate \
            else [0.0] * sum(blocks)
        stages, k = [], 0
        for i, (n, c) in enumerate(zip(blocks, channels)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.Sequential(OrderedDict(
                    norm=LayerNorm2d(channels[i - 1], eps=EPS), conv=nn.Conv2d(channels[i - 1], c, 2, stride=2))))
            for _ in range(n):
                layers.append(ConvNeXtBlock(c, skip=skip, layer_scale=layer_scale, eps=EPS, drop_path=rates[k]))
                k += 1
            stages.append(nn.Sequential(*layers))
        self.stages = set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)
        self.num_features = channels[-1]
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1), norm=LayerNorm2d(channels[-1], eps=EPS), flatten=nn.Flatten(1),
            fc=nn.Linear(channels[-1], num_classes),
        ))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's ConvNeXt keys (``features.*``, ``classifier.*``), timm's (``stem.0``, ``stages.i.blocks.j``,
        ``head.fc``) or Keras Applications' ConvNeXt weights (read from their .h5 files) -> ours; anything else
        unchanged."""
        if looks_like_keras(state_dict):
            return from_keras(state_dict, keras_module)
        if "features.0.0.weight" in state_dict:
            return {torchvision_key_to_ours(k) or k: (v.flatten() if k.endswith("layer_scale") else v)
                    for k, v in state_dict.items()}
        if "stem.0.weight" in state_dict and any(k.startswith("stages.0.blocks.") for k in state_dict):
            return {timm_key_to_ours(k) or k: v for k, v in state_dict.items()}
        return state_dict


# torchvision: features.0 = stem (conv, LayerNorm2d); features.2i-1 = stage i-1's blocks (block.0 dwconv,
# block.2 LayerNorm, block.3/5 Linear, layer_scale (C, 1, 1)); features.2i = downsample (LayerNorm2d, conv) for
# stage i; classifier = LayerNorm2d, Flatten, Linear
_TV_BLOCK = {"block.0": "branch.dwconv", "block.2": "branch.norm", "block.3": "branch.pwconv1",
             "block.5": "branch.pwconv2", "layer_scale": "branch.scale.gamma"}


def torchvision_key_to_ours(key: str) -> str | None:
    """``features.3.1.block.3.weight`` -> ``stages.1.2.branch.pwconv1.weight``; None if it has no counterpart."""
    if key.startswith("classifier."):
        module, _, param = key.rpartition(".")
        ours = {"classifier.0": "head.norm", "classifier.2": "head.fc"}.get(module)
        return f"{ours}.{param}" if ours else None
    m = re.match(r"^features\.(\d+)\.(\d+)\.(.+)$", key)
    if m is None:
        return None
    f, j, rest = int(m[1]), int(m[2]), m[3]
    if f == 0:
        return f"stem.{('conv', 'norm')[j]}.{rest}" if j in (0, 1) else None
    if f % 2 == 0:  # downsampling layer of stage f/2 (element 0 there)
        return f"stages.{f // 2}.0.{('norm', 'conv')[j]}.{rest}" if j in (0, 1) else None
    stage = (f - 1) // 2
    for old, new in _TV_BLOCK.items():
        if rest == old or rest.startswith(old + "."):
            return f"stages.{stage}.{j + (stage > 0)}.{new}{rest[len(old):]}"
    return None


# timm: stem.0/1 (conv, LayerNorm2d); stages.i.downsample.0/1 (LayerNorm2d, conv; i >= 1); stages.i.blocks.j.
# {conv_dw, norm, mlp.fc1, mlp.fc2, gamma}; head.norm, head.fc
_TIMM_BLOCK = {"conv_dw": "branch.dwconv", "norm": "branch.norm", "mlp.fc1": "branch.pwconv1",
               "mlp.fc2": "branch.pwconv2", "gamma": "branch.scale.gamma"}


def timm_key_to_ours(key: str) -> str | None:
    """``stages.1.blocks.0.mlp.fc1.weight`` -> ``stages.1.1.branch.pwconv1.weight``; None if it has no
    counterpart (timm's ConvNeXt with its default Linear MLP, ``conv_mlp=False``)."""
    if key.startswith(("stem.0.", "stem.1.")):
        return f"stem.{('conv', 'norm')[int(key[5])]}{key[6:]}"
    if key.startswith(("head.norm.", "head.fc.")):
        return key
    m = re.match(r"^stages\.(\d+)\.downsample\.([01])\.(.+)$", key)
    if m:
        return f"stages.{m[1]}.0.{('norm', 'conv')[int(m[2])]}.{m[3]}"
    m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$", key)
    if m is None:
        return None
    stage, block, rest = int(m[1]), int(m[2]), m[3]
    for old, new in _TIMM_BLOCK.items():
        if rest == old or rest.startswith(old + "."):
            return f"stages.{stage}.{block + (stage > 0)}.{new}{rest[len(old):]}"
    return None


_KERAS_BLOCK = re.compile(r"^convnext_[a-z]+_stage_(?P<stage>\d)_block_(?P<block>\d+)_(?P<part>[a-z_0-9]+)$")
_KERAS_PARTS = {"depthwise_conv": "branch.dwconv", "layernorm": "branch.norm", "pointwise_conv_1": "branch.pwconv1",
                "pointwise_conv_2": "branch.pwconv2", "layer_scale": "branch.scale"}


def keras_module(layer: str, var: str) -> str | None:
    """Keras Applications' ConvNeXt layer (and variable) names -> our modules."""
    conv_or_norm = "conv" if var in ("kernel", "bias") else "norm"
    if re.fullmatch(r"convnext_[a-z]+_stem", layer):
        return f"stem.{conv_or_norm}"
    m = re.fullmatch(r"convnext_[a-z]+_downsampling_block_(\d)", layer)
    if m:
        return f"stages.{int(m[1]) + 1}.0.{conv_or_norm}"
    m = re.fullmatch(r"convnext_[a-z]+_head_(layernorm|dense)", layer)
    if m:
        return "head.norm" if m[1] == "layernorm" else "head.fc"
    if layer == "predictions":
        return "head.fc"
    m = _KERAS_BLOCK.match(layer)
    if m and m["part"] in _KERAS_PARTS:
        stage = int(m["stage"])
        return f"stages.{stage}.{int(m['block']) + (stage > 0)}.{_KERAS_PARTS[m['part']]}"
    return None


def convnext(variant: str, **kwargs: Any) -> ConvNeXt:
    return ConvNeXt(variant, **kwargs)


def _register() -> None:
    for variant in VARIANTS:
        define_twins(f"convnext_{variant}", partial(convnext, variant), module=__name__, family="convnext",
                     input_size=(3, 224, 224), paper=PAPER,
                     doc=f"ConvNeXt-{variant[0].upper()} (Liu et al. 2022) in torchvision's / Keras' layout. kwargs: "
                         "num_classes, in_channels, skip, width, layer_scale, drop_path_rate, drop_path_mode.")


_register()
