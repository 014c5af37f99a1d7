"""EfficientNet: parameter counts (torchvision's and Keras' trainable counts, B0-B7), the MBConv block, drop
connect, twins, torchvision-format checkpoints (an independent reference in torchvision's module layout).  Keras'
EfficientNetB0 is compared output for output in test_keras_weights.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.models.efficientnet import mbconv, round_filters

from foreign_checkpoints import assert_loads_like, randomise_


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("variant, count", [("b0", 5_288_548), ("b1", 7_794_184), ("b2", 9_109_994),
                                            ("b3", 12_233_232), ("b4", 19_341_616), ("b5", 30_389_784),
                                            ("b6", 43_040_704), ("b7", 66_347_960)])
def test_parameter_counts(variant: str, count: int) -> None:
    with torch.device("meta"):
        assert n_params(skiplab.create_model(f"efficientnet_{variant}")) == count
        assert n_params(skiplab.create_model(f"efficientnet_{variant}_keras")) == count


def test_blocks_skips_and_drop_connect() -> None:
    net = skiplab.create_model("efficientnet_b0", num_classes=3)
    assert [len(s) for s in net.stages] == [1, 2, 2, 3, 3, 4, 1] and count_skips(net) == 9
    rates = [b.drop_path.p for s in net.stages for b in s]
    assert rates[0] == 0.0 and max(rates) == pytest.approx(0.2 * 14 / 16)  # Keras: rate * block / blocks
    assert count_skips(skiplab.create_model("plain_efficientnet_b0")) == 0
    assert skiplab.create_model("highway_efficientnet_b0")(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
    assert [round_filters(c, 1.1) for c in (32, 16, 1280)] == [32, 16, 1408]
    torch.manual_seed(0)
    block = mbconv(8, 8, 3, 1, 6).eval()
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(block(x), x + block.branch(x))
    assert "se" in block.branch._modules and isinstance(block.branch.act2, nn.SiLU)
    with pytest.raises(ValueError, match="has a skip only where the shape is kept.*8->16 channels, stride 2"):
        mbconv(8, 16, 3, 2, 6)
    with pytest.raises(ValueError, match="variant must be one of 'b0'.*got 'b8'"):
        skiplab.models.efficientnet.EfficientNet("b8")


# --- torchvision's layout, written out independently ------------------------------------------------------
def cna(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: bool = True, eps: float = 1e-5
        ) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=eps)]
    return nn.Sequential(*layers, *([nn.SiLU()] if act else []))


class RefSE(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class RefMBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int, t: int, eps: float = 1e-5) -> None:
        super().__init__()
        hidden = cin * t
        layers = ([cna(cin, hidden, 1, eps=eps)] if t != 1 else []) + [cna(hidden, hidden, k, s, hidden, eps=eps),
                                                                        RefSE(hidden, max(1, cin // 4)),
                                                                        cna(hidden, cout, 1, act=False, eps=eps)]
        self.block = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.res else self.block(x)


class RefEfficientNetB0(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        feats: list[nn.Module] = [cna(3, 32, 3, 2)]
        for k, n, cin, cout, t, s in [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2),
                                      (3, 3, 40, 80, 6, 2), (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2),
                                      (3, 1, 192, 320, 6, 1)]:
            feats.append(nn.Sequential(*[RefMBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, t)
                                         for i in range(n)]))
        feats.append(cna(320, 1280, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def test_torchvision_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefEfficientNetB0(num_classes=7), seed=6)
    assert {"features.1.0.block.1.fc1.weight", "features.2.0.block.3.1.running_var", "features.8.0.weight",
            "classifier.1.bias"} <= set(ref.state_dict())
    assert_loads_like(ref, "efficientnet_b0", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)


@pytest.mark.parametrize("variant, count", [("v2_s", 21_458_488), ("v2_m", 54_139_356), ("v2_l", 118_515_272)])
def test_v2_parameter_counts(variant: str, count: int) -> None:
    with torch.device("meta"):
        assert n_params(skiplab.create_model(f"efficientnet_{variant}")) == count  # torchvision's
        assert n_params(skiplab.create_model(f"efficientnet_{variant}_keras")) == count


def test_v2_fused_blocks_keras_rounding_and_keras_only_variants() -> None:
    net = skiplab.create_model("efficientnet_v2_s", num_classes=3)
    kinds = [type(s[0]).__name__ for s in net.stages]
    assert kinds == ["FusedInvertedResidual"] * 3 + ["InvertedResidual"] * 3
    assert count_skips(net) == 40 - 5 and net.default_input_size == (3, 384, 384)  # 5 blocks change shape
    one = net.stages[0][0].branch  # expansion 1: one 3x3 convolution with its activation, no projection
    assert list(one._modules) == ["project", "bn3", "act3"] and one.project.kernel_size == (3, 3)
    assert list(net.stages[1][1].branch._modules) == ["expand", "bn1", "act1", "project", "bn3"]
    torch.manual_seed(0)
    block = net.stages[1][1].eval()
    x = torch.randn(2, 48, 6, 6)
    assert torch.allclose(block(x), x + block.branch(x))
    # Keras' EfficientNetV2 rounds widths without the 10% floor: B3's 16 * 1.2 -> 16 (EfficientNet's rule: 24)
    assert round_filters(16, 1.2, keep_90_percent=False) == 16 and round_filters(16, 1.2) == 24
    with torch.device("meta"):
        assert skiplab.create_model("efficientnet_v2_b3_keras").stages[0][0].branch.project.out_channels == 16
    with pytest.raises(ValueError, match="'v2_b0' exists in Keras' layout only"):
        skiplab.models.efficientnet.EfficientNet("v2_b0")


class RefFusedMBConv(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, t: int) -> None:
        super().__init__()
        layers = [cna(cin, cin * t, 3, s, eps=1e-3), cna(cin * t, cout, 1, act=False, eps=1e-3)] if t != 1 else \
            [cna(cin, cout, 3, s, eps=1e-3)]
        self.block = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.res else self.block(x)


class RefEfficientNetV2S(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        feats: list[nn.Module] = [cna(3, 24, 3, 2, eps=1e-3)]
        for fused, n, cin, cout, t, s in [(True, 2, 24, 24, 1, 1), (True, 4, 24, 48, 4, 2), (True, 4, 48, 64, 4, 2),
                                          (False, 6, 64, 128, 4, 2), (False, 9, 128, 160, 6, 1),
                                          (False, 15, 160, 256, 6, 2)]:
            feats.append(nn.Sequential(*[RefFusedMBConv(cin if i == 0 else cout, cout, s if i == 0 else 1, t) if fused
                                         else RefMBConv(cin if i == 0 else cout, cout, 3, s if i == 0 else 1, t, 1e-3)
                                         for i in range(n)]))
        feats.append(cna(256, 1280, 1, eps=1e-3))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def test_torchvision_v2_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefEfficientNetV2S(num_classes=7), seed=7)
    with torch.no_grad():  # 40 random residual branches at full scale grow the activations past float32's
        for m in ref.modules():  # agreement; smaller (still random) last-norm scales keep them comparable
            if isinstance(m, (RefMBConv, RefFusedMBConv)) and m.res:
                m.block[-1][1].weight.uniform_(0.1, 0.3)
    assert {"features.1.0.block.0.0.weight", "features.2.0.block.1.1.running_var", "features.4.0.block.2.fc1.bias",
            "features.7.0.weight", "classifier.1.bias"} <= set(ref.state_dict())
    assert_loads_like(ref, "efficientnet_v2_s", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)
