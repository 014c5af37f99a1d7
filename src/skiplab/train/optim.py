"""Optimizer construction, with weight decay optionally kept off normalisation parameters and biases."""
from __future__ import annotations

import torch
import torch.nn as nn

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
    groups = param_groups(model, cfg.weight_decay, cfg.wd_exclude_bn_bias)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
