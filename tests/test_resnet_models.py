"""ResNet families: exact parameter counts, depth rules, twins, orderings, init, input validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import skiplab
from skiplab.blocks.base import count_skips, skip_blocks
from skiplab.blocks.preact import ORDERINGS
from skiplab.blocks.residual import Bottleneck
from skiplab.layers.shortcuts import ProjectionShortcut, ZeroPadShortcut
from skiplab.models.cifar import cifar_resnet
from skiplab.models.preact import preact_resnet
from skiplab.models.resnet import resnet
from skiplab.registry import get_entry, list_models

MY_FAMILIES = ("resnet", "cifar_resnet", "preact_resnet", "resnet_v2", "resnet_keras")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):  # shapes only: counting 60M parameters costs nothing
        return skiplab.create_model(name, **kwargs)


@pytest.mark.parametrize("name, count", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808),  # torchvision's counts
    ("wide_resnet50_2", 68_883_240), ("wide_resnet101_2", 126_886_696), ("resnext50_32x4d", 25_028_904),
    ("resnext101_32x8d", 88_791_336), ("resnext101_64x4d", 83_455_272),  # torchvision's counts
    ("resnet50v2", 25_568_360), ("resnet101v2", 44_577_896), ("resnet152v2", 60_236_904),  # Keras' trainable
    ("resnet18d", 11_708_744), ("resnet34d", 21_816_904), ("resnet50d", 25_576_264), ("resnet101d", 44_568_392),
    ("resnet152d", 60_212_040), ("resnet26", 15_995_176), ("resnet26d", 16_014_408), ("resnet200", 64_673_832),
    ("resnet200d", 64_693_064),  # timm's counts
    ("resnet50_keras", 25_583_592), ("resnet101_keras", 44_601_832), ("resnet152_keras", 60_268_520),  # same
    ("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586), ("resnet56", 853_018),
    ("resnet110", 1_727_962), ("resnet1202", 19_421_274),  # He et al. 2015 Table 6 (0.27M ... 19.4M)
    # Option A has no parameters, so the plain CIFAR twins have exactly as many as the ResNets.
    ("plain20", 269_722), ("plain110", 1_727_962),
    ("preact_resnet164", 1_703_258), ("preact_resnet1001", 10_327_706),
])
def test_exact_parameter_counts(name: str, count: int) -> None:
    assert n_params(on_meta(name)) == count


def test_resnet_v2_counts_match_keras_applications_with_bn_statistics() -> None:
    """Keras counts BatchNorm's moving mean/variance as (non-trainable) weights: its totals are 25,613,800 /
    44,675,560 / 60,380,648 for ResNet50V2 / 101V2 / 152V2."""
    for name, keras_total in [("resnet50v2", 25_613_800), ("resnet101v2", 44_675_560), ("resnet152v2", 60_380_648)]:
        model = on_meta(name)
        stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("running_mean", "running_var")))
        assert n_params(model) + stats == keras_total
    model = on_meta("resnet50v2")
    first, last = model.stages[0][0], model.stages[0][-1]
    assert first.shortcut.conv.bias is not None and first.branch.conv1.in_channels == 64  # biased projection
    assert last.branch.conv2.stride == (2, 2) and type(last.shortcut).__name__ == "ZeroPadShortcut"  # subsample
    assert model.stages[3][-1].branch.conv2.stride == (1, 1)  # the last stage keeps its resolution


def test_keras_v1_layout_counts_and_structure() -> None:
    """Keras Applications' ResNet50/101/152 totals (moving statistics included): 25,636,712 / 44,707,176 /
    60,419,944; the stride on the first 1x1, a bias on every convolution, epsilon 1.001e-5."""
    for name, keras_total in [("resnet50_keras", 25_636_712), ("resnet101_keras", 44_707_176),
                              ("resnet152_keras", 60_419_944)]:
        model = on_meta(name)
        stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("running_mean", "running_var")))
        assert n_params(model) + stats == keras_total
    model = on_meta("resnet50_keras")
    down = model.stages[1][0]
    assert down.branch.conv1.stride == (2, 2) and down.branch.conv2.stride == (1, 1)
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1.001e-5}
    # the same stages as torchvision's resnet50 otherwise: only the biases (one per BN channel) are extra
    assert n_params(model) - n_params(on_meta("resnet50")) == (25_636_712 - 25_583_592) // 2


def test_preact_conv_weights_match_the_papers_rounded_counts() -> None:
    """He et al. 2016 quote 1.7M (ResNet-164) and 10.2M (ResNet-1001): the conv weights, 1,676,464 and
    10,175,920; with BN and the classifier our totals are 1,703,258 and 10,327,706."""
    for name, conv_weights in [("preact_resnet164", 1_676_464), ("preact_resnet1001", 10_175_920)]:
        model = on_meta(name)
        assert sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d)) == conv_weights
    assert round(1_676_464 / 1e6, 1) == 1.7 and round(10_175_920 / 1e6, 1) == 10.2


def test_wide_resnet_via_base_width() -> None:
    with torch.device("meta"):
        assert n_params(resnet(50, base_width=128)) == 68_883_240  # torchvision's wide_resnet50_2
        half = resnet(18, width=0.5)
    assert half.stem.conv.out_channels == 32 and half.num_features == 256
    with pytest.raises(ValueError, match="base_width and groups only apply to bottleneck"):
        resnet(18, base_width=128)
    from skiplab.blocks.residual import Bottleneck

    with pytest.raises(ValueError, match="groups must divide the bottleneck width"):
        Bottleneck(256, 256, mid_channels=100, groups=3)


def test_resnext_unit_is_a_grouped_3x3() -> None:
    with torch.device("meta"):
        model = skiplab.create_model("resnext50_32x4d")
    first = model.stages[0][0].branch
    assert first.conv2.groups == 32 and first.conv2.in_channels == 128  # 32 groups of 4 channels at stage 1
    assert model.stages[3][0].branch.conv2.in_channels == 1024  # 32 x 32 at stage 4
    with pytest.raises(ValueError, match="width must be a positive number"):
        resnet(18, width=0)


def test_depth_rules_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"depth must be 6n\+2 .*got 21"):
        cifar_resnet(depth=21)
    with pytest.raises(ValueError, match=r"depth must be 6n\+2"):
        cifar_resnet(depth=2)
    with pytest.raises(ValueError, match=r"depth must be 9n\+2 .*got 26"):
        preact_resnet(26)  # bottleneck units need 9n+2; 26 is a basic-unit depth (6n+2)
    assert len(preact_resnet(8, unit="basic", width=0.25).stages[0]) == 1
    with pytest.raises(ValueError, match="ImageNet ResNet depth must be one of"):
        resnet(20)
    with pytest.raises(ValueError, match="unit must be one of"):
        preact_resnet(11, unit="wide")


def test_cifar_depth_is_6n_plus_2_weighted_layers() -> None:
    for depth in (8, 20, 56):
        model = cifar_resnet(depth, width=0.25)
        weighted = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
        assert weighted == depth  # option A shortcuts add no layers
        assert [len(s) for s in model.stages] == [(depth - 2) // 6] * 3


def test_registered_entries_are_consistent() -> None:
    names = [n for f in MY_FAMILIES for n in list_models(family=f)]
    # 7 ImageNet depths (torchvision's 5, timm's 26 and 200), their 7 ResNet-D forms, 5 wide/ResNeXt, 6 CIFAR
    # depths, 2 pre-activation, 3 Keras V2 and 3 Keras v1, 7 SE-ResNet/ResNeXt, each with two twins
    assert len(names) == 3 * (7 + 7 + 5 + 6 + 2 + 3 + 3 + 7)
    for depth in (20, 32, 44, 56, 110, 1202):
        assert {f"resnet{depth}", f"plain{depth}", f"highway{depth}"} <= set(names)
    for base in ("resnet18", "resnet50", "resnet152", "resnet26", "resnet200d", "resnet50_keras", "preact_resnet164",
                 "preact_resnet1001", "wide_resnet50_2", "resnext50_32x4d", "resnext101_64x4d", "resnet50v2",
                 "resnet152v2"):
        assert {base, f"plain_{base}", f"highway_{base}"} <= set(names)
    huge = ("1202", "1001")  # their counts are checked above; building all six twins again costs seconds
    for name in (n for n in names if not n.endswith(huge)):
        entry = get_entry(name)
        model = on_meta(name)
        assert entry.fn.__name__ == name
        assert model.default_input_size == entry.input_size and model.in_channels == entry.input_size[0]
        assert {b.skip for b in skip_blocks(model)} == {entry.skip}, name
        if entry.skip == "none":
            assert count_skips(model) == 0


def test_twins_share_the_residual_nets_layers() -> None:
    from skiplab.models.cifar import plain20, resnet20  # generated entrypoints live in the module too

    res, plain = resnet20(width=0.25), plain20(width=0.25)
    assert list(res.state_dict()) == list(plain.state_dict())
    assert count_skips(res) == 9 and count_skips(plain) == 0
    assert count_skips(resnet20(skip="none", width=0.25)) == 0
    with pytest.raises(ValueError, match="plain20 is the skip='none' twin"):
        plain20(skip="residual")
    # ImageNet plain twin: the projection shortcuts go too.
    assert n_params(on_meta("resnet50")) - n_params(on_meta("plain_resnet50")) == sum(
        n_params(m) for m in on_meta("resnet50").modules() if isinstance(m, ProjectionShortcut))


def test_shortcut_options_on_cifar() -> None:
    a, b, c = (cifar_resnet(20, shortcut=k) for k in "ABC")
    assert sum(isinstance(m, ZeroPadShortcut) for m in a.modules()) == 2
    assert sum(isinstance(m, ProjectionShortcut) for m in b.modules()) == 2
    assert sum(isinstance(m, ProjectionShortcut) for m in c.modules()) == 9
    assert n_params(b) - n_params(a) == (16 * 32 + 64) + (32 * 64 + 128)


def test_stride_in_1x1_on_imagenet_bottlenecks() -> None:
    with torch.device("meta"):
        v15, v1 = resnet(50), resnet(50, stride_in_1x1=True)
    assert v15.stages[1][0].branch.conv2.stride == (2, 2) and v15.stages[1][0].branch.conv1.stride == (1, 1)
    assert v1.stages[1][0].branch.conv1.stride == (2, 2) and v1.stages[1][0].branch.conv2.stride == (1, 1)


def test_resnet20_forward_backward() -> None:
    model = skiplab.create_model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.forward_features(x).shape == (2, 64, 8, 8)


def test_resnet18_forward_backward() -> None:
    model = skiplab.create_model("resnet18", num_classes=7)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    out = model.eval()(x)
    assert out.shape == (1, 7)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_in_channels_and_input_validation() -> None:
    model = cifar_resnet(8, in_channels=1, width=0.25)
    assert model.default_input_size == (1, 32, 32)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="expects in_channels=1"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="must have 4 dims"):
        model(torch.randn(1, 32, 32))
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        cifar_resnet(20, num_classes=0)


def test_highway_twins_run_with_negative_gate_bias() -> None:
    model = skiplab.create_model("highway20", width=0.25)
    gates = [b.gate for b in skip_blocks(model)]
    assert len(gates) == 9 and all(torch.all(g.proj.bias == -2.0) for g in gates)
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert all(g.proj.weight.grad is not None for g in gates)
    with torch.device("meta"):
        hw = skiplab.create_model("highway_resnet50")
    assert all(b.gate.proj.stride == b.branch.conv2.stride for b in skip_blocks(hw))


def test_init_is_he_normal_fan_out_and_zero_init_residual() -> None:
    model = cifar_resnet(56)
    w = model.stages[2][3].branch.conv1.weight  # 64 -> 64, 3x3: std sqrt(2 / (64 * 9))
    assert abs(w.std().item() - math.sqrt(2 / (64 * 9))) < 0.05 * math.sqrt(2 / (64 * 9))
    assert all(torch.all(m.weight == 1) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    zero = resnet(50, zero_init_residual=True, width=0.25)
    assert all(torch.all(b.branch.bn3.weight == 0) for b in skip_blocks(zero))
    assert all(torch.all(b.branch.bn1.weight == 1) for b in skip_blocks(zero) if isinstance(b, Bottleneck))


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_every_ordering_builds_a_network_that_trains(ordering: str) -> None:
    for model in (preact_resnet(8, unit="basic", ordering=ordering, width=0.25),
                  preact_resnet(11, ordering=ordering, width=0.25)):
        x, y = torch.randn(6, 3, 8, 8), torch.arange(6) % 10
        losses = []
        for _ in range(3):  # plain SGD, lr 0.1
            loss = nn.functional.cross_entropy(model(x), y)
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
            losses.append(loss.item())
        assert losses[-1] < losses[0], (ordering, losses)


def test_preact_stem_and_head_follow_the_ordering() -> None:
    full = preact_resnet(11)
    assert list(dict(full.stem.named_children())) == ["conv"]
    assert list(dict(full.head.named_children())) == ["bn", "act", "pool", "flatten", "fc"]
    relu = preact_resnet(11, ordering="relu_preact")
    assert list(dict(relu.stem.named_children())) == ["conv", "bn"]
    assert list(dict(relu.head.named_children())) == ["act", "pool", "flatten", "fc"]
    orig = preact_resnet(11, ordering="original")
    assert list(dict(orig.stem.named_children())) == ["conv", "bn", "act"]
    assert list(dict(orig.head.named_children())) == ["pool", "flatten", "fc"]
    assert skiplab.create_model("preact_resnet164", ordering="relu_before_add").ordering == "relu_before_add"


def test_drop_path_rate_decays_linearly_over_blocks() -> None:
    model = cifar_resnet(20, drop_path_rate=0.5, width=0.25)
    rates = [b.drop_path.p for b in skip_blocks(model)]
    assert rates == pytest.approx([0.5 * l / 9 for l in range(1, 10)])
    with torch.device("meta"):
        assert skip_blocks(resnet(50, drop_path_rate=0.2))[-1].drop_path.p == pytest.approx(0.2)
    assert all(b.drop_path.p == 0.0 for b in skip_blocks(cifar_resnet(8, width=0.25)))  # DropPath(0): the identity
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        cifar_resnet(8, drop_path_rate=1.0)
