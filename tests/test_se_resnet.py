"""SE-ResNet / SE-ResNeXt (Hu et al. 2018) in timm's layout: counts, where the gate sits, zero-init, and timm's
checkpoints (an independent reference: torchvision's ResNet with timm's ``se.fc1``/``se.fc2`` gate on each block's
output)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import skiplab
from skiplab.blocks.base import zero_init_last
from skiplab.blocks.residual import Bottleneck

from foreign_checkpoints import assert_loads_like, randomise_
from test_weights import RefBottleneck, RefResNet

COUNTS = {"seresnet50": 28_088_024, "seresnet101": 49_326_872, "seresnet152": 66_821_848,
          "seresnext50_32x4d": 27_559_896, "seresnext101_32x8d": 93_569_048,  # timm's published counts
          # current timm's gate width rule (1/16, a multiple of 8: 64 channels -> 8; older timm used 4)
          "seresnet18": 11_779_624, "seresnet34": 21_960_416}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_counts(name: str) -> None:
    with torch.device("meta"):
        assert sum(p.numel() for p in skiplab.create_model(name).parameters()) == COUNTS[name]


def test_gate_on_the_block_output_and_zero_init() -> None:
    net = skiplab.create_model("seresnet50", num_classes=3)
    branch = net.stages[2][0].branch
    assert list(branch._modules)[-1] == "se" and branch.se.reduce.out_channels == 1024 // 16
    torch.manual_seed(0)
    block = zero_init_last(net).stages[1][1].eval()  # zeroes bn3, not the gate: F = 0.5 * 0 stays 0
    x = torch.randn(2, 512, 4, 4).relu()
    torch.testing.assert_close(block(x), x)
    with pytest.raises(ValueError, match="se_position must be 'mid'.*got 'pre'"):
        Bottleneck(64, 256, se_channels=16, se_position="pre")
    with pytest.raises(ValueError, match="se_ratio must be a number in \\[0, 1\\); got 2"):
        skiplab.create_model("resnet50", se_ratio=2)
    with pytest.raises(ValueError, match="without squeeze-excite"):
        net.to_torchvision_state_dict()


class RefSE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 16, 1), nn.Conv2d(c // 16, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class RefSEBottleneck(RefBottleneck):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        self.se = RefSE(planes * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.se(self.bn3(self.conv3(out))) + identity)


def test_timm_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefResNet(RefSEBottleneck, [3, 4, 6, 3], num_classes=7), seed=31)
    assert {"layer1.0.se.fc1.weight", "layer4.2.se.fc2.bias", "layer2.0.downsample.1.running_var"} <= set(
        ref.state_dict())
    assert_loads_like(ref, "seresnet50", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)
