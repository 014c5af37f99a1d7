"""Inception-ResNet-v2: Keras' count, the scaled residual unit, the last unit, the smallest input, BatchNorm without
a scale.  Keras' InceptionResNetV2 is compared output for output in test_keras_weights.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.blocks.inception import InceptionResidual
from skiplab.layers.norm_act import BatchNorm2dNoScale


def test_counts_units_and_scales() -> None:
    with torch.device("meta"):
        net = skiplab.create_model("inception_resnet_v2")
    params = sum(p.numel() for p in net.parameters())
    stats = sum(b.numel() for k, b in net.named_buffers() if k.endswith(("running_mean", "running_var")))
    assert params == 55_813_192 and params + stats == 55_873_736  # Keras' trainable and total counts
    units = [u for s in net.stages for u in s if isinstance(u, InceptionResidual)]
    assert [u.branch_scale for u in units] == [0.17] * 10 + [0.1] * 20 + [0.2] * 9 + [1.0]
    assert count_skips(net) == 40 and count_skips(skiplab.create_model("plain_inception_resnet_v2")) == 0


def test_unit_is_relu_of_input_plus_scaled_branch() -> None:
    torch.manual_seed(0)
    net = skiplab.create_model("inception_resnet_v2", num_classes=3).eval()
    unit, last = net.stages[1][1], net.stages[2][-1]
    x = torch.randn(1, 1088, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), F.relu(x + 0.1 * unit.branch(x)))
        y = torch.randn(1, 2080, 3, 3)
        torch.testing.assert_close(last(y), y + last.branch(y))  # the last unit: scale 1, no ReLU


def test_smallest_input_and_norm_without_scale() -> None:
    net = skiplab.create_model("inception_resnet_v2", num_classes=3).eval()
    assert net(torch.randn(1, 3, 75, 75)).shape == (1, 3)
    with pytest.raises(ValueError, match="needs at least 75x75"):
        net(torch.randn(1, 3, 74, 74))
    bn = BatchNorm2dNoScale(4).eval()
    assert bn.weight is None and [n for n, _ in bn.named_parameters()] == ["bias"]
    with torch.no_grad():
        bn.bias.copy_(torch.arange(4.0))
        bn.running_var.fill_(4.0)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(bn(x), x / (4.0 + 1e-3) ** 0.5 + torch.arange(4.0).view(1, 4, 1, 1))
