"""U-Net with a ResNet encoder, in segmentation_models_pytorch's layout (``smp.Unet(encoder_name="resnet34")``):
both kinds of skip in one net — residual units inside the encoder, long concatenating skips across to the decoder.

* encoder: an ImageNet ResNet (18, 34 or 50) without its classifier; the bridges are the stem's output after its
  ReLU (1/2 resolution, before the max pool) and each stage's output (1/4 ... 1/16); the last stage (1/32) feeds
  the decoder;
* decoder: five :class:`~skiplab.blocks.unet.UpBlock` s with nearest-neighbour upsampling, decoder widths
  (256, 128, 64, 32, 16); each concatenates its bridge and fuses with two 3x3 conv-BN-ReLU; the last one works at
  full resolution and has no bridge;
* head: a 3x3 conv to ``num_classes`` per-pixel logits.

Defaults as smp: 3 input channels, 1 class.  Parameter counts equal smp's: 14,328,209 (resnet18), 24,436,369
(resnet34), 32,521,105 (resnet50).  Inputs of any H, W: zero-padded to a multiple of 32, output cropped back.

The plain twin (``plain_unet_resnet34``...) has neither kind of skip: the plain ResNet encoder and a decoder whose
blocks see only the upsampled path.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.blocks.unet import UpBlock
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import PAPER as RESNET_PAPER
from skiplab.models.resnet import define_entrypoint, resnet
from skiplab.models.unet import PAPER as UNET_PAPER

DECODER_CHANNELS = (256, 128, 64, 32, 16)
ENCODERS = (18, 34, 50)


class UNetResNet(SkipNet):
    """U-Net decoder on a ResNet encoder (see the module docstring).  ``skip``: "residual" (both skips) or "none"
    (the plain twin: plain encoder, no long skips)."""

    extra_skip_kinds = ("concat",)  # the long skips, besides the registered kind (the encoder's residual units)

    def __init__(self, encoder_depth: int = 34, *, in_channels: int = 3, num_classes: int = 1,
                 skip: str = "residual", decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
                 norm: str = "batch") -> None:
        super().__init__()
        if encoder_depth not in ENCODERS:
            raise ValueError(f"encoder_depth must be one of {ENCODERS}; got {encoder_depth!r}")
        if skip not in ("residual", "none"):
            raise ValueError(f"skip must be 'residual' or 'none'; got {skip!r}")
        if len(decoder_channels) != 5 or not all(isinstance(c, int) and c > 0 for c in decoder_channels):
            raise ValueError(f"decoder_channels must be 5 positive integers; got {decoder_channels!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        self.skip = skip
        encoder = resnet(encoder_depth, in_channels=in_channels, skip=skip, norm=norm)
        self.stem, self.stages = encoder.stem, encoder.stages  # residual units: the encoder's skips
        stem_channels = encoder.stem.conv.out_channels
        stage_channels = [_out_channels(stage) for stage in encoder.stages]
        bridges = [stage_channels[2], stage_channels[1], stage_channels[0], stem_channels, 0]  # coarse to fine
        inputs = [stage_channels[3], *decoder_channels[:-1]]
        long_skip = "concat" if skip == "residual" else "none"
        self.decoder = nn.ModuleList(
            UpBlock(cin, bridge, cout, up_mode="nearest", norm=norm, skip=long_skip)
            for cin, bridge, cout in zip(inputs, bridges, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder, then decoder with the long skips; returns ``(N, decoder_channels[-1], H, W)``."""
        self.check_input(x)
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % 32, 0, -height % 32))  # every level halves evenly; cropped back below
        stem = self.stem
        x = stem.act(stem.bn(stem.conv(x)))  # (N, 64, H/2, W/2): the first bridge, before the pool
        bridges = [x]
        x = stem.pool(x)
        for stage in self.stages:
            x = stage(x)  # 1/4, 1/8, 1/16, 1/32
            bridges.append(x)
        bridges.pop()  # the deepest features feed the decoder; they are no bridge
        for up, bridge in zip(self.decoder, [*reversed(bridges), None]):
            x = up(x, bridge)  # the long skip enters here (none at full resolution)
        return x[..., :height, :width]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # (N, num_classes, H, W): per-pixel logits


def _out_channels(stage: nn.Sequential) -> int:
    convs = [m for m in stage[-1].branch.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def unet_resnet(encoder_depth: int, **kwargs: Any) -> UNetResNet:
    return UNetResNet(encoder_depth, **kwargs)


def _register() -> None:
    for depth in ENCODERS:
        for skip in ("residual", "none"):
            name = f"unet_resnet{depth}" if skip == "residual" else f"plain_unet_resnet{depth}"
            define_entrypoint(
                name, partial(unet_resnet, depth), module=__name__, skip=skip, fixed_skip=skip != "residual",
                family="unet", input_size=(3, 64, 64), paper=f"{UNET_PAPER}; {RESNET_PAPER}",
                doc=("U-Net" if skip == "residual" else "Plain twin (no residual or long skips) of the U-Net")
                + f" with a ResNet-{depth} encoder, segmentation_models_pytorch's layout (3 channels in, 1 class). "
                  "kwargs: in_channels, num_classes, decoder_channels, norm.",
            )


_register()
