"""Segmentation nets on a ResNet encoder, in segmentation_models_pytorch's layout: both kinds of skip in one net —
residual units inside the encoder, long skips across to the decoder.

* encoder (all): an ImageNet ResNet (18, 34 or 50) without its classifier; the bridges are the stem's output
  after its ReLU (1/2 resolution, before the max pool) and each stage's output (1/4 ... 1/16); the last stage
  (1/32) feeds the decoder.  Inputs of any H, W: zero-padded to a multiple of 32, output cropped back.
* ``unet_resnet34``... (``smp.Unet``): five :class:`~skiplab.blocks.unet.UpBlock` s with nearest-neighbour
  upsampling, decoder widths (256, 128, 64, 32, 16); each concatenates its bridge and fuses with two 3x3
  conv-BN-ReLU; the last one works at full resolution and has no bridge; head: a 3x3 conv to ``num_classes``.
  Parameters equal smp's: 14,328,209 (resnet18), 24,436,369 (resnet34), 32,521,105 (resnet50).
* ``linknet_resnet34``... (``smp.Linknet``, Chaurasia & Culurciello 2017): five
  :class:`~skiplab.blocks.unet.LinkBlock` s (1x1 conv to a quarter, 4x4 stride-2 transposed conv, 1x1 conv) whose
  bridges are *added*, widths (256, 128, 64, 64, 32) for ResNet-18/34 (the encoder's, then 32); head: a 1x1 conv.
* ``unetplusplus_resnet34``... (``smp.UnetPlusPlus``, Zhou et al. 2018): nested decoder nodes with dense long
  skips (:class:`UNetPlusPlusResNet`); 26,078,609 parameters with ResNet-34 (smp's count).

Defaults as smp: 3 input channels, 1 class.  smp checkpoints (``encoder.*``, ``decoder.blocks.*``,
``segmentation_head.0``) load.  The plain twins (``plain_unet_resnet34``...) have neither kind of skip: the plain
ResNet encoder and a decoder whose blocks see only the coarse path.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.blocks.unet import LinkBlock, UpBlock
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import PAPER as RESNET_PAPER
from skiplab.models.resnet import define_entrypoint, resnet, torchvision_key_to_ours
from skiplab.models.unet import PAPER as UNET_PAPER

LINKNET_PAPER = "Chaurasia & Culurciello 2017, LinkNet: Exploiting Encoder Representations for Efficient Semantic " \
                "Segmentation, arXiv:1707.03718"
UNETPP_PAPER = "Zhou et al. 2018, UNet++: A Nested U-Net Architecture for Medical Image Segmentation, " \
               "arXiv:1807.10165"
DECODER_CHANNELS = (256, 128, 64, 32, 16)
LINKNET_PREFINAL = 32
ENCODERS = (18, 34, 50)


class ResNetEncoderDecoder(SkipNet):
    """The shared part: a ResNet encoder whose stem and stage outputs are the bridges, a decoder (by default blocks
    called ``block(x, bridge)`` from coarse to fine, the last without a bridge: :meth:`decode`), a per-pixel head.
    Subclasses set ``self.decoder`` and ``self.head``."""

    decoder: nn.Module
    head: nn.Module

    def __init__(self, encoder_depth: int, *, in_channels: int, num_classes: int, skip: str, norm: str) -> None:
        super().__init__()
        if encoder_depth not in ENCODERS:
            raise ValueError(f"encoder_depth must be one of {ENCODERS}; got {encoder_depth!r}")
        if skip not in ("residual", "none"):
            raise ValueError(f"skip must be 'residual' or 'none'; got {skip!r}")
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        self.skip = skip
        encoder = resnet(encoder_depth, in_channels=in_channels, skip=skip, norm=norm)
        self.stem, self.stages = encoder.stem, encoder.stages  # residual units: the encoder's skips
        stage_channels = [_out_channels(stage) for stage in encoder.stages]
        # encoder widths, coarse to fine: the deepest stage, then the bridges (1/16 ... 1/2)
        self.encoder_channels = [stage_channels[3], stage_channels[2], stage_channels[1], stage_channels[0],
                                 encoder.stem.conv.out_channels]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder, then decoder with the long skips; returns ``(N, C, H, W)`` decoder features."""
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
        return self.decode(x, bridges[::-1])[..., :height, :width]

    def decode(self, x: torch.Tensor, bridges: list[torch.Tensor]) -> torch.Tensor:
        """The decoder on the deepest features ``x`` and the ``bridges`` (coarse to fine)."""
        for block, bridge in zip(self.decoder, [*bridges, None]):
            x = block(x, bridge)  # the long skip enters here (none at full resolution)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # (N, num_classes, H, W): per-pixel logits

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """segmentation_models_pytorch's keys (``encoder.layer1.0.conv1``, ``decoder.blocks.0...``,
        ``segmentation_head.0``) -> ours; anything else unchanged."""
        if not any(k.startswith("encoder.") for k in state_dict) or "segmentation_head.0.weight" not in state_dict:
            return state_dict
        out = {}
        for key, value in state_dict.items():
            if key.startswith("encoder."):
                new = torchvision_key_to_ours(key[len("encoder."):])
            elif key.startswith("segmentation_head.0."):
                new = "head." + key[len("segmentation_head.0."):]
            else:
                new, value = self._smp_decoder_key(key, value)
            out[new or key] = value
        return out

    def _smp_decoder_key(self, key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        raise NotImplementedError


class UNetResNet(ResNetEncoderDecoder):
    """U-Net decoder on a ResNet encoder (see the module docstring).  ``skip``: "residual" (both skips) or "none"
    (the plain twin: plain encoder, no long skips)."""

    extra_skip_kinds = ("concat",)  # the long skips, besides the registered kind (the encoder's residual units)

    def __init__(self, encoder_depth: int = 34, *, in_channels: int = 3, num_classes: int = 1,
                 skip: str = "residual", decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
                 norm: str = "batch") -> None:
        super().__init__(encoder_depth, in_channels=in_channels, num_classes=num_classes, skip=skip, norm=norm)
        if len(decoder_channels) != 5 or not all(isinstance(c, int) and c > 0 for c in decoder_channels):
            raise ValueError(f"decoder_channels must be 5 positive integers; got {decoder_channels!r}")
        bridges = [*self.encoder_channels[1:], 0]  # coarse to fine; none at full resolution
        inputs = [self.encoder_channels[0], *decoder_channels[:-1]]
        long_skip = "concat" if skip == "residual" else "none"
        self.decoder = nn.ModuleList(
            UpBlock(cin, bridge, cout, up_mode="nearest", norm=norm, skip=long_skip)
            for cin, bridge, cout in zip(inputs, bridges, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    def _smp_decoder_key(self, key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        m = re.match(r"^decoder\.blocks\.(\d+)\.conv([12])\.([01])\.(.+)$", key)
        if m is None or int(m[1]) >= len(self.decoder):
            return None, value
        block, i = self.decoder[int(m[1])], m[2]
        if i == "1" and m[3] == "0" and m[4] == "weight" and block.has_skip and block.skip_channels:
            up = value.shape[1] - block.skip_channels  # smp concatenates (up, bridge); ours (bridge, up)
            value = torch.cat([value[:, up:], value[:, :up]], 1)
        return f"decoder.{m[1]}.fuse.{('conv', 'norm')[int(m[3])]}{i}.{m[4]}", value


class LinkNetResNet(ResNetEncoderDecoder):
    """LinkNet decoder on a ResNet encoder (see the module docstring).  ``skip``: "residual" (both skips) or
    "none" (the plain twin: plain encoder, no long skips)."""

    def __init__(self, encoder_depth: int = 34, *, in_channels: int = 3, num_classes: int = 1,
                 skip: str = "residual", norm: str = "batch") -> None:
        super().__init__(encoder_depth, in_channels=in_channels, num_classes=num_classes, skip=skip, norm=norm)
        widths = [*self.encoder_channels, LINKNET_PREFINAL]
        # the full-resolution block has no bridge: a plain block even in the residual net
        self.decoder = nn.ModuleList(LinkBlock(widths[i], widths[i + 1], skip=skip if i < 4 else "none")
                                     for i in range(5))
        self.head = nn.Conv2d(LINKNET_PREFINAL, num_classes, 1)

    def _smp_decoder_key(self, key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        m = re.match(r"^decoder\.blocks\.(\d+)\.block\.([012])\.([01])\.(.+)$", key)
        if m is None or int(m[1]) >= len(self.decoder):
            return None, value
        part, sub = int(m[2]), int(m[3])
        name = (("conv1", "norm1"), ("up", "norm2"), ("conv3", "norm3"))[part][sub]
        return f"decoder.{m[1]}.branch.{name}.{m[4]}", value


class UNetPlusPlusResNet(ResNetEncoderDecoder):
    """U-Net++ decoder on a ResNet encoder (Zhou et al. 2018, smp's ``UnetPlusPlus``): nested, densely skipped
    decoder nodes.  Node ``x_d_l`` (depth ``d`` from the finest, column ``l``) upsamples ``x_d_(l-1)`` and
    concatenates every earlier node of its row plus the encoder bridge — the long skips are dense.  The plain twin
    keeps only the nodes the output depends on without skips (``x_0_l``): a plain encoder-decoder, the same net
    as ``plain_unet_resnet*``."""

    extra_skip_kinds = ("concat",)

    def __init__(self, encoder_depth: int = 34, *, in_channels: int = 3, num_classes: int = 1,
                 skip: str = "residual", decoder_channels: tuple[int, ...] = DECODER_CHANNELS,
                 norm: str = "batch") -> None:
        super().__init__(encoder_depth, in_channels=in_channels, num_classes=num_classes, skip=skip, norm=norm)
        if len(decoder_channels) != 5 or not all(isinstance(c, int) and c > 0 for c in decoder_channels):
            raise ValueError(f"decoder_channels must be 5 positive integers; got {decoder_channels!r}")
        ins = [self.encoder_channels[0], *decoder_channels[:-1]]
        skips = [*self.encoder_channels[1:], 0]
        node = partial(UpBlock, up_mode="nearest", norm=norm, bridge_first=False)  # smp's order: (up, bridges)
        nodes: dict[str, nn.Module] = {}
        for col in range(4):
            for d in range(col + 1):
                if skip == "none" and d > 0:
                    continue  # without the long skips nothing reads these nodes
                if d == 0:
                    cin, bridge, cout = ins[col], skips[col] * (col + 1), decoder_channels[col]
                else:
                    cin, bridge, cout = skips[col - 1], skips[col] * (col + 1 - d), skips[col]
                nodes[f"x_{d}_{col}"] = node(cin, bridge if skip != "none" else 0, cout,
                                             skip="concat" if skip != "none" else "none")
        nodes["x_0_4"] = node(ins[4], 0, decoder_channels[4], skip="none")  # full resolution: no bridge
        self.decoder = nn.ModuleDict(nodes)
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    def decode(self, x: torch.Tensor, bridges: list[torch.Tensor]) -> torch.Tensor:
        if self.skip == "none":
            for col in range(5):
                x = self.decoder[f"x_0_{col}"](x, None)
            return x
        feats = [x, *bridges]  # deepest first, as smp orders them
        dense: dict[str, torch.Tensor] = {}
        for d in range(4):  # the first column: each level's features with the next finer bridge
            dense[f"x_{d}_{d}"] = self.decoder[f"x_{d}_{d}"](feats[d], feats[d + 1])
        for col in range(1, 4):
            for d in range(4 - col):
                last = d + col
                skips = torch.cat([dense[f"x_{i}_{last}"] for i in range(d + 1, last + 1)] + [feats[last + 1]], 1)
                dense[f"x_{d}_{last}"] = self.decoder[f"x_{d}_{last}"](dense[f"x_{d}_{last - 1}"], skips)
        return self.decoder["x_0_4"](dense["x_0_3"], None)

    def _smp_decoder_key(self, key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        m = re.match(r"^decoder\.blocks\.(x_\d_\d)\.conv([12])\.([01])\.(.+)$", key)
        if m is None or m[1] not in self.decoder:
            return None, value
        return f"decoder.{m[1]}.fuse.{('conv', 'norm')[int(m[3])]}{m[2]}.{m[4]}", value


def _out_channels(stage: nn.Sequential) -> int:
    convs = [m for m in stage[-1].branch.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def unet_resnet(encoder_depth: int, **kwargs: Any) -> UNetResNet:
    return UNetResNet(encoder_depth, **kwargs)


def linknet_resnet(encoder_depth: int, **kwargs: Any) -> LinkNetResNet:
    return LinkNetResNet(encoder_depth, **kwargs)


def unetplusplus_resnet(encoder_depth: int, **kwargs: Any) -> UNetPlusPlusResNet:
    return UNetPlusPlusResNet(encoder_depth, **kwargs)


def _register() -> None:
    for depth in ENCODERS:
        for skip in ("residual", "none"):
            prefix = "" if skip == "residual" else "plain_"
            define_entrypoint(
                f"{prefix}unet_resnet{depth}", partial(unet_resnet, depth), module=__name__, skip=skip,
                fixed_skip=skip != "residual", family="unet", input_size=(3, 64, 64),
                paper=f"{UNET_PAPER}; {RESNET_PAPER}",
                doc=("U-Net" if skip == "residual" else "Plain twin (no residual or long skips) of the U-Net")
                + f" with a ResNet-{depth} encoder, segmentation_models_pytorch's layout (3 channels in, 1 class). "
                  "kwargs: in_channels, num_classes, decoder_channels, norm.",
            )
            define_entrypoint(
                f"{prefix}linknet_resnet{depth}", partial(linknet_resnet, depth), module=__name__, skip=skip,
                fixed_skip=skip != "residual", family="unet", input_size=(3, 64, 64),
                paper=f"{LINKNET_PAPER}; {RESNET_PAPER}",
                doc=("LinkNet" if skip == "residual" else "Plain twin (no residual or long skips) of the LinkNet")
                + f" with a ResNet-{depth} encoder, segmentation_models_pytorch's layout (3 channels in, 1 class). "
                  "kwargs: in_channels, num_classes, norm.",
            )
            define_entrypoint(
                f"{prefix}unetplusplus_resnet{depth}", partial(unetplusplus_resnet, depth), module=__name__,
                skip=skip, fixed_skip=skip != "residual", family="unet", input_size=(3, 64, 64),
                paper=f"{UNETPP_PAPER}; {RESNET_PAPER}",
                doc=("U-Net++" if skip == "residual" else "Plain twin (no residual or long skips) of the U-Net++")
                + f" with a ResNet-{depth} encoder, segmentation_models_pytorch's layout (3 channels in, 1 class). "
                  "kwargs: in_channels, num_classes, decoder_channels, norm.",
            )


_register()
