"""MobileNetV2: counts (torchvision's, Keras'), which blocks carry a skip, the linear bottleneck, TensorFlow's "same"
padding, and torchvision-format checkpoints (an independent reference in torchvision's module layout).  Keras'
MobileNetV2 is compared output for output in test_keras_weights.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.blocks.inverted_residual import InvertedResidual, SamePad2d
from skiplab.models.mobilenet import make_divisible

from foreign_checkpoints import assert_loads_like, randomise_


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_counts_skips_and_width() -> None:
    for name in ("mobilenet_v2", "mobilenet_v2_keras", "plain_mobilenet_v2"):
        with torch.device("meta"):
            m = skiplab.create_model(name)
        stats = sum(b.numel() for k, b in m.named_buffers() if k.endswith(("running_mean", "running_var")))
        assert n_params(m) == 3_504_872 and n_params(m) + stats == 3_538_984  # torchvision's; Keras' total
    assert count_skips(skiplab.create_model("mobilenet_v2")) == 10  # the blocks that keep their shape
    assert count_skips(skiplab.create_model("plain_mobilenet_v2")) == 0
    assert [make_divisible(c * 0.35) for c in (32, 16, 24)] == [16, 8, 8] and make_divisible(1280 * 1.4) == 1792
    with torch.device("meta"):
        assert n_params(skiplab.create_model("mobilenet_v2", width=0.5)) == 1_968_680  # torchvision width_mult=0.5


def test_block_is_linear_bottleneck_with_skip_only_where_the_shape_is_kept() -> None:
    torch.manual_seed(0)
    block = InvertedResidual(8, 8, 1, 6).eval()
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(block(x), x + block.branch(x)) and (block.branch(x) < 0).any()  # no ReLU after the sum
    assert InvertedResidual(8, 16, 2, 6, skip="none")(x).shape == (2, 16, 3, 3)
    with pytest.raises(ValueError, match="has a skip only where the shape is kept.*8->16 channels, stride 2"):
        InvertedResidual(8, 16, 2, 6)
    with pytest.raises(ValueError, match="padding must be 'torch' or 'tf'; got 'valid'"):
        InvertedResidual(8, 8, 1, 6, padding="valid")


def test_tf_same_padding() -> None:
    x = torch.randn(1, 1, 6, 7)
    padded = SamePad2d(3, 2)(x)
    assert padded.shape == (1, 1, 7, 9)  # even height: 0 top, 1 bottom; odd width: 1 and 1
    assert torch.equal(padded[0, 0, :6, 1:8], x[0, 0]) and padded[0, 0, 6].abs().sum() == 0


# --- torchvision's layout, written out independently ------------------------------------------------------
def conv_bn_act(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6())


class RefInverted(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers = ([conv_bn_act(cin, hidden, 1)] if t != 1 else []) + [conv_bn_act(hidden, hidden, 3, s, hidden),
                                                                      nn.Conv2d(hidden, cout, 1, bias=False),
                                                                      nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.res else self.conv(x)


class RefMobileNetV2(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        feats: list[nn.Module] = [conv_bn_act(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                           (6, 320, 1, 1)]:
            for i in range(n):
                feats.append(RefInverted(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(conv_bn_act(cin, 1280, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def test_torchvision_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    ref = randomise_(RefMobileNetV2(num_classes=7), seed=5)
    assert {"features.1.conv.0.0.weight", "features.2.conv.1.0.weight", "features.18.1.running_var",
            "classifier.1.weight"} <= set(ref.state_dict())
    assert_loads_like(ref, "mobilenet_v2", tmp_path, torch.randn(2, 3, 64, 64), num_classes=7)
