"""Hooks that read a model's main path without knowing its classes.

Every skiplab model is ``stem -> stages (skip blocks) -> head``; :func:`main_path_units` lists those units in
forward order, so per-layer analyses address a ResNet, a DenseNet or an MLP the same way.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from skiplab.blocks.base import SkipBlock, skip_blocks


def main_path_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[("stem", stem), ("block1", b1), ..., ("head", head)]`` — the stem, every skip block (plain twins'
    blocks too) in forward order, and the head.  Raises TypeError for a model without that interface."""
    for attr in ("stem", "stages", "head"):
        if not isinstance(getattr(model, attr, None), nn.Module):
            raise TypeError(f"{type(model).__name__} has no {attr!r} module; expected a skiplab SkipNet "
                            "(stem -> stages -> head)")
    blocks = skip_blocks(model.stages)
    if not blocks:
        raise ValueError(f"{type(model).__name__}.stages holds no SkipBlock; cannot address its layers")
    return [("stem", model.stem), *((f"block{i + 1}", b) for i, b in enumerate(blocks)), ("head", model.head)]


def unit_weights(unit: nn.Module) -> list[nn.Parameter]:
    """The weights (parameters with >1 dims) on a unit's main path.

    For a skip block: its branch (the layers the plain twin keeps) — not the shortcut projection and not a
    highway gate, so plain, residual and highway twins are compared on the same layers.  For stem/head: all.
    """
    if isinstance(unit, SkipBlock):
        branch = getattr(unit, "branch", None)
        if isinstance(branch, nn.Module):
            params = list(branch.parameters())
        else:
            excluded = {id(p) for name in ("shortcut", "gate") if isinstance(getattr(unit, name, None), nn.Module)
                        for p in getattr(unit, name).parameters()}
            params = [p for p in unit.parameters() if id(p) not in excluded]
    else:
        params = list(unit.parameters())
    return [p for p in params if p.dim() > 1]


@dataclass
class Record:
    """What one unit produced in the last forward (and received in the last backward)."""

    name: str
    output: torch.Tensor | None = None  # detached output of the unit
    grad: torch.Tensor | None = field(default=None, repr=False)  # dLoss/d(output), filled by backward


@contextmanager
def record_outputs(units: Sequence[tuple[str, nn.Module]], *, grads: bool = False) -> Iterator[list[Record]]:
    """Record each unit's output during forward (first element of tuple outputs) and, with ``grads=True``, the
    gradient of the loss with respect to it during backward.  Hooks are removed on exit."""
    records = [Record(name) for name, _ in units]
    handles = []

    def make_hook(record: Record):
        def hook(module: nn.Module, args: tuple, output) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            record.output = out.detach()
            if grads and out.requires_grad:
                out.register_hook(lambda g: setattr(record, "grad", g.detach()))
        return hook

    try:
        for record, (_, module) in zip(records, units):
            handles.append(module.register_forward_hook(make_hook(record)))
        yield records
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> int:
    """Set every BatchNorm's running statistics to the statistics of the batch ``x`` (one forward in train mode
    with a cumulative average), then put the model in eval mode.  Afterwards the network is a fixed function of
    each input — normalised with ``x``'s statistics — so per-sample input gradients are well defined.
    Returns how many BatchNorm layers were calibrated."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    counts: dict[nn.Module, int] = {}
    handles = [m.register_forward_pre_hook(lambda m, args: counts.__setitem__(m, args[0].numel() // args[0].shape[1]))
               for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, running stats == that batch's stats
    model.train()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
    for m in bns:  # running_var is stored unbiased; train mode normalised with the biased variance
        n = counts.get(m, 0)
        if n > 1 and m.running_var is not None:
            m.running_var.mul_((n - 1) / n)
    model.eval()
    return len(bns)
