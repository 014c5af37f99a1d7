"""Residual, plain and highway MLPs of any depth and width.

The residual block is the pre-activation form of He et al. 2016 ("Identity Mappings in Deep Residual Networks",
arXiv:1603.05027) on vectors, which is also the form analysed by Balduzzi et al. 2017 ("The Shattered Gradients
Problem", arXiv:1702.08591)::

    x_{l+1} = x_l + branch_scale * W_l act(norm(x_l))

The plain twin keeps the same branch and drops the skip (``x_{l+1} = W_l act(norm(x_l))`` — the classic
``Linear -> norm -> act`` stack, cut at a different place); the highway twin gates it (Srivastava et al. 2015).

Layout (``depth`` = number of blocks)::

    stem  : Linear(in_features, width)                       the first hidden pre-activation
    stages: [Sequential(MLPBlock x depth)]                   width -> width
    head  : norm -> act -> Linear(width, out_features)

so a depth-L net has L + 1 hidden non-linearities; ``depth=0`` is a one-hidden-layer net.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from skiplab.blocks.base import SkipBlock, check_skip, merge_add
from skiplab.blocks.highway import HighwayGate, merge_highway
from skiplab.blocks.residual import fresh_act  # never in place: in a pre-activation block x is also the skip
from skiplab.layers.norm_act import ACTIVATIONS, NORMS_1D, check_positive, get_norm1d
from skiplab.models.base import SkipNet
from skiplab.registry import register_model

INITS = ("he", "xavier", "lecun", "torch")
MLP_SKIPS = ("residual", "none", "highway")


def init_linear(layer: nn.Linear, init: str, *, bias_std: float = 0.0) -> None:
    """Initialise one Linear: "he" N(0, 2/fan_in) (He et al. 2015), "xavier" N(0, 2/(fan_in+fan_out)) (Glorot &
    Bengio 2010), "lecun" N(0, 1/fan_in), "torch" PyTorch's default.  Biases are N(0, bias_std^2) (zero by
    default) except under "torch", which keeps PyTorch's bias too unless ``bias_std`` is set."""
    fan_out, fan_in = layer.weight.shape
    std = {"he": math.sqrt(2.0 / fan_in), "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
           "lecun": math.sqrt(1.0 / fan_in)}.get(init)
    with torch.no_grad():
        if std is not None:
            layer.weight.normal_(0.0, std)
        if layer.bias is not None and (init != "torch" or bias_std > 0):
            if bias_std > 0:
                layer.bias.normal_(0.0, bias_std)
            else:
                layer.bias.zero_()


class MLPBlock(SkipBlock):
    """``merge(x, branch_scale * branch(x))`` with branch = norm -> act -> Linear(in_features, out_features).

    ``skip``: "residual" (add), "none" (plain twin: returns the branch), "highway" (``lerp(x, branch, T(x))``
    with a sigmoid gate T whose bias starts at ``gate_bias``).  Skips need ``in_features == out_features``.
    """

    def __init__(self, in_features: int, out_features: int, *, act: str = "relu", norm: str = "none",
                 skip: str = "residual", gate_bias: float = -2.0, bias: bool = True) -> None:
        super().__init__()
        self.skip = check_skip(skip, MLP_SKIPS)
        if skip != "none" and in_features != out_features:
            raise ValueError(f"a {skip} MLP block needs in_features == out_features; "
                             f"got {in_features} -> {out_features}")
        self.shortcut = nn.Identity()
        self.branch = nn.Sequential(get_norm1d(norm, in_features), fresh_act(act),
                                    nn.Linear(in_features, out_features, bias=bias))
        self.gate = (HighwayGate(in_features, out_features, conv=False, gate_bias=gate_bias)
                     if skip == "highway" else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in_features) -> (N, out_features)
        shortcut = self.shortcut(x)
        if not self.branch_enabled:  # lesioned: only the skip path (the input itself for a plain twin)
            return shortcut
        out = self.branch(x)
        if self.skip == "residual":
            return merge_add(shortcut, out, self.branch_scale)
        if self.skip == "highway":
            return merge_highway(shortcut, self.branch_scale * out, self.gate(x))
        return out if self.branch_scale == 1.0 else self.branch_scale * out

    @property
    def linear(self) -> nn.Linear:
        """The branch's weight layer (what per-layer gradient analysis reads)."""
        return self.branch[-1]

    def zero_init_last(self) -> None:
        if self.skip == "highway":  # a closed gate is the highway analogue of a zero branch
            nn.init.constant_(self.gate.proj.bias, -10.0)
            return
        nn.init.zeros_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)


def mlp_stage(width: int, depth: int, **block_kwargs) -> nn.Sequential:
    """``depth`` width-preserving MLP blocks."""
    return nn.Sequential(*(MLPBlock(width, width, **block_kwargs) for _ in range(depth)))


class MLP(SkipNet):
    """A stem Linear, one stage of ``depth`` :class:`MLPBlock`, and a norm -> act -> Linear head.

    Input ``(N, in_features)``, output ``(N, out_features)``.  See the module docstring for the layout.
    """

    input_ndim = 1

    def __init__(self, depth: int = 8, width: int = 256, in_features: int = 784, out_features: int = 10, *,
                 act: str = "relu", norm: str = "none", skip: str = "residual", init: str = "he",
                 gate_bias: float = -2.0, branch_scale: float = 1.0, bias: bool = True, bias_std: float = 0.0) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer (number of blocks); got {depth!r}")
        check_positive("width", width)
        check_positive("in_features", in_features)
        check_positive("out_features", out_features)
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(map(repr, ACTIVATIONS))}; got {act!r}")
        if norm not in NORMS_1D:
            raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS_1D))}; got {norm!r}")
        check_skip(skip, MLP_SKIPS)
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")
        for name, value in (("branch_scale", branch_scale), ("gate_bias", gate_bias), ("bias_std", bias_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number; got {value!r}")
        if bias_std < 0:
            raise ValueError(f"bias_std must be >= 0; got {bias_std!r}")
        self.in_channels = in_features
        self.depth, self.width, self.skip = depth, width, skip

        self.stem = nn.Linear(in_features, width, bias=bias)
        self.stages = nn.ModuleList([mlp_stage(width, depth, act=act, norm=norm, skip=skip, gate_bias=gate_bias,
                                               bias=bias)])
        self.head = nn.Sequential(get_norm1d(norm, width), fresh_act(act), nn.Linear(width, out_features, bias=bias))

        # Highway gate projections keep their own init: their bias is the gate_bias that makes them carry at init.
        for layer in self.weight_layers():
            init_linear(layer, init, bias_std=bias_std)
        for block in self.stages[0]:
            block.branch_scale = float(branch_scale)

    def weight_layers(self) -> list[nn.Linear]:
        """The Linear layers along the main path, input to output: stem, each block's branch Linear, head."""
        return [self.stem, *(b.linear for b in self.stages[0]), self.head[-1]]


def _twin_kwargs(kwargs: dict, skip: str) -> dict:
    if kwargs.get("skip", skip) != skip:
        raise ValueError(f"this twin has skip={skip!r}; got skip={kwargs['skip']!r} (use mlp(skip=...) instead)")
    return {**kwargs, "skip": skip}


@register_model(family="mlp", input_size=(784,), skip="residual",
                paper="He et al. 2016, Identity Mappings in Deep Residual Networks (pre-activation)")
def mlp(depth: int = 8, width: int = 256, in_features: int = 784, out_features: int = 10, **kwargs) -> MLP:
    """A residual MLP (``skip="residual"``) or, with ``skip="none"|"highway"``, its plain or highway twin.

    Keyword options: ``act`` ("relu", "tanh", "sigmoid", ...), ``norm`` ("none", "batch", "layer"), ``init``
    ("he", "xavier", "lecun", "torch"), ``gate_bias`` (highway), ``branch_scale``, ``bias``, ``bias_std``.
    """
    return MLP(depth, width, in_features, out_features, **kwargs)


@register_model(family="mlp", input_size=(784,), skip="none", paper="plain twin of mlp")
def plain_mlp(depth: int = 8, width: int = 256, in_features: int = 784, out_features: int = 10, **kwargs) -> MLP:
    """The plain twin of :func:`mlp`: the same layers with no skips."""
    return MLP(depth, width, in_features, out_features, **_twin_kwargs(kwargs, "none"))


@register_model(family="mlp", input_size=(784,), skip="highway",
                paper="Srivastava, Greff & Schmidhuber 2015, Highway Networks, arXiv:1505.00387")
def highway_mlp(depth: int = 8, width: int = 256, in_features: int = 784, out_features: int = 10, **kwargs) -> MLP:
    """The highway twin of :func:`mlp`: each block gated, ``y = lerp(x, branch(x), T(x))``, T's bias at -2."""
    return MLP(depth, width, in_features, out_features, **_twin_kwargs(kwargs, "highway"))
