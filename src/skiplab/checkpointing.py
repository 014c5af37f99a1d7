"""Gradient (activation) checkpointing by segments — Chen, Xu, Zhang & Guestrin 2016, "Training Deep Nets with
Sublinear Memory Cost" (arXiv:1604.06174).  Not to be confused with saving training checkpoints
(:mod:`skiplab.train.checkpoint`).

A model's stem and blocks are cut into ``segments`` contiguous chunks.  During the forward pass each chunk keeps
only its input; its inner activations are recomputed, one chunk at a time, when backward reaches it.  Memory for
activations drops from ``L`` blocks' worth to about ``segments + L / segments`` (least near ``sqrt(L)``), for
one extra forward pass of compute.  This is what makes the 1000+-layer nets of the papers (resnet1202,
preact_resnet1001) trainable on a CPU box.

Contracts:

* Gradients are those of the plain model: the recomputation replays the same ops on the same inputs, with the
  random state of the first pass restored (``preserve_rng_state``), so DropPath draws the same masks.
* Running statistics are updated once per forward pass, as without checkpointing.  A BatchNorm layer in train
  mode updates ``running_mean``/``running_var``/``num_batches_tracked`` every time it runs, and the
  recomputation runs it a second time; :class:`KeepNormStats` (the recomputation's context) restores those
  buffers to their values from before the recomputation, whatever the momentum (including ``None``,
  the cumulative average).
* Only in training with autograd on: in eval mode or under ``torch.no_grad`` the model runs as usual.

Use :func:`set_checkpointing` (which also makes the allocator return freed memory, without which resident memory
hides most of the saving) or the bare switch ``model.set_checkpointing(segments)``
(:meth:`skiplab.models.base.SkipNet.set_checkpointing`).  It is a runtime setting, not part of the architecture,
so checkpoints and weights do not record it.
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def check_segments(segments: int | None) -> int | None:
    """``None`` (off) or a positive int, else a ValueError naming what was given."""
    if segments is None:
        return None
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"checkpoint segments must be a positive integer or None (off); got {segments!r}")
    return segments


class KeepNormStats(contextlib.AbstractContextManager):
    """Snapshot the running statistics of every BatchNorm-like layer in ``modules`` on entry and restore them
    on exit: the context of a recomputation, so it does not update the statistics a second time."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.norms = [m for mod in modules for m in mod.modules()
                      if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
        self.saved: list[list[torch.Tensor | None]] = []

    def __enter__(self) -> "KeepNormStats":
        self.saved = [[None if getattr(m, k) is None else getattr(m, k).clone() for k in _NORM_STATS]
                      for m in self.norms]
        return self

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for m, values in zip(self.norms, self.saved):
                for k, v in zip(_NORM_STATS, values):
                    if v is not None:
                        getattr(m, k).copy_(v)
        self.saved = []


def split_even(items: Sequence[nn.Module], segments: int) -> list[list[nn.Module]]:
    """``items`` cut into ``min(segments, len(items))`` contiguous chunks whose lengths differ by at most one."""
    n = min(segments, len(items))
    size, extra = divmod(len(items), n)
    chunks, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks


def feature_units(model: nn.Module) -> list[nn.Module]:
    """What ``forward_features`` runs, in order, as a flat list: the stem, then each stage's blocks (a plain
    ``nn.Sequential`` stage is opened up; any other stage module counts as one unit)."""
    units: list[nn.Module] = [model.stem]
    for stage in model.stages:
        units.extend(stage.children() if type(stage) is nn.Sequential else [stage])
    return units


def _run(chunk: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in chunk:
        x = module(x)
    return x


def _contexts(chunk: Sequence[nn.Module]) -> tuple[contextlib.AbstractContextManager, KeepNormStats]:
    return contextlib.nullcontext(), KeepNormStats(chunk)


def run_checkpointed(units: Sequence[nn.Module], x: torch.Tensor, segments: int) -> torch.Tensor:
    """Run ``units`` in sequence on ``x``, each of ``segments`` chunks under non-reentrant checkpointing with
    its norm statistics protected from the recomputation (see the module docstring)."""
    for chunk in split_even(units, segments):
        x = checkpoint(_run, chunk, x, use_reentrant=False, preserve_rng_state=True,
                       context_fn=partial(_contexts, chunk))
    return x


def checkpointed_features(model: nn.Module, x: torch.Tensor, segments: int) -> torch.Tensor:
    """``model.stem`` then ``model.stages`` on ``x`` (already checked), in ``segments`` checkpointed chunks."""
    return run_checkpointed(feature_units(model), x, segments)


def set_checkpointing(model: nn.Module, segments: int | None, *, release_memory: bool = True) -> nn.Module:
    """Turn segment checkpointing on (``segments`` chunks) or off (``None``) for a skiplab model; returns it.

    With ``release_memory`` (and ``segments`` set) the process's allocator is also switched to
    ``skiplab.speed.set_malloc_policy("memory")``: glibc otherwise keeps every freed activation in its heap, and
    the resident memory of a checkpointed step stays near the high-water mark of all it ever allocated —
    measured on resnet1202 at batch 64: 53% of the plain step's peak RSS with glibc's defaults, 16% with the
    policy (benchmarks/bench_memory.py).  Process-wide; pass False to leave the allocator alone.

    Raises a ValueError for a model whose features are not a plain stem -> stages chain (e.g. the U-Net, whose
    long skips cross stages) and a TypeError for a module that is not a skiplab model."""
    from skiplab.models.base import SkipNet

    if not isinstance(model, SkipNet):
        raise TypeError(f"set_checkpointing needs a skiplab model (SkipNet); got {type(model).__name__}")
    model.set_checkpointing(segments)
    if segments is not None and release_memory:
        from skiplab.speed import set_malloc_policy

        set_malloc_policy("memory")
    return model
