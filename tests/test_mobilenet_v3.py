"""MobileNetV3-Large/Small: counts (torchvision's; Keras' totals), which blocks carry a skip, the hard-sigmoid gate,
and torchvision-format checkpoints (an independent reference written in torchvision's module layout).  Keras'
MobileNetV3Large/Small are compared output for output in test_keras_weights.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.layers.squeeze_excite import SqueezeExcite
from skiplab.models.mobilenet_v3 import MobileNetV3

from foreign_checkpoints import assert_loads_like, randomise_


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def bn_stats(m: nn.Module) -> int:
    return sum(b.numel() for k, b in m.named_buffers() if k.endswith(("running_mean", "running_var")))


@pytest.mark.parametrize("variant, params, keras_total, skips",
                         [("large", 5_483_032, 5_507_432, 10), ("small", 2_542_856, 2_554_968, 6)])
def test_counts_and_skips(variant: str, params: int, keras_total: int, skips: int) -> None:
    for name in (f"mobilenet_v3_{variant}", f"mobilenet_v3_{variant}_keras", f"plain_mobilenet_v3_{variant}"):
        with torch.device("meta"):
            m = skiplab.create_model(name)
        assert n_params(m) == params and n_params(m) + bn_stats(m) == keras_total  # torchvision's; Keras' total
    assert count_skips(skiplab.create_model(f"mobilenet_v3_{variant}")) == skips  # the blocks that keep their shape
    assert count_skips(skiplab.create_model(f"plain_mobilenet_v3_{variant}")) == 0


def test_width_follows_each_library() -> None:
    with torch.device("meta"):
        tv = skiplab.create_model("mobilenet_v3_large", width=0.5)
        keras = skiplab.create_model("mobilenet_v3_large_keras", width=0.5)
    assert tv.head.hidden.out_features == 640 and keras.head.hidden.out_features == 1280  # Keras keeps 1280 below 1
    assert tv.stem.conv.out_channels == 8 and keras.stem.conv.out_channels == 16  # Keras never scales its stem
    assert {m.momentum for m in tv.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}  # torchvision's


def test_squeeze_excite_gate_is_the_hard_sigmoid() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(8, 4, act="relu", gate="hardsigmoid")
    x = torch.randn(2, 8, 5, 5) * 3
    z = se.expand(F.relu(se.reduce(x.mean((2, 3), keepdim=True))))
    torch.testing.assert_close(se(x), x * F.relu6(z + 3) / 6)
    with pytest.raises(ValueError, match="gate must be one of 'sigmoid', 'hardsigmoid'; got 'tanh'"):
        SqueezeExcite(8, 4, gate="tanh")
    with pytest.raises(ValueError, match="variant must be one of 'large', 'small'; got 'medium'"):
        MobileNetV3("medium")


# --- torchvision's layout, written out independently ------------------------------------------------------
def cna(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=1e-3)]
    return nn.Sequential(*layers, *([act()] if act else []))


class RefSE(nn.Module):
    def __init__(self, c: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class RefBlock(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, s: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers = ([cna(cin, exp, 1, act=act)] if exp != cin else []) + [cna(exp, exp, k, s, exp, act)]
        layers += ([RefSE(exp, max(8, (exp // 4 + 4) // 8 * 8))] if se else []) + [cna(exp, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.res else self.block(x)


SMALL_TABLE = [(16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
               (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
               (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
               (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1)]


class RefMobileNetV3Small(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(cna(3, 16, 3, 2, act=nn.Hardswish), *[RefBlock(*row) for row in SMALL_TABLE],
                                      cna(96, 576, 1, act=nn.Hardswish))
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def test_torchvision_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefMobileNetV3Small(num_classes=7), seed=3)
    assert n_params(ref) == n_params(skiplab.create_model("mobilenet_v3_small", num_classes=7))
    assert {"features.1.block.1.fc1.weight", "features.2.block.0.0.weight", "features.12.1.running_var",
            "classifier.3.bias"} <= set(ref.state_dict())
    assert_loads_like(ref, "mobilenet_v3_small", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)
