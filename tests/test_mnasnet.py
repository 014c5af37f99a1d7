"""MNASNet: torchvision's counts for the four widths, which blocks carry a skip, and torchvision-format
checkpoints (an independent reference in torchvision's flat module layout)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.models.mnasnet import MNASNet

from foreign_checkpoints import assert_loads_like, randomise_


@pytest.mark.parametrize("name, count", [("mnasnet0_5", 2_218_512), ("mnasnet0_75", 3_170_208),
                                         ("mnasnet1_0", 4_383_312), ("mnasnet1_3", 6_282_256)])
def test_parameter_counts(name: str, count: int) -> None:
    with torch.device("meta"):
        assert sum(p.numel() for p in skiplab.create_model(name).parameters()) == count  # torchvision's


def test_skips_and_arguments() -> None:
    net = skiplab.create_model("mnasnet1_0")
    assert [len(s) for s in net.stages] == [3, 3, 3, 2, 4, 1] and count_skips(net) == 10
    assert count_skips(skiplab.create_model("plain_mnasnet1_0")) == 0
    assert all(m.momentum == pytest.approx(3e-4) for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="alpha must be a positive number.*got 0"):
        MNASNet(0)


# --- torchvision's layout, written out independently ------------------------------------------------------
class RefBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int, t: int) -> None:
        super().__init__()
        mid = cin * t
        self.apply_residual = cin == cout and s == 1
        self.layers = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                    nn.Conv2d(mid, mid, k, s, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
                                    nn.ReLU(), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x) if self.apply_residual else self.layers(x)


class RefMNASNet1_0(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16)]
        for cin, cout, k, s, t, n in [(16, 24, 3, 2, 3, 3), (24, 40, 5, 2, 3, 3), (40, 80, 5, 2, 6, 3),
                                      (80, 96, 3, 1, 6, 2), (96, 192, 5, 2, 6, 4), (192, 320, 3, 1, 6, 1)]:
            layers.append(nn.Sequential(*[RefBlock(cin if i == 0 else cout, cout, k, s if i == 0 else 1, t)
                                          for i in range(n)]))
        layers += [nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(x).mean([2, 3]))


def test_torchvision_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefMNASNet1_0(num_classes=7), seed=8)
    assert {"layers.0.weight", "layers.7.running_var", "layers.9.2.layers.3.weight", "layers.15.bias",
            "classifier.1.weight"} <= set(ref.state_dict())
    assert_loads_like(ref, "mnasnet1_0", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)
