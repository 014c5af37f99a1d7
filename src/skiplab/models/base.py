"""The interface every skiplab model has: ``stem`` -> ``stages`` -> ``head``.

``forward_features`` runs stem and stages, ``forward_head`` the head, ``forward`` both.  Analysis addresses
blocks uniformly through ``model.stages`` (each stage a Sequential of blocks).
"""
from __future__ import annotations

import inspect

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
    # Smallest height/width an image model can take (a DenseNet's fixed 2x2 pools need >= 1 pixel to pool).
    min_input_size: int = 1
    # Refuse NaN/Inf inputs.  Off by default: the check is a reduction plus a host sync on every forward
    # (a stall per batch on a GPU); training catches a non-finite loss at its step instead.
    check_finite: bool = False

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input the model cannot take: not a tensor, wrong rank, empty batch, wrong
        channel count, integer dtype, a float dtype other than the weights', an image smaller than
        ``min_input_size``, and — only with ``check_finite = True`` — NaN/Inf values."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor; got {type(x).__name__}")
        want_rank = self.input_ndim + 1
        if x.dim() != want_rank:
            raise ValueError(
                f"input must have {want_rank} dims (batch + {self.input_ndim}); got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"input batch is empty (expected at least one sample); got shape {tuple(x.shape)}")
        channel_dim = 1 if self.input_ndim != 2 else 2  # sequences are (batch, time, features)
        if x.shape[channel_dim] != self.in_channels:
            raise ValueError(
                f"input has {x.shape[channel_dim]} channels at dim {channel_dim}; "
                f"{type(self).__name__} expects in_channels={self.in_channels} (input shape {tuple(x.shape)})"
            )
        if not torch.is_floating_point(x):
            raise TypeError(f"input must be a floating-point tensor; got dtype {x.dtype} (convert with .float())")
        if self.input_ndim == 3 and min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f"input is {x.shape[2]}x{x.shape[3]} pixels; {type(self).__name__} needs at least "
                             f"{self.min_input_size}x{self.min_input_size} (input shape {tuple(x.shape)})")
        # Another float precision than the weights' fails deep in torch ("expected scalar type Double but found
        # Float"); autocast casts inputs itself, and a compiled graph is checked when traced, not per call.
        p = next(self.parameters(), None)
        if (p is not None and p.is_floating_point() and x.dtype != p.dtype and not torch.compiler.is_compiling()
                and not torch.is_autocast_enabled(x.device.type)):
            raise TypeError(f"input dtype {x.dtype} differs from the model's parameter dtype {p.dtype}; convert the "
                            f"input (x.to({p.dtype})) or the model (model.to({x.dtype}))")
        if self.check_finite and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"input has {bad} NaN/Inf values (expected finite values; check_finite=True refuses "
                             f"them); input shape {tuple(x.shape)}")

    checkpoint_segments: int | None = None  # set by set_checkpointing; a runtime setting, not architecture

    def set_checkpointing(self, segments: int | None) -> "SkipNet":
        """Recompute activations in ``segments`` chunks during backward to save memory (None: off); returns
        self.  Gradients and BN running statistics equal the plain model's; see :mod:`skiplab.checkpointing`."""
        from skiplab.checkpointing import check_segments

        if segments is not None and type(self).forward_features is not SkipNet.forward_features:
            raise ValueError(f"{type(self).__name__} has its own forward_features (features are not a plain "
                             "stem -> stages chain), so it cannot be checkpointed by segments")
        self.checkpoint_segments = check_segments(segments)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.checkpoint_segments and self.training and torch.is_grad_enabled():
            from skiplab.checkpointing import checkpointed_features

            return checkpointed_features(self, x, self.checkpoint_segments)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def _classifier_slot(self) -> tuple[nn.Module, str, nn.Module]:
        """``(parent, attribute, layer)`` of the head's last Linear (or 1x1 conv, for per-pixel heads)."""
        slot = None
        for name, m in self.head.named_modules(prefix="head"):
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                parent_name, _, attr = name.rpartition(".")
                slot = (self.get_submodule(parent_name) if parent_name else self, attr, m)
        if slot is None:
            raise ValueError(f"{type(self).__name__}'s head has no Linear or Conv2d classifier")
        return slot

    def get_classifier(self) -> nn.Module:
        """The layer that produces the logits (timm's name for it)."""
        return self._classifier_slot()[2]

    def reset_classifier(self, num_classes: int) -> "SkipNet":
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs (fine-tuning on a new
        label set), in the old one's device and dtype; ``model_kwargs`` follows, so saved weights name the new
        size.  Returns self."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
        parent, attr, old = self._classifier_slot()
        bias = old.bias is not None
        new = (nn.Linear(old.in_features, num_classes, bias=bias) if isinstance(old, nn.Linear)
               else nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, bias=bias))
        setattr(parent, attr, new.to(device=old.weight.device, dtype=old.weight.dtype))
        if hasattr(self, "model_kwargs"):  # the registry's record of how to rebuild this model
            key = "out_features" if "out_features" in inspect.signature(type(self).__init__).parameters \
                else "num_classes"
            self.model_kwargs = {**self.model_kwargs, key: num_classes}
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
