"""The interface every skiplab model has: ``stem`` -> ``stages`` -> ``head``.

``forward_features`` runs stem and stages, ``forward_head`` the head, ``forward`` both.  Analysis addresses
blocks uniformly through ``model.stages`` (each stage a Sequential of blocks).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class SkipNet(nn.Module):
    """Base of all registered models.  Subclasses set ``stem``, ``stages`` (a ModuleList) and ``head``,
    and ``in_channels`` / ``input_ndim`` (per sample: 3 for images C,H,W; 1 for vectors; 2 for sequences)."""

    stem: nn.Module
    stages: nn.ModuleList
    head: nn.Module
    in_channels: int
    input_ndim: int = 3

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input the model cannot take (rank, channels, dtype, empty batch)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor; got {type(x).__name__}")
        want_rank = self.input_ndim + 1
        if x.dim() != want_rank:
            raise ValueError(
                f"input must have {want_rank} dims (batch + {self.input_ndim}); got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"input batch is empty: shape {tuple(x.shape)}")
        channel_dim = 1 if self.input_ndim != 2 else 2  # sequences are (batch, time, features)
        if x.shape[channel_dim] != self.in_channels:
            raise ValueError(
                f"input has {x.shape[channel_dim]} channels at dim {channel_dim}; "
                f"{type(self).__name__} expects in_channels={self.in_channels} (input shape {tuple(x.shape)})"
            )
        if not torch.is_floating_point(x):
            raise TypeError(f"input must be a floating-point tensor; got dtype {x.dtype} (convert with .float())")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
