"""Stochastic depth (Huang, Sun, Liu, Sedra & Weinberger 2016, "Deep Networks with Stochastic Depth",
arXiv:1603.09382).

During training a residual branch is dropped with probability ``p`` — the block then computes only its skip —
and surviving branches are scaled by ``1 / (1 - p)`` so the expected output equals the eval-mode output.  The
paper multiplies by the survival probability at test time instead; scaling at train time ("inverted", as in
inverted dropout) gives the same expectation and leaves eval mode an exact identity.

Put :class:`DropPath` at the end of a residual branch, before the merge::

    out = self.drop_path(self.branch(x))
    return shortcut + out
"""
from __future__ import annotations

import torch
import torch.nn as nn

DROP_MODES = ("row", "batch")


def check_drop_prob(p: float, name: str = "p") -> float:
    """Validate a drop probability: a real number in [0, 1) (1 would drop every branch and divide by zero)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1); got {type(p).__name__} {p!r}")
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {p!r}")
    return float(p)


def drop_path(x: torch.Tensor, p: float, *, training: bool, mode: str = "row") -> torch.Tensor:
    """Drop ``x`` (a branch output whose dim 0 is the sample dim) with probability ``p``; see :class:`DropPath`."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    if mode == "row":
        # One Bernoulli draw per sample, broadcast over the remaining dims: (N, 1, 1, ...).
        mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    else:
        mask_shape = (1,) * x.dim()  # one draw for the whole batch, as in the paper
    mask = torch.empty(mask_shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Drop the branch this module ends with probability ``p`` during training; the identity in eval mode.

    ``mode="row"`` draws per sample (dim 0 must be the batch dim; the common modern form, e.g. timm), ``"batch"``
    draws once per forward pass for the whole batch (the paper's formulation).  Survivors are scaled by
    ``1 / (1 - p)`` so ``E[DropPath(x)] == x``.
    """

    def __init__(self, p: float = 0.0, *, mode: str = "row") -> None:
        super().__init__()
        if mode not in DROP_MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, DROP_MODES))}; got {mode!r}")
        self.p = check_drop_prob(p)
        self.mode = mode
        self._kept = False  # drops_whole_branch() drew "keep" for the forward pass now under way

    def drops_whole_branch(self) -> bool:
        """Batch mode, training: draw this forward pass's fate once, before the branch runs.  True means the
        whole branch is dropped and its owner skips computing it (the paper's ~25% time saving); False means it
        survives, and the following ``forward`` only rescales it.  Always False in row mode or eval mode.
        The draw uses the global CPU generator (no device sync; the same stream on every DDP rank)."""
        if not (self.training and self.mode == "batch" and self.p > 0.0):
            return False
        dropped = bool(torch.rand(()) < self.p)
        self._kept = not dropped
        return dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kept:  # the owner already drew "keep" for this pass
            self._kept = False
            return x / (1.0 - self.p)
        return drop_path(x, self.p, training=self.training, mode=self.mode)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"


def set_drop_path_mode(model: nn.Module, mode: str) -> nn.Module:
    """Set every :class:`DropPath` in ``model`` to ``mode`` ("row": per sample, masked; "batch": the whole
    batch at once, as Huang et al. — blocks then skip a dropped branch's computation).  Returns ``model``."""
    if mode not in DROP_MODES:
        raise ValueError(f"drop_path_mode must be one of {', '.join(map(repr, DROP_MODES))}; got {mode!r}")
    for m in model.modules():
        if isinstance(m, DropPath):
            m.mode = mode
    return model


def linear_decay(p_last: float, num_blocks: int) -> list[float]:
    """The paper's linear decay rule: block ``l`` (1-based) of ``L`` is dropped with ``p_l = l / L * p_L``.

    The input is never dropped (``p_0 = 0``) and the last block gets ``p_last`` (the paper uses 0.5).
    Returns ``num_blocks`` probabilities, first block first.
    """
    p_last = check_drop_prob(p_last, "p_last")
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks <= 0:
        raise ValueError(f"num_blocks must be a positive integer; got {num_blocks!r}")
    return [p_last * layer / num_blocks for layer in range(1, num_blocks + 1)]
