"""Learning-rate schedules as pure functions of the step.

The lr of step ``s`` (0-based: the s-th optimizer update) is ``cfg.lr * factor(s)``.  Being a function of
the step alone, the schedule needs no state of its own in a checkpoint: resuming at step ``s`` is exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from skiplab.train.config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    """``factor(step)`` for one run; lengths already converted to steps."""

    kind: str
    total_steps: int
    warmup_steps: int
    milestones: tuple[int, ...]
    gamma: float
    min_factor: float

    @classmethod
    def from_config(cls, cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> Schedule:
        per = steps_per_epoch if cfg.schedule_unit == "epochs" else 1
        warmup = int(round(cfg.warmup * per))
        if cfg.schedule == "onecycle" and not 0 < warmup < total_steps:
            raise ValueError(f"warmup must put the one-cycle peak inside the run (0 < warmup steps < "
                             f"{total_steps}); got warmup={cfg.warmup} {cfg.schedule_unit} = {warmup} steps")
        milestones = tuple(int(round(m * per)) for m in cfg.milestones)
        return cls(cfg.schedule, total_steps, warmup, milestones, cfg.gamma, cfg.min_lr_factor)

    def factor(self, step: int) -> float:
        """Multiplier of the base lr for the update with 0-based index ``step``."""
        if self.kind == "onecycle":
            # Smith & Topin 2017 "Super-convergence": linear up from lr/25 to lr at the peak, then linear
            # down to 0 at the end (the triangular form airbench and the DAWNBench CIFAR entries use).
            if step < self.warmup_steps:
                return 0.04 + 0.96 * step / self.warmup_steps
            rest = max(1, self.total_steps - self.warmup_steps)
            return max(0.0, 1.0 - (step - self.warmup_steps) / rest)
        if step < self.warmup_steps:  # linear warmup, reaching the full lr at the end of the warmup
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        # cosine (Loshchilov & Hutter 2017, without restarts) from the end of the warmup to the last step
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
