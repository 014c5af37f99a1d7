"""Optimizer construction, with weight decay optionally kept off normalisation parameters and biases."""
from __future__ import annotations

import torch
import torch.nn as nn

from skiplab.speed import optimizer_kwargs
from skiplab.train.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    """One group with decay; with ``exclude_bn_bias`` a second one without, holding every parameter with
    fewer than 2 dims (BN/LayerNorm/GroupNorm scales and shifts, biases, scalar gates).

    Decaying a BN scale only shrinks a factor the next layer undoes, which mostly raises the effective lr
    (van Laarhoven 2017); excluding them is the usual choice of short schedules (Goyal et al. 2017).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not exclude_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over :func:`param_groups`; on CUDA the fused single-kernel step where this torch build has
    one.  Not on CPU: no effect measured there (convolutions dominate the step — see skiplab.speed)."""
    groups = param_groups(model, cfg.weight_decay, cfg.wd_exclude_bn_bias)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if cfg.optimizer == "sgd":
        cls, kwargs = torch.optim.SGD, dict(momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        cls, kwargs = torch.optim.AdamW, dict(betas=cfg.betas)
    return cls(groups, lr=cfg.lr, **kwargs, **optimizer_kwargs(cls, device, fused=device.type == "cuda"))


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (momentum, Adam moments) its parameter's memory layout.

    A checkpoint stores tensors contiguous, so after ``load_state_dict`` the momentum of a channels_last weight
    is NCHW.  The foreach step copes; the fused kernels pair elements by storage offset and would silently mix
    them (found by the bitwise resume test), so the layouts must agree before the next step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
