"""segmentation_models_pytorch's layouts: LinkNet's, U-Net++'s and FPN's counts, LinkNet's additive long skip, and
smp checkpoints of Unet, Linknet, UnetPlusPlus and FPN (independent references written in smp's module layout —
``encoder`` = torchvision's ResNet without its classifier, ``decoder.blocks``, ``segmentation_head.0`` — random
weights, outputs compared).  smp itself needs torchvision, which cannot be installed beside this CPU torch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips
from skiplab.blocks.unet import LinkBlock

from foreign_checkpoints import assert_loads_like, randomise_
from test_weights import RefBasic, RefResNet


def cbr(cin: int, cout: int, k: int) -> nn.Sequential:  # smp's Conv2dReLU with BatchNorm
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class RefUnetBlock(nn.Module):
    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = cbr(cin + skip, cout, 3), cbr(cout, cout, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv2(self.conv1(x if skip is None else torch.cat([x, skip], 1)))


class RefLinkBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin // 4
        self.block = nn.Sequential(cbr(cin, mid, 1), nn.Sequential(nn.ConvTranspose2d(mid, mid, 4, 2, 1),
                                                                   nn.BatchNorm2d(mid), nn.ReLU()), cbr(mid, cout, 1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.block(x)
        return x if skip is None else x + skip


class RefConvGN(nn.Module):  # smp's Conv3x3GNReLU
    def __init__(self, cin: int, cout: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(32, cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) if self.upsample else x


class RefFPNDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p5 = nn.Conv2d(512, 256, 1)
        for name, c in (("p4", 256), ("p3", 128), ("p2", 64)):
            block = nn.Module()
            block.skip_conv = nn.Conv2d(c, 256, 1)
            setattr(self, name, block)
        self.seg_blocks = nn.ModuleList()
        for ups in (3, 2, 1, 0):
            seg = nn.Module()
            seg.block = nn.Sequential(*[RefConvGN(256 if i == 0 else 128, 128, bool(ups)) for i in range(max(ups, 1))])
            self.seg_blocks.append(seg)

    def forward(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        p5 = self.p5(c5)
        p4 = F.interpolate(p5, scale_factor=2, mode="nearest") + self.p4.skip_conv(c4)
        p3 = F.interpolate(p4, scale_factor=2, mode="nearest") + self.p3.skip_conv(c3)
        p2 = F.interpolate(p3, scale_factor=2, mode="nearest") + self.p2.skip_conv(c2)
        return sum(s.block(p) for s, p in zip(self.seg_blocks, [p5, p4, p3, p2]))


class RefSmp(nn.Module):
    """smp.Unet / smp.Linknet with a ResNet-18 encoder."""

    def __init__(self, kind: str, classes: int) -> None:
        super().__init__()
        self.kind = kind
        self.encoder = RefResNet(RefBasic, [2, 2, 2, 2])
        del self.encoder.fc, self.encoder.avgpool
        self.decoder = nn.Module()
        if kind == "unet":
            ins, skips, outs = [512, 256, 128, 64, 32], [256, 128, 64, 64, 0], [256, 128, 64, 32, 16]
            self.decoder.blocks = nn.ModuleList(RefUnetBlock(*c) for c in zip(ins, skips, outs))
            self.segmentation_head = nn.Sequential(nn.Conv2d(16, classes, 3, padding=1))
        elif kind == "fpn":
            self.decoder = RefFPNDecoder()
            self.segmentation_head = nn.Sequential(nn.Conv2d(128, classes, 1), nn.UpsamplingBilinear2d(scale_factor=4))
        elif kind == "unetplusplus":  # smp's UnetPlusPlusDecoder: node x_d_l, l the column, d the depth
            ins, skips, outs = [512, 256, 128, 64, 32], [256, 128, 64, 64, 0], [256, 128, 64, 32, 16]
            blocks = {}
            for layer in range(4):
                for depth in range(layer + 1):
                    if depth == 0:
                        blocks[f"x_0_{layer}"] = RefUnetBlock(ins[layer], skips[layer] * (layer + 1), outs[layer])
                    else:
                        blocks[f"x_{depth}_{layer}"] = RefUnetBlock(skips[layer - 1],
                                                                    skips[layer] * (layer + 1 - depth), skips[layer])
            blocks["x_0_4"] = RefUnetBlock(32, 0, 16)
            self.decoder.blocks = nn.ModuleDict(blocks)
            self.segmentation_head = nn.Sequential(nn.Conv2d(16, classes, 3, padding=1))
        else:
            widths = [512, 256, 128, 64, 64, 32]
            self.decoder.blocks = nn.ModuleList(RefLinkBlock(widths[i], widths[i + 1]) for i in range(5))
            self.segmentation_head = nn.Sequential(nn.Conv2d(32, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        f1 = e.relu(e.bn1(e.conv1(x)))
        f2 = e.layer1(e.maxpool(f1))
        f3 = e.layer2(f2)
        f4 = e.layer3(f3)
        x = e.layer4(f4)
        if self.kind == "fpn":
            return self.segmentation_head(self.decoder(f2, f3, f4, x))
        if self.kind == "unetplusplus":
            return self.segmentation_head(self.nested(x, [f4, f3, f2, f1]))
        for block, skip in zip(self.decoder.blocks, [f4, f3, f2, f1, None]):
            x = block(x, skip)
        return self.segmentation_head(x)

    def nested(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        feats, b, out = [x, *skips], self.decoder.blocks, {}
        for layer in range(4):
            for depth in range(4 - layer):
                if layer == 0:
                    out[f"x_{depth}_{depth}"] = b[f"x_{depth}_{depth}"](feats[depth], feats[depth + 1])
                else:
                    col = depth + layer
                    cat = torch.cat([out[f"x_{i}_{col}"] for i in range(depth + 1, col + 1)] + [feats[col + 1]], 1)
                    out[f"x_{depth}_{col}"] = b[f"x_{depth}_{col}"](out[f"x_{depth}_{col - 1}"], cat)
        return b["x_0_4"](out["x_0_3"], None)


@pytest.mark.parametrize("kind", ["unet", "linknet", "unetplusplus", "fpn"])
def test_smp_checkpoint_loads_and_matches_reference(kind: str, tmp_path: Path) -> None:
    ref = randomise_(RefSmp(kind, classes=3), seed=21)
    keys = set(ref.state_dict())
    assert {"encoder.layer2.0.downsample.0.weight", "segmentation_head.0.bias"} <= keys
    assert {"unet": {"decoder.blocks.0.conv1.0.weight", "decoder.blocks.4.conv2.1.running_var"},
            "linknet": {"decoder.blocks.0.block.1.0.bias", "decoder.blocks.4.block.2.1.weight"},
            "unetplusplus": {"decoder.blocks.x_2_3.conv1.0.weight", "decoder.blocks.x_0_4.conv2.1.bias"},
            "fpn": {"decoder.p5.bias", "decoder.p2.skip_conv.weight", "decoder.seg_blocks.0.block.2.block.1.weight",
                    "decoder.seg_blocks.3.block.0.block.0.weight"}}[kind] <= keys
    assert_loads_like(ref, f"{kind}_resnet18", tmp_path, torch.randn(2, 3, 64, 64), num_classes=3)


@pytest.mark.parametrize("name, count", [("linknet_resnet18", 11_663_777), ("linknet_resnet34", 21_771_937),
                                         ("linknet_resnet50", 31_177_777), ("unetplusplus_resnet18", 15_970_449),
                                         ("unetplusplus_resnet34", 26_078_609), ("unetplusplus_resnet50", 48_985_745),
                                         ("fpn_resnet18", 13_047_233), ("fpn_resnet34", 23_155_393),
                                         ("fpn_resnet50", 26_116_033)])
def test_linknet_unetplusplus_and_fpn_counts(name: str, count: int) -> None:
    """smp.Linknet / smp.UnetPlusPlus / smp.FPN(encoder_name=..., classes=1), counted from smp's layers (Linknet:
    encoder without fc, five blocks of 1x1 conv + BN, 4x4 transposed conv with bias + BN, 1x1 conv + BN, a 1x1 head;
    U-Net++ with resnet34: 26,078,609, the figure smp users quote)."""
    with torch.device("meta"):
        assert sum(p.numel() for p in skiplab.create_model(name).parameters()) == count


def test_link_block_adds_its_bridge_and_plain_twin_has_no_skips() -> None:
    torch.manual_seed(0)
    block = LinkBlock(64, 32).eval()
    x, bridge = torch.randn(2, 64, 4, 4), torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x, bridge), bridge + block.branch(x))
        block.branch_enabled = False
        torch.testing.assert_close(block(x, bridge), bridge)  # lesioned: the long skip alone
    assert count_skips(skiplab.create_model("plain_linknet_resnet18")) == 0
    assert count_skips(skiplab.create_model("linknet_resnet18")) == 8 + 4  # encoder units + long skips
    with pytest.raises(ValueError, match="in_channels must be at least 4"):
        LinkBlock(3, 8)


def test_unetplusplus_plain_twin_is_the_plain_unet() -> None:
    plain, unet = skiplab.create_model("plain_unetplusplus_resnet18"), skiplab.create_model("plain_unet_resnet18")
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in unet.parameters())
    assert count_skips(plain) == 0 and count_skips(skiplab.create_model("unetplusplus_resnet18")) == 8 + 10
