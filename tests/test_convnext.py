"""ConvNeXt: torchvision's parameter counts, the block's formula, twins, and torchvision-format checkpoints (an
independent reference written the way torchvision's convnext.py lays its modules out).  Keras Applications'
ConvNeXtTiny is compared output for output in test_keras_weights.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.blocks.convnext import ConvNeXtBlock


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name, count", [("convnext_tiny", 28_589_128), ("convnext_small", 50_223_688),
                                         ("convnext_base", 88_591_464), ("convnext_large", 197_767_336),
                                         ("convnext_xlarge", 350_196_968)])  # xlarge: timm's and Keras' count
def test_parameter_counts_equal_torchvisions(name: str, count: int) -> None:
    with torch.device("meta"):
        assert n_params(skiplab.create_model(name)) == count


def test_block_is_x_plus_scaled_mlp_of_normed_depthwise_conv() -> None:
    torch.manual_seed(0)
    block = ConvNeXtBlock(8, layer_scale=0.5).eval()
    x = torch.randn(2, 8, 9, 9)
    b = block.branch
    h = F.conv2d(x, b.dwconv.weight, b.dwconv.bias, padding=3, groups=8).permute(0, 2, 3, 1)
    h = F.linear(F.gelu(F.linear(F.layer_norm(h, (8,), b.norm.weight, b.norm.bias, 1e-6), b.pwconv1.weight,
                                 b.pwconv1.bias)), b.pwconv2.weight, b.pwconv2.bias)
    torch.testing.assert_close(block(x), x + 0.5 * h.permute(0, 3, 1, 2))
    assert b.pwconv1.out_features == 32 and torch.all(ConvNeXtBlock(8).branch.scale.gamma == 1e-6)


def test_twins_and_stochastic_depth() -> None:
    res = skiplab.create_model("convnext_tiny", width=0.125, num_classes=3)
    plain = skiplab.create_model("plain_convnext_tiny", width=0.125, num_classes=3)
    highway = skiplab.create_model("highway_convnext_tiny", width=0.125, num_classes=3)
    assert count_skips(res) == 18 and count_skips(plain) == 0 and n_params(plain) == n_params(res)
    assert n_params(highway) > n_params(res)  # the gates
    x = torch.randn(2, 3, 32, 32)
    for m in (res, plain, highway):
        assert m(x).shape == (2, 3)
    sd = skiplab.create_model("convnext_tiny", width=0.125, drop_path_rate=0.2)
    rates = [blk.drop_path.p for stage in sd.stages for blk in stage if isinstance(blk, ConvNeXtBlock)]
    assert rates[0] == pytest.approx(0.2 / 18) and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)  # l/L
    with pytest.raises(ValueError, match="16x16 pixels; ConvNeXt needs at least 32x32"):
        res(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="variant must be one of 'tiny', 'small', 'base', 'large', 'xlarge'; "
                                         "got 'huge'"):
        skiplab.models.convnext.ConvNeXt("huge")


# --- torchvision's layout, written out independently ------------------------------------------------------
class RefLayerNorm2d(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class RefPermute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class RefCNBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), RefPermute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), RefPermute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class RefConvNeXt(nn.Module):
    def __init__(self, depths: list[int], dims: list[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), RefLayerNorm2d(dims[0], eps=1e-6))]
        for i, (n, d) in enumerate(zip(depths, dims)):
            layers.append(nn.Sequential(*[RefCNBlock(d) for _ in range(n)]))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(RefLayerNorm2d(d, eps=1e-6), nn.Conv2d(d, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(RefLayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        nn.Linear(dims[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


def test_torchvision_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    torch.manual_seed(3)
    ref = RefConvNeXt([3, 3, 9, 3], [12, 24, 48, 96], num_classes=5).eval()  # convnext_tiny at width 1/8
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)  # layer scale too: a mis-mapped block would show
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    ours = skiplab.create_model("convnext_tiny", width=0.125, num_classes=5, weights=str(tmp_path / "tv.pth")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


# --- timm's layout (stem.0/1, stages.i.downsample / blocks.j.{conv_dw, norm, mlp.fc1, mlp.fc2, gamma}, head) ---
class RefTimmMlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefTimmBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefTimmMlp(dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1)))
        return x + (h * self.gamma).permute(0, 3, 1, 2)


class RefTimmStage(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int) -> None:
        super().__init__()
        self.downsample = nn.Identity() if cin == cout else nn.Sequential(RefLayerNorm2d(cin, eps=1e-6),
                                                                          nn.Conv2d(cin, cout, 2, 2))
        self.blocks = nn.Sequential(*[RefTimmBlock(cout) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class RefTimmHead(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm, self.fc = RefLayerNorm2d(dim, eps=1e-6), nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean((2, 3), keepdim=True)).flatten(1))


class RefTimmConvNeXt(nn.Module):
    def __init__(self, depths: list[int], dims: list[int], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), RefLayerNorm2d(dims[0], eps=1e-6))
        self.stages = nn.Sequential(*[RefTimmStage(dims[max(i - 1, 0)], d, n)
                                      for i, (n, d) in enumerate(zip(depths, dims))])
        self.head = RefTimmHead(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def test_timm_checkpoint_loads_and_matches_reference(tmp_path: Path) -> None:
    torch.manual_seed(4)
    ref = RefTimmConvNeXt([3, 3, 9, 3], [12, 24, 48, 96], num_classes=5).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
    assert {"stem.1.weight", "stages.1.downsample.1.weight", "stages.3.blocks.2.gamma", "head.fc.bias"} <= \
        set(ref.state_dict())
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = skiplab.create_model("convnext_tiny", width=0.125, num_classes=5, weights=str(tmp_path / "timm.pth")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
