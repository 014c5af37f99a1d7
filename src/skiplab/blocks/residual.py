"""Residual blocks of He et al. 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385), with
their plain and highway twins.

    residual:  y = act(F(x) + shortcut(x))
    none:      y = act(F(x))                                   (the plain twin: same layers, no skip)
    highway:   y = act(F(x) * T(x) + shortcut(x) * (1 - T(x)))  (Srivastava et al. 2015, arXiv:1505.00387)

``F`` is ``self.branch`` — two 3x3 convolutions (:class:`BasicBlock`) or 1x1-3x3-1x1 (:class:`Bottleneck`,
expansion 4) — and ``shortcut`` is one of the options A/B/C of :mod:`skiplab.layers.shortcuts`.

:class:`ResidualUnit` holds what every ordering shares (also the pre-activation units of
:mod:`skiplab.blocks.preact`): an optional shared pre-activation, the shortcut, the branch, an optional
highway gate and the post-merge activation.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from skiplab.blocks.base import SkipBlock, check_skip, merge_add
from skiplab.blocks.highway import HighwayGate, merge_highway
from skiplab.layers.drop_path import DropPath
from skiplab.layers.norm_act import check_positive, conv1x1, conv3x3, get_act, get_norm2d
from skiplab.layers.shortcuts import make_shortcut
from skiplab.layers.squeeze_excite import SqueezeExcite

BLOCK_SKIPS = ("residual", "none", "highway")


def fresh_act(name: str) -> nn.Module:
    """An activation that never works in place: for ops that read a tensor the skip path still needs."""
    act = get_act(name)
    if hasattr(act, "inplace"):
        act.inplace = False
    return act


class ResidualUnit(SkipBlock):
    """Shared machinery: ``post(merge(shortcut(p), branch(p)))`` with ``p = preact(x)``.

    Subclasses set ``self.branch`` (an ``nn.Sequential`` with named layers), ``self.preact`` (``nn.Identity``
    unless the unit shares a pre-activation between both paths) and ``self.post`` (the activation after the
    merge), then call :meth:`_make_skip`.

    ``drop_path`` > 0 drops the branch during training (stochastic depth, Huang et al. 2016,
    :class:`~skiplab.layers.drop_path.DropPath`): per sample by default, or for the whole batch in "batch" mode,
    where a dropped branch is not computed at all; a plain unit has nothing to fall back on, so it refuses it.

    Lesioning (``branch_enabled = False``, Veit et al. 2016) removes the branch: a residual/highway unit
    returns its skip path ``post(shortcut(preact(x)))`` — for the identity shortcut and a non-negative input
    (the output of a previous post-activation unit) that is ``x`` itself — and a plain unit returns ``x``
    unchanged, or raises where its shape changes (see :meth:`can_lesion`).
    """

    preact: nn.Module
    shortcut: nn.Module
    branch: nn.Sequential
    gate: HighwayGate | None
    post: nn.Module

    def __init__(self, skip: str) -> None:
        super().__init__()
        self.skip = check_skip(skip, BLOCK_SKIPS)

    def _make_skip(self, in_channels: int, out_channels: int, stride: int, *, shortcut: str,
                   shortcut_norm: str = "batch", gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        # The plain twin keeps no shortcut layers (no projection parameters); its slot is only used to lesion.
        kind = shortcut if self.skip != "none" else "none"
        if kind == "none" and self.skip != "none" and (stride != 1 or in_channels != out_channels):
            raise ValueError(f"shortcut='none' leaves a skip={self.skip!r} block no skip path where the shape changes "
                             f"({in_channels}->{out_channels} channels, stride {stride}); "
                             "use shortcut 'A', 'B', 'C' or 'D'")
        self.shortcut = make_shortcut(kind, in_channels, out_channels, stride, norm=shortcut_norm)
        self.gate = (
            HighwayGate(in_channels, out_channels, stride, conv=True, gate_bias=gate_bias)
            if self.skip == "highway"
            else None
        )
        if drop_path and self.skip == "none":
            raise ValueError(f"drop_path needs a skip to fall back on; got drop_path={drop_path} with skip='none'")
        self.drop_path = DropPath(drop_path)  # the identity at p = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.branch_enabled or self.drop_path.drops_whole_branch():
            # F = 0: lesioned, or dropped for this whole batch by stochastic depth (so not computed at all).
            # A plain unit's shortcut slot is nn.Identity, or NoShortcut (raises) where shapes change.
            return self.shortcut(x) if self.skip == "none" else self.post(self.shortcut(self.preact(x)))
        x = self.preact(x)  # N, C_in, H, W (identity unless this unit shares its pre-activation)
        shortcut = self.shortcut(x) if self.has_skip else None  # N, C_out, H/s, W/s — the skip
        out = self.drop_path(self.branch(x))  # N, C_out, H/s, W/s — the residual function F
        return self.post(self.merge(shortcut, out, x))

    def merge(self, shortcut: torch.Tensor | None, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.skip == "residual":
            return merge_add(shortcut, out, self.branch_scale)
        scaled = out if self.branch_scale == 1.0 else self.branch_scale * out
        if self.skip == "highway":
            return merge_highway(shortcut, scaled, self.gate(x))
        return scaled

    def zero_init_last(self) -> None:
        """Make ``F(x) = 0`` at init, so the unit starts as ``post(shortcut(x))`` (Goyal et al. 2017).

        Residual/plain: zero the branch's last BN scale and shift (or its last conv if no BN follows it — the
        full pre-activation unit ends in a conv); the shift is zero at init anyway, zeroing it too makes
        ``F = 0`` hold on a trained block as well.  Highway: close the gate (bias -10), the gated analogue.
        """
        if self.skip == "highway":
            nn.init.constant_(self.gate.proj.bias, -10.0)
            return
        # the branch's last norm or conv, not a squeeze-excite gate's (zeroing that would halve, not zero, F)
        for m in reversed([m for n, m in self.branch.named_modules() if n.split(".")[0] != "se"]):
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
                return
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
                return
        raise RuntimeError(f"{type(self).__name__}: no BN or conv in the branch to zero")


class BasicBlock(ResidualUnit):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets): ``F = BN(conv(ReLU(BN(conv_s(x)))))``,
    ``y = ReLU(F(x) + shortcut(x))``.  ``stride`` is on the first conv.

    Args:
        skip: "residual" (add), "none" (plain twin) or "highway" (gated, carry path = the same shortcut).
        shortcut: "A", "B" or "C" (see :mod:`skiplab.layers.shortcuts`).
        se_channels: > 0 puts a squeeze-and-excitation gate (ReLU, sigmoid) with that many channels on the
        branch's output, before the merge (SE-ResNet, Hu et al. 2018).
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, skip: str = "residual",
                 shortcut: str = "B", norm: str = "batch", act: str = "relu", se_channels: int = 0,
                 gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        super().__init__(skip)
        check_positive("stride", stride)
        self.preact = nn.Identity()
        self.branch = nn.Sequential(OrderedDict(
            conv1=conv3x3(in_channels, out_channels, stride),
            bn1=get_norm2d(norm, out_channels),
            act1=get_act(act),
            conv2=conv3x3(out_channels, out_channels),
            bn2=get_norm2d(norm, out_channels),
            **({"se": SqueezeExcite(out_channels, se_channels, act="relu")} if se_channels else {}),
        ))
        self._make_skip(in_channels, out_channels, stride, shortcut=shortcut, gate_bias=gate_bias,
                        drop_path=drop_path)
        self.post = fresh_act(act)  # not in place: a lesioned unit applies it to the (aliased) input


class Bottleneck(ResidualUnit):
    """1x1 (reduce) - 3x3 - 1x1 (expand) convolutions (ResNet-50/101/152), BN after each, ReLU between,
    ``y = ReLU(F(x) + shortcut(x))``.

    ``mid_channels`` defaults to ``out_channels // expansion`` (4).  The stride sits on the 3x3 by default
    (torchvision's "ResNet v1.5", better accuracy); ``stride_in_1x1=True`` puts it on the first 1x1 as in the
    paper and the original Caffe models.  ``groups`` > 1 makes the 3x3 a grouped convolution: the ResNeXt unit
    (Xie et al. 2017, "aggregated residual transformations", cardinality = groups).  ``se_channels`` > 0 puts a
    squeeze-and-excitation gate (ReLU, sigmoid) with that many channels after the 3x3 (``se_position="mid"``:
    RegNet-Y's unit) or on the branch's output before the merge (``"out"``: SE-ResNet/SE-ResNeXt, Hu et al. 2018).
    """

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, skip: str = "residual",
                 shortcut: str = "B", stride_in_1x1: bool = False, mid_channels: int | None = None,
                 groups: int = 1, norm: str = "batch", act: str = "relu", se_channels: int = 0,
                 se_position: str = "mid", gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        super().__init__(skip)
        if se_position not in ("mid", "out"):
            raise ValueError(f"se_position must be 'mid' (after the 3x3) or 'out' (on the branch's output); "
                             f"got {se_position!r}")
        check_positive("stride", stride)
        mid = check_positive("mid_channels", out_channels // self.expansion if mid_channels is None else mid_channels)
        if check_positive("groups", groups) and mid % groups:
            raise ValueError(f"groups must divide the bottleneck width ({mid} channels); got groups={groups}")
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.preact = nn.Identity()
        self.branch = nn.Sequential(OrderedDict(
            conv1=conv1x1(in_channels, mid, s1),
            bn1=get_norm2d(norm, mid),
            act1=get_act(act),
            conv2=conv3x3(mid, mid, s3, groups=groups),
            bn2=get_norm2d(norm, mid),
            act2=get_act(act),
            **({"se": SqueezeExcite(mid, se_channels, act="relu")} if se_channels and se_position == "mid" else {}),
            conv3=conv1x1(mid, out_channels),
            bn3=get_norm2d(norm, out_channels),
            **({"se": SqueezeExcite(out_channels, se_channels, act="relu")} if se_channels and se_position == "out"
               else {}),
        ))
        self._make_skip(in_channels, out_channels, stride, shortcut=shortcut, gate_bias=gate_bias,
                        drop_path=drop_path)
        self.post = fresh_act(act)


def make_stage(block: Callable[..., nn.Module], in_channels: int, out_channels: int, num_blocks: int,
               stride: int = 1, *, drop_path_rates: Sequence[float] | None = None,
               **block_kwargs: Any) -> nn.Sequential:
    """``num_blocks`` blocks in a Sequential: the first maps ``in_channels`` -> ``out_channels`` with ``stride``,
    the rest keep the shape.  ``block_kwargs`` go to every block; ``drop_path_rates`` (one per block) to each
    block's ``drop_path``."""
    check_positive("num_blocks", num_blocks)
    if drop_path_rates is not None and len(drop_path_rates) != num_blocks:
        raise ValueError(f"drop_path_rates needs one rate per block ({num_blocks}); got {len(drop_path_rates)}")
    rates = [{"drop_path": r} for r in drop_path_rates] if drop_path_rates is not None else [{}] * num_blocks
    blocks = [block(in_channels, out_channels, stride, **block_kwargs, **rates[0])]
    blocks += [block(out_channels, out_channels, 1, **block_kwargs, **rates[i]) for i in range(1, num_blocks)]
    return nn.Sequential(*blocks)
