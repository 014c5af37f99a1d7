"""EfficientNet: parameter counts (torchvision's and Keras' trainable counts, B0-B7), the MBConv block, drop
connect, twins.  Keras' EfficientNetB0 is compared output for output in test_keras_weights.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.models.efficientnet import mbconv, round_filters


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("variant, count", [("b0", 5_288_548), ("b1", 7_794_184), ("b2", 9_109_994),
                                            ("b3", 12_233_232), ("b4", 19_341_616), ("b5", 30_389_784),
                                            ("b6", 43_040_704), ("b7", 66_347_960)])
def test_parameter_counts(variant: str, count: int) -> None:
    with torch.device("meta"):
        assert n_params(skiplab.create_model(f"efficientnet_{variant}")) == count


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
