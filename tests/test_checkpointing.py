"""Segment checkpointing: same gradients, same BN running statistics, same RNG draws, less saved memory."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab import create_model
from skiplab.checkpointing import KeepNormStats, feature_units, set_checkpointing, split_even
from skiplab.models.preact import PreActResNet


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _norm_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


CASES = [
    ("resnet20", dict(width=0.25)),
    ("preact29", dict(width=0.25)),  # full pre-activation bottlenecks, projection with shared preact
    ("resnet50", dict(width=0.0625, num_classes=5)),
    ("resnet20", dict(width=0.25, drop_path_rate=0.5)),  # random masks must be replayed, not redrawn
    ("densenet_bc_100_12", dict(depth=40, growth_rate=4)),  # concatenating skips inside each stage
]


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{'-'.join(k)}" for n, k in CASES])
@pytest.mark.parametrize("segments", [1, 3, 1000])
def test_checkpointed_step_equals_plain_step(name: str, kwargs: dict, segments: int) -> None:
    torch.manual_seed(0)
    plain = PreActResNet(29, **kwargs) if name == "preact29" else create_model(name, **kwargs)
    ckpt = copy.deepcopy(plain).set_checkpointing(segments)
    size = 64 if name == "resnet50" else 16
    x, y = torch.randn(4, 3, size, size), torch.randint(0, 5, (4,))
    for _ in range(2):  # twice: the second step starts from statistics the first one updated
        torch.manual_seed(1)
        g_plain = _train_step(plain, x, y)
        torch.manual_seed(1)
        g_ckpt = _train_step(ckpt, x, y)
        for n in g_plain:
            torch.testing.assert_close(g_ckpt[n], g_plain[n], rtol=0, atol=0, msg=f"gradient of {n}")
        s_plain, s_ckpt = _norm_stats(plain), _norm_stats(ckpt)
        for k in s_plain:
            torch.testing.assert_close(s_ckpt[k], s_plain[k], rtol=0, atol=0, msg=f"buffer {k}")
    counts = {int(v) for k, v in s_ckpt.items() if k.endswith("num_batches_tracked")}
    assert counts == {2}  # one update per step, not two


def test_cumulative_momentum_stats_are_kept() -> None:
    # momentum=None averages over num_batches_tracked: a double update would change both the count and the mean
    torch.manual_seed(0)
    plain = create_model("resnet20", width=0.25)
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    ckpt = copy.deepcopy(plain).set_checkpointing(2)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    _train_step(plain, x, y)
    _train_step(ckpt, x, y)
    for k, v in _norm_stats(plain).items():
        torch.testing.assert_close(_norm_stats(ckpt)[k], v, rtol=0, atol=0)


def test_checkpointing_saves_fewer_tensors() -> None:
    """Count the bytes autograd keeps for backward: checkpointing must keep far fewer (memory on the real nets
    is measured by benchmarks/bench_memory.py)."""
    def saved_bytes(model: nn.Module) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        x = torch.randn(8, 3, 16, 16)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.train()(x).sum()
        return total

    model = create_model("resnet56", width=0.25)
    plain = saved_bytes(model)
    model.set_checkpointing(5)
    assert saved_bytes(model) < 0.2 * plain


def test_off_in_eval_and_no_grad_and_can_be_turned_off() -> None:
    model = create_model("resnet20", width=0.25).set_checkpointing(3)
    x = torch.randn(2, 3, 16, 16)
    ref = copy.deepcopy(model).set_checkpointing(None).eval()(x)
    torch.testing.assert_close(model.eval()(x), ref)
    with torch.no_grad():
        model.train()(x)  # runs plainly (no checkpoint warning, no recomputation context)
    assert model.set_checkpointing(None).checkpoint_segments is None


def test_bad_arguments_raise_clear_errors() -> None:
    model = create_model("resnet20", width=0.25)
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="positive integer"):
            model.set_checkpointing(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SkipNet"):
        set_checkpointing(nn.Linear(2, 2), 2)
    assert set_checkpointing(model, 2, release_memory=False).checkpoint_segments == 2
    with pytest.raises(ValueError, match="forward_features"):
        create_model("unet", depth=2, base_width=4).set_checkpointing(2)  # long skips cross the stages


def test_split_even_and_units() -> None:
    items = [nn.Identity() for _ in range(10)]
    chunks = split_even(items, 3)
    assert [len(c) for c in chunks] == [4, 3, 3] and sum(chunks, []) == items
    assert [len(c) for c in split_even(items, 50)] == [1] * 10
    units = feature_units(create_model("resnet20", width=0.25))
    assert len(units) == 1 + 9  # stem + 3 stages x 3 blocks


def test_keep_norm_stats_restores() -> None:
    bn = nn.BatchNorm2d(3)
    with KeepNormStats([bn]):
        bn.train()(torch.randn(4, 3, 2, 2))
        assert int(bn.num_batches_tracked) == 1
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(3))
