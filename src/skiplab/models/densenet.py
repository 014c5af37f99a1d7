"""DenseNets (Huang et al. 2017, "Densely Connected Convolutional Networks", arXiv:1608.06993).

* ImageNet: ``densenet121/161/169/201`` — torchvision's architecture (growth 32 and 64 stem channels; 161: 48
  and 96; bottleneck ``bn_size=4``, compression 0.5): 7,978,856 / 28,681,000 / 14,149,480 / 20,013,928
  parameters at 1000 classes.
* CIFAR: ``densenet_bc_100_12`` — DenseNet-BC, depth ``L`` and growth ``k`` configurable
  (``depth=250, growth_rate=24`` etc.); the paper's 0.8M-parameter net at the defaults (769,162 for 10 classes).
* Plain twins ``plain_<name>``: the same nets with ``skip="none"`` (see :mod:`skiplab.blocks.dense` for widths).

Layout: ``stem`` (ImageNet: conv7x7/2-BN-ReLU-maxpool/2; CIFAR: one conv3x3), ``stages[i]`` =
``Sequential(block=DenseBlock, transition=Transition)`` (no transition after the last block), ``head`` =
BN-ReLU-global average pool-Linear.  :meth:`DenseNet.remap_state_dict` converts torchvision checkpoints.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from skiplab.keras_weights import densenet_module, from_keras, looks_like_keras
from skiplab.blocks.base import check_skip
from skiplab.blocks.dense import DENSE_SKIPS, DenseBlock, Transition, check_drop_rate, compressed_channels
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.registry import register_model

PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks, arXiv:1608.06993"
STEMS = ("imagenet", "cifar")


def dense_stages(
    in_channels: int,
    block_config: Sequence[int],
    growth_rate: int,
    *,
    bn_size: int | None,
    compression: float,
    drop_rate: float,
    skip: str,
) -> tuple[nn.ModuleList, int]:
    """Dense blocks with a transition after every block but the last; returns the stages and their output width."""
    stages = nn.ModuleList()
    channels = in_channels
    for i, num_layers in enumerate(block_config):
        block = DenseBlock(channels, growth_rate, num_layers, bn_size=bn_size, drop_rate=drop_rate, skip=skip)
        parts: list[tuple[str, nn.Module]] = [("block", block)]
        channels = block.out_channels
        if i != len(block_config) - 1:
            out = compressed_channels(channels, compression)
            parts.append(("transition", Transition(channels, out, drop_rate=drop_rate)))
            channels = out
        stages.append(nn.Sequential(OrderedDict(parts)))
    return stages, channels


class DenseNet(SkipNet):
    """A DenseNet: stem, dense blocks joined by compressing transitions, BN-ReLU-pool-Linear head.

    ``bn_size=None`` drops the bottleneck (plain "DenseNet" rather than "-B"); ``compression=1.0`` drops the
    compression ("-C").  ``stem="imagenet"`` is conv7x7/2 + BN-ReLU + maxpool/2 with ``init_channels`` maps;
    ``"cifar"`` is a single 3x3 conv (the first dense layer starts with BN-ReLU).
    """

    def __init__(
        self,
        block_config: Sequence[int],
        *,
        growth_rate: int = 32,
        init_channels: int = 64,
        bn_size: int | None = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        skip: str = "dense",
    ) -> None:
        super().__init__()
        check_skip(skip, DENSE_SKIPS)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(map(repr, STEMS))}; got {stem!r}")
        if not block_config:
            raise ValueError("block_config must list at least one dense block's layer count; got an empty sequence")
        for n in block_config:
            check_positive("every block_config entry", n)
        check_positive("init_channels", init_channels)
        check_positive("num_classes", num_classes)
        self.in_channels = check_positive("in_channels", in_channels)
        self.skip = skip

        if stem == "imagenet":
            self.stem = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(in_channels, init_channels, 7, stride=2, padding=3, bias=False)),
                ("norm", nn.BatchNorm2d(init_channels)),
                ("relu", nn.ReLU(inplace=True)),
                ("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]))
        else:
            self.stem = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(in_channels, init_channels, 3, padding=1, bias=False)),
            ]))
        self.stages, channels = dense_stages(
            init_channels, block_config, growth_rate, bn_size=bn_size, compression=compression,
            drop_rate=check_drop_rate(drop_rate), skip=skip,
        )
        self.num_features = channels
        # Each transition floors H/2 and must leave >= 1 pixel; the ImageNet stem takes ceil(H/4) first.
        pools = 2 ** (len(block_config) - 1)
        self.min_input_size = 4 * (pools - 1) + 1 if stem == "imagenet" else pools
        self.head = nn.Sequential(OrderedDict([
            ("norm", nn.BatchNorm2d(channels)),
            ("relu", nn.ReLU(inplace=True)),
            ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten(1)),
            ("fc", nn.Linear(channels, num_classes)),
        ]))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's DenseNet initialisation (He-normal convs, unit BN, zero biases).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Convert a torchvision DenseNet state dict (current or legacy key names), or Keras Applications'
        DenseNet weights as :func:`skiplab.keras_weights.read_keras_h5` reads them, to this model's keys.

        ``features.conv0/norm0`` -> ``stem.conv/norm``; ``features.denseblock{i}.denselayer{j}.{norm1,conv1,...}``
        -> ``stages.{i-1}.block.denselayer{j}.branch.{...}``; ``features.transition{i}`` ->
        ``stages.{i-1}.transition``; ``features.norm5`` -> ``head.norm``; ``classifier`` -> ``head.fc``.  Legacy
        keys ``denselayer{j}.norm.1.weight`` (pre-0.4 checkpoints, still in torchvision's download files) become
        ``norm1``, and as those files have no BatchNorm ``num_batches_tracked`` counters, missing counters are
        filled with 0 (they only matter for BN with ``momentum=None``).  A DataParallel ``module.`` prefix is
        dropped; keys already in our format pass unchanged.  Returns a new dict sharing the tensors.
        """
        if looks_like_keras(state_dict):  # Keras Applications' DenseNet121/169/201 (.h5)
            return from_keras(state_dict, densenet_module)
        out = {_remap_key(key): value for key, value in state_dict.items()}
        if not any(key.endswith("num_batches_tracked") for key in out):
            for key, value in self.state_dict().items():
                if key.endswith("num_batches_tracked"):
                    out[key] = torch.zeros_like(value)
        return out


_LEGACY_LAYER = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")
_TORCHVISION_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"^features\.conv0\."), lambda m: "stem.conv."),
    (re.compile(r"^features\.norm0\."), lambda m: "stem.norm."),
    (re.compile(r"^features\.denseblock(\d+)\.(denselayer\d+)\."),
     lambda m: f"stages.{int(m[1]) - 1}.block.{m[2]}.branch."),
    (re.compile(r"^features\.transition(\d+)\."), lambda m: f"stages.{int(m[1]) - 1}.transition."),
    (re.compile(r"^features\.norm5\."), lambda m: "head.norm."),
    (re.compile(r"^classifier\."), lambda m: "head.fc."),
]


def _remap_key(key: str) -> str:
    if key.startswith("module."):
        key = key[len("module."):]
    legacy = _LEGACY_LAYER.match(key)
    if legacy:  # 'denselayer1.norm.1.weight' -> 'denselayer1.norm1.weight'
        key = legacy[1] + legacy[2]
    for pattern, replacement in _TORCHVISION_RULES:
        match = pattern.match(key)
        if match:
            return replacement(match) + key[match.end():]
    return key


# ---- ImageNet DenseNets (torchvision's configurations) ----

def _imagenet(block_config: tuple[int, ...], growth_rate: int = 32, init_channels: int = 64,
              **kwargs: Any) -> DenseNet:
    return DenseNet(block_config, growth_rate=growth_rate, init_channels=init_channels, bn_size=4, compression=0.5,
                    **kwargs)


@register_model(family="densenet", input_size=(3, 224, 224), skip="dense", paper=PAPER)
def densenet121(**kwargs: Any) -> DenseNet:
    """DenseNet-121: blocks (6, 12, 24, 16), growth 32; 7,978,856 parameters at 1000 classes."""
    return _imagenet((6, 12, 24, 16), **kwargs)


@register_model(family="densenet", input_size=(3, 224, 224), skip="dense", paper=PAPER)
def densenet161(**kwargs: Any) -> DenseNet:
    """DenseNet-161: blocks (6, 12, 36, 24), growth 48, 96 stem channels; 28,681,000 parameters at 1000 classes."""
    return _imagenet((6, 12, 36, 24), growth_rate=48, init_channels=96, **kwargs)


@register_model(family="densenet", input_size=(3, 224, 224), skip="dense", paper=PAPER)
def densenet169(**kwargs: Any) -> DenseNet:
    """DenseNet-169: blocks (6, 12, 32, 32), growth 32; 14,149,480 parameters at 1000 classes."""
    return _imagenet((6, 12, 32, 32), **kwargs)


@register_model(family="densenet", input_size=(3, 224, 224), skip="dense", paper=PAPER)
def densenet201(**kwargs: Any) -> DenseNet:
    """DenseNet-201: blocks (6, 12, 48, 32), growth 32; 20,013,928 parameters at 1000 classes."""
    return _imagenet((6, 12, 48, 32), **kwargs)


# ---- DenseNet-BC for CIFAR ----

def densenet_bc(
    depth: int = 100,
    growth_rate: int = 12,
    *,
    num_classes: int = 10,
    bottleneck: bool = True,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    in_channels: int = 3,
    skip: str = "dense",
) -> DenseNet:
    """The paper's CIFAR DenseNet: a 3x3 stem conv (``2k`` maps for BC, 16 otherwise), three dense blocks of
    equal length joined by transitions, BN-ReLU-pool-Linear.

    ``depth`` counts the convs plus the classifier: ``depth = 3n*(2 if bottleneck else 1) + 4`` for ``n`` layers
    per block (the stem, two transitions and the classifier make the 4).  ``bottleneck=False, compression=1.0``
    is the original DenseNet (L=40, k=12: 1.0M parameters).
    """
    check_positive("depth", depth)
    convs_per_layer = 2 if bottleneck else 1
    if (depth - 4) % (3 * convs_per_layer) != 0 or depth <= 4:
        valid = [3 * convs_per_layer * n + 4 for n in (1, 2, 6, 16)]
        raise ValueError(
            f"depth must be 4 + {3 * convs_per_layer}*n for n layers per block (bottleneck={bottleneck}); "
            f"got {depth!r}; valid depths include {valid}"
        )
    n = (depth - 4) // (3 * convs_per_layer)
    return DenseNet(
        (n, n, n), growth_rate=check_positive("growth_rate", growth_rate),
        init_channels=2 * growth_rate if bottleneck else 16, bn_size=4 if bottleneck else None,
        compression=compression, drop_rate=drop_rate, num_classes=num_classes, in_channels=in_channels,
        stem="cifar", skip=skip,
    )


@register_model(family="densenet", input_size=(3, 32, 32), skip="dense", paper=PAPER)
def densenet_bc_100_12(**kwargs: Any) -> DenseNet:
    """DenseNet-BC (L=100, k=12) for CIFAR: 769,162 parameters at 10 classes; ``depth``/``growth_rate`` override."""
    return densenet_bc(**kwargs)


# ---- Plain twins: the same nets with skip="none" ----

def _plain_twin(fn: Callable[..., DenseNet], input_size: tuple[int, ...]) -> Callable[..., DenseNet]:
    def entry(**kwargs: Any) -> DenseNet:
        if "skip" in kwargs:
            raise TypeError(f"plain_{fn.__name__} fixes skip='none'; build {fn.__name__}(skip=...) instead")
        return fn(skip="none", **kwargs)

    entry.__name__ = entry.__qualname__ = f"plain_{fn.__name__}"
    entry.__doc__ = f"Plain twin of {fn.__name__}: the same layers, each seeing only the previous layer's output."
    return register_model(entry, family="densenet", input_size=input_size, skip="none", paper=PAPER)


plain_densenet121 = _plain_twin(densenet121, (3, 224, 224))
plain_densenet161 = _plain_twin(densenet161, (3, 224, 224))
plain_densenet169 = _plain_twin(densenet169, (3, 224, 224))
plain_densenet201 = _plain_twin(densenet201, (3, 224, 224))
plain_densenet_bc_100_12 = _plain_twin(densenet_bc_100_12, (3, 32, 32))
