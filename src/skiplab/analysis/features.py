"""Looking inside a trained net: feature maps layer by layer, and how much each block changes its input.

A residual block outputs ``x + F(x)``: if ``F`` is small the block makes an incremental update, and He et al.
2015 (arXiv:1512.03385, §4.2 "Analysis of Layer Responses", Fig. 7) found exactly that — the responses of the
residual functions (each branch's last BatchNorm output, before the addition) have smaller standard deviations
than the same layers' responses in the plain twin, and they get smaller in deeper nets.  A plain layer must
re-encode everything it passes on, so its output differs from its input much more.

All functions take any skiplab model (``stem`` -> ``stages`` of skip blocks -> ``head``) in eval mode and
restore its mode afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.analysis.hooks import record_outputs
from skiplab.blocks.base import skip_blocks


@contextmanager
def _eval(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def stage_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[("stem", stem), ("stage1", stages[0]), ...]``: the layers whose outputs are feature maps."""
    for attr in ("stem", "stages"):
        if not isinstance(getattr(model, attr, None), nn.Module):
            raise TypeError(f"{type(model).__name__} has no {attr!r} module; expected a skiplab SkipNet")
    return [("stem", model.stem), *((f"stage{i + 1}", s) for i, s in enumerate(model.stages))]


def stage_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The feature maps ``(N, C, H, W)`` after the stem and after each stage, for the batch ``x``."""
    units = stage_units(model)
    with _eval(model), record_outputs(units) as records:
        model(x)
    return [(r.name, r.output.float().contiguous()) for r in records]


def match_shape(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` brought to ``like``'s shape the parameter-free way (shortcut option "A"): keep every s-th pixel,
    zero-pad the extra channels.  So a block's output can be compared with its input where the shape changes."""
    if x.shape == like.shape:
        return x
    s = max(1, x.shape[-1] // like.shape[-1])
    x = x[:, :, ::s, ::s]
    extra = like.shape[1] - x.shape[1]
    if extra < 0 or x.shape[2:] != like.shape[2:]:
        raise ValueError(f"cannot map a block input of shape {tuple(x.shape)} onto its output {tuple(like.shape)}")
    return F.pad(x, (0, 0, 0, 0, 0, extra))


@dataclass
class BlockChange:
    """Per block (forward order): how much it changes its input, and the size of its branch's response."""

    relative_update: list[float]  # mean over samples of ||out - in|| / ||in||  (in mapped to out's shape)
    cosine: list[float]  # mean over samples of cos(in, out)
    response_std: list[float]  # std of the branch output F(x) (He et al. Fig. 7: last BN output, before the add)
    downsampling: list[bool]


def block_changes(model: nn.Module, x: torch.Tensor) -> BlockChange:
    """Measure every skip block on the batch ``x``: its input, its output and its branch's output
    (:func:`branch_views`)."""
    rel, cos, std, down = [], [], [], []
    for v in branch_views(model, x):
        out = v.outputs.flatten(1)
        inp = match_shape(v.inputs, v.outputs).flatten(1)
        rel.append(float(((out - inp).norm(dim=1) / inp.norm(dim=1).clamp_min(1e-12)).mean()))
        cos.append(float(F.cosine_similarity(out, inp, dim=1).mean()))
        std.append(float(v.branch.std()))
        down.append(v.inputs.shape != v.outputs.shape)
    return BlockChange(rel, cos, std, down)


@dataclass
class BranchView:
    """One skip block seen on a batch: what enters it, what its branch adds (``F(x)``), what leaves it."""

    block: int
    inputs: torch.Tensor  # (N, C_in, H_in, W_in)
    branch: torch.Tensor  # (N, C, H, W): the branch's output F(x), before the merge
    outputs: torch.Tensor  # (N, C, H, W)


def branch_views(model: nn.Module, x: torch.Tensor) -> list[BranchView]:
    """Every skip block's input, branch output ``F(x)`` and output on ``x`` (eval mode): the residual wrapper
    demos' pictures of what each block adds to what it receives."""
    blocks = skip_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no skip blocks")
    ins: dict[int, torch.Tensor] = {}
    handles = [b.register_forward_pre_hook(lambda m, args, i=i: ins.__setitem__(i, args[0].detach()))
               for i, b in enumerate(blocks)]
    try:
        with _eval(model), record_outputs([(f"block{i}", b) for i, b in enumerate(blocks)]) as outs, \
                record_outputs([(f"branch{i}", b.branch) for i, b in enumerate(blocks)]) as branches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [BranchView(i, ins[i].float(), r.output.float(), o.output.float())
            for i, (o, r) in enumerate(zip(outs, branches))]


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The weights ``(out, in, kh, kw)`` of the first convolution the input meets (the stem's)."""
    stem = getattr(model, "stem", model)
    conv = next((m for m in stem.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no convolution in its stem")
    return conv.weight.detach().float().contiguous()
