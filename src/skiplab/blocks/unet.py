"""U-Net blocks (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", arXiv:1505.04597).

The encoder halves the resolution ``depth`` times (:class:`Down`: 2x2 max-pool, then :class:`DoubleConv`); the
decoder doubles it back (:class:`UpBlock`).  The *long skips* carry each encoder level's feature map across to
the decoder level of the same resolution, where it is concatenated with the upsampled coarse features:

    y = fuse(cat(bridge, up(x)))          skip="concat"  (the paper)
    y = fuse(bridge + up(x))              skip="residual" (LinkNet's merge: the bridge added, Chaurasia &
                                                          Culurciello 2017)
    y = fuse(up(x))                       skip="none"    (the plain twin: an encoder-decoder without skips)

Two lesions: ``branch_enabled = False`` keeps the long skip and drops the upsampled path; ``skip_enabled = False``
cuts the long skip (the bridge is replaced by zeros, so the layers keep their shapes) and keeps the rest.

Deviations from the paper, both common practice: 3x3 convs are padded (output H, W == input H, W, no cropping of
the bridge) and BatchNorm follows each conv unless ``norm="none"``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from skiplab.blocks.base import SkipBlock, check_skip
from skiplab.blocks.dense import merge_concat
from skiplab.layers.norm_act import check_positive, conv1x1, get_norm2d

UNET_SKIPS = ("concat", "residual", "none")
UP_MODES = ("transpose", "bilinear", "nearest")
UNET_NORMS = ("batch", "group", "none")


class DoubleConv(nn.Sequential):
    """Two padded 3x3 convs, each followed by the norm (``"batch"``, ``"group"`` or ``"none"``) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch") -> None:
        check_positive("in_channels", in_channels)
        check_positive("out_channels", out_channels)
        if norm not in UNET_NORMS:
            raise ValueError(f"norm must be one of {', '.join(map(repr, UNET_NORMS))}; got {norm!r}")
        bias = norm == "none"  # a norm right after the conv makes a conv bias redundant
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)),
            ("norm1", get_norm2d(norm, out_channels)),
            ("act1", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)),
            ("norm2", get_norm2d(norm, out_channels)),
            ("act2", nn.ReLU(inplace=True)),
        ]))


class Down(nn.Sequential):
    """One encoder step: 2x2 max-pool (halves H and W), then :class:`DoubleConv` to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch") -> None:
        super().__init__(OrderedDict([
            ("pool", nn.MaxPool2d(2)),
            ("conv", DoubleConv(in_channels, out_channels, norm=norm)),
        ]))


def upsampler(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """Double H and W and map channels: a 2x2 stride-2 transposed conv (the paper's "up-convolution"), or
    bilinear upsampling followed by a 1x1 conv (no checkerboard artefacts, fewer parameters); or ``"nearest"``:
    nearest-neighbour upsampling that keeps the channels (segmentation_models_pytorch's decoder, whose fusing
    convs then map the channels)."""
    if mode == "nearest":
        return nn.Upsample(scale_factor=2, mode="nearest")
    if mode == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    if mode == "bilinear":
        return nn.Sequential(OrderedDict([
            ("upsample", nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)),
            ("proj", conv1x1(in_channels, out_channels, bias=True)),
        ]))
    raise ValueError(f"up_mode must be one of {', '.join(map(repr, UP_MODES))}; got {mode!r}")


class UpBlock(SkipBlock):
    """One decoder step: upsample the coarse path ``x`` (``in_channels`` -> ``out_channels``, H and W doubled),
    concatenate the encoder's ``bridge`` (``skip_channels``, the long skip), fuse with :class:`DoubleConv`.

    Call as ``block(x, bridge)``.  ``self.up`` is the upsampling, ``self.fuse`` the convs after the merge; both
    are the block's main path (there is no single ``branch`` module, as the merge sits between them).
    The plain twin (``skip="none"``) ignores ``bridge`` and its ``fuse`` takes the upsampled channels only;
    ``skip="residual"`` adds the bridge to the upsampled path instead of concatenating it (then ``skip_channels``
    must equal the upsampled channels, and ``fuse`` takes that many).  ``skip_enabled = False`` cuts the long skip:
    the bridge is replaced by zeros (a lesion of the skip, where ``branch_enabled`` lesions the other path).
    ``skip_channels=0``: a level without an encoder bridge (segmentation_models_pytorch's full-resolution block);
    call with ``bridge=None``.  With ``up_mode="nearest"`` the upsampling keeps ``in_channels`` and ``fuse`` maps
    to ``out_channels``.  Lesioning (``branch_enabled = False``) zeroes the upsampled path, so the block sees its
    long skip only.  ``bridge_first=False`` concatenates ``cat(up(x), bridge)`` instead (segmentation_models_pytorch's
    order, so its checkpoints' first fusing conv loads as it is).
    """

    long_skip = True  # takes its skip from the encoder as a second argument

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        up_mode: str = "transpose",
        norm: str = "batch",
        skip: str = "concat",
        bridge_first: bool = True,
    ) -> None:
        super().__init__()
        self.skip = check_skip(skip, UNET_SKIPS)
        if isinstance(skip_channels, bool) or not isinstance(skip_channels, int) or skip_channels < 0:
            raise ValueError(f"skip_channels must be a non-negative integer (0: no bridge); got {skip_channels!r}")
        self.skip_channels = skip_channels
        self.bridge_first = bool(bridge_first)
        self.skip_enabled = True  # False: the long skip is cut (bridge replaced by zeros)
        self.shortcut = nn.Identity()
        self.up = upsampler(check_positive("in_channels", in_channels), out_channels, up_mode)
        up_channels = in_channels if up_mode == "nearest" else out_channels
        if skip == "residual" and skip_channels not in (0, up_channels):
            raise ValueError(f"skip='residual' adds the bridge to the upsampled path, so skip_channels must equal its "
                             f"{up_channels} channels (or be 0); got skip_channels={skip_channels}")
        fuse_in = up_channels + skip_channels if self.skip == "concat" else up_channels
        self.fuse = DoubleConv(fuse_in, out_channels, norm=norm)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor | None) -> torch.Tensor:
        out = self.up(x)  # (N, C_up, 2H, 2W)
        if not self.branch_enabled:
            out = torch.zeros_like(out)
        elif self.branch_scale != 1.0:
            out = self.branch_scale * out
        if not self.has_skip or self.skip_channels == 0:
            return self.fuse(out)
        shortcut = self.shortcut(bridge)  # the long skip: encoder features at this resolution (N, C_skip, 2H, 2W)
        if not self.skip_enabled:
            shortcut = torch.zeros_like(shortcut)  # lesioned long skip
        if shortcut.shape[-2:] != out.shape[-2:]:
            raise ValueError(
                f"UpBlock: the encoder bridge has spatial size {tuple(shortcut.shape[-2:])} but the upsampled "
                f"path has {tuple(out.shape[-2:])}; the input H and W must be divisible by 2**depth"
            )
        if self.skip == "residual":
            return self.fuse(shortcut + out)  # the long skip, added
        merged = merge_concat(shortcut, out) if self.bridge_first else merge_concat(out, shortcut)
        return self.fuse(merged)  # (N, C_out, 2H, 2W)

    def can_lesion(self) -> bool:
        # Without the long skip, zeroing the upsampled path would leave the block nothing to work on.
        return self.has_skip and self.skip_channels > 0

    def zero_init_last(self) -> None:
        """Zero the upsampling's last conv (or, for parameter-free upsampling, the first fusing conv's input from
        the upsampled path): the block starts from its long skip alone."""
        convs = [m for m in self.up.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        if not convs and self.skip == "residual":
            raise NotImplementedError("UpBlock(skip='residual') with parameter-free upsampling: the fusing conv sees "
                                      "the sum of both paths, so no weight zeroes the upsampled one alone")
        if not convs:
            with torch.no_grad():  # the first fusing conv's input channels from the upsampled path
                w = self.fuse.conv1.weight
                (w[:, self.skip_channels:] if self.bridge_first else w[:, :w.shape[1] - self.skip_channels]).zero_()
            return
        with torch.no_grad():
            for p in convs[-1].parameters():
                p.zero_()


class LinkBlock(SkipBlock):
    """LinkNet's decoder step (Chaurasia & Culurciello 2017, "LinkNet: Exploiting Encoder Representations for
    Efficient Semantic Segmentation", arXiv:1707.03718): 1x1 conv to a quarter of the channels, a 4x4 stride-2
    transposed conv (H and W doubled), 1x1 conv to ``out_channels`` — each with BN and ReLU — and the encoder's
    ``bridge`` *added* (the long skip: ``y = branch(x) + bridge``, where U-Net concatenates).

    Call as ``block(x, bridge)``; ``bridge=None`` at a level without encoder features (the full-resolution block).
    The plain twin (``skip="none"``) ignores ``bridge``.  Lesioning returns the bridge alone; ``skip_enabled =
    False`` cuts the long skip instead (the branch alone).
    """

    long_skip = True  # takes its skip from the encoder as a second argument

    def __init__(self, in_channels: int, out_channels: int, *, skip: str = "residual") -> None:
        super().__init__()
        self.skip = check_skip(skip, ("residual", "none"))
        self.skip_enabled = True  # False: the long skip is cut
        mid = check_positive("in_channels", in_channels) // 4
        if mid == 0:
            raise ValueError(f"in_channels must be at least 4 (the block narrows to in_channels // 4); "
                             f"got {in_channels}")
        self.shortcut = nn.Identity()
        self.branch = nn.Sequential(OrderedDict([
            ("conv1", conv1x1(in_channels, mid)), ("norm1", nn.BatchNorm2d(mid)), ("act1", nn.ReLU(inplace=True)),
            ("up", nn.ConvTranspose2d(mid, mid, 4, stride=2, padding=1)), ("norm2", nn.BatchNorm2d(mid)),
            ("act2", nn.ReLU(inplace=True)),
            ("conv3", conv1x1(mid, check_positive("out_channels", out_channels))),
            ("norm3", nn.BatchNorm2d(out_channels)), ("act3", nn.ReLU(inplace=True)),
        ]))

    def forward(self, x: torch.Tensor, bridge: torch.Tensor | None) -> torch.Tensor:
        if not self.branch_enabled and self.has_skip and bridge is not None:
            return self.shortcut(bridge)  # lesioned: the long skip alone
        out = self.branch(x)  # (N, C_out, 2H, 2W)
        if self.branch_scale != 1.0:
            out = self.branch_scale * out
        if not self.has_skip or bridge is None or not self.skip_enabled:
            return out
        return self.shortcut(bridge) + out  # the long skip, added

    def can_lesion(self) -> bool:
        return self.has_skip

    def zero_init_last(self) -> None:
        """Zero the last BN: the block starts as its long skip (ReLU(0) = 0 after it)."""
        nn.init.zeros_(self.branch.norm3.weight)
        nn.init.zeros_(self.branch.norm3.bias)


class LateralBlock(SkipBlock):
    """A feature-pyramid step (Lin et al. 2017, "Feature Pyramid Networks for Object Detection", arXiv:1612.03144):
    the coarser pyramid level upsampled 2x (nearest) plus the encoder's ``bridge`` projected by a 1x1 conv to the
    pyramid width — ``y = up(x) + proj(bridge)``, the lateral connection being the long skip.

    Call as ``block(x, bridge)``.  The plain twin (``skip="none"``) has no projection and returns ``up(x)``;
    lesioning returns the lateral path alone.
    """

    long_skip = True  # takes its skip from the encoder as a second argument

    def __init__(self, channels: int, skip_channels: int, *, skip: str = "residual") -> None:
        super().__init__()
        self.skip = check_skip(skip, ("residual", "none"))
        check_positive("channels", channels)
        self.shortcut = conv1x1(check_positive("skip_channels", skip_channels), channels, bias=True) \
            if self.has_skip else nn.Identity()
        self.branch = nn.Upsample(scale_factor=2, mode="nearest")  # the top-down path (no parameters)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor | None) -> torch.Tensor:
        if not self.has_skip:
            return self.branch(x)
        if not self.branch_enabled:
            return self.shortcut(bridge)  # lesioned: the lateral connection alone
        out = self.branch(x)
        if self.branch_scale != 1.0:
            out = self.branch_scale * out
        return self.shortcut(bridge) + out  # the long skip: projected encoder features, added

    def can_lesion(self) -> bool:
        return self.has_skip

    def zero_init_last(self) -> None:
        """Nothing to zero in a parameter-free top-down path: zero the lateral projection instead."""
        if self.has_skip:
            nn.init.zeros_(self.shortcut.weight)
            nn.init.zeros_(self.shortcut.bias)
