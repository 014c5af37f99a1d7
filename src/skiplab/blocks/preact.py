"""The five residual-unit orderings of He et al. 2016, "Identity Mappings in Deep Residual Networks"
(arXiv:1603.05027), Fig. 4, for basic (two 3x3) and bottleneck (1x1-3x3-1x1) units.

With ``W_i`` the convolutions, ``BN`` batch norm, ``h(x)`` the shortcut (identity where shapes match):

* ``"original"`` (a):        ``x' = ReLU(h(x) + BN(W2 ReLU(BN(W1 x))))``
* ``"bn_after_add"`` (b):    ``x' = ReLU(BN(h(x) + W2 ReLU(BN(W1 x))))``
* ``"relu_before_add"`` (c): ``x' = h(x) + ReLU(BN(W2 ReLU(BN(W1 x))))``
* ``"relu_preact"`` (d):     ``x' = h(x) + BN(W2 ReLU(BN(W1 ReLU(x))))``         (ReLU-only pre-activation)
* ``"full_preact"`` (e):     ``x' = h(x) + W2 ReLU(BN(W1 ReLU(BN(x))))``         (full pre-activation)

Bottleneck units insert a third convolution the same way (``W3 ReLU(BN(...))`` continuing the pattern).
(a)-(c) are post-activation orderings: a projection shortcut is 1x1 conv + BN.  (d)/(e) are pre-activation
orderings: following the authors' code (github.com/KaimingHe/resnet-1k-layers), a unit whose shortcut is not
the identity applies its first activation once, *before* the split, so the projection (a bare 1x1 conv) sees
the pre-activated input, and the bottleneck stride sits on the first 1x1 (``stride_in_1x1=True``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

from skiplab.blocks.residual import ResidualUnit, fresh_act
from skiplab.layers.norm_act import check_positive, conv1x1, conv3x3, get_act, get_norm2d

ORDERINGS = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")
PREACT_ORDERINGS = ("relu_preact", "full_preact")


def check_ordering(ordering: str) -> str:
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {', '.join(map(repr, ORDERINGS))}; got {ordering!r}")
    return ordering


def _shortcut_is_identity(kind: str, in_channels: int, out_channels: int, stride: int) -> bool:
    return kind in ("A", "B") and stride == 1 and in_channels == out_channels


def ordered_layers(ordering: str, convs: list[nn.Conv2d], *, norm: str, act: str
                   ) -> tuple[OrderedDict[str, nn.Module], OrderedDict[str, nn.Module], nn.Module]:
    """Lay out ``convs`` in ``ordering``: returns ``(pre, rest, post)``.

    ``pre`` is the leading pre-activation (empty for post-activation orderings), ``rest`` the remaining branch
    layers, ``post`` the module after the merge.  Names: ``conv{i}``; ``bn{i}``/``act{i}`` follow conv ``i``
    in post-activation orderings and precede it in pre-activation ones.
    """
    check_ordering(ordering)
    pre: OrderedDict[str, nn.Module] = OrderedDict()
    rest: OrderedDict[str, nn.Module] = OrderedDict()
    n = len(convs)
    if ordering in PREACT_ORDERINGS:
        full = ordering == "full_preact"
        if full:
            pre["bn1"] = get_norm2d(norm, convs[0].in_channels)
        pre["act1"] = fresh_act(act)  # may read the block input itself, which the identity shortcut still needs
        for i, conv in enumerate(convs, 1):
            if i > 1:
                if full:
                    rest[f"bn{i}"] = get_norm2d(norm, conv.in_channels)
                rest[f"act{i}"] = get_act(act)
            rest[f"conv{i}"] = conv
            if not full:
                rest[f"bn{i}"] = get_norm2d(norm, conv.out_channels)
        return pre, rest, nn.Identity()
    for i, conv in enumerate(convs, 1):
        last = i == n
        rest[f"conv{i}"] = conv
        if not (last and ordering == "bn_after_add"):
            rest[f"bn{i}"] = get_norm2d(norm, conv.out_channels)
        if not last or ordering == "relu_before_add":
            rest[f"act{i}"] = get_act(act)
    out_channels = convs[-1].out_channels
    if ordering == "original":
        post: nn.Module = fresh_act(act)  # not in place: a lesioned unit applies it to the (aliased) input
    elif ordering == "bn_after_add":
        post = nn.Sequential(OrderedDict(bn=get_norm2d(norm, out_channels), act=get_act(act)))
    else:
        post = nn.Identity()
    return pre, rest, post


class _OrderedUnit(ResidualUnit):
    def _assemble(self, ordering: str, convs: list[nn.Conv2d], in_channels: int, out_channels: int, stride: int,
                  *, shortcut: str, norm: str, act: str, gate_bias: float, drop_path: float) -> None:
        self.ordering = check_ordering(ordering)
        pre, rest, post = ordered_layers(ordering, convs, norm=norm, act=act)
        preactivated = ordering in PREACT_ORDERINGS
        # Share the pre-activation between both paths only where the shortcut is not the identity (the paper's
        # code); the identity skip must carry the raw x.  A plain twin has no second path: all of it is F.
        share = bool(pre) and self.has_skip and not _shortcut_is_identity(shortcut, in_channels, out_channels, stride)
        self.preact = nn.Sequential(pre) if share else nn.Identity()
        self.branch = nn.Sequential(rest if share else OrderedDict([*pre.items(), *rest.items()]))
        self._make_skip(in_channels, out_channels, stride, shortcut=shortcut,
                        shortcut_norm="none" if preactivated else norm, gate_bias=gate_bias, drop_path=drop_path)
        self.post = post

    def extra_repr(self) -> str:
        return f"skip={self.skip!r}, ordering={self.ordering!r}"


class PreActBasicBlock(_OrderedUnit):
    """Basic unit (two 3x3 convs, stride on the first) in any of the five orderings; see the module docstring."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, ordering: str = "full_preact",
                 skip: str = "residual", shortcut: str = "B", norm: str = "batch", act: str = "relu",
                 gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        super().__init__(skip)
        check_positive("stride", stride)
        convs = [conv3x3(in_channels, out_channels, stride), conv3x3(out_channels, out_channels)]
        self._assemble(ordering, convs, in_channels, out_channels, stride, shortcut=shortcut, norm=norm, act=act,
                       gate_bias=gate_bias, drop_path=drop_path)


class PreActBottleneck(_OrderedUnit):
    """Bottleneck unit (1x1-3x3-1x1, ``mid_channels`` = ``out_channels // 4`` by default) in any of the five
    orderings.  ``stride_in_1x1=True`` (default, as in the authors' ResNet-164/1001 code) strides the first
    1x1; False strides the 3x3."""

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, ordering: str = "full_preact",
                 skip: str = "residual", shortcut: str = "B", stride_in_1x1: bool = True,
                 mid_channels: int | None = None, norm: str = "batch", act: str = "relu",
                 gate_bias: float = -2.0, drop_path: float = 0.0) -> None:
        super().__init__(skip)
        check_positive("stride", stride)
        mid = check_positive("mid_channels", out_channels // self.expansion if mid_channels is None else mid_channels)
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        convs = [conv1x1(in_channels, mid, s1), conv3x3(mid, mid, s3), conv1x1(mid, out_channels)]
        self._assemble(ordering, convs, in_channels, out_channels, stride, shortcut=shortcut, norm=norm, act=act,
                       gate_bias=gate_bias, drop_path=drop_path)
