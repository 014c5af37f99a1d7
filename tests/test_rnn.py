"""The residual recurrent classifier and its plain twin."""
from __future__ import annotations

import pytest
import torch

import skiplab
from skiplab.blocks.base import count_skips, zero_init_last
from skiplab.blocks.wrap import Residual
from skiplab.models.rnn import RNNClassifier, rnn_classifier


pytestmark = pytest.mark.usefixtures("tiny_cpu")  # one thread comes from conftest


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_forward_backward_reaches_every_parameter(cell: str, pool: str) -> None:
    model = rnn_classifier(cell, num_layers=3, hidden_size=12, input_size=5, num_classes=4, pool=pool)
    x = torch.randn(3, 7, 5)
    y = model(x)
    assert y.shape == (3, 4) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert count_skips(model) == 3 and all(isinstance(b, Residual) for b in model.stages[0])


def test_each_layer_adds_its_recurrent_output_to_its_input() -> None:
    model = rnn_classifier("gru", num_layers=2, hidden_size=6, input_size=3)
    x = torch.randn(2, 4, 3)
    h = model.stem(x)
    for block in model.stages[0]:
        expected = h + block.branch.rnn(h)[0]
        h = block(h)
        torch.testing.assert_close(h, expected)
    torch.testing.assert_close(model.forward_features(x), h)


def test_plain_twin_has_no_skips() -> None:
    plain = skiplab.create_model("plain_rnn_classifier", hidden_size=8)
    assert count_skips(plain) == 0
    x = torch.randn(2, 32, 16)
    h = plain.stem(x)
    for block in plain.stages[0]:
        h = block.branch(h)
    torch.testing.assert_close(plain.forward_features(x), h)
    assert plain(x).shape == (2, 10)


def test_zero_init_last_makes_the_stack_an_identity() -> None:
    model = zero_init_last(rnn_classifier("lstm", num_layers=4, hidden_size=8))
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(model.forward_features(x), model.stem(x))


def test_pool_mean_differs_from_last() -> None:
    torch.manual_seed(0)
    last = rnn_classifier(hidden_size=8, pool="last")
    mean = rnn_classifier(hidden_size=8, pool="mean")
    mean.load_state_dict(last.state_dict())
    x = torch.randn(2, 6, 16)
    assert not torch.allclose(last(x), mean(x))


def test_token_input_through_embedding() -> None:
    model = rnn_classifier(hidden_size=8, vocab_size=20, num_classes=3)
    tokens = torch.randint(0, 20, (4, 9))
    assert model(tokens).shape == (4, 3)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 20\)"):
        model(torch.full((1, 3), 20))
    with pytest.raises(TypeError, match="int64"):
        model(tokens.float())


def test_input_checks_and_bad_arguments() -> None:
    model = rnn_classifier(hidden_size=8)
    with pytest.raises(ValueError, match="in_channels=16"):
        model(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="3 dims"):
        model(torch.randn(2, 16))
    with pytest.raises(ValueError, match="cell"):
        rnn_classifier("transformer")
    with pytest.raises(ValueError, match="pool"):
        RNNClassifier(pool="max")
    with pytest.raises(ValueError, match="skip"):
        rnn_classifier(skip="dense")
    with pytest.raises(ValueError, match="num_layers"):
        rnn_classifier(num_layers=0)


def test_registry_entry_rebuilds() -> None:
    model = skiplab.create_model("rnn_classifier", cell="gru", num_layers=1)
    assert model.model_name == "rnn_classifier" and model.model_kwargs == {"cell": "gru", "num_layers": 1}
    assert isinstance(model.stages[0][0].branch.rnn, torch.nn.GRU)
