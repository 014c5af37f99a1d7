"""Model summaries: parameters, FLOPs (counted by ``torch.utils.flop_counter``), per-stage shapes, skips.

FLOPs follow ``FlopCounterMode``'s convention: one multiply-add = 2 FLOPs (convolutions and matmuls only).
torchvision's model tables quote multiply-adds as "GFLOPS" (ResNet-50: 4.09); ours reads 8.2 GFLOPs for the
same network — the ``gmacs`` field gives the comparable number.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from skiplab.blocks.base import count_skips
from skiplab.registry import create_model, get_entry


@dataclass
class StageRow:
    name: str
    output_shape: tuple[int, ...]
    params: int
    flops: int
    skips: int


@dataclass
class ModelSummary:
    name: str
    family: str
    input_size: tuple[int, ...]
    params: int
    flops: int
    skips: int
    stages: list[StageRow] = field(default_factory=list)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parse_input_size(text: str) -> tuple[int, ...]:
    """Parse ``"3,32,32"`` (or ``"3x32x32"``) into a tuple of positive ints, with a clear error."""
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if not size or any(s <= 0 for s in size):
        raise ValueError(f"--input-size must be positive integers like 3,32,32 (C,H,W); got {text!r}")
    return size


def _stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    parts: list[tuple[str, nn.Module]] = [("stem", model.stem)]
    parts += [(f"stages.{i}", s) for i, s in enumerate(model.stages)]
    parts.append(("head", model.head))
    return parts


def summarize(name: str, input_size: tuple[int, ...] | None = None, **kwargs) -> ModelSummary:
    """Summarise a registered model at ``input_size`` (one sample, no batch dim; default: the registry's).

    The model is built on the ``meta`` device, so summarising resnet1202 or resnet152 costs no memory or
    compute; per-stage rows come from forward hooks on ``stem``, each of ``stages`` and ``head``.
    """
    entry = get_entry(name)
    size = tuple(input_size) if input_size is not None else entry.input_size
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model.eval()
    rows: list[StageRow] = []
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for part_name, module in _stage_modules(model):
        def hook(_m, _inp, out, part_name=part_name):
            first = out[0] if isinstance(out, (tuple, list)) else out
            shapes[part_name] = tuple(first.shape[1:])
        hooks.append(module.register_forward_hook(hook))
    # The batch dim is 2 so BatchNorm in train-style code paths never sees a single value per channel.
    x = torch.empty((2, *size), device="meta")
    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    for part_name, module in _stage_modules(model):
        key = f"{prefix}.{part_name}" if f"{prefix}.{part_name}" in per_module else None
        flops = sum(per_module[key].values()) // 2 if key else 0  # per sample (batch of 2)
        rows.append(StageRow(part_name, shapes.get(part_name, ()), count_params(module), flops, count_skips(module)))
    total_flops = counter.get_total_flops() // 2
    return ModelSummary(name, entry.family, size, count_params(model), total_flops, count_skips(model), rows)
