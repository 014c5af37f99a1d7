"""The plain reference the performance figures are measured against: ResNets written the straightforward eager
PyTorch way (NCHW, float32, no fusion, no compilation) and a training step that logs ``loss.item()`` every step.

Independent of skiplab's blocks on purpose — the architectures are re-derived from the papers so a bug in our
layers cannot hide in both sides of a comparison.  Same layers and the same initialisation as skiplab's models:

* CIFAR ResNet-(6n+2), He et al. 2015 (arXiv:1512.03385) section 4.2, option "A" shortcuts (subsample + zero-pad
  channels where the shape changes): ``cifar_resnet(20)`` == ``skiplab.create_model("resnet20")``.
* ImageNet ResNet-50 in torchvision's "v1.5" layout (stride on the bottleneck's 3x3, 1x1-conv+BN projection
  where the shape changes): ``resnet50()`` == ``skiplab.create_model("resnet50")``.

Initialisation (both): He-normal (fan_out, ReLU gain) convolution weights, BN scale 1 and shift 0, PyTorch's
default Linear init.  ``tests/test_reference.py`` checks the parameter counts and layer shapes against ours.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------------ CIFAR
class PadShortcut(nn.Module):
    """Option A: ``x[:, :, ::2, ::2]`` with zero channels appended."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class RefBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = PadShortcut(cout - cin) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class RefCifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2; got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                layers.append(RefBasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def cifar_resnet(depth: int, num_classes: int = 10) -> RefCifarResNet:
    return RefCifarResNet(depth, num_classes)


# --------------------------------------------------------------------------------------------------- ImageNet
class RefBottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * 4
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class RefResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, (mid, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            for j in range(n):
                layers.append(RefBottleneck(cin, mid, 2 if (i > 0 and j == 0) else 1))
                cin = mid * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def resnet50(num_classes: int = 1000) -> RefResNet50:
    return RefResNet50(num_classes)


REFERENCE_MODELS = {"resnet20": partial(cifar_resnet, 20), "resnet56": partial(cifar_resnet, 56),
                    "resnet110": partial(cifar_resnet, 110), "resnet50": resnet50}


def reference_model(name: str, **kwargs: int) -> nn.Module:
    """The reference twin of skiplab model ``name`` (kwargs: ``num_classes``)."""
    if name not in REFERENCE_MODELS:
        raise ValueError(f"reference model must be one of {', '.join(REFERENCE_MODELS)}; got {name!r}")
    return REFERENCE_MODELS[name](**kwargs)


# ----------------------------------------------------------------------------------------------- training step
class ReferenceTrainer:
    """The usual loop body: SGD (momentum 0.9, weight decay 1e-4, PyTorch's default implementation),
    ``zero_grad``, forward, cross-entropy, backward, step, and ``loss.item()`` logged every step."""

    def __init__(self, model: nn.Module, lr: float = 0.1) -> None:
        self.model = model.train()
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        self.losses: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.losses.append(loss.item())
