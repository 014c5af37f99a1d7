"""timm's EfficientNet-family checkpoints (``conv_stem``, ``blocks.S.B.*``, ``conv_head``) load into skiplab's
EfficientNet, EfficientNetV2, MobileNetV2 and MobileNetV3: independent references written in timm's module layout
(its attribute names and its own cut of the stages), random weights, outputs compared.  timm itself needs
torchvision, which cannot be installed beside this CPU torch; benchmarks/peer_check.py compares with the real
library where it is installed."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from foreign_checkpoints import assert_loads_like, randomise_


def bn(c: int, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=eps)


class RefSE(nn.Module):
    def __init__(self, c: int, rd: int, act: type, gate: type) -> None:
        super().__init__()
        self.conv_reduce, self.act1 = nn.Conv2d(c, rd, 1), act()
        self.conv_expand, self.gate = nn.Conv2d(rd, c, 1), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class RefBlock(nn.Module):
    """timm's DepthwiseSeparableConv (mid == cin) or InvertedResidual, with its attribute names."""

    def __init__(self, cin: int, cout: int, k: int, s: int, mid: int, se: int, act: type, gate: type, eps: float):
        super().__init__()
        self.act, self.separable = act(), mid == cin
        self.has_skip = s == 1 and cin == cout
        if not self.separable:
            self.conv_pw, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), bn(mid, eps)
        self.conv_dw = nn.Conv2d(mid, mid, k, s, k // 2, groups=mid, bias=False)
        if self.separable:
            self.bn1 = bn(mid, eps)
        else:
            self.bn2 = bn(mid, eps)
        self.se = RefSE(mid, se, nn.ReLU if gate is nn.Hardsigmoid else act, gate) if se else nn.Identity()
        if self.separable:
            self.conv_pw, self.bn2 = nn.Conv2d(mid, cout, 1, bias=False), bn(cout, eps)
        else:
            self.conv_pwl, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), bn(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.separable:
            y = self.bn2(self.conv_pw(self.se(self.act(self.bn1(self.conv_dw(x))))))
        else:
            y = self.act(self.bn1(self.conv_pw(x)))
            y = self.bn3(self.conv_pwl(self.se(self.act(self.bn2(self.conv_dw(y))))))
        return x + y if self.has_skip else y


class RefFused(nn.Module):
    """timm's ConvBnAct (skip where the shape is kept: EfficientNetV2's first stage) or EdgeResidual."""

    def __init__(self, cin: int, cout: int, s: int, t: int, eps: float) -> None:
        super().__init__()
        self.t, self.has_skip = t, s == 1 and cin == cout
        if t == 1:
            self.conv, self.bn1 = nn.Conv2d(cin, cout, 3, s, 1, bias=False), bn(cout, eps)
        else:
            self.conv_exp, self.bn1 = nn.Conv2d(cin, cin * t, 3, s, 1, bias=False), bn(cin * t, eps)
            self.conv_pwl, self.bn2 = nn.Conv2d(cin * t, cout, 1, bias=False), bn(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.t == 1:
            y = F.silu(self.bn1(self.conv(x)))
        else:
            y = self.bn2(self.conv_pwl(F.silu(self.bn1(self.conv_exp(x)))))
        return x + y if self.has_skip else y


class RefConvBnAct(nn.Module):
    """timm's ConvBnAct: MobileNetV3's last 1x1 convolution, a block of timm's last stage."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn1 = nn.Conv2d(cin, cout, 1, bias=False), bn(cout, 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(self.bn1(self.conv(x)))


class RefTimmNet(nn.Module):
    def __init__(self, stem: int, stages: list[list[nn.Module]], last: int, head: int, num_classes: int, *,
                 act: type, eps: float, head_on_pooled: bool = False) -> None:
        super().__init__()
        self.act, self.head_on_pooled = act(), head_on_pooled
        self.conv_stem, self.bn1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False), bn(stem, eps)
        self.blocks = nn.Sequential(*[nn.Sequential(*s) for s in stages])
        self.conv_head = nn.Conv2d(last, head, 1, bias=head_on_pooled)
        if not head_on_pooled:
            self.bn2 = bn(head, eps)
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.bn1(self.conv_stem(x))))
        if self.head_on_pooled:  # MobileNetV3: pool, then a biased 1x1 convolution
            return self.classifier(self.act(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1))
        return self.classifier(self.act(self.bn2(self.conv_head(x))).mean((2, 3)))


def test_timm_efficientnet_b0_loads(tmp_path: Path) -> None:
    stages, cin = [], 32
    for k, n, cout, t, s in [(3, 1, 16, 1, 1), (3, 2, 24, 6, 2), (5, 2, 40, 6, 2), (3, 3, 80, 6, 2), (5, 3, 112, 6, 1),
                             (5, 4, 192, 6, 2), (3, 1, 320, 6, 1)]:
        stage = []
        for i in range(n):
            c = cin if i == 0 else cout
            stage.append(RefBlock(c, cout, k, s if i == 0 else 1, c * t, max(1, int(c * 0.25)), nn.SiLU, nn.Sigmoid,
                                  1e-5))
        stages.append(stage)
        cin = cout
    ref = randomise_(RefTimmNet(32, stages, 320, 1280, 7, act=nn.SiLU, eps=1e-5), seed=11)
    assert {"conv_stem.weight", "blocks.0.0.conv_dw.weight", "blocks.0.0.se.conv_reduce.bias", "blocks.0.0.bn2.bias",
            "blocks.5.3.conv_pwl.weight", "conv_head.weight", "bn2.running_var",
            "classifier.bias"} <= set(ref.state_dict())
    assert_loads_like(ref, "efficientnet_b0", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)


def test_timm_mobilenetv3_small_loads_with_its_norm_epsilon(tmp_path: Path) -> None:
    # timm's own cut: ds | ir ir | ir ir ir | ir ir | ir ir ir | cn (the last 1x1 convolution is a block there)
    rows = [[(3, 16, 16, True, False, 2)], [(3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1)],
            [(5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1)],
            [(5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1)],
            [(5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)]]
    stages, cin = [], 16
    for row in rows:
        stage = []
        for k, mid, cout, se, hs, s in row:
            stage.append(RefBlock(cin, cout, k, s, mid, max(8, (mid // 4 + 4) // 8 * 8) if se else 0,
                                  nn.Hardswish if hs else nn.ReLU, nn.Hardsigmoid, 1e-5))
            cin = cout
        stages.append(stage)
    stages.append([RefConvBnAct(96, 576)])
    ref = randomise_(RefTimmNet(16, stages, 576, 1024, 7, act=nn.Hardswish, eps=1e-5, head_on_pooled=True), seed=12)
    assert {"blocks.0.0.se.conv_expand.weight", "blocks.5.0.conv.weight", "blocks.5.0.bn1.running_mean",
            "conv_head.bias"} <= set(ref.state_dict())
    assert_loads_like(ref, "mobilenet_v3_small", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7, bn_eps=1e-5)


def test_timm_efficientnetv2_fused_blocks_load(tmp_path: Path) -> None:
    stages, cin = [], 24
    for fused, n, cout, t, s in [(True, 2, 24, 1, 1), (True, 4, 48, 4, 2), (True, 4, 64, 4, 2), (False, 6, 128, 4, 2),
                                 (False, 9, 160, 6, 1), (False, 15, 256, 6, 2)]:
        stage = []
        for i in range(n):
            c = cin if i == 0 else cout
            stage.append(RefFused(c, cout, s if i == 0 else 1, t, 1e-3) if fused else
                         RefBlock(c, cout, 3, s if i == 0 else 1, c * t, max(1, int(c * 0.25)), nn.SiLU, nn.Sigmoid,
                                  1e-3))
        stages.append(stage)
        cin = cout
    ref = randomise_(RefTimmNet(24, stages, 256, 1280, 7, act=nn.SiLU, eps=1e-3), seed=13)
    with torch.no_grad():  # 40 random branches at full scale outgrow float32's agreement (test_efficientnet.py)
        for m in ref.modules():
            if isinstance(m, (RefBlock, RefFused)) and m.has_skip:
                last = [c for c in m.children() if isinstance(c, nn.BatchNorm2d)][-1]
                last.weight.uniform_(0.1, 0.3)
    assert {"blocks.0.1.conv.weight", "blocks.1.0.conv_exp.weight", "blocks.1.0.bn2.bias",
            "blocks.3.0.conv_pw.weight"} <= set(ref.state_dict())
    assert_loads_like(ref, "efficientnet_v2_s", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)


def test_timm_mobilenetv2_loads(tmp_path: Path) -> None:
    stages, cin = [], 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        stages.append([RefBlock(cin if i == 0 else c, c, 3, s if i == 0 else 1, (cin if i == 0 else c) * t, 0,
                                nn.ReLU6, nn.Sigmoid, 1e-5) for i in range(n)])
        cin = c
    ref = randomise_(RefTimmNet(32, stages, 320, 1280, 7, act=nn.ReLU6, eps=1e-5), seed=14)
    assert_loads_like(ref, "mobilenet_v2", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)


def test_timm_mnasnet_loads(tmp_path: Path) -> None:
    # timm's mnasnet_100: conv_stem, then a separable block 32 -> 16 (our stem's tail), then the stages
    stages: list[list[nn.Module]] = [[RefBlock(32, 16, 3, 1, 32, 0, nn.ReLU, nn.Sigmoid, 1e-5)]]
    cin = 16
    for k, s, t, n, cout in [(3, 2, 3, 3, 24), (5, 2, 3, 3, 40), (5, 2, 6, 3, 80), (3, 1, 6, 2, 96), (5, 2, 6, 4, 192),
                             (3, 1, 6, 1, 320)]:
        stages.append([RefBlock(cin if i == 0 else cout, cout, k, s if i == 0 else 1, (cin if i == 0 else cout) * t,
                                0, nn.ReLU, nn.Sigmoid, 1e-5) for i in range(n)])
        cin = cout
    ref = randomise_(RefTimmNet(32, stages, 320, 1280, 7, act=nn.ReLU, eps=1e-5), seed=15)
    assert {"blocks.0.0.conv_dw.weight", "blocks.0.0.bn2.running_var", "blocks.6.0.conv_pwl.weight"} <= set(
        ref.state_dict())
    assert_loads_like(ref, "mnasnet1_0", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)
