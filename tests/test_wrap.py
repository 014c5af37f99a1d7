"""Residual(module): identity skip around Linear, Conv, Sequential, Transformer, attention and recurrent layers."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from skiplab.blocks.base import SkipBlock, count_skips
from skiplab.blocks.wrap import Residual, make_projection


pytestmark = pytest.mark.usefixtures("tiny_cpu")  # one thread comes from conftest


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Linear(8, 8), (4, 8)),
        (nn.Conv2d(3, 3, 3, padding=1), (2, 3, 6, 6)),
        (nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)), (5, 8)),
        (nn.Conv1d(4, 4, 5, padding=2), (2, 4, 9)),
    ],
)
def test_adds_identity_skip_around_shape_preserving_modules(module: nn.Module, shape: tuple[int, ...]) -> None:
    block = Residual(module)
    assert isinstance(block, SkipBlock) and block.skip == "residual" and count_skips(block) == 1
    assert isinstance(block.shortcut, nn.Identity)
    x = torch.randn(*shape)
    close(block(x), x + module(x))


def test_transformer_encoder_layer_with_forwarded_kwargs() -> None:
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    block = Residual(layer).eval()
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    with torch.no_grad():
        close(block(x), x + layer(x))
        with_mask = block(x, src_key_padding_mask=mask)
        close(with_mask, x + layer(x, src_key_padding_mask=mask))
        # The mask really reached the layer: padded keys change the unpadded positions' outputs.
        assert not torch.allclose(with_mask[1, :3], block(x)[1, :3])


def test_multihead_attention_skip_on_query_weights_pass_through() -> None:
    attn = nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True)
    q, kv = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    out, weights = Residual(attn)(q, kv, kv)
    ref_out, ref_weights = attn(q, kv, kv)
    close(out, q + ref_out)
    close(weights, ref_weights)
    assert weights.shape == (2, 4, 6)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_skip_on_output_state_passes_through(cell: type[nn.RNNBase], batch_first: bool) -> None:
    rnn = cell(6, 6, num_layers=2, batch_first=batch_first)
    block = Residual(rnn)
    x = torch.randn(3, 5, 6)  # (N, T, F) if batch_first else (T, N, F)
    out, state = block(x)
    ref_out, ref_state = rnn(x)
    close(out, x + ref_out)
    ref_states = ref_state if isinstance(ref_state, tuple) else (ref_state,)
    states = state if isinstance(state, tuple) else (state,)
    assert type(state) is type(ref_state)
    for s, r in zip(states, ref_states):
        assert torch.equal(s, r), "the recurrent state must pass through unchanged"


def test_lstm_initial_state_is_forwarded() -> None:
    lstm = nn.LSTM(4, 4, batch_first=True)
    x = torch.randn(2, 3, 4)
    h0, c0 = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    out, (h, c) = Residual(lstm)(x, (h0, c0))
    ref_out, (ref_h, ref_c) = lstm(x, (h0, c0))
    close(out, x + ref_out)
    assert torch.equal(h, ref_h) and torch.equal(c, ref_c)
    assert not torch.allclose(out, Residual(lstm)(x)[0]), "h0/c0 must have reached the LSTM"


def test_packed_sequence_gets_the_skip_on_its_data() -> None:
    lstm = nn.LSTM(4, 4, batch_first=True)
    x = torch.randn(3, 5, 4)
    packed = pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True, enforce_sorted=True)
    out, (h, _) = Residual(lstm)(packed)
    ref_out, (ref_h, _) = lstm(packed)
    assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
    close(out.data, packed.data + ref_out.data)
    assert torch.equal(h, ref_h)


def test_mismatch_error_names_both_shapes_and_suggests_projection() -> None:
    block = Residual(nn.LSTM(6, 6, batch_first=True, bidirectional=True))
    with pytest.raises(ValueError) as err:
        block(torch.randn(2, 5, 6))
    msg = str(err.value)
    assert "(2, 5, 6)" in msg and "(2, 5, 12)" in msg and "projection=" in msg and "LSTM" in msg


def test_lazy_linear_projection_for_bidirectional_lstm() -> None:
    lstm = nn.LSTM(6, 6, batch_first=True, bidirectional=True)
    block = Residual(lstm, projection=True)
    x = torch.randn(2, 5, 6)
    out, (h, _) = block(x)
    assert isinstance(block.shortcut, nn.Linear) and block.shortcut.weight.shape == (12, 6)
    close(out, block.shortcut(x) + lstm(x)[0])
    assert h.shape == (2, 2, 6)
    out.sum().backward()
    assert block.shortcut.weight.grad is not None
    created = block.shortcut
    block(x)
    assert block.shortcut is created, "the projection is built once"


@pytest.mark.parametrize("size, expect", [(8, 4), (7, 4)])
def test_lazy_strided_conv_projection(size: int, expect: int) -> None:
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    block = Residual(conv, projection=True)
    x = torch.randn(2, 3, size, size)
    y = block(x)
    assert y.shape == (2, 5, expect, expect)
    assert isinstance(block.shortcut, nn.Conv2d)
    assert block.shortcut.kernel_size == (1, 1) and block.shortcut.stride == (2, 2)
    close(y, block.shortcut(x) + conv(x))


def test_explicit_projection_and_its_shape_check() -> None:
    proj = nn.Linear(4, 6, bias=False)
    block = Residual(nn.Linear(4, 6), projection=proj)
    x = torch.randn(3, 4)
    close(block(x), proj(x) + block.branch(x))
    with pytest.raises(ValueError, match=r"projection maps input shape \(3, 4\) to \(3, 7\).*\(3, 6\)"):
        Residual(nn.Linear(4, 6), projection=nn.Linear(4, 7))(x)


def test_make_projection_refuses_what_it_cannot_infer() -> None:
    with pytest.raises(ValueError, match="ranks differ"):
        make_projection(torch.Size([2, 3, 4, 4]), torch.Size([2, 12]))
    with pytest.raises(ValueError, match="cannot infer"):
        make_projection(torch.Size([2, 3, 4, 4]), torch.Size([2, 3, 3, 5]))


def test_lazy_projection_not_built_yet_gives_clear_load_error() -> None:
    trained = Residual(nn.Linear(4, 6), projection=True)
    trained(torch.randn(1, 4))
    fresh = Residual(nn.Linear(4, 6), projection=True)
    with pytest.raises(RuntimeError, match="run one forward pass"):
        fresh.load_state_dict(trained.state_dict())
    fresh(torch.randn(1, 4))
    fresh.load_state_dict(trained.state_dict())
    close(fresh.shortcut.weight, trained.shortcut.weight)


def test_learnable_scale_starts_at_zero_and_learns() -> None:
    lin = nn.Linear(8, 8)
    block = Residual(lin, scale="learnable")
    assert isinstance(block.scale, nn.Parameter) and block.scale.item() == 0.0
    assert any(p is block.scale for p in block.parameters())
    x = torch.randn(4, 8)
    y = block(x)
    close(y, x)  # ReZero: exactly the identity at init
    (y * torch.randn_like(y)).sum().backward()
    assert block.scale.grad is not None and block.scale.grad.abs().item() > 0
    with torch.no_grad():
        block.scale.fill_(0.5)
    close(block(x), x + 0.5 * lin(x))


def test_fixed_scale_and_branch_scale() -> None:
    lin = nn.Linear(8, 8)
    block = Residual(lin, scale=0.25)
    assert not any(True for _ in block.parameters() if _ is not lin.weight and _ is not lin.bias)
    x = torch.randn(4, 8)
    close(block(x), x + 0.25 * lin(x))
    block.branch_scale = 2.0
    close(block(x), x + 0.5 * lin(x))


def test_plain_twin_and_lesion() -> None:
    lin = nn.Linear(8, 8)
    x = torch.randn(4, 8)
    plain = Residual(lin, skip="none")
    assert count_skips(plain) == 0 and not plain.has_skip
    close(plain(x), lin(x))
    plain.branch_enabled = False
    assert torch.equal(plain(x), x)
    block = Residual(lin)
    block.branch_enabled = False
    assert torch.equal(block(x), x) and block.can_lesion()
    lstm_block = Residual(nn.LSTM(8, 8, batch_first=True))
    lstm_block.branch_enabled = False
    seq = torch.randn(2, 3, 8)
    out, (h, _) = lstm_block(seq)
    assert torch.equal(out, seq) and h.shape == (1, 2, 8)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(8, 8), (4, 8)),
        (lambda: nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1),
                               nn.BatchNorm2d(3)), (2, 3, 5, 5)),
        (lambda: nn.LSTM(8, 8, batch_first=True), (2, 6, 8)),
        (lambda: nn.GRU(8, 8), (6, 2, 8)),
    ],
)
def test_zero_init_last_makes_identity(make, shape) -> None:  # noqa: ANN001
    block = Residual(make())
    x = torch.randn(*shape)
    block.zero_init_last()
    block.eval()
    y = block(x)
    close(y[0] if isinstance(y, tuple) else y, x)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        Residual(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        Residual(nn.Linear(2, 2), scale="big")
    with pytest.raises(TypeError, match="projection"):
        Residual(nn.Linear(2, 2), projection="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="skip"):
        Residual(nn.Linear(2, 2), skip="dense")
