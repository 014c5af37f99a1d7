"""Forward signal propagation at initialisation: how the size of the activations changes through depth.

With He initialisation a plain ReLU net keeps the activation variance (He et al. 2015), but an unnormalised
residual net adds the branch's variance to the skip's at every block, so it doubles per block — unless the
branch is scaled down (1/sqrt(depth): e.g. Hanin & Rolnick 2018; Fixup, Zhang et al. 2019, arXiv:1901.09321)
or starts at zero (zero-init last layer: Goyal et al. 2017; SkipInit, De & Smith 2020, arXiv:2002.10444).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from skiplab.analysis.hooks import main_path_units, record_outputs


@torch.no_grad()
def activation_rms(model: nn.Module, x: torch.Tensor) -> tuple[list[str], list[float]]:
    """Root-mean-square of each main-path unit's output (stem, blocks, head) for input ``x``:
    ``sqrt(mean(h^2))`` over batch and features.  Returns ``(names, rms)`` in forward order."""
    units = main_path_units(model)
    with record_outputs(units) as records:
        model(x)
    return [r.name for r in records], [float(r.output.double().square().mean().sqrt()) for r in records]
