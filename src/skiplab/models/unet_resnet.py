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
* ``fpn_resnet34``... (``smp.FPN``, Lin et al. 2017): a feature pyramid whose 1x1 lateral connections add the
  encoder's stages (:class:`FPNResNet`); 23,155,393 parameters with ResNet-34.

Defaults as smp: 3 input channels, 1 class.  smp checkpoints (``encoder.*``, ``decoder.blocks.*``,
``segmentation_head.0``) load.  The plain twins (``plain_unet_resnet34``...) have neither kind of skip: the plain
ResNet encoder and a decoder whose blocks see only the coarse path.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.blocks.unet import LateralBlock, LinkBlock, UpBlock
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.models.resnet import PAPER as RESNET_PAPER
from skiplab.models.resnet import define_entrypoint, resnet, torchvision_key_to_ours
from skiplab.models.unet import PAPER as UNET_PAPER

LINKNET_PAPER = "Chaurasia & Culurciello 2017, LinkNet: Exploiting Encoder Representations for Efficient Semantic " \
                "Segmentation, arXiv:1707.03718"
UNETPP_PAPER = "Zhou et al. 2018, UNet++: A Nested U-Net Architecture for Medical Image Segmentation, " \
               "arXiv:1807.10165"
FPN_PAPER = "Lin et al. 2017, Feature Pyramid Networks for Object Detection, arXiv:1612.03144"
DECODER_CHANNELS = (256, 128, 64, 32, 16)
LINKNET_PREFINAL = 32
ENCODERS = (18, 34, 50)


class ResNetEncoderDecoder(SkipNet):
    """The shared part: a ResNet encoder whose stem and stage outputs are the bridges, a decoder (by default blocks
    called ``block(x, bridge)`` from coarse to fine, the last without a bridge: :meth:`decode`), a per-pixel head.
    Subclasses set ``self.decoder`` and ``self.head``."""

    decoder: nn.Module
    head: nn.Module
    dense_output = True  # per-pixel logits: a segmentation model (skiplab.train checks models against the data)

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
        """(our key, value) for one of smp's decoder keys, or (None, value); each decoder maps its own layout (all
        four subclasses do, each tested against a reference of smp's decoder)."""
        raise NotImplementedError(f"{type(self).__name__} does not map segmentation_models_pytorch's decoder keys")


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


class FPNResNet(ResNetEncoderDecoder):
    """FPN decoder on a ResNet encoder (smp's ``FPN``): a top-down pyramid whose levels 1/32 ... 1/4 add the
    encoder's stage outputs through 1x1 lateral projections (:class:`~skiplab.blocks.unet.LateralBlock`), each level
    refined by 3x3 conv-GroupNorm(32)-ReLU blocks with 2x bilinear upsampling down to 1/4, the four summed, 2D
    dropout, upsampled 4x (bilinear) and a 1x1 head.  smp applies its head before the 4x upsampling; both are
    linear per pixel and commute exactly, so this computes the same logits (with 4x more decoder memory).
    The plain twin has no lateral connections: the pyramid is the deepest features upsampled."""

    def __init__(self, encoder_depth: int = 34, *, in_channels: int = 3, num_classes: int = 1,
                 skip: str = "residual", pyramid_channels: int = 256, segmentation_channels: int = 128,
                 dropout: float = 0.2, norm: str = "batch") -> None:
        super().__init__(encoder_depth, in_channels=in_channels, num_classes=num_classes, skip=skip, norm=norm)
        check_positive("pyramid_channels", pyramid_channels)
        if check_positive("segmentation_channels", segmentation_channels) % 32:
            raise ValueError(f"segmentation_channels must be a multiple of 32 (GroupNorm's 32 groups); got "
                             f"{segmentation_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        c5, c4, c3, c2 = self.encoder_channels[:4]
        self.top = nn.Conv2d(c5, pyramid_channels, 1)  # p5
        self.decoder = nn.ModuleList(LateralBlock(pyramid_channels, c, skip=skip) for c in (c4, c3, c2))
        self.refine = nn.ModuleList(
            _refine_level(pyramid_channels, segmentation_channels, ups) for ups in (3, 2, 1, 0))
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.head = nn.Conv2d(segmentation_channels, num_classes, 1)

    def decode(self, x: torch.Tensor, bridges: list[torch.Tensor]) -> torch.Tensor:
        pyramid = [self.top(x)]  # 1/32
        for block, bridge in zip(self.decoder, bridges[:3]):  # 1/16, 1/8, 1/4: the long skips enter here
            pyramid.append(block(pyramid[-1], bridge))
        merged = sum(refine(p) for refine, p in zip(self.refine, pyramid))  # every level refined to 1/4, added
        return F.interpolate(self.dropout(merged), scale_factor=4, mode="bilinear", align_corners=True)

    def _smp_decoder_key(self, key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        if key.startswith("decoder.p5."):
            return "top." + key[len("decoder.p5."):], value
        m = re.match(r"^decoder\.p([234])\.skip_conv\.(.+)$", key)
        if m is not None:
            return f"decoder.{4 - int(m[1])}.shortcut.{m[2]}", value
        m = re.match(r"^decoder\.seg_blocks\.(\d)\.block\.(\d+)\.block\.([01])\.(.+)$", key)
        if m is not None:
            return f"refine.{m[1]}.{m[2]}.{('conv', 'norm')[int(m[3])]}.{m[4]}", value
        return None, value


class _RefineStep(nn.Sequential):
    """3x3 conv, GroupNorm(32), ReLU, then (``upsample``) 2x bilinear upsampling: one of FPN's refining steps."""

    def __init__(self, cin: int, cout: int, upsample: bool) -> None:
        super().__init__(OrderedDict(conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                     norm=nn.GroupNorm(32, cout), act=nn.ReLU(inplace=True)))
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) if self.upsample else x


def _refine_level(cin: int, cout: int, upsamples: int) -> nn.Sequential:
    """A pyramid level's refinement to 1/4 resolution: ``max(upsamples, 1)`` steps, each upsampling if needed."""
    return nn.Sequential(*[_RefineStep(cin if i == 0 else cout, cout, i < upsamples) for i in range(max(upsamples, 1))])


def _out_channels(stage: nn.Sequential) -> int:
    convs = [m for m in stage[-1].branch.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


# name -> (class, paper, what, build kwargs besides in_channels/num_classes/norm)
DECODERS = {"unet": (UNetResNet, UNET_PAPER, "U-Net", "decoder_channels"),
            "linknet": (LinkNetResNet, LINKNET_PAPER, "LinkNet", ""),
            "unetplusplus": (UNetPlusPlusResNet, UNETPP_PAPER, "U-Net++", "decoder_channels"),
            "fpn": (FPNResNet, FPN_PAPER, "FPN", "pyramid_channels, segmentation_channels, dropout")}


def _register() -> None:
    for name, (cls, paper, what, extra) in DECODERS.items():
        for depth in ENCODERS:
            for skip in ("residual", "none"):
                define_entrypoint(
                    f"{'' if skip == 'residual' else 'plain_'}{name}_resnet{depth}", partial(cls, depth),
                    module=__name__, skip=skip, fixed_skip=skip != "residual", family="unet",
                    input_size=(3, 64, 64), paper=f"{paper}; {RESNET_PAPER}",
                    doc=(what if skip == "residual" else f"Plain twin (no residual or long skips) of the {what}")
                    + f" with a ResNet-{depth} encoder, segmentation_models_pytorch's layout (3 channels in, 1 "
                      f"class). kwargs: in_channels, num_classes, {extra + ', ' if extra else ''}norm.",
                )


_register()
