"""``Residual(module)``: an identity skip around any module whose output shape equals its input shape.

    y = x + scale * F(x)            (He et al. 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385)

``F`` may be a Linear, a Conv, a Sequential, a Transformer layer, ``nn.MultiheadAttention`` or a recurrent layer.
Modules that return a tuple — ``nn.LSTM``/``nn.GRU``/``nn.RNN`` give ``(output, state)``, ``nn.MultiheadAttention``
gives ``(output, weights)`` — get the skip on the first element (the output sequence); the rest passes through
unchanged, so ``Residual(lstm)(x, (h0, c0))`` returns ``(x + output, (h_n, c_n))``.  Extra positional and keyword
arguments are forwarded to the module; the skip is always taken from the first argument (for attention called
as ``attn(q, k, v)`` that is the query, whose shape the output has).  A ``PackedSequence`` input gets the skip
on its packed data.  The skip is elementwise, so batch-first and time-first layouts work alike.

``scale``: ``None`` (no scale), a float (a fixed multiplier, e.g. ``1/sqrt(depth)``) or ``"learnable"``: a
scalar parameter initialised to **0**, as in ReZero (Bachlechner et al. 2020, "ReZero is All You Need",
arXiv:2003.04887) — the block is exactly the identity at init and learns how much of ``F`` to let in.

``projection``: when ``F`` changes the shape (a bidirectional LSTM doubles the features, a strided conv halves
H and W), an identity skip is impossible and the forward pass raises a ``ValueError`` naming both shapes.
Pass a module (applied to the skip path) or ``True``: on the first forward pass a bias-free ``nn.Linear`` on the
last dim (when only the last dim differs) or a 1x1 ``ConvNd`` on dim 1 (strided when the spatial size shrinks)
is created on the input's device.  A lazily created projection is a new parameter: run one forward pass before
building the optimizer or loading a state dict, or pass an explicit module instead.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence

from skiplab.blocks.base import SkipBlock, check_skip, merge_add

Tensorish = torch.Tensor | PackedSequence


def _data(t: Tensorish) -> torch.Tensor:
    return t.data if isinstance(t, PackedSequence) else t


def _with_data(like: Tensorish, data: torch.Tensor) -> Tensorish:
    return like._replace(data=data) if isinstance(like, PackedSequence) else data


def _is_tuple_output(result: Any) -> bool:
    # PackedSequence is itself a namedtuple: a module returning only a PackedSequence is not "(output, extra)".
    return isinstance(result, tuple) and not isinstance(result, PackedSequence)


def make_projection(in_shape: torch.Size, out_shape: torch.Size) -> nn.Module:
    """A skip projection mapping tensors of ``in_shape`` to ``out_shape``: bias-free Linear on the last dim, or a
    1x1 conv on the channel dim (dim 1) with the stride that reproduces the output's spatial size."""
    if len(in_shape) != len(out_shape):
        raise ValueError(
            f"cannot build a projection from shape {tuple(in_shape)} to {tuple(out_shape)}: the ranks differ; "
            "pass projection=<module> that maps one to the other"
        )
    differ = [i for i in range(len(in_shape)) if in_shape[i] != out_shape[i]]
    if differ == [len(in_shape) - 1]:
        return nn.Linear(in_shape[-1], out_shape[-1], bias=False)
    if 3 <= len(in_shape) <= 5 and differ and differ[0] >= 1 and in_shape[0] == out_shape[0]:
        # (N, C, *spatial): a 1x1 conv of stride s gives ceil(size / s) outputs per spatial dim.
        strides = [math.ceil(i / o) if o > 0 else 0 for i, o in zip(in_shape[2:], out_shape[2:])]
        if all(s >= 1 and math.ceil(i / s) == o for s, i, o in zip(strides, in_shape[2:], out_shape[2:])):
            conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[len(in_shape) - 3]
            return conv(in_shape[1], out_shape[1], kernel_size=1, stride=tuple(strides), bias=False)
    raise ValueError(
        f"cannot infer a linear or 1x1-conv projection from shape {tuple(in_shape)} to {tuple(out_shape)}; "
        "pass projection=<module> that maps one to the other"
    )


class Residual(SkipBlock):
    """``y = shortcut(x) + scale * module(x, *args, **kwargs)`` for any shape-preserving ``module`` (see the
    module docstring for tuple outputs, ``scale`` and ``projection``).

    ``skip="none"`` is the plain twin: the same module without the skip (``y = module(x)``), so a model can swap
    skips off without changing its layers or state-dict keys.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        scale: None | str | float = None,
        projection: None | bool | nn.Module = None,
        skip: str = "residual",
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module; got {type(module).__name__}")
        self.skip = check_skip(skip)
        self.branch = module
        if projection is not None and projection is not True and not isinstance(projection, nn.Module):
            raise TypeError(f"projection must be None, True or an nn.Module; got {projection!r}")
        self.shortcut: nn.Module = projection if isinstance(projection, nn.Module) else nn.Identity()
        self._lazy_projection = projection is True
        self.scale: nn.Parameter | float | None
        if scale == "learnable":
            self.scale = nn.Parameter(torch.zeros(()))  # ReZero: identity at init
        elif scale is None or (isinstance(scale, (int, float)) and not isinstance(scale, bool)):
            self.scale = None if scale is None else float(scale)
        else:
            raise ValueError(f"scale must be None, 'learnable' or a float; got {scale!r}")

    def forward(self, x: Tensorish, *args: Any, **kwargs: Any) -> Any:
        result = self.branch(x, *args, **kwargs)
        out, rest = (result[0], tuple(result[1:])) if _is_tuple_output(result) else (result, None)
        if self.has_skip:
            self._ensure_shortcut(x, out)
            shortcut = self.shortcut(_data(x))  # the skip: identity, or the projection when shapes differ
            if shortcut.shape != _data(out).shape:
                raise ValueError(
                    f"Residual({type(self.branch).__name__}): the projection maps input shape "
                    f"{tuple(_data(x).shape)} to {tuple(shortcut.shape)}, but the module's output shape is "
                    f"{tuple(_data(out).shape)}"
                )
            if not self.branch_enabled:  # lesioned: F = 0 (a recurrent module's state still comes from it)
                merged = _with_data(out, shortcut)
            else:
                branch = _data(out) if self.scale is None else self.scale * _data(out)
                merged = _with_data(out, merge_add(shortcut, branch, self.branch_scale))
        else:
            merged = out if self.branch_enabled else x
        return merged if rest is None else (merged, *rest)

    def _ensure_shortcut(self, x: Tensorish, out: Tensorish) -> None:
        """Raise for an identity skip across a shape change, or build the lazy projection (``projection=True``)."""
        in_shape, out_shape = _data(x).shape, _data(out).shape
        if isinstance(self.shortcut, nn.Identity) and in_shape != out_shape:
            if not self._lazy_projection:
                raise ValueError(
                    f"Residual({type(self.branch).__name__}): the module maps input shape {tuple(in_shape)} to "
                    f"output shape {tuple(out_shape)}; an identity skip needs equal shapes. Pass projection=True "
                    "(a learned linear / 1x1-conv projection of the skip) or projection=<module>."
                )
            x_data = _data(x)
            self.shortcut = make_projection(in_shape, out_shape).to(device=x_data.device, dtype=x_data.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:  # noqa: ANN001 (torch's signature)
        if self._lazy_projection and isinstance(self.shortcut, nn.Identity):
            if any(k.startswith(prefix + "shortcut.") for k in state_dict):
                error_msgs.append(
                    f"Residual at '{prefix or '<root>'}' was built with projection=True and has not created its "
                    "projection yet: run one forward pass with a sample input before load_state_dict"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def zero_init_last(self) -> None:
        """Make the block start as the identity.

        With ``scale="learnable"`` the scale is set to 0 (exact for any module).  Otherwise the last submodule
        holding parameters is zeroed: a norm layer's weight (its bias is already 0 at init), or every parameter
        of anything else (a Linear/Conv then outputs 0, an LSTM/GRU with zero weights and biases outputs 0 from a
        zero state).  That gives the identity when this submodule's output is the branch output, as in
        ``Sequential(..., Linear)``; for modules that compute after their last parameterised layer use
        ``scale="learnable"``.
        """
        if isinstance(self.scale, nn.Parameter):
            nn.init.zeros_(self.scale)
            return
        leaves = [m for m in self.branch.modules() if any(True for _ in m.parameters(recurse=False))]
        if not leaves:
            raise RuntimeError(f"Residual({type(self.branch).__name__}) has no parameters to zero")
        last = leaves[-1]
        norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)
        with torch.no_grad():
            if isinstance(last, norms) and getattr(last, "weight", None) is not None:
                last.weight.zero_()
            else:
                for p in last.parameters(recurse=False):
                    p.zero_()

    def extra_repr(self) -> str:
        scale = "learnable" if isinstance(self.scale, nn.Parameter) else self.scale
        return f"skip={self.skip!r}, scale={scale!r}" + (", projection=lazy" if self._lazy_projection else "")
