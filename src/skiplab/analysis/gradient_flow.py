"""Per-layer gradient norms and activation statistics at one step (used at initialisation: Glorot & Bengio
2010; Hochreiter 1991; He et al. 2015 section 4.1 "vanishing gradients ... unlikely").

"Layer" here means a main-path unit of a skiplab model (stem, each skip block, head — see
:func:`skiplab.analysis.hooks.main_path_units`).  A unit's weight-gradient norm is taken over its branch
weights only, so plain, residual and highway twins are compared on the same layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.analysis.hooks import main_path_units, record_outputs, unit_weights


@dataclass
class GradientFlow:
    """One forward/backward: per unit (input to output order)."""

    names: list[str]
    weight_grad_norm: list[float]  # ||dL/dW||_F over the unit's main-path weights
    output_grad_norm: list[float]  # ||dL/dh||_F of the unit's output h (the back-propagated signal)
    act_mean: list[float]  # mean of h over batch and features
    act_std: list[float]  # std of h over batch and features
    loss: float


def gradient_flow(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> GradientFlow:
    """Run ``loss_fn(model(x), target)`` forward and backward once and read every main-path unit.

    The model is left in whatever train/eval mode it is in (train mode: BatchNorm uses batch statistics, as in
    the first step of training).  Gradients on the parameters are overwritten.
    """
    units = main_path_units(model)
    weights = [unit_weights(m) for _, m in units]
    model.zero_grad(set_to_none=True)
    with record_outputs(units, grads=True) as records:
        loss = loss_fn(model(x), target)
        loss.backward()
    wgrad = []
    for params in weights:
        sq = sum(float(p.grad.double().square().sum()) for p in params if p.grad is not None)
        wgrad.append(math.sqrt(sq))
    return GradientFlow(
        names=[name for name, _ in units],
        weight_grad_norm=wgrad,
        output_grad_norm=[float(r.grad.double().norm()) if r.grad is not None else float("nan") for r in records],
        act_mean=[float(r.output.double().mean()) for r in records],
        act_std=[float(r.output.double().std()) for r in records],
        loss=float(loss.detach()),
    )


def fit_geometric(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log y = a + b x``: returns ``(exp(b), R^2)`` — the factor per unit of x and how
    well a geometric law fits.  Non-positive or non-finite y are dropped; fewer than two points give NaNs."""
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, logy = x[keep], np.log(y[keep])
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan")
    b, a = np.polyfit(x, logy, 1)
    resid = logy - (a + b * x)
    total = np.sum((logy - logy.mean()) ** 2)
    r2 = 1.0 - float(np.sum(resid ** 2)) / float(total) if total > 0 else 1.0
    return float(np.exp(b)), r2
