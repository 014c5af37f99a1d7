"""Highway layers (gate behaviour, the merge formula) and stochastic depth (DropPath, linear decay)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from skiplab.blocks.highway import Highway
from skiplab.blocks.wrap import Residual
from skiplab.layers.drop_path import DropPath, drop_path, linear_decay


pytestmark = pytest.mark.usefixtures("tiny_cpu")  # one thread comes from conftest

# ---- Highway ----


@pytest.mark.parametrize("conv", [False, True])
def test_closed_gate_passes_input_through(conv: bool) -> None:
    branch = nn.Conv2d(4, 4, 3, padding=1) if conv else nn.Linear(4, 4)
    block = Highway(branch, 4, conv=conv, gate_bias=-20.0)
    x = torch.randn(3, 4, 5, 5) if conv else torch.randn(3, 4)
    nn.init.normal_(block.gate.proj.weight, std=0.1)  # keep W_T x small next to the -20 bias
    y = block(x)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    assert not torch.allclose(branch(x), x, atol=1e-2), "the test needs a branch that is far from the identity"


def test_open_gate_gives_the_branch() -> None:
    branch = nn.Linear(4, 4)
    block = Highway(branch, 4, gate_bias=20.0)
    nn.init.normal_(block.gate.proj.weight, std=0.1)
    x = torch.randn(3, 4)
    torch.testing.assert_close(block(x), branch(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bias", [-2.0, -1.0, 0.5])
def test_gate_bias_is_configurable(bias: float) -> None:
    block = Highway(nn.Linear(6, 6), 6, gate_bias=bias)
    assert torch.all(block.gate.proj.bias == bias)
    assert torch.all(Highway(nn.Linear(6, 6), 6).gate.proj.bias == -2.0), "the documented default is -2"


@pytest.mark.parametrize("conv", [False, True])
def test_highway_formula(conv: bool) -> None:
    branch = nn.Conv2d(3, 3, 3, padding=1) if conv else nn.Linear(5, 5)
    features = 3 if conv else 5
    block = Highway(branch, features, conv=conv, gate_bias=-1.0)
    x = torch.randn(2, 3, 4, 4) if conv else torch.randn(7, 5)
    h = branch(x)
    t = torch.sigmoid(block.gate.proj(x))
    assert ((t > 0.01) & (t < 0.99)).float().mean() > 0.5, "gates should be mixing, not saturated"
    torch.testing.assert_close(block(x), h * t + x * (1 - t), rtol=1e-5, atol=1e-6)


def test_highway_lesion_and_zero_init() -> None:
    block = Highway(nn.Linear(4, 4), 4)
    x = torch.randn(2, 4)
    block.branch_enabled = False
    assert torch.equal(block(x), x)
    block.zero_init_last()
    assert torch.all(block.gate.proj.bias == -10.0)


# ---- DropPath ----


def test_eval_is_identity_and_p0_is_identity() -> None:
    x = torch.randn(8, 3, 4, 4)
    dp = DropPath(0.5).eval()
    assert torch.equal(dp(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_row_mode_drops_whole_samples_and_rescales_survivors() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 3, 2, 2)
    y = DropPath(0.25, mode="row").train()(x)
    kept = [bool(torch.allclose(y[i], x[i] / 0.75)) for i in range(64)]
    dropped = [bool(torch.equal(y[i], torch.zeros_like(x[i]))) for i in range(64)]
    assert all(k or d for k, d in zip(kept, dropped)), "each sample is either kept (scaled) or zeroed whole"
    assert 0 < sum(dropped) < 64


def test_batch_mode_drops_all_or_nothing() -> None:
    x = torch.randn(16, 5)
    dp = DropPath(0.5, mode="batch").train()
    outcomes = set()
    for _ in range(40):
        y = dp(x)
        if torch.equal(y, torch.zeros_like(x)):
            outcomes.add("dropped")
        else:
            torch.testing.assert_close(y, x / 0.5)
            outcomes.add("kept")
    assert outcomes == {"dropped", "kept"}


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_expected_value_is_preserved(mode: str) -> None:
    torch.manual_seed(2)
    p = 0.3
    x = torch.ones(4000, 1)
    draws = 1 if mode == "row" else 4000
    means = torch.stack([drop_path(x, p, training=True, mode=mode).mean() for _ in range(draws)])
    # Mean of 4000 Bernoulli(0.7)/0.7 draws: std = sqrt(0.3/0.7/4000) ~ 0.01; allow 5 sigma.
    assert abs(means.mean().item() - 1.0) < 0.05


def test_drop_path_inside_a_residual_branch() -> None:
    lin = nn.Linear(4, 4)
    block = Residual(nn.Sequential(lin, DropPath(0.5, mode="batch")))
    x = torch.randn(3, 4)
    block.eval()
    torch.testing.assert_close(block(x), x + lin(x))
    block.train()
    seen = {bool(torch.allclose(block(x), x)) for _ in range(40)}
    assert seen == {True, False}, "in training the branch is sometimes dropped, leaving the identity"


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_p_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(bad)


def test_bad_types_and_modes() -> None:
    with pytest.raises(TypeError):
        DropPath(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DropPath("0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        DropPath(0.1, mode="sample")


def test_linear_decay_rule() -> None:
    assert linear_decay(0.5, 4) == pytest.approx([0.125, 0.25, 0.375, 0.5])
    probs = linear_decay(0.5, 54)  # the paper's 110-layer CIFAR ResNet: 54 residual blocks, p_L = 0.5
    assert len(probs) == 54 and probs[-1] == pytest.approx(0.5) and probs[0] == pytest.approx(0.5 / 54)
    assert all(a < b for a, b in zip(probs, probs[1:]))
    with pytest.raises(ValueError, match="num_blocks"):
        linear_decay(0.5, 0)
    with pytest.raises(ValueError, match="p_last"):
        linear_decay(1.0, 3)


def test_batch_mode_blocks_skip_the_dropped_branch_computation() -> None:
    """The paper's stochastic depth: a block dropped for the batch does not run its branch at all (the source of
    Huang et al.'s ~25% training-time saving); a kept branch is rescaled by 1/(1-p); eval mode runs every branch."""
    from skiplab import create_model
    from skiplab.blocks.base import skip_blocks

    torch.manual_seed(0)
    model = create_model("resnet20", width=0.25, drop_path_rate=0.5, drop_path_mode="batch")
    blocks = skip_blocks(model)
    assert all(b.drop_path.mode == "batch" for b in blocks)
    calls = {i: 0 for i in range(len(blocks))}
    for i, b in enumerate(blocks):
        b.branch.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randn(4, 3, 16, 16)
    n = 200
    for _ in range(n):
        model(x).sum().backward()  # a dropped branch gets no gradient and no forward
    ran = [calls[i] / n for i in range(len(blocks))]
    expected = [1 - b.drop_path.p for b in blocks]
    assert all(abs(r - e) < 0.12 for r, e in zip(ran, expected)), (ran, expected)
    assert sum(ran) < 0.85 * len(blocks)  # ~25% of the branch computation skipped with p_L = 0.5 (linear decay)
    model.eval()
    before = dict(calls)
    model(x)
    assert all(calls[i] == before[i] + 1 for i in calls)


def test_batch_mode_kept_branch_is_rescaled_and_row_mode_unchanged() -> None:
    from skiplab.layers.drop_path import set_drop_path_mode

    dp = DropPath(0.25, mode="batch").train()
    x = torch.ones(3, 2)
    torch.manual_seed(1)
    outcomes = {dp.drops_whole_branch() for _ in range(50)}
    assert outcomes == {True, False}
    while dp.drops_whole_branch():
        pass
    assert torch.allclose(dp(x), x / 0.75)  # kept: rescaled, no second draw
    assert DropPath(0.25, mode="row").train().drops_whole_branch() is False
    assert DropPath(0.25, mode="batch").eval().drops_whole_branch() is False
    with pytest.raises(ValueError, match="drop_path_mode must be one of"):
        set_drop_path_mode(nn.Sequential(), "layer")
