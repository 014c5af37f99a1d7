"""benchmarks/reference.py builds the same networks as skiplab: same parameter shapes in the same order, the same
initialisation statistics, and — with our weights copied in — the same outputs."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from skiplab import create_model

_spec = importlib.util.spec_from_file_location(
    "skiplab_reference", Path(__file__).resolve().parents[1] / "benchmarks" / "reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

NAMES = ["resnet20", "resnet56", "resnet110", "resnet50"]


@pytest.mark.parametrize("name", NAMES)
def test_same_parameter_shapes_and_buffers(name: str) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ref, ours = reference.reference_model(name, num_classes=10), create_model(name, num_classes=10)
    assert [tuple(p.shape) for p in ref.parameters()] == [tuple(p.shape) for p in ours.parameters()]
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())
    assert [tuple(b.shape) for b in ref.buffers()] == [tuple(b.shape) for b in ours.buffers()]
    expected = {"resnet20": 269_722, "resnet56": 853_018, "resnet110": 1_727_962}
    if name in expected:
        assert sum(p.numel() for p in ref.parameters()) == expected[name]


@pytest.mark.parametrize("name,size", [("resnet20", 32), ("resnet56", 16), ("resnet50", 32)])
def test_same_function_with_copied_weights(name: str, size: int) -> None:
    ref = reference.reference_model(name, num_classes=10)
    ours = create_model(name, num_classes=10)
    with torch.no_grad():
        for p, q in zip(ours.parameters(), ref.parameters()):
            q.copy_(p)
    x = torch.randn(2, 3, size, size)
    for mode in (True, False):  # batch statistics, then running statistics (updated once by the train pass)
        ref.train(mode), ours.train(mode)
        torch.testing.assert_close(ref(x), ours(x), rtol=1e-5, atol=1e-5)


def test_same_initialisation() -> None:
    torch.manual_seed(0)
    ref = reference.cifar_resnet(56)
    for m in ref.modules():
        if isinstance(m, nn.Conv2d):  # He-normal, fan_out
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            assert abs(m.weight.std().item() / math.sqrt(2 / fan_out) - 1) < 0.25
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
    fc = ref.fc.weight  # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as ours keeps it
    assert fc.abs().max() <= 1 / math.sqrt(64)


def test_reference_trainer_logs_every_step() -> None:
    trainer = reference.ReferenceTrainer(reference.cifar_resnet(20))
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    trainer.step(x, y)
    trainer.step(x, y)
    assert len(trainer.losses) == 2 and all(isinstance(v, float) for v in trainer.losses)
    with pytest.raises(ValueError, match="resnet20"):
        reference.reference_model("resnet18")
