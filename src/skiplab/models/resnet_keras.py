"""ResNet (v1) for ImageNet in Keras Applications' layout (``keras.applications.ResNet50/101/152``): the
bottleneck ResNets of He et al. 2015 as the original Caffe models and Keras build them.

Where it differs from ``resnet50`` (torchvision's layout, "v1.5"), and what this module follows so that the
parameter counts match Keras' (25,636,712 / 44,707,176 / 60,419,944 values, BatchNorm's moving statistics
included, which Keras counts as non-trainable weights):

* the stride of a downsampling bottleneck sits on its first 1x1 convolution (the paper), not on the 3x3;
* every convolution has a bias (Keras' ``use_bias=True`` default), although a BatchNorm follows each;
* BatchNorm epsilon 1.001e-5.

Keras pads the max pool's input with zeros where torchvision pads with -inf; the pool follows a ReLU, so the two
give the same result.  Plain and highway twins (``plain_resnet50_keras``...) keep the same branches.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.residual import Bottleneck
from skiplab.keras_weights import from_keras, looks_like_keras, resnet_module
from skiplab.models.resnet import PAPER, ResNet, define_twins
from skiplab.models.resnet_v2 import KERAS_BN_EPS

STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class KerasResNet(ResNet):
    """Keras Applications' ResNet-50/101/152 (see the module docstring).

    Args:
        depth: 50, 101 or 152.  skip: "residual", "none" (plain twin) or "highway".
        width: multiplies every channel count.  zero_init_residual, drop_path_rate, drop_path_mode, norm, act:
        as :class:`skiplab.models.resnet.ResNet`.
    """

    def __init__(self, depth: int = 50, *, num_classes: int = 1000, in_channels: int = 3, skip: str = "residual",
                 width: float = 1.0, zero_init_residual: bool = False, drop_path_rate: float = 0.0,
                 drop_path_mode: str = "row", norm: str = "batch", act: str = "relu") -> None:
        if depth not in STAGES:
            raise ValueError(f"Keras ResNet depth must be one of {sorted(STAGES)}; got {depth!r}")
        super().__init__(Bottleneck, STAGES[depth], num_classes=num_classes, in_channels=in_channels, skip=skip,
                         shortcut="B", stride_in_1x1=True, width=width, zero_init_residual=zero_init_residual,
                         drop_path_rate=drop_path_rate, drop_path_mode=drop_path_mode, norm=norm, act=act)
        self.depth = depth
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is None:
                m.bias = nn.Parameter(torch.zeros(m.out_channels, device=m.weight.device, dtype=m.weight.dtype))
            elif isinstance(m, nn.BatchNorm2d):
                m.eps = KERAS_BN_EPS

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keras' ResNet50/101/152 weights (read from their .h5 files) -> ours; anything else unchanged
        (torchvision's checkpoints are the other layout: stride on the 3x3, no conv biases)."""
        return from_keras(state_dict, resnet_module) if looks_like_keras(state_dict) else state_dict


def resnet_keras(depth: int, **kwargs: Any) -> KerasResNet:
    return KerasResNet(depth, **kwargs)


def _register() -> None:
    for depth in STAGES:
        define_twins(f"resnet{depth}_keras", partial(resnet_keras, depth), module=__name__, family="resnet_keras",
                     input_size=(3, 224, 224), paper=PAPER,
                     doc=f"ResNet{depth} in Keras Applications' layout (stride on the first 1x1, biased convs). "
                         "kwargs: num_classes, in_channels, skip, width, zero_init_residual, drop_path_rate, "
                         "drop_path_mode, norm, act.")


_register()
