"""RegNetX/Y: torchvision's parameter counts, the paper's stage widths from the quantized linear rule, the
squeeze-excite unit, twins, and torchvision-format checkpoints (an independent reference in torchvision's module
layout, its stage widths written out rather than derived)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.models.regnet import VARIANTS, RegNet, regnet_stages

from foreign_checkpoints import assert_loads_like, randomise_

COUNTS = {"x_400mf": 5_495_976, "x_800mf": 7_259_656, "x_1_6gf": 9_190_136, "x_3_2gf": 15_296_552,
          "x_8gf": 39_572_648, "x_16gf": 54_278_536, "x_32gf": 107_811_560, "y_400mf": 4_344_144,
          "y_800mf": 6_432_512, "y_1_6gf": 11_202_430, "y_3_2gf": 19_436_338, "y_8gf": 39_381_472,
          "y_16gf": 83_590_140, "y_32gf": 145_046_770, "y_128gf": 644_812_894}  # torchvision's num_params


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("variant", sorted(COUNTS))
def test_parameter_counts(variant: str) -> None:
    with torch.device("meta"):
        assert n_params(skiplab.create_model(f"regnet_{variant}")) == COUNTS[variant]
        assert n_params(skiplab.create_model(f"plain_regnet_{variant}")) < COUNTS[variant]  # no projections


def test_stage_widths_are_the_papers() -> None:
    assert regnet_stages(*VARIANTS["y_400mf"][:5]) == [(48, 1, 8), (104, 3, 8), (208, 6, 8), (440, 6, 8)]
    assert regnet_stages(*VARIANTS["x_400mf"][:5]) == [(32, 1, 16), (64, 2, 16), (160, 7, 16), (400, 12, 16)]
    with pytest.raises(ValueError, match="w0 > 0 a multiple of 8.*got w0=20"):
        regnet_stages(10, 20, 10.0, 2.0, 8)
    with pytest.raises(ValueError, match="variant must be one of 'x_400mf'.*got 'z_1gf'"):
        RegNet("z_1gf")


def test_units_skips_and_squeeze_excite() -> None:
    net = skiplab.create_model("regnet_y_400mf", num_classes=3)
    assert count_skips(net) == 16 and count_skips(skiplab.create_model("plain_regnet_y_400mf")) == 0
    unit = net.stages[1][1]
    assert unit.branch.conv2.groups == 104 // 8 and unit.branch.se.reduce.out_channels == 26  # 0.25 x its input
    assert net.stages[1][0].branch.se.reduce.out_channels == 12  # the first unit's input is 48 wide
    assert "se" not in skiplab.create_model("regnet_x_400mf").stages[0][0].branch._modules
    torch.manual_seed(0)
    unit.eval()
    x = torch.randn(2, 104, 5, 5)
    assert torch.allclose(unit(x), F.relu(x + unit.branch(x)))
    assert skiplab.create_model("highway_regnet_x_400mf")(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


# --- torchvision's layout, written out independently ------------------------------------------------------
def cna(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU()] if act else []))


class RefSE(nn.Module):
    def __init__(self, c: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class RefUnit(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, g: int) -> None:
        super().__init__()
        self.proj = cna(cin, cout, 1, s, act=False) if cin != cout or s != 1 else None
        self.f = nn.Sequential()
        self.f.add_module("a", cna(cin, cout, 1))
        self.f.add_module("b", cna(cout, cout, 3, s, cout // g))
        self.f.add_module("se", RefSE(cout, round(0.25 * cin)))
        self.f.add_module("c", cna(cout, cout, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu((self.proj(x) if self.proj is not None else x) + self.f(x))


class RefRegNetY400MF(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = cna(3, 32, 3, 2)
        self.trunk_output = nn.Sequential()
        cin = 32
        for i, (w, d) in enumerate([(48, 1), (104, 3), (208, 6), (440, 6)], start=1):
            stage = nn.Sequential()
            for j in range(d):
                stage.add_module(f"block{i}-{j}", RefUnit(cin if j == 0 else w, w, 2 if j == 0 else 1, 8))
            self.trunk_output.add_module(f"block{i}", stage)
            cin = w
        self.fc = nn.Linear(440, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.trunk_output(self.stem(x)), 1).flatten(1))


def test_torchvision_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefRegNetY400MF(num_classes=7), seed=4)
    assert n_params(ref) == n_params(skiplab.create_model("regnet_y_400mf", num_classes=7))
    assert {"stem.0.weight", "trunk_output.block2.block2-0.proj.1.running_var",
            "trunk_output.block3.block3-5.f.se.fc2.bias", "fc.weight"} <= set(ref.state_dict())
    assert_loads_like(ref, "regnet_y_400mf", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)


def timm_cna(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Module:
    """timm's ConvNormAct: ``.conv`` and ``.bn`` (the activation is applied by the caller here)."""
    m = nn.Module()
    m.conv, m.bn = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    return m


class RefTimmUnit(nn.Module):
    """timm's RegNet Bottleneck: ConvNormAct (``.conv``, ``.bn``) x3, SEModule (``fc1``, ``fc2``), ``downsample``."""

    def __init__(self, cin: int, cout: int, s: int, g: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = timm_cna(cin, cout, 1), timm_cna(cout, cout, 3, s, cout // g)
        self.conv3 = timm_cna(cout, cout, 1)
        self.se = nn.Module()
        self.se.fc1, self.se.fc2 = nn.Conv2d(cout, round(0.25 * cin), 1), nn.Conv2d(round(0.25 * cin), cout, 1)
        self.downsample = timm_cna(cin, cout, 1, s) if cin != cout or s != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1.bn(self.conv1.conv(x)))
        y = F.relu(self.conv2.bn(self.conv2.conv(y)))
        y = y * torch.sigmoid(self.se.fc2(F.relu(self.se.fc1(y.mean((2, 3), keepdim=True)))))
        y = self.conv3.bn(self.conv3.conv(y))
        return F.relu(y + (x if self.downsample is None else self.downsample.bn(self.downsample.conv(x))))


class RefTimmRegNetY400MF(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv, self.stem.bn = nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32)
        cin = 32
        for i, (w, d) in enumerate([(48, 1), (104, 3), (208, 6), (440, 6)], start=1):
            stage = nn.Module()
            for j in range(1, d + 1):
                setattr(stage, f"b{j}", RefTimmUnit(cin if j == 1 else w, w, 2 if j == 1 else 1, 8))
            setattr(self, f"s{i}", stage)
            cin = w
        self.head = nn.Module()
        self.head.fc = nn.Linear(440, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem.bn(self.stem.conv(x)))
        for i in range(1, 5):
            for block in getattr(self, f"s{i}").children():
                x = block(x)
        return self.head.fc(x.mean((2, 3)))


def test_timm_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefTimmRegNetY400MF(num_classes=7), seed=9)
    assert {"stem.conv.weight", "s2.b1.downsample.bn.running_var", "s3.b6.se.fc2.bias", "head.fc.weight"} <= set(
        ref.state_dict())
    assert_loads_like(ref, "regnet_y_400mf", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)
