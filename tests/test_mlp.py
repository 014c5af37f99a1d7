"""Residual, plain and highway MLPs: shapes, gradients, the SkipBlock contract, init, and argument errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import skiplab
from skiplab.blocks.base import SkipBlock, count_skips, skip_blocks, zero_init_last
from skiplab.models.base import SkipNet
from skiplab.models.mlp import MLP, MLPBlock
from skiplab.registry import get_entry

SKIPS = ["residual", "none", "highway"]


@pytest.mark.parametrize("skip", SKIPS)
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_shapes_and_every_parameter_gets_a_gradient(skip: str, norm: str, act: str) -> None:
    model = MLP(3, 8, 5, 2, act=act, norm=norm, skip=skip)
    assert isinstance(model, SkipNet) and model.input_ndim == 1 and model.in_channels == 5
    out = model(torch.randn(4, 5))
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("skip", SKIPS)
def test_scalar_in_scalar_out_and_depth_zero(skip: str) -> None:
    for depth in (0, 2):
        model = MLP(depth, 16, 1, 1, skip=skip)
        x = torch.linspace(-2, 2, 7).unsqueeze(1).requires_grad_(True)
        y = model(x)
        assert y.shape == (7, 1)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert g.shape == (7, 1)
        assert len(skip_blocks(model)) == depth


def test_registered_twins() -> None:
    for name, skip in [("mlp", "residual"), ("plain_mlp", "none"), ("highway_mlp", "highway")]:
        entry = get_entry(name)
        assert entry.skip == skip and entry.input_size == (784,) and entry.family == "mlp"
        model = skiplab.create_model(name, depth=2, width=8)
        assert model(torch.randn(3, 784)).shape == (3, 10)
        assert {b.skip for b in skip_blocks(model)} == {skip}
        assert count_skips(model) == (0 if skip == "none" else 2)


def _block_input(block: MLPBlock) -> torch.Tensor:
    return torch.randn(6, block.linear.in_features)


@pytest.mark.parametrize("skip", SKIPS)
def test_block_merge_is_what_the_skip_says(skip: str) -> None:
    block = MLPBlock(8, 8, skip=skip, act="tanh").eval()
    block.branch_scale = 0.5
    x = _block_input(block)
    with torch.no_grad():
        branch = block.branch(x)
        y = block(x)
        if skip == "residual":
            expected = x + 0.5 * branch
        elif skip == "highway":
            gate = block.gate(x)
            expected = x * (1 - gate) + 0.5 * branch * gate
        else:
            expected = 0.5 * branch
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("skip", SKIPS)
def test_lesioned_block_returns_its_input(skip: str) -> None:
    block = MLPBlock(8, 8, skip=skip)
    assert isinstance(block, SkipBlock) and block.can_lesion()
    block.branch_enabled = False
    x = _block_input(block)
    torch.testing.assert_close(block(x), x)


def test_zero_init_last_makes_residual_net_blocks_identity() -> None:
    model = zero_init_last(MLP(4, 8, 3, 2, norm="batch")).eval()
    for block in skip_blocks(model):
        x = torch.randn(5, 8)
        torch.testing.assert_close(block(x), x)
    highway = zero_init_last(MLP(2, 8, 3, 2, skip="highway"))
    block = skip_blocks(highway)[0]
    x = torch.randn(5, 8)
    torch.testing.assert_close(block(x), x, atol=1e-3, rtol=1e-3)  # gate bias -10: carries ~all of x


def test_branch_scale_and_gate_bias_reach_the_blocks() -> None:
    model = MLP(3, 8, 4, 2, branch_scale=0.25, skip="highway", gate_bias=-3.0)
    for block in skip_blocks(model):
        assert block.branch_scale == 0.25
        assert torch.all(block.gate.proj.bias == -3.0)


def test_he_and_xavier_init_scales_and_biases() -> None:
    torch.manual_seed(0)
    he = MLP(1, 512, 512, 512, init="he")
    w = skip_blocks(he)[0].linear.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert torch.all(skip_blocks(he)[0].linear.bias == 0)
    xavier = MLP(1, 512, 512, 512, init="xavier")
    assert skip_blocks(xavier)[0].linear.weight.std().item() == pytest.approx(math.sqrt(1 / 512), rel=0.05)
    biased = MLP(1, 512, 512, 512, bias_std=1.0)
    assert skip_blocks(biased)[0].linear.bias.std().item() == pytest.approx(1.0, rel=0.15)


def test_plain_relu_net_keeps_signal_but_unscaled_residual_grows() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 64)
    with torch.no_grad():
        plain = MLP(20, 64, 64, 1, skip="none")(x)
        grown = MLP(20, 64, 64, 1, skip="residual").forward_features(x)
    assert grown.pow(2).mean().sqrt() > 100  # ~sqrt(2)^20 * stem RMS
    assert torch.isfinite(plain).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=-1), "depth"),
    (dict(depth=2.5), "depth"),
    (dict(width=0), "width"),
    (dict(act="swish"), "act"),
    (dict(norm="group"), "norm"),
    (dict(skip="dense"), "skip"),
    (dict(init="orthogonal"), "init"),
    (dict(branch_scale=float("nan")), "branch_scale"),
    (dict(bias_std=-1.0), "bias_std"),
])
def test_bad_arguments_say_which_and_what(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MLP(**{"depth": 2, "width": 8, "in_features": 4, "out_features": 2, **kwargs})


def test_twin_refuses_other_skip_and_block_refuses_shape_change() -> None:
    with pytest.raises(ValueError, match="skip"):
        skiplab.create_model("plain_mlp", skip="residual")
    with pytest.raises(ValueError, match="in_features == out_features"):
        MLPBlock(8, 4, skip="residual")
    assert MLPBlock(8, 4, skip="none")(torch.randn(2, 8)).shape == (2, 4)


def test_wrong_input_is_a_clear_error() -> None:
    model = MLP(1, 8, 4, 2)
    with pytest.raises(ValueError, match="in_channels=4"):
        model(torch.randn(3, 5))
    with pytest.raises(ValueError, match="2 dims"):
        model(torch.randn(3, 4, 1))


def test_weight_layers_are_the_main_path() -> None:
    model = MLP(3, 8, 4, 2, skip="highway")
    layers = model.weight_layers()
    assert len(layers) == 5 and all(isinstance(l, nn.Linear) for l in layers)
    assert layers[0] is model.stem and layers[-1] is model.head[-1]
