"""Residual blocks: shortcut options A/B/C/D, stride placement, twins, lesioning, zero-init identity, the five
pre-activation orderings (checked against their formulas)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.blocks.base import count_skips
from skiplab.blocks.preact import ORDERINGS, PreActBasicBlock, PreActBottleneck
from skiplab.blocks.residual import BasicBlock, Bottleneck, make_stage
from skiplab.layers.shortcuts import AvgDownShortcut, NoShortcut, ProjectionShortcut, ZeroPadShortcut, \
    make_shortcut


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def randomize_bn(module: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so eval-mode checks exercise them."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return module


# --------------------------------------------------------------------------------------------------- shortcuts
def test_shortcut_a_is_identity_or_parameter_free_subsample_and_zero_pad() -> None:
    assert isinstance(make_shortcut("A", 8, 8, 1), nn.Identity)
    sc = make_shortcut("A", 4, 8, 2)
    assert isinstance(sc, ZeroPadShortcut) and n_params(sc) == 0 and len(list(sc.buffers())) == 0
    x = torch.randn(2, 4, 7, 7)  # odd size: must match a padded stride-2 3x3 conv's output (4x4)
    y = sc(x)
    assert y.shape == (2, 8, 4, 4)
    assert y.shape[-2:] == nn.Conv2d(4, 8, 3, stride=2, padding=1)(x).shape[-2:]
    torch.testing.assert_close(y[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 4:]) == 0


def test_shortcut_b_projects_only_when_shapes_change_and_c_always() -> None:
    assert isinstance(make_shortcut("B", 8, 8, 1), nn.Identity)
    cases = [("B", (4, 8, 2)), ("B", (4, 8, 1)), ("B", (8, 8, 2)), ("C", (8, 8, 1)), ("C", (4, 8, 2))]
    for kind, (cin, cout, s) in cases:
        sc = make_shortcut(kind, cin, cout, s)
        assert isinstance(sc, ProjectionShortcut), (kind, cin, cout, s)
        assert sc.conv.kernel_size == (1, 1) and sc.conv.stride == (s, s) and isinstance(sc.bn, nn.BatchNorm2d)
        assert n_params(sc) == cin * cout + 2 * cout
        assert sc(torch.randn(2, cin, 8, 8)).shape == (2, cout, 8 // s, 8 // s)
    assert not hasattr(make_shortcut("B", 4, 8, 2, norm="none"), "bn")


def test_shortcut_d_pools_every_pixel_then_projects() -> None:
    """ResNet-D: 2x2 average pooling (a window cut by the border averages what it covers), then a stride-1 1x1."""
    assert isinstance(make_shortcut("D", 8, 8, 1), nn.Identity)
    sc = make_shortcut("D", 4, 8, 2).eval()
    assert isinstance(sc, AvgDownShortcut) and sc.conv.stride == (1, 1) and n_params(sc) == 4 * 8 + 2 * 8
    x = torch.randn(2, 4, 5, 5)
    pooled = torch.stack([torch.stack([x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((2, 3)) for j in range(3)], -1)
                          for i in range(3)], -2)  # N, C, 3, 3; the last row and column average 2 or 1 pixels
    expected = sc.bn(F.conv2d(pooled, sc.conv.weight))
    torch.testing.assert_close(sc(x), expected)
    assert not hasattr(make_shortcut("D", 4, 8, 1), "pool") and make_shortcut("D", 4, 8, 1)(x).shape == (2, 8, 5, 5)


def test_shortcut_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="shortcut must be one of.*'D'"):
        make_shortcut("E", 4, 4, 1)
    with pytest.raises(ValueError, match="out_channels must be >= in_channels"):
        make_shortcut("A", 8, 4, 1)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        make_shortcut("B", 4, 4, 0)


def test_plain_placeholder_shortcut() -> None:
    assert isinstance(make_shortcut("none", 4, 4, 1), nn.Identity)
    sc = make_shortcut("none", 4, 8, 2)
    assert isinstance(sc, NoShortcut) and n_params(sc) == 0
    with pytest.raises(RuntimeError, match="cannot be lesioned"):
        sc(torch.randn(1, 4, 4, 4))


# --------------------------------------------------------------------------------------------- basic/bottleneck
@pytest.mark.parametrize("skip", ["residual", "none", "highway"])
@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck])
def test_block_shapes_and_backward(cls: type, skip: str) -> None:
    block = cls(8, 16, 2, skip=skip)
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 16, 5, 5)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())


def test_bottleneck_stride_placement() -> None:
    v15 = Bottleneck(8, 16, 2)
    paper = Bottleneck(8, 16, 2, stride_in_1x1=True)
    assert v15.branch.conv1.stride == (1, 1) and v15.branch.conv2.stride == (2, 2)
    assert paper.branch.conv1.stride == (2, 2) and paper.branch.conv2.stride == (1, 1)
    assert v15.branch.conv1.out_channels == 4 and v15.branch.conv3.out_channels == 16  # expansion 4
    x = torch.randn(1, 8, 8, 8)
    assert v15(x).shape == paper(x).shape == (1, 16, 4, 4)
    assert PreActBottleneck(8, 16, 2).branch.conv1.stride == (2, 2)  # the authors' pre-act code
    assert PreActBottleneck(8, 16, 2, stride_in_1x1=False).branch.conv2.stride == (2, 2)


@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck])
def test_plain_twin_has_same_branch_and_no_skip(cls: type) -> None:
    residual, plain = cls(8, 16, 2), cls(8, 16, 2, skip="none")
    assert count_skips(residual) == 1 and count_skips(plain) == 0
    proj = n_params(residual.shortcut)
    assert proj > 0 and n_params(plain) == n_params(residual) - proj  # no projection parameters
    assert [k for k in plain.state_dict() if k.startswith("branch")] == \
        [k for k in residual.state_dict() if k.startswith("branch")]
    plain.load_state_dict({k: v for k, v in residual.state_dict().items() if not k.startswith("shortcut")})
    residual.eval(), plain.eval()
    x = torch.randn(2, 8, 8, 8)
    # Same F; the plain block returns ReLU(F(x)), the residual one ReLU(F(x) + shortcut(x)).
    torch.testing.assert_close(plain(x), F.relu(residual.branch(x)))
    torch.testing.assert_close(residual(x), F.relu(residual.branch(x) + residual.shortcut(x)))


def test_lesion_returns_skip_path_and_plain_identity() -> None:
    x = torch.rand(2, 8, 6, 6)  # non-negative, like the output of a previous post-activation block
    block = BasicBlock(8, 8, 1).eval()
    block.branch_enabled = False
    torch.testing.assert_close(block(x), x)
    down = BasicBlock(8, 16, 2, shortcut="A").eval()
    down.branch_enabled = False
    torch.testing.assert_close(down(x), F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 8)))
    plain = BasicBlock(8, 8, 1, skip="none")
    plain.branch_enabled = False
    xn = torch.randn(2, 8, 6, 6)
    assert plain.can_lesion() and torch.equal(plain(xn), xn)
    plain_down = BasicBlock(8, 16, 2, skip="none")
    plain_down.branch_enabled = False
    assert not plain_down.can_lesion()
    with pytest.raises(RuntimeError, match="cannot be lesioned"):
        plain_down(x)


def test_branch_scale_multiplies_the_branch() -> None:
    block = randomize_bn(BasicBlock(8, 8, 1)).eval()
    x = torch.randn(2, 8, 6, 6)
    block.branch_scale = 0.25
    torch.testing.assert_close(block(x), F.relu(x + 0.25 * block.branch(x)))


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("lesion", [False, True])
def test_blocks_never_modify_their_input(ordering: str, lesion: bool) -> None:
    for block in (PreActBasicBlock(4, 4, 1, ordering=ordering), PreActBottleneck(4, 8, 2, ordering=ordering)):
        block.branch_enabled = not lesion
        x = torch.randn(2, 4, 6, 6)
        before = x.clone()
        block(x)
        assert torch.equal(x, before), f"{ordering} block changed its input in place"


# ------------------------------------------------------------------------------------------- zero-init identity
def _identity_jacobian(block: nn.Module, x: torch.Tensor) -> None:
    jac = torch.autograd.functional.jacobian(block, x)  # x.shape + x.shape
    torch.testing.assert_close(jac.reshape(x.numel(), x.numel()), torch.eye(x.numel()))


@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck])
def test_zero_init_last_makes_post_activation_block_identity(cls: type) -> None:
    block = randomize_bn(cls(8, 8, 1))
    block.zero_init_last()
    block.eval()
    x = torch.rand(1, 8, 3, 3) + 0.1  # the input of an inner post-activation block is a ReLU output (>= 0)
    torch.testing.assert_close(block(x), x)
    _identity_jacobian(block, x)
    # The control: without zero_init_last the block is not the identity.
    assert not torch.allclose(randomize_bn(cls(8, 8, 1)).eval()(x), x)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_zero_init_last_zeroes_the_branch_in_every_ordering(ordering: str) -> None:
    for block, channels in ((PreActBasicBlock(4, 4, 1, ordering=ordering), 4),
                            (PreActBottleneck(8, 8, 1, ordering=ordering), 8)):
        randomize_bn(block).zero_init_last()
        block.eval()
        x = torch.randn(1, channels, 3, 3)
        assert torch.count_nonzero(block.branch(x)) == 0, ordering
        if ordering in ("relu_before_add", "relu_preact", "full_preact"):  # no activation after the add
            torch.testing.assert_close(block(x), x)


def test_full_preact_zero_init_jacobian_is_identity_for_any_input() -> None:
    block = randomize_bn(PreActBottleneck(8, 8, 1, ordering="full_preact"))
    block.zero_init_last()
    block.eval()
    _identity_jacobian(block, torch.randn(1, 8, 3, 3))


# ----------------------------------------------------------------------------------------------------- highway
def test_highway_block_gates_between_branch_and_shortcut() -> None:
    block = randomize_bn(BasicBlock(8, 16, 2, skip="highway", shortcut="A")).eval()
    assert torch.all(block.gate.proj.bias == -2.0) and block.gate.proj.stride == (2, 2)
    x = torch.randn(2, 8, 6, 6)
    t = torch.sigmoid(block.gate.proj(x))
    expected = F.relu(block.branch(x) * t + block.shortcut(x) * (1 - t))
    torch.testing.assert_close(block(x), expected)
    block.zero_init_last()  # closes the gate: the block carries its (shortcut) input
    torch.testing.assert_close(block(x), F.relu(block.shortcut(x)), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------- the five orderings
def _bn(m: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _formula(ordering: str, b: PreActBasicBlock, x: torch.Tensor) -> torch.Tensor:
    """He et al. 2016 Fig. 4, written out from the block's own layers (identity shortcut)."""
    L = dict(b.branch.named_children())
    W1, W2 = L["conv1"], L["conv2"]
    if ordering == "original":
        return F.relu(x + _bn(L["bn2"], W2(F.relu(_bn(L["bn1"], W1(x))))))
    if ordering == "bn_after_add":
        return F.relu(_bn(b.post.bn, x + W2(F.relu(_bn(L["bn1"], W1(x))))))
    if ordering == "relu_before_add":
        return x + F.relu(_bn(L["bn2"], W2(F.relu(_bn(L["bn1"], W1(x))))))
    if ordering == "relu_preact":
        return x + _bn(L["bn2"], W2(F.relu(_bn(L["bn1"], W1(F.relu(x))))))
    return x + W2(F.relu(_bn(L["bn2"], W1(F.relu(_bn(L["bn1"], x))))))


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_each_ordering_computes_its_formula(ordering: str) -> None:
    block = randomize_bn(PreActBasicBlock(4, 4, 1, ordering=ordering)).eval()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(block(x), _formula(ordering, block, x))


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("skip", ["residual", "none", "highway"])
def test_each_ordering_builds_and_runs(ordering: str, skip: str) -> None:
    for block, out_channels in ((PreActBasicBlock(4, 8, 2, ordering=ordering, skip=skip), 8),
                                (PreActBottleneck(4, 16, 2, ordering=ordering, skip=skip), 16)):
        x = torch.randn(2, 4, 6, 6)
        y = block(x)
        assert y.shape == (2, out_channels, 3, 3)
        y.sum().backward()
        assert count_skips(block) == (0 if skip == "none" else 1)


def test_preactivated_projection_units_share_the_preactivation() -> None:
    """The authors' code: a unit whose shortcut projects applies BN-ReLU once, before the split; the
    projection is a bare 1x1 conv.  Identity units keep the raw x on the skip."""
    down = randomize_bn(PreActBottleneck(4, 16, 2, ordering="full_preact")).eval()
    assert list(dict(down.preact.named_children())) == ["bn1", "act1"]
    assert list(dict(down.shortcut.named_children())) == ["conv"]
    x = torch.randn(2, 4, 6, 6)
    p = F.relu(_bn(down.preact.bn1, x))
    torch.testing.assert_close(down(x), down.shortcut.conv(p) + down.branch(p))
    same = PreActBottleneck(16, 16, 1, ordering="full_preact")
    assert isinstance(same.preact, nn.Identity) and isinstance(same.shortcut, nn.Identity)
    assert list(same.branch.named_children())[0][0] == "bn1"
    post = PreActBottleneck(4, 16, 2, ordering="original")  # post-activation orderings project with conv + BN
    assert isinstance(post.preact, nn.Identity) and hasattr(post.shortcut, "bn")


def test_original_ordering_equals_basic_block() -> None:
    for ours, ref in [(PreActBasicBlock(4, 8, 2, ordering="original"), BasicBlock(4, 8, 2)),
                      (PreActBottleneck(4, 16, 2, ordering="original", stride_in_1x1=False), Bottleneck(4, 16, 2))]:
        randomize_bn(ref).eval()
        assert list(ours.state_dict()) == list(ref.state_dict())
        ours.load_state_dict(ref.state_dict())
        ours.eval()
        x = torch.randn(2, 4, 6, 6)
        torch.testing.assert_close(ours(x), ref(x))


def test_bad_block_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="ordering must be one of.*'preact'"):
        PreActBasicBlock(4, 4, ordering="preact")
    with pytest.raises(ValueError, match="skip must be one of.*'dense'"):
        BasicBlock(4, 4, skip="dense")
    with pytest.raises(ValueError, match="num_blocks must be a positive integer"):
        make_stage(BasicBlock, 4, 4, 0)


def test_make_stage_first_block_changes_shape_rest_keep_it() -> None:
    stage = make_stage(Bottleneck, 8, 32, 3, 2, shortcut="B")
    assert len(stage) == 3 and isinstance(stage[0].shortcut, ProjectionShortcut)
    assert all(isinstance(b.shortcut, nn.Identity) for b in stage[1:])
    assert stage(torch.randn(1, 8, 8, 8)).shape == (1, 32, 4, 4)


def test_drop_path_drops_whole_branches_in_training_only() -> None:
    block = randomize_bn(BasicBlock(8, 8, 1, drop_path=0.5))
    x = torch.rand(64, 8, 4, 4)
    block.eval()
    torch.testing.assert_close(block(x), F.relu(x + block.branch(x)))
    block.train()
    y = block(x)
    f = block.branch(x)  # same batch, same batch statistics
    dropped = torch.tensor([torch.allclose(y[i], F.relu(x[i])) for i in range(64)])
    kept = torch.tensor([torch.allclose(y[i], F.relu(x[i] + f[i] / 0.5), atol=1e-5) for i in range(64)])
    assert torch.all(dropped ^ kept) and 0 < int(dropped.sum()) < 64  # each sample: whole branch or none
    with pytest.raises(ValueError, match="drop_path needs a skip"):
        BasicBlock(8, 8, 1, skip="none", drop_path=0.1)
