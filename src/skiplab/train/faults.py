"""Fault injection for the reliability tests: die or get a signal at a named moment of a training run.

``SKIPLAB_FAULT=POINT:N[:SIGNAL]`` makes the process send itself ``SIGNAL`` (``KILL`` by default, or
``TERM``/``INT``) the N-th time (1-based) it passes ``POINT``.  Points: ``step`` (after an optimizer step),
``eval`` (after an evaluation batch), ``ckpt_write`` (half-way through writing a checkpoint's temp file),
``ckpt_done`` (just after a checkpoint is renamed into place).  Unset — the normal case — each call is one
dict lookup.  Only tests set it; it exists so "kill -9 during the checkpoint write" can be tested exactly.
"""
from __future__ import annotations

import os
import signal

ENV = "SKIPLAB_FAULT"
_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] != int(parts[1] if len(parts) > 1 else 1):
        return
    sig = getattr(signal, "SIG" + (parts[2] if len(parts) > 2 else "KILL"))
    os.kill(os.getpid(), sig)


def reset() -> None:
    """Forget how often each point was passed (in-process tests run several trainings)."""
    _counts.clear()
