"""Xception (Chollet 2017, arXiv:1610.02357) in Keras Applications' layout (``keras.applications.Xception``;
22,855,952 parameters, 22,910,480 with the BatchNorm statistics — Keras' total), with plain and highway twins.

* stem ("block 1"): 3x3/2 convolution to 32 channels and 3x3 to 64, unpadded, each with BN + ReLU;
* entry flow: three :class:`~skiplab.blocks.xception.XceptionBlock` s (128, 256, 728 channels), each ending in a
  3x3/2 max pool with a strided 1x1 projection shortcut;
* middle flow: eight blocks of three 728-channel separable convolutions with identity shortcuts;
* exit flow: a block 728 -> 1024 channels with a pool and projection;
* head: separable convolutions to 1536 and 2048 channels with BN + ReLU, global average pool, Linear.

As in Keras: BatchNorm epsilon 1e-3; the max pools pad TensorFlow's "same" way (on an even size only the bottom and
right), so Keras' weights (.h5) give Keras' outputs.  Keras' default input is 299x299, scaled to [-1, 1]
(``skiplab.keras_weights.keras_preprocess(x, "tf")``).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.xception import SeparableConv2d, XceptionBlock
from skiplab.keras_weights import from_keras, looks_like_keras, unnamed_layers
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import check_width, define_twins, scaled

PAPER = "Chollet 2017, Xception: Deep Learning with Depthwise Separable Convolutions, arXiv:1610.02357"
EPS = 1e-3
# (separable convolutions' channels, stride) of blocks 2..13; block 2 follows the stem's ReLU
BLOCKS = ([((128, 128), 2), ((256, 256), 2), ((728, 728), 2)] + [((728, 728, 728), 1)] * 8
          + [((728, 1024), 2)])


class Xception(SkipNet):
    """Xception (see the module docstring).

    Args:
        skip: "residual", "none" (plain twin) or "highway".  width: multiplies every channel count.
        drop_path_rate / drop_path_mode: stochastic depth over the 12 residual blocks.
    """

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3, skip: str = "residual", width: float = 1.0,
                 drop_path_rate: float = 0.0, drop_path_mode: str = "row") -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        width = check_width(width)
        self.skip = skip
        self.default_input_size = (in_channels, 299, 299)
        self.min_input_size = 71  # Keras' minimum: the unpadded stem and four stride-2 stages
        c32, c64 = scaled(32, width), scaled(64, width)
        self.stem = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, c32, 3, 2, bias=False), bn1=nn.BatchNorm2d(c32, eps=EPS),
            act1=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(c32, c64, 3, bias=False), bn2=nn.BatchNorm2d(c64, eps=EPS), act2=nn.ReLU(inplace=True)))
        rates = linear_decay(check_drop_prob(drop_path_rate, "drop_path_rate"), len(BLOCKS)) if drop_path_rate \
            else [0.0] * len(BLOCKS)
        blocks, prev = [], c64
        for k, (channels, stride) in enumerate(BLOCKS):
            chs = tuple(scaled(c, width) for c in channels)
            blocks.append(XceptionBlock(prev, chs, stride, first_relu=k > 0, skip=skip, bn_eps=EPS,
                                        drop_path=rates[k]))
            prev = chs[-1]
        # entry flow, middle flow, exit flow
        self.stages = set_drop_path_mode(nn.ModuleList([nn.Sequential(*blocks[:3]), nn.Sequential(*blocks[3:11]),
                                                        nn.Sequential(*blocks[11:])]), drop_path_mode)
        c1536, c2048 = scaled(1536, width), scaled(2048, width)
        self.num_features = c2048
        self.head = nn.Sequential(OrderedDict(
            sep1=SeparableConv2d(prev, c1536), bn1=nn.BatchNorm2d(c1536, eps=EPS), act1=nn.ReLU(inplace=True),
            sep2=SeparableConv2d(c1536, c2048), bn2=nn.BatchNorm2d(c2048, eps=EPS), act2=nn.ReLU(inplace=True),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1), fc=nn.Linear(c2048, num_classes)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keras Applications' Xception weights (read from .h5) -> ours; anything else unchanged."""
        if not looks_like_keras(state_dict):
            return state_dict
        # the four projection shortcuts are unnamed layers (conv2d[_N], batch_normalization[_N]): in creation order
        numbered = {kind: unnamed_layers(state_dict, kind) for kind in ("conv2d", "batch_normalization")}
        projecting = [f"stages.{i}.{j}.shortcut" for i, stage in enumerate(self.stages) for j, blk in enumerate(stage)
                      if not isinstance(blk.shortcut, nn.Identity)]
        names = {**{n: f"{p}.conv" for n, p in zip(numbered["conv2d"], projecting)},
                 **{n: f"{p}.bn" for n, p in zip(numbered["batch_normalization"], projecting)}}
        return from_keras(state_dict, partial(keras_module, unnamed=names, where=self._block_path), self.state_dict())

    def _block_path(self, block: int) -> str | None:
        """Keras' block number (2..13) -> our ``stages.i.j``."""
        flat = [f"stages.{i}.{j}" for i, stage in enumerate(self.stages) for j in range(len(stage))]
        return flat[block - 2] if 2 <= block < 2 + len(flat) else None


_SEP = re.compile(r"^block(?P<block>\d+)_sepconv(?P<i>\d)(?P<bn>_bn)?$")


def keras_module(layer: str, var: str, *, unnamed: dict[str, str], where: Any) -> str | None:
    """Keras Applications' Xception layer names -> our modules."""
    fixed = {"block1_conv1": "stem.conv1", "block1_conv1_bn": "stem.bn1", "block1_conv2": "stem.conv2",
             "block1_conv2_bn": "stem.bn2", "predictions": "head.fc"}
    if layer in fixed:
        return fixed[layer]
    if layer in unnamed:
        return unnamed[layer]
    m = _SEP.match(layer)
    if m is None:
        return None
    block, i = int(m["block"]), m["i"]
    base = "head" if block == 14 else where(block) and f"{where(block)}.branch"
    if base is None:
        return None
    if m["bn"]:
        return f"{base}.bn{i}"
    return f"{base}.sep{i}.{'dw' if var == 'depthwise_kernel' else 'pw'}"


def xception(**kwargs: Any) -> Xception:
    return Xception(**kwargs)


define_twins("xception", xception, module=__name__, family="xception", input_size=(3, 299, 299), paper=PAPER,
             doc="Xception (Chollet 2017) in Keras Applications' layout. kwargs: num_classes, in_channels, skip, "
                 "width, drop_path_rate, drop_path_mode.")
