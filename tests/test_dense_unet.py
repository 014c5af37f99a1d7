"""Dense blocks, DenseNets (parameter counts, torchvision checkpoint import) and U-Net."""
from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import skiplab
from skiplab.blocks.base import count_skips, skip_blocks
from skiplab.blocks.dense import DenseBlock, DenseLayer, Transition, compressed_channels
from skiplab.blocks.unet import UpBlock
from skiplab.models.densenet import DenseNet, densenet_bc
from skiplab.models.unet import UNet


pytestmark = pytest.mark.usefixtures("tiny_cpu")  # one thread comes from conftest


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---- dense blocks ----


@pytest.mark.parametrize("bn_size", [4, None])
@pytest.mark.parametrize("skip", ["dense", "none"])
def test_dense_block_output_channels(bn_size: int | None, skip: str) -> None:
    block = DenseBlock(6, 4, 3, bn_size=bn_size, skip=skip)
    assert block.out_channels == 6 + 3 * 4
    x = torch.randn(2, 6, 5, 5)
    assert block(x).shape == (2, 18, 5, 5)
    assert count_skips(block) == (3 if skip == "dense" else 0)
    assert [layer.out_channels for layer in block] == [10, 14, 18]


def test_dense_layer_concatenates_its_input_unchanged() -> None:
    layer = DenseLayer(5, 3, bn_size=2)
    x = torch.randn(2, 5, 4, 4)
    y = layer(x)
    assert torch.equal(y[:, :5], x), "the concatenating skip carries the input through bit for bit"
    torch.testing.assert_close(y[:, 5:], layer.branch(x))
    assert [n for n, _ in layer.branch.named_children()] == ["norm1", "relu1", "conv1", "norm2", "relu2", "conv2"]


def test_dense_block_layer_sees_all_earlier_maps() -> None:
    # Perturbing the block input changes only through the layers, yet its channels survive to the output.
    block = DenseBlock(3, 2, 4, bn_size=None).eval()
    x = torch.randn(1, 3, 4, 4)
    assert torch.equal(block(x)[:, :3], x)
    assert block[3].branch.conv1.in_channels == 3 + 3 * 2


def test_plain_dense_layer_widths() -> None:
    """Plain twin: same input widths as the dense layer, and it outputs the dense width itself."""
    layer = DenseLayer(8, 4, bn_size=2, skip="none")
    assert layer.branch.conv1.in_channels == 8 and layer.branch.conv2.out_channels == 12
    assert not layer.can_lesion()
    assert DenseLayer(8, 4, bn_size=None, skip="none").branch.conv1.out_channels == 12


def test_dense_lesion_zeroes_new_channels_and_zero_init() -> None:
    layer = DenseLayer(4, 3)
    x = torch.randn(2, 4, 3, 3)
    layer.branch_enabled = False
    y = layer(x)
    assert y.shape == (2, 7, 3, 3) and torch.equal(y[:, :4], x) and not y[:, 4:].any()
    layer.branch_enabled = True
    layer.zero_init_last()
    assert not layer(x)[:, 4:].any()


def test_dropout_follows_each_conv() -> None:
    names = [n for n, _ in DenseLayer(4, 2, drop_rate=0.2).branch.named_children()]
    assert names == ["norm1", "relu1", "conv1", "drop1", "norm2", "relu2", "conv2", "drop2"]
    assert "drop" in dict(Transition(8, 4, drop_rate=0.2).named_children())
    with pytest.raises(ValueError, match="drop_rate"):
        DenseLayer(4, 2, drop_rate=1.0)


def test_transition_and_compression() -> None:
    t = Transition(10, compressed_channels(10, 0.5))
    assert t(torch.randn(1, 10, 8, 6)).shape == (1, 5, 4, 3)
    assert compressed_channels(25, 0.5) == 12
    with pytest.raises(ValueError, match="compression"):
        compressed_channels(10, 0.0)


# ---- DenseNet models ----


@pytest.mark.parametrize(
    "name, expect", [("densenet121", 7_978_856), ("densenet161", 28_681_000), ("densenet169", 14_149_480),
                     ("densenet201", 20_013_928)]
)
def test_imagenet_densenet_param_counts(name: str, expect: int) -> None:
    model = skiplab.create_model(name)
    assert n_params(model) == expect
    assert count_skips(model) == {"densenet121": 58, "densenet161": 78, "densenet169": 82, "densenet201": 98}[name]


def test_imagenet_densenets_equal_keras_applications_totals() -> None:
    """Keras counts BatchNorm's moving statistics as weights: DenseNet121/169/201 total 8,062,504 / 14,307,880 /
    20,242,984 there — the same architecture as torchvision's (and ours)."""
    for name, keras_total in [("densenet121", 8_062_504), ("densenet169", 14_307_880), ("densenet201", 20_242_984)]:
        with torch.device("meta"):
            model = skiplab.create_model(name)
        stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("running_mean", "running_var")))
        assert n_params(model) + stats == keras_total


def test_densenet_bc_cifar_param_counts() -> None:
    # Paper, Table 2: DenseNet-BC (L=100, k=12) 0.8M; (L=250, k=24) 15.3M; DenseNet (L=40, k=12) 1.0M.
    assert n_params(skiplab.create_model("densenet_bc_100_12")) == 769_162
    assert n_params(densenet_bc(num_classes=100)) == 800_032
    assert round(n_params(densenet_bc(250, 24)) / 1e6, 1) == 15.3
    assert round(n_params(densenet_bc(40, 12, bottleneck=False, compression=1.0)) / 1e6, 1) == 1.0
    model = densenet_bc(depth=40, growth_rate=6)
    assert [len(stage.block) for stage in model.stages] == [6, 6, 6]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_densenet_bc_rejects_impossible_depth() -> None:
    with pytest.raises(ValueError, match=r"depth must be 4 \+ 6\*n.*got 101"):
        densenet_bc(101)


def test_plain_twins_registered_and_skipless() -> None:
    for name in ["densenet121", "densenet169", "densenet201", "densenet_bc_100_12"]:
        assert f"plain_{name}" in skiplab.list_models("plain_densenet*")
    plain = skiplab.create_model("plain_densenet_bc_100_12")
    assert count_skips(plain) == 0 and len(skip_blocks(plain)) == 48
    assert plain.model_name == "plain_densenet_bc_100_12"
    with pytest.raises(TypeError, match="skip"):
        skiplab.create_model("plain_densenet_bc_100_12", skip="dense")
    assert plain.eval()(torch.randn(1, 3, 8, 8)).shape == (1, 10)


# ---- torchvision checkpoint import: an independent reference with torchvision's module names ----


class RefDenseLayer(nn.Module):
    def __init__(self, c: int, k: int, bn_size: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(c), nn.Conv2d(c, bn_size * k, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(bn_size * k), nn.Conv2d(bn_size * k, k, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, new], 1)


class RefDenseNet(nn.Module):
    """DenseNet-BC laid out as torchvision does: ``features`` (conv0 .. denseblockN, transitionN, norm5) and
    ``classifier``."""

    def __init__(self, k: int, config: tuple[int, ...], c0: int, bn_size: int, classes: int) -> None:
        super().__init__()
        f = nn.Sequential()
        f.add_module("conv0", nn.Conv2d(3, c0, 7, 2, 3, bias=False))
        f.add_module("norm0", nn.BatchNorm2d(c0))
        f.add_module("relu0", nn.ReLU())
        f.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = c0
        for i, n in enumerate(config, 1):
            f.add_module(f"denseblock{i}", nn.Sequential(OrderedDict(
                (f"denselayer{j}", RefDenseLayer(c + (j - 1) * k, k, bn_size)) for j in range(1, n + 1))))
            c += n * k
            if i < len(config):
                f.add_module(f"transition{i}", nn.Sequential(OrderedDict(
                    norm=nn.BatchNorm2d(c), relu=nn.ReLU(), conv=nn.Conv2d(c, c // 2, 1, bias=False),
                    pool=nn.AvgPool2d(2, 2))))
                c //= 2
        f.add_module("norm5", nn.BatchNorm2d(c))
        self.features, self.classifier = f, nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(F.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(out, 1))


def randomize(model: nn.Module) -> nn.Module:
    """Random weights and BN statistics, so an eval-mode comparison exercises every tensor."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g) * 0.2)
    return model


def to_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision names ('denselayer1.norm.1.weight') and no num_batches_tracked, as in its download files."""
    legacy = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        legacy[re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)] = value
    return legacy


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:  # noqa: ANN001
    torch.save(state, path)
    from skiplab.weights import load_weights

    load_weights(model, path)


@pytest.mark.parametrize("legacy", [False, True])
def test_torchvision_checkpoint_gives_identical_outputs(tmp_path, legacy: bool) -> None:  # noqa: ANN001
    ref = randomize(RefDenseNet(k=4, config=(2, 3, 2), c0=8, bn_size=2, classes=5)).eval()
    state = ref.state_dict()
    if legacy:
        state = to_legacy(state)
        assert any(".norm.1." in k for k in state) and not any("num_batches" in k for k in state)
    ours = DenseNet((2, 3, 2), growth_rate=4, init_channels=8, bn_size=2, num_classes=5).eval()
    load_into(ours, state, tmp_path / "ref.pth")
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= 1e-4, diff


def test_densenet121_accepts_every_torchvision_key(tmp_path) -> None:  # noqa: ANN001
    ref = RefDenseNet(k=32, config=(6, 12, 24, 16), c0=64, bn_size=4, classes=1000)
    assert n_params(ref) == 7_978_856
    ours = skiplab.create_model("densenet121")
    load_into(ours, to_legacy(ref.state_dict()), tmp_path / "densenet121.pth")  # strict: all keys and shapes
    torch.testing.assert_close(ours.stages[2].block.denselayer24.branch.conv2.weight,
                               ref.features.denseblock3.denselayer24.conv2.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.head.fc.weight, ref.classifier.weight, rtol=0, atol=0)


def test_remap_leaves_our_keys_alone_and_strips_module_prefix() -> None:
    model = DenseNet((1, 1), growth_rate=2, init_channels=4, bn_size=2, num_classes=3)
    ours = model.state_dict()
    assert model.remap_state_dict(ours).keys() == ours.keys()
    tv = {"module.features.denseblock2.denselayer1.norm.2.running_var": torch.ones(4),
          "features.transition1.conv.weight": torch.ones(1), "classifier.bias": torch.ones(3)}
    mapped = model.remap_state_dict(tv)
    assert {"stages.1.block.denselayer1.branch.norm2.running_var", "stages.0.transition.conv.weight",
            "head.fc.bias"} <= mapped.keys()


# ---- U-Net ----


def unet_formula(c_in: int, classes: int, depth: int, w: int, bn: bool) -> int:
    """Parameters of a U-Net counted by hand: convs (+bias or +BN affine), up-convs, 1x1 head."""

    def conv3(a: int, b: int) -> int:
        return a * b * 9 + (2 * b if bn else b)

    def double(a: int, b: int) -> int:
        return conv3(a, b) + conv3(b, b)

    widths = [w * 2**i for i in range(depth + 1)]
    total = double(c_in, widths[0]) + sum(double(widths[i], widths[i + 1]) for i in range(depth))
    total += sum(widths[i + 1] * widths[i] * 4 + widths[i] + double(2 * widths[i], widths[i]) for i in range(depth))
    return total + widths[0] * classes + classes


def test_unet_param_counts() -> None:
    assert n_params(skiplab.create_model("unet")) == unet_formula(1, 2, 4, 64, bn=True) == 31_036_546
    assert n_params(UNet(norm="none")) == unet_formula(1, 2, 4, 64, bn=False)
    assert n_params(UNet(in_channels=3, depth=3, base_width=8)) == unet_formula(3, 2, 3, 8, bn=True)


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (5, 3)])
@pytest.mark.parametrize("skip", ["concat", "none"])
def test_unet_output_size_equals_input_size(size: tuple[int, int], skip: str) -> None:
    model = UNet(in_channels=2, num_classes=3, depth=3, base_width=4, skip=skip)
    x = torch.randn(2, 2, *size)
    y = model(x)
    assert y.shape == (2, 3, *size)
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unet_long_skips_and_plain_twin() -> None:
    assert count_skips(skiplab.create_model("unet", base_width=4)) == 4
    plain = skiplab.create_model("plain_unet", base_width=4)
    assert count_skips(plain) == 0 and len(skip_blocks(plain)) == 4
    # The plain decoder's fuse convs take only the upsampled path; the U-Net's take path + bridge.
    assert [b.fuse.conv1.in_channels for b in plain.decoder] == [32, 16, 8, 4]
    unet = UNet(base_width=4)
    assert [b.fuse.conv1.in_channels for b in unet.decoder] == [64, 32, 16, 8]


def test_unet_bridge_reaches_the_output() -> None:
    """With the long skips, the first encoder level alone influences the output; without, only via the bottleneck."""
    torch.manual_seed(0)
    model = UNet(depth=2, base_width=4, norm="none").eval()
    x = torch.randn(1, 1, 16, 16)
    up = model.decoder[-1]
    up.branch_enabled = False  # lesion the upsampled path: only the bridge feeds the last decoder block
    y = model(x)
    assert y.abs().sum() > 0 and up.can_lesion()
    x2 = x.clone()
    x2[..., 0, 0] += 10.0
    changed = (model(x2) - y).abs().sum(dim=1)[0]
    assert changed[0, 0] > 0 and changed[-1, -1] == 0, "with the deep path cut, effects stay local (3x3 convs)"


def test_unet_options_and_errors() -> None:
    model = UNet(depth=2, base_width=4, up_mode="bilinear", norm="group")
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 2, 12, 12)
    assert UNet(depth=2, base_width=4, up_mode="nearest")(torch.randn(2, 1, 12, 12)).shape == (2, 2, 12, 12)
    with pytest.raises(ValueError, match="up_mode"):
        UNet(up_mode="cubic")
    with pytest.raises(ValueError, match="norm"):
        UNet(norm="layer")
    with pytest.raises(ValueError, match="in_channels=1"):
        UNet(base_width=4)(torch.randn(1, 3, 16, 16))
    block = UpBlock(8, 4, 4)
    with pytest.raises(ValueError, match="spatial size"):
        block(torch.randn(1, 8, 4, 4), torch.randn(1, 4, 7, 7))


@pytest.mark.parametrize("up_mode", ["transpose", "nearest"])
def test_upblock_zero_init_starts_from_the_long_skip(up_mode: str) -> None:
    block = UpBlock(8, 4, 4, norm="none", up_mode=up_mode).eval()
    x, bridge = torch.randn(1, 8, 3, 3), torch.randn(1, 4, 6, 6)
    block.zero_init_last()
    lesioned = UpBlock(8, 4, 4, norm="none", up_mode=up_mode).eval()
    lesioned.load_state_dict(block.state_dict())
    lesioned.branch_enabled = False
    torch.testing.assert_close(block(x, bridge), lesioned(x, bridge))
    assert not torch.allclose(block(x, bridge), block(x, torch.zeros_like(bridge)))


# ---- U-Net on a ResNet encoder (segmentation_models_pytorch's layout) ----

@pytest.mark.parametrize("name, expect", [("unet_resnet18", 14_328_209), ("unet_resnet34", 24_436_369),
                                          ("unet_resnet50", 32_521_105)])
def test_unet_resnet_param_counts_equal_smp(name: str, expect: int) -> None:
    with torch.device("meta"):
        model = skiplab.create_model(name)
    assert n_params(model) == expect  # smp.Unet(encoder_name=..., classes=1)


def test_unet_resnet_shapes_bridges_and_plain_twin() -> None:
    model = skiplab.create_model("unet_resnet18", num_classes=3, decoder_channels=(32, 16, 16, 8, 8)).eval()
    x = torch.randn(2, 3, 45, 61)  # not a multiple of 32: padded, then cropped back
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 3, 45, 61)
        blocks = list(model.decoder)
        assert [b.skip_channels for b in blocks] == [256, 128, 64, 64, 0]  # 1/16 ... 1/2 bridges, none at 1/1
        for b in blocks[:4]:  # lesioning a level's upsampled path leaves its bridge: the output still changes
            b.branch_enabled = False
        assert not torch.equal(model(x), y)
        assert not blocks[4].can_lesion()  # the full-resolution block has no bridge to fall back on
    plain = skiplab.create_model("plain_unet_resnet18").eval()
    assert count_skips(plain) == 0 and plain(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="encoder_depth must be one of"):
        skiplab.models.unet_resnet.UNetResNet(101)
