"""U-Net (Ronneberger et al. 2015, arXiv:1505.04597) and its plain twin, for dense (per-pixel) prediction.

``unet()``: ``depth`` (4) encoder steps from ``base_width`` (64) channels doubling to ``base_width * 2**depth``
(1024), the mirrored decoder, and a 1x1 conv head to ``num_classes`` maps.  Output ``(N, num_classes, H, W)``
for input ``(N, in_channels, H, W)``.  ``plain_unet()`` is the same encoder-decoder without the long skips;
``unet(skip="residual")`` adds each bridge to the upsampled path instead of concatenating it (LinkNet's additive
merge in U-Net's decoder: the decoder's first convs take half the channels, so it has the plain twin's parameter
count).

SkipNet layout: ``stem`` is the full-resolution DoubleConv, ``stages`` the encoder steps, ``decoder`` the
:class:`~skiplab.blocks.unet.UpBlock` s (the skip-bearing blocks) and ``head`` the 1x1 conv.

Input sizes: H and W need not be divisible by ``2**depth``; the input is zero-padded at the bottom and right to
the next multiple and the output cropped back, so the output always has the input's H and W.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.blocks.base import check_skip
from skiplab.blocks.unet import UNET_SKIPS, DoubleConv, Down, UpBlock
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.registry import register_model

PAPER = "Ronneberger et al. 2015, U-Net: Convolutional Networks for Biomedical Image Segmentation, arXiv:1505.04597"


def unet_encoder(widths: list[int], *, norm: str) -> nn.ModuleList:
    """The downsampling steps: ``widths[i] -> widths[i + 1]`` channels at half the resolution each."""
    return nn.ModuleList(Down(widths[i], widths[i + 1], norm=norm) for i in range(len(widths) - 1))


def unet_decoder(widths: list[int], *, norm: str, up_mode: str, skip: str) -> nn.ModuleList:
    """The upsampling steps, coarsest first: ``widths[i + 1] -> widths[i]``, bridged from encoder level ``i``."""
    return nn.ModuleList(
        UpBlock(widths[i + 1], widths[i], widths[i], up_mode=up_mode, norm=norm, skip=skip)
        for i in reversed(range(len(widths) - 1))
    )


class UNet(SkipNet):
    """U-Net with long concatenating skips (``skip="concat"``), additive ones (``skip="residual"``) or without them
    (``skip="none"``)."""

    dense_output = True  # per-pixel logits: a segmentation model (skiplab.train checks models against the data)

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_width: int = 64,
        norm: str = "batch",
        up_mode: str = "transpose",
        skip: str = "concat",
    ) -> None:
        super().__init__()
        self.in_channels = check_positive("in_channels", in_channels)
        self.depth = check_positive("depth", depth)
        check_positive("base_width", base_width)
        check_positive("num_classes", num_classes)
        self.skip = check_skip(skip, UNET_SKIPS)
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0], norm=norm)
        self.stages = unet_encoder(widths, norm=norm)
        self.decoder = unet_decoder(widths, norm=norm, up_mode=up_mode, skip=skip)
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder, then decoder with the long skips; returns ``(N, base_width, H, W)``."""
        self.check_input(x)
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        # Zero-pad bottom/right so every pooling step halves evenly; the crop below undoes it.
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple))
        x = self.stem(x)  # (N, w0, H', W')
        bridges = [x]
        for stage in self.stages:
            x = stage(x)  # (N, w_{i+1}, H'/2^{i+1}, W'/2^{i+1})
            bridges.append(x)
        bridges.pop()  # the bottleneck's output feeds the decoder directly; it is no bridge
        for up, bridge in zip(self.decoder, reversed(bridges)):
            x = up(x, bridge)  # the long skip enters here
        return x[..., :height, :width]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # (N, num_classes, H, W): per-pixel logits


@register_model(family="unet", input_size=(1, 64, 64), skip="concat", paper=PAPER)
def unet(**kwargs: Any) -> UNet:
    """U-Net: 1 input channel, 2 classes, depth 4, widths 64..1024 (31.0M parameters with BatchNorm)."""
    return UNet(**kwargs)


@register_model(family="unet", input_size=(1, 64, 64), skip="none", paper=PAPER)
def plain_unet(**kwargs: Any) -> UNet:
    """The plain twin of :func:`unet`: the same encoder-decoder, the decoder convs see only the upsampled path."""
    if "skip" in kwargs:
        raise TypeError("plain_unet fixes skip='none'; build unet(skip=...) instead")
    return UNet(skip="none", **kwargs)
