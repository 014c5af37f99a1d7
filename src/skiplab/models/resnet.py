"""ImageNet ResNets (He et al. 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385) in
torchvision's architecture ("v1.5": bottleneck stride on the 3x3), with plain and highway twins.

At ``num_classes=1000`` the parameter counts equal torchvision's: resnet18 11,689,512; resnet34 21,797,672;
resnet50 25,557,032; resnet101 44,549,160; resnet152 60,192,808.  Checkpoints in torchvision's key format load
directly (:meth:`ResNet.remap_state_dict`) and export back (:meth:`ResNet.to_torchvision_state_dict`).

Also home of the helpers the CIFAR and pre-activation families share: :func:`resnet_stages`,
:func:`init_resnet_weights` and :func:`define_entrypoint` (generated twin entrypoints).
"""
from __future__ import annotations

import re
import sys
from collections import OrderedDict
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn

from skiplab.blocks.base import zero_init_last
from skiplab.blocks.residual import BasicBlock, Bottleneck, make_stage
from skiplab.layers.drop_path import check_drop_prob, linear_decay, set_drop_path_mode
from skiplab.layers.norm_act import check_positive, conv3x3, get_act, get_norm2d
from skiplab.layers.squeeze_excite import SqueezeExcite
from skiplab.models.base import SkipNet
from skiplab.registry import register_model

PAPER = "He et al. 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385"
HIGHWAY_PAPER = "Srivastava et al. 2015, Highway Networks, arXiv:1505.00387"
WRN_PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146"
RESNEXT_PAPER = "Xie et al. 2017, Aggregated Residual Transformations for Deep Neural Networks, arXiv:1611.05431"
SE_PAPER = "Hu, Shen & Sun 2018, Squeeze-and-Excitation Networks, arXiv:1709.01507"
TWIN_SKIPS = ("residual", "none", "highway")
STEMS = ("standard", "deep")
BAG_OF_TRICKS_PAPER = "He et al. 2019, Bag of Tricks for Image Classification with CNNs, arXiv:1812.01187"

# depth -> (block, blocks per stage)
IMAGENET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    26: (Bottleneck, (2, 2, 2, 2)),  # timm's resnet26 / resnet26d
    200: (Bottleneck, (3, 24, 36, 3)),  # timm's resnet200 / resnet200d (the depth of He et al. 2016's ImageNet net)
}


# ----------------------------------------------------------------------------------------------- shared helpers
def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 — the width multiplier every family applies."""
    return max(1, int(round(channels * width)))


def check_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width < float("inf"):
        raise ValueError(f"width must be a positive number (a finite channel multiplier); got {width!r}")
    return float(width)


def resnet_stages(block: Callable[..., nn.Module], depths: tuple[int, ...] | list[int],
                  out_channels: list[int], in_channels: int, *, mid_channels: list[int] | None = None,
                  se_channels: list[int] | None = None, drop_path_rate: float = 0.0, drop_path_mode: str = "row",
                  **block_kwargs: Any) -> nn.ModuleList:
    """One stage per entry of ``depths``: the first stage keeps the resolution, each later one halves it
    (stride 2 on its first block) while mapping to ``out_channels[i]``.

    ``drop_path_rate`` > 0 turns on stochastic depth (Huang et al. 2016) with the paper's linear decay: block
    ``l`` of ``L`` drops its branch with probability ``l / L * drop_path_rate``, per sample (``drop_path_mode``
    "row") or for the whole batch ("batch", the paper's form, where a dropped branch is not computed)."""
    rates = linear_decay(check_drop_prob(drop_path_rate, "drop_path_rate"), sum(depths)) if drop_path_rate else None
    stages, first = [], 0
    for i, (n, out) in enumerate(zip(depths, out_channels)):
        extra: dict[str, Any] = {"mid_channels": mid_channels[i]} if mid_channels is not None else {}
        if se_channels is not None:
            extra["se_channels"] = se_channels[i]
        if rates is not None:
            extra["drop_path_rates"] = rates[first : first + n]
        stages.append(make_stage(block, in_channels, out, n, 1 if i == 0 else 2, **block_kwargs, **extra))
        in_channels, first = out, first + n
    return set_drop_path_mode(nn.ModuleList(stages), drop_path_mode)


def init_resnet_weights(model: nn.Module) -> None:
    """torchvision's / fb.resnet.torch's init: He-normal (fan_out) conv weights, BN scale 1 and shift 0.

    Conv biases are left alone: the only biased convs are highway gates, whose negative bias is the point.
    Meta tensors (shape-only models, e.g. for counting parameters) hold no values and are skipped."""
    for m in model.modules():
        if getattr(m, "weight", None) is not None and m.weight.is_meta:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def define_entrypoint(name: str, build: Callable[..., nn.Module], *, module: str, skip: str, fixed_skip: bool,
                      family: str, input_size: tuple[int, ...], paper: str, doc: str) -> Callable[..., nn.Module]:
    """Create and register the entrypoint ``name(**kwargs) -> build(skip=skip, **kwargs)``, and place it in
    ``module`` (pass ``__name__``) so ``from skiplab.models.cifar import plain20`` works.

    With ``fixed_skip`` the entrypoint is a twin (``plain20``, ``highway_resnet50``): its skip kind is part of
    its name, so a conflicting ``skip=`` is refused.
    """

    def entrypoint(**kwargs: Any) -> nn.Module:
        if fixed_skip and kwargs.get("skip", skip) != skip:
            raise ValueError(f"{name} is the skip={skip!r} twin; got skip={kwargs['skip']!r} (leave skip out)")
        kwargs.setdefault("skip", skip)
        return build(**kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module
    entrypoint.__doc__ = doc
    register_model(family=family, input_size=input_size, skip=skip, paper=paper)(entrypoint)
    setattr(sys.modules[module], name, entrypoint)
    return entrypoint


def twin_name(base: str, skip: str, plain_prefix: str = "plain_", highway_prefix: str = "highway_") -> str:
    return base if skip == "residual" else (plain_prefix if skip == "none" else highway_prefix) + base


TWIN_WHAT = {"residual": "", "none": "Plain (no-skip) twin of ", "highway": "Highway twin of "}


def define_twins(base: str, build: Callable[..., nn.Module], *, module: str, family: str,
                 input_size: tuple[int, ...], paper: str, doc: str,
                 names: Callable[[str], str] | None = None) -> None:
    """Register the residual net ``base`` and its plain and highway twins (``plain_<base>``, ``highway_<base>``,
    or ``names(skip)``), each ``build(skip=..., **kwargs)``; ``doc`` describes the residual net (the twins' docs
    say whose twin they are) and the highway twins cite Srivastava et al. besides ``paper``."""
    for skip in TWIN_SKIPS:
        define_entrypoint(names(skip) if names else twin_name(base, skip), build, module=module, skip=skip,
                          fixed_skip=skip != "residual", family=family, input_size=input_size,
                          paper=paper if skip != "highway" else f"{paper}; {HIGHWAY_PAPER}", doc=TWIN_WHAT[skip] + doc)


# ---------------------------------------------------------------------------------------- torchvision key names
# Module paths, torchvision -> ours: outside the blocks, and inside a block (layerI.J / stages.I-1.J).
_TV_TOP = {"conv1": "stem.conv", "bn1": "stem.bn", "fc": "head.fc"}
_TV_IN_BLOCK = {
    **{f"{layer}{i}": f"branch.{layer}{i}" for layer in ("conv", "bn") for i in (1, 2, 3)},
    "downsample.0": "shortcut.conv",
    "downsample.1": "shortcut.bn",
    "se.fc1": "branch.se.reduce",  # timm's SE-ResNets (seresnet50 ...)
    "se.fc2": "branch.se.expand",
}
# timm's ResNet-C/D (resnet50d...): the deep stem is conv1.0/1/3/4/6 + bn1; downsample.0 is the pooling
_TIMM_D_TOP = {"conv1.0": "stem.conv1", "conv1.1": "stem.bn1", "conv1.3": "stem.conv2", "conv1.4": "stem.bn2",
               "conv1.6": "stem.conv", "bn1": "stem.bn", "fc": "head.fc"}
_TIMM_D_IN_BLOCK = {**{k: v for k, v in _TV_IN_BLOCK.items() if not k.startswith("downsample")},
                    "downsample.1": "shortcut.conv", "downsample.2": "shortcut.bn"}
_TV_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
_OUR_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")


def _swap_prefix(key: str, table: dict[str, str]) -> str | None:
    for old, new in table.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    return None


def torchvision_key_to_ours(key: str, top: dict[str, str] = _TV_TOP, in_block: dict[str, str] = _TV_IN_BLOCK
                            ) -> str | None:
    """``layer2.0.downsample.0.weight`` -> ``stages.1.0.shortcut.conv.weight``; None if it has no counterpart.
    ``top``/``in_block``: the name tables (torchvision's by default, timm's ResNet-C/D ones for those nets)."""
    m = _TV_BLOCK_KEY.match(key)
    if m is None:
        return _swap_prefix(key, top)
    inner = _swap_prefix(m[3], in_block)
    return None if inner is None else f"stages.{int(m[1]) - 1}.{m[2]}.{inner}"


def our_key_to_torchvision(key: str) -> str | None:
    """The inverse of :func:`torchvision_key_to_ours`."""
    m = _OUR_BLOCK_KEY.match(key)
    if m is None:
        return _swap_prefix(key, {v: k for k, v in _TV_TOP.items()})
    inner = _swap_prefix(m[3], {v: k for k, v in _TV_IN_BLOCK.items()})
    return None if inner is None else f"layer{int(m[1]) + 1}.{m[2]}.{inner}"


def looks_like_torchvision_resnet(state_dict: dict[str, torch.Tensor]) -> bool:
    return "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


def looks_like_timm_resnet_d(state_dict: dict[str, torch.Tensor]) -> bool:
    """timm's deep-stem ResNets (resnet50d, resnet50c...): the stem is a Sequential ``conv1.0`` ... ``conv1.6``."""
    return "conv1.0.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


def timm_d_to_skiplab(state_dict: dict[str, torch.Tensor], *, avg_down: bool) -> dict[str, torch.Tensor]:
    """timm's deep-stem ResNet keys -> ours (``avg_down``: the shortcut is pool + conv + bn, timm's ResNet-D;
    otherwise conv + bn).  Keys with no counterpart pass through unchanged."""
    in_block = _TIMM_D_IN_BLOCK if avg_down else _TV_IN_BLOCK
    return {(torchvision_key_to_ours(k, _TIMM_D_TOP, in_block) or k): v for k, v in state_dict.items()}


def torchvision_to_skiplab(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet keys -> ours.  Keys with no counterpart pass through unchanged, so the loader reports
    them as unexpected."""
    return {(torchvision_key_to_ours(k) or k): v for k, v in state_dict.items()}


def skiplab_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ImageNet ResNet keys -> torchvision's; raises ValueError naming any key torchvision has no place for."""
    renamed = {k: our_key_to_torchvision(k) for k in state_dict}
    unmapped = [k for k, new in renamed.items() if new is None]
    if unmapped:
        raise ValueError(f"{len(unmapped)} keys have no torchvision counterpart, e.g. {unmapped[:5]}")
    return {renamed[k]: v for k, v in state_dict.items()}


# ----------------------------------------------------------------------------------------------------- the model
class ResNet(SkipNet):
    """ImageNet ResNet: 7x7/2 conv + 3x3/2 max-pool stem, four stages (64, 128, 256, 512 x ``expansion``
    channels, strides 1, 2, 2, 2), global average pool and a linear classifier.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`; ``depths``: blocks per stage.
        skip: "residual", "none" (plain twin) or "highway".  shortcut: "A", "B" (default), "C" or "D" (average
        pooling before a stride-1 projection: ResNet-D).
        stride_in_1x1: bottleneck stride on the first 1x1 (the paper) instead of the 3x3 (torchvision).
        stem: "standard" (a 7x7/2 convolution) or "deep" (three 3x3 convolutions, 32-32-64 channels, the first
        with stride 2: ResNet-C; He et al. 2019 "Bag of Tricks", timm's ``resnet50d`` with shortcut "D").
        width: multiplies every channel count.  base_width: bottleneck inner width per 64 (128 -> wide ResNet);
        with ``groups`` (ResNeXt cardinality) the width of each group (resnext50_32x4d: groups 32, base_width 4).
        se_ratio: > 0 adds a squeeze-and-excitation gate to every block's output (SE-ResNet, Hu et al. 2018) with
        ``se_ratio`` of its channels, rounded to a multiple of 8 (timm's seresnet*: 1/16).
        zero_init_residual: zero each block's last BN scale so every block starts as the identity.
        drop_path_rate: stochastic depth, the last block's drop probability (linear decay before it).
        drop_path_mode: "row" (per sample) or "batch" (whole batch; dropped branches are not computed).
    """

    def __init__(self, block: type[nn.Module], depths: tuple[int, ...], *, num_classes: int = 1000,
                 in_channels: int = 3, skip: str = "residual", shortcut: str = "B", stride_in_1x1: bool = False,
                 stem: str = "standard", width: float = 1.0, base_width: int = 64, groups: int = 1,
                 se_ratio: float = 0.0, zero_init_residual: bool = False, drop_path_rate: float = 0.0,
                 drop_path_mode: str = "row", norm: str = "batch", act: str = "relu") -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        check_positive("base_width", base_width)
        width = check_width(width)
        self.default_input_size = (in_channels, 224, 224)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(map(repr, STEMS))}; got {stem!r}")
        self.skip, self.shortcut_kind, self.stride_in_1x1, self.stem_kind = skip, shortcut, stride_in_1x1, stem
        stem_channels = scaled(64, width)
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        out_channels = [p * block.expansion for p in planes]
        block_kwargs: dict[str, Any] = dict(skip=skip, shortcut=shortcut, norm=norm, act=act)
        mid_channels = None
        check_positive("groups", groups)
        if block is Bottleneck:
            block_kwargs.update(stride_in_1x1=stride_in_1x1, groups=groups)
            # ResNeXt "CxWd": C groups of W channels at the first stage (torchvision's rule)
            mid_channels = [int(p * base_width / 64) * groups for p in planes]
        elif base_width != 64 or groups != 1:
            raise ValueError(f"base_width and groups only apply to bottleneck ResNets (50/101/152); got "
                             f"base_width={base_width}, groups={groups}")
        if not (isinstance(se_ratio, (int, float)) and not isinstance(se_ratio, bool) and 0 <= se_ratio < 1):
            raise ValueError(f"se_ratio must be a number in [0, 1); got {se_ratio!r}")
        se_channels = [max(8, int(c * se_ratio + 4) // 8 * 8) for c in out_channels] if se_ratio else None
        if se_channels and block is Bottleneck:
            block_kwargs["se_position"] = "out"
        if stem == "deep":  # 3x3/2, 3x3, 3x3 — the last keeps the standard stem's names (conv, bn, act)
            mid = scaled(32, width)
            first: OrderedDict[str, nn.Module] = OrderedDict(
                conv1=conv3x3(in_channels, mid, 2), bn1=get_norm2d(norm, mid), act1=get_act(act),
                conv2=conv3x3(mid, mid), bn2=get_norm2d(norm, mid), act2=get_act(act),
                conv=conv3x3(mid, stem_channels))
        else:
            first = OrderedDict(conv=nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False))
        self.stem = nn.Sequential(OrderedDict(
            **first,
            bn=get_norm2d(norm, stem_channels),
            act=get_act(act),
            pool=nn.MaxPool2d(3, stride=2, padding=1),
        ))
        self.stages = resnet_stages(block, depths, out_channels, stem_channels, mid_channels=mid_channels,
                                    se_channels=se_channels, drop_path_rate=drop_path_rate,
                                    drop_path_mode=drop_path_mode, **block_kwargs)
        self.num_features = out_channels[-1]
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1), fc=nn.Linear(self.num_features, num_classes)
        ))
        init_resnet_weights(self)
        if zero_init_residual:
            zero_init_last(self)

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Convert a torchvision-format state dict (``conv1``, ``layer1.0.downsample.0``, ``fc``...) or timm's
        deep-stem ResNet-C/D format (``conv1.0`` ... ``conv1.6``, ``bn1``, ``downsample.1/2``) to ours; any other
        dict is returned unchanged."""
        if looks_like_timm_resnet_d(state_dict):
            return timm_d_to_skiplab(state_dict, avg_down=self.shortcut_kind == "D")
        return torchvision_to_skiplab(state_dict) if looks_like_torchvision_resnet(state_dict) else state_dict

    def to_torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under torchvision's key names, loadable by ``torchvision.models.resnetXX()``.

        Only the architecture torchvision has can be exported: residual skips with shortcut "B" and, for
        bottlenecks, the stride on the 3x3 — anything else would load but compute something different."""
        has_bottleneck = any(isinstance(m, Bottleneck) for m in self.modules())
        has_se = any(isinstance(m, SqueezeExcite) for m in self.modules())
        if (self.skip != "residual" or self.shortcut_kind != "B" or (has_bottleneck and self.stride_in_1x1)
                or self.stem_kind != "standard" or has_se):
            raise ValueError(
                "only skip='residual', shortcut='B', stride_in_1x1=False, stem='standard' ResNets without "
                "squeeze-excite match torchvision's "
                f"architecture; this one has skip={self.skip!r}, shortcut={self.shortcut_kind!r}, "
                f"stride_in_1x1={self.stride_in_1x1}, stem={self.stem_kind!r}")
        return skiplab_to_torchvision(self.state_dict())


def resnet(depth: int, **kwargs: Any) -> ResNet:
    """An ImageNet ResNet of ``depth`` 18, 26, 34, 50, 101, 152 or 200; ``kwargs`` go to :class:`ResNet`."""
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_DEPTHS)}; got {depth!r}")
    block, depths = IMAGENET_DEPTHS[depth]
    return ResNet(block, depths, **kwargs)


def _register_imagenet() -> None:
    for depth in IMAGENET_DEPTHS:
        define_twins(f"resnet{depth}", partial(resnet, depth), module=__name__, family="resnet",
                     input_size=(3, 224, 224), paper=PAPER,
                     doc=f"ResNet-{depth} for ImageNet (He et al. 2015). kwargs: num_classes, in_channels, skip, "
                         "shortcut, stride_in_1x1, stem, width, base_width, groups, zero_init_residual, "
                         "drop_path_rate, drop_path_mode.")


# torchvision's wide and ResNeXt forms of the bottleneck ResNets: name -> (depth, fixed kwargs, what, paper)
WIDE_RESNEXT: dict[str, tuple[int, dict[str, int], str, str]] = {
    "wide_resnet50_2": (50, {"base_width": 128}, "Wide ResNet-50-2", WRN_PAPER),
    "wide_resnet101_2": (101, {"base_width": 128}, "Wide ResNet-101-2", WRN_PAPER),
    "resnext50_32x4d": (50, {"groups": 32, "base_width": 4}, "ResNeXt-50 (32x4d)", RESNEXT_PAPER),
    "resnext101_32x8d": (101, {"groups": 32, "base_width": 8}, "ResNeXt-101 (32x8d)", RESNEXT_PAPER),
    "resnext101_64x4d": (101, {"groups": 64, "base_width": 4}, "ResNeXt-101 (64x4d)", RESNEXT_PAPER),
}


def _register_wide_and_resnext() -> None:
    for base, (depth, fixed, what, paper) in WIDE_RESNEXT.items():
        define_twins(base, partial(resnet, depth, **fixed), module=__name__, family="resnet", input_size=(3, 224, 224),
                     paper=f"{paper}; {PAPER}",
                     doc=f"{what} for ImageNet in torchvision's layout (ResNet-{depth} with "
                         f"{', '.join(f'{k}={v}' for k, v in fixed.items())}). kwargs as resnet{depth}.")


# timm's SE-ResNets / SE-ResNeXts: name -> (depth, fixed kwargs, what)
SE_RESNETS: dict[str, tuple[int, dict[str, int], str]] = {
    **{f"seresnet{d}": (d, {}, f"SE-ResNet-{d}") for d in (18, 34, 50, 101, 152)},
    "seresnext50_32x4d": (50, {"groups": 32, "base_width": 4}, "SE-ResNeXt-50 (32x4d)"),
    "seresnext101_32x8d": (101, {"groups": 32, "base_width": 8}, "SE-ResNeXt-101 (32x8d)"),
}


def _register_se_resnets() -> None:
    for base, (depth, fixed, what) in SE_RESNETS.items():
        define_twins(base, partial(resnet, depth, se_ratio=1 / 16, **fixed), module=__name__, family="resnet",
                     input_size=(3, 224, 224), paper=f"{SE_PAPER}; {PAPER}",
                     doc=f"{what} in timm's layout: a squeeze-and-excitation gate (1/16 of the channels, multiple of "
                         f"8) on every block's output before the sum. kwargs as resnet{depth}.")


def _register_resnet_d() -> None:
    for depth in IMAGENET_DEPTHS:
        define_twins(f"resnet{depth}d", partial(resnet, depth, stem="deep", shortcut="D"), module=__name__,
                     family="resnet", input_size=(3, 224, 224), paper=f"{BAG_OF_TRICKS_PAPER}; {PAPER}",
                     doc=f"ResNet-{depth}-D (He et al. 2019; timm's resnet{depth}d): deep 3x3 stem (32-32-64) and "
                         f"average pooling before each downsampling projection. kwargs as resnet{depth}.")


_register_imagenet()
_register_wide_and_resnext()
_register_resnet_d()
_register_se_resnets()
