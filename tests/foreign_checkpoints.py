"""Shared by the tests that load another library's checkpoint layout: fill a reference net with random values
(BatchNorm statistics too, so a mis-mapped key changes the output) and check that a skiplab model loaded from
its saved state dict computes the same."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import skiplab


def randomise_(ref: nn.Module, seed: int) -> nn.Module:
    """Weights ~ N(0, 0.1), vectors (biases, norm scales, layer scales) ~ U(0.5, 1.5), BN statistics random."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.1) if p.dim() > 1 else p.uniform_(0.5, 1.5)
        for m in ref.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return ref.eval()


def assert_loads_like(ref: nn.Module, name: str, tmp_path: Path, x: torch.Tensor, **kwargs: Any) -> nn.Module:
    """Save ``ref``'s state dict, build skiplab's ``name`` (``kwargs``) from it, and compare the outputs on ``x``."""
    torch.save(ref.state_dict(), tmp_path / "foreign.pth")
    ours = skiplab.create_model(name, weights=str(tmp_path / "foreign.pth"), **kwargs).eval()
    with torch.no_grad():
        want = ref.eval()(x)
        torch.testing.assert_close(ours(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    return ours
