"""Lesion studies: residual networks behave like ensembles of shallow networks (Veit, Wilber & Belongie 2016,
"Residual Networks Behave Like Ensembles of Relatively Shallow Networks", arXiv:1605.06431).

A residual net with ``n`` blocks unrolls into ``2**n`` paths (each block either takes its branch or its skip),
``C(n, k)`` of them of length ``k``.  Removing one block (``branch_enabled = False``, see
:class:`skiplab.blocks.base.SkipBlock`) deletes half of the paths but leaves ``2**(n-1)`` intact, so the error
rises only a little; a plain net has one path, and removing a layer breaks it.

Everything here works on any skiplab model (blocks are addressed through :func:`skip_blocks`), evaluates in
eval mode (BatchNorm with its running statistics) under ``torch.inference_mode`` and restores the model's state
afterwards.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.blocks.base import SkipBlock, skip_blocks


def blocks_of(model: nn.Module) -> list[SkipBlock]:
    """The model's skip blocks (plain twins' blocks too) in forward order; raises if it has none."""
    blocks = skip_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no SkipBlock to lesion; expected a skiplab model")
    return blocks


def is_downsampling(block: nn.Module) -> bool:
    """Whether the block changes the shape (its shortcut is not the identity: a projection, zero padding, or
    a plain block's NoShortcut)."""
    return not isinstance(getattr(block, "shortcut", None), nn.Identity)


@contextmanager
def lesioned(model: nn.Module, indices: Sequence[int]) -> Iterator[nn.Module]:
    """Within the block, the blocks at ``indices`` (positions in :func:`blocks_of`) have their branch removed.
    Raises ValueError naming a block that cannot be lesioned (a plain block that changes shape)."""
    blocks = blocks_of(model)
    chosen = []
    for i in indices:
        if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < len(blocks):
            raise ValueError(f"block index must be an integer in [0, {len(blocks)}); got {i!r}")
        if not blocks[int(i)].can_lesion():
            raise ValueError(f"block {int(i)} ({type(blocks[int(i)]).__name__}, skip={blocks[int(i)].skip!r}) "
                             "changes shape and has no skip path, so it cannot be removed")
        chosen.append(blocks[int(i)])
    saved = [b.branch_enabled for b in chosen]
    try:
        for b in chosen:
            b.branch_enabled = False
        yield model
    finally:
        for b, s in zip(chosen, saved):
            b.branch_enabled = s


def top1_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Top-1 error of ``model`` on the tensors ``x`` (N, ...) and ``y`` (N,), in eval mode, without gradients;
    the model's train/eval mode is restored afterwards."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of samples; got {x.shape[0]} and {y.shape[0]}")
    was_training = model.training
    model.eval()
    wrong = 0
    try:
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                wrong += int((model(x[i:i + batch_size]).argmax(1) != y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    return wrong / x.shape[0]


def single_lesion_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The error with each block removed in turn (Veit et al. Fig. 3/5a); NaN for a block that cannot be removed."""
    return [top1_error_lesioned(model, [i], x, y) if b.can_lesion() else float("nan")
            for i, b in enumerate(blocks_of(model))]


def top1_error_lesioned(model: nn.Module, indices: Sequence[int], x: torch.Tensor, y: torch.Tensor) -> float:
    with lesioned(model, indices):
        return top1_error(model, x, y)


def random_lesion_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ks: Sequence[int], draws: int,
                         seed: int) -> list[list[float]]:
    """``errors[j][d]``: the error after removing ``ks[j]`` blocks chosen at random among those that can be
    removed (Veit et al. Fig. 6a).  Draw ``d`` is a random deletion order and ``k`` blocks means its first ``k``,
    so each set is a uniform random ``k``-subset, and along ``k`` a draw shows what removing one more block does
    (the mean over draws is then a smoother curve than with independent subsets).  Deterministic from ``seed``."""
    candidates = [i for i, b in enumerate(blocks_of(model)) if b.can_lesion()]
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer; got {draws!r}")
    for k in ks:
        if not 0 <= k <= len(candidates):
            raise ValueError(f"cannot remove {k} blocks: only {len(candidates)} of this model's blocks can be removed")
    g = np.random.default_rng(seed)
    orders = [g.permutation(candidates).tolist() for _ in range(draws)]
    return [[top1_error_lesioned(model, sorted(order[:k]), x, y) for order in orders] for k in ks]


def path_length_distribution(n: int) -> list[float]:
    """The fraction of the ``2**n`` paths of an ``n``-block residual net that have length ``k = 0..n``: the
    binomial ``C(n, k) / 2**n`` (Veit et al. Fig. 6a)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    return [math.comb(n, k) / 2.0 ** n for k in range(n + 1)]


# ------------------------------------------------------------------------- effective paths (Veit et al. §6)

def _unit_parts(block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """(preact, shortcut, branch, post) of a post- or pre-activation residual unit."""
    parts = tuple(getattr(block, name, None) for name in ("preact", "shortcut", "branch", "post"))
    if not all(isinstance(p, nn.Module) for p in parts) or getattr(block, "skip", None) != "residual":
        raise TypeError(f"{type(block).__name__}: path gradients need a residual unit with preact, shortcut, branch "
                        "and post modules (skiplab.blocks.residual.ResidualUnit with skip='residual')")
    return parts  # type: ignore[return-value]


def path_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, samples_per_length: int,
                        seed: int) -> list[float]:
    """Veit et al. Fig. 6b: the mean norm of the loss gradient that reaches the first block's input along one
    path of length ``k``, for ``k = 0..n``.

    One forward pass through the whole (eval-mode) network fixes every unit's activations.  For a path of
    length ``k``, ``k`` blocks are drawn at random: the backward pass goes through the *branch* of those blocks
    and through the *skip* of the others (both after the unit's post-activation derivative and before its
    shared pre-activation, so the two choices split the unit's Jacobian into two terms, and the gradients of
    all ``2**n`` paths sum to the true gradient).  The norm is averaged over ``samples_per_length`` draws and
    over the batch.  Multiply by ``C(n, k)`` for the total from all paths of length ``k``
    (:func:`effective_path_contribution`).
    """
    if isinstance(samples_per_length, bool) or not isinstance(samples_per_length, int) or samples_per_length < 1:
        raise ValueError(f"samples_per_length must be a positive integer; got {samples_per_length!r}")
    g = np.random.default_rng(seed)
    with _unrolled(model, x, y) as (units, g_out):
        n = len(units)
        norms = []
        for k in range(n + 1):
            total = 0.0
            for _ in range(samples_per_length):
                on = set(g.choice(n, size=k, replace=False).tolist())
                total += float(path_gradient(units, g_out, on).flatten(1).norm(dim=1).mean())
            norms.append(total / samples_per_length)
    return norms


@contextmanager
def _unrolled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[list[tuple], torch.Tensor]]:
    """One eval-mode forward pass with every unit's tensors kept: ``(units, dLoss/d(last block output))``, each
    unit ``(block, input, pre-activated input, skip output, branch output, merge, output)``."""
    blocks = blocks_of(model)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            h = model.stem(x).detach()
            units = []
            for b in blocks:
                preact, shortcut, branch, post = _unit_parts(b)
                xin = h.requires_grad_(True)
                p = preact(xin)
                s, f = shortcut(p), branch(p)
                z = s + b.branch_scale * f
                out = post(z)
                units.append((b, xin, p, s, f, z, out))
                h = out.detach()
            logits = model.forward_head(h.requires_grad_(True))
            g_out = torch.autograd.grad(F.cross_entropy(logits, y), h)[0]
            yield units, g_out
    finally:
        model.train(was_training)


def path_gradient(units: list[tuple], g_out: torch.Tensor, on: set[int]) -> torch.Tensor:
    """The gradient at the first block's input along the path that takes the branch of the blocks in ``on``
    and the skip of the others (see :func:`path_gradient_norms`)."""
    grad = g_out
    for i in reversed(range(len(units))):
        b, xin, p, s, f, z, out = units[i]
        gz = torch.autograd.grad(out, z, grad, retain_graph=True)[0]
        if i in on:  # through the branch F
            gp = torch.autograd.grad(f, p, gz * b.branch_scale, retain_graph=True)[0]
        else:  # through the skip
            gp = gz if s is p else torch.autograd.grad(s, p, gz, retain_graph=True)[0]
        grad = gp if p is xin else torch.autograd.grad(p, xin, gp, retain_graph=True)[0]
    return grad


def effective_path_contribution(norms: Sequence[float]) -> list[float]:
    """Total gradient magnitude from all paths of each length: ``C(n, k) * norm_k``, normalised to sum to 1."""
    n = len(norms) - 1
    total = [math.comb(n, k) * v for k, v in enumerate(norms)]
    s = sum(total)
    return [t / s for t in total] if s > 0 else [float("nan")] * len(total)
