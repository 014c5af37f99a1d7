from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # tests never open a window
# One intra-op thread: test tensors are tiny, and two OpenMP threads on a shared 2-core machine can run
# 30x slower than one when another process competes for the cores (measured: resnet110 forward 5.5 s vs 0.18 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Float32 on every CPU: amp="auto" picks bf16 where the CPU computes it natively, which would make the numbers the
# tests pin depend on the machine CI lands on.  tests/test_speed.py checks the detection with this overridden.
os.environ.setdefault("SKIPLAB_CPU_BF16", "0")
os.environ.setdefault("SKIPLAB_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "test-cache"))

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tiny_cpu():
    """For modules of many tiny convolutions: oneDNN's per-shape setup outweighs such convs, so it is turned
    off for the module (and restored after)."""
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = onednn
