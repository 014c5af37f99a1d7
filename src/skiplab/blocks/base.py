"""The contract every skip-bearing block follows, so analysis can address any block without knowing its class.

A block computes ``merge(shortcut(x), branch(x))``.  Its ``forward`` keeps the skip visible in one line::

    shortcut = self.shortcut(x)
    out = self.branch(x)          # the residual function F, the layers the plain twin keeps
    return self.merge(shortcut, out)   # add / concat / gate; "none" (plain twin) returns out

Contract (used by lesion studies, scaling experiments and the model summary):

* ``skip``: the kind of skip this instance has — "residual" (add), "highway" (gate), "dense" (concat),
  "concat" (a U-Net long skip: encoder features concatenated into the decoder) or "none" (the plain twin:
  same branch layers, no skip).
* ``self.shortcut``: always a module (``nn.Identity`` when shapes match, a projection/padding otherwise).
* ``branch_enabled``: set False to *lesion* the block (Veit et al. 2016): the branch is skipped and the block
  returns its skip path only.  A plain block (skip="none") lesioned returns its input unchanged, which is only
  possible where input and output shapes agree — :meth:`can_lesion` tells.
* ``branch_scale``: multiplies the branch output before the merge (1.0 by default; used for 1/sqrt(depth)
  scaling experiments).
* :meth:`zero_init_last`: initialise the last layer of the branch (usually the last BN's gamma) to zero, so
  a residual block starts as the identity (Goyal et al. 2017).
"""
from __future__ import annotations

import torch
import torch.nn as nn

SKIP_KINDS = ("residual", "highway", "dense", "concat", "none")


def check_skip(skip: str, allowed: tuple[str, ...] = ("residual", "none")) -> str:
    """Validate a ``skip=`` argument with a message naming what is allowed."""
    if skip not in allowed:
        raise ValueError(f"skip must be one of {', '.join(map(repr, allowed))}; got {skip!r}")
    return skip


class SkipBlock(nn.Module):
    """Base class of blocks with a skip connection (or the plain twin of one). See the module docstring."""

    skip: str = "residual"

    def __init__(self) -> None:
        super().__init__()
        self.branch_enabled: bool = True
        self.branch_scale: float = 1.0

    @property
    def has_skip(self) -> bool:
        return self.skip != "none"

    def can_lesion(self) -> bool:
        """Whether the block can be removed: always with a skip; for a plain block only if shapes are kept."""
        return self.has_skip or isinstance(getattr(self, "shortcut", None), nn.Identity)

    def zero_init_last(self) -> None:
        """Zero the branch's last scaling so the residual block starts as the identity."""
        raise NotImplementedError(f"{type(self).__name__} does not define zero_init_last()")

    def extra_repr(self) -> str:
        return f"skip={self.skip!r}"


def count_skips(model: nn.Module) -> int:
    """Number of skip connections in ``model``: skip-bearing blocks with a skip (plain twins count zero)."""
    return sum(1 for m in model.modules() if isinstance(m, SkipBlock) and m.has_skip)


def skip_blocks(model: nn.Module) -> list[SkipBlock]:
    """All skip-bearing blocks (including plain twins' blocks) in forward order of registration."""
    return [m for m in model.modules() if isinstance(m, SkipBlock)]


def zero_init_last(model: nn.Module) -> nn.Module:
    """Apply each block's :meth:`SkipBlock.zero_init_last` policy; returns the model."""
    for block in skip_blocks(model):
        if block.has_skip:
            block.zero_init_last()
    return model


def merge_add(shortcut: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return shortcut + out if scale == 1.0 else shortcut + scale * out
