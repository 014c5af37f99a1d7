"""``TrainConfig``: every training setting and its default, in one place, validated on construction.

Config flows one way: CLI flags -> :class:`TrainConfig` -> :func:`skiplab.train.train`.  The CLI passes only
the flags a user gave; everything else takes its default here.  Named recipes (:data:`RECIPES`) are sets of
overrides applied by :meth:`TrainConfig.from_recipe`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "onecycle", "constant")
SCHEDULE_UNITS = ("epochs", "steps")
AMP_MODES = ("none", "bf16", "fp16", "auto")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
LOSSES = ("ce", "dice", "ce+dice")  # segmentation: per-pixel cross-entropy, soft Dice, their sum; classifiers: ce

# Named presets.  Each is a dict of TrainConfig overrides; a user's own overrides win over the recipe's.
RECIPES: dict[str, dict[str, Any]] = {
    # He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition", section 4.2 (CIFAR-10):
    # SGD, batch 128, lr 0.1, momentum 0.9, weight decay 1e-4 (on all weights), lr /10 at 32k and 48k
    # iterations, stop at 64k; 45k/5k train/val split; 4-pixel padding + random 32x32 crop + horizontal flip.
    # The paper's test figures come from training on all 50k: the split is an option (val_split=5000).
    "he2015": dict(
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, wd_exclude_bn_bias=False,
        batch_size=128, schedule="step", schedule_unit="steps", milestones=(32000, 48000), gamma=0.1,
        warmup=0, max_steps=64000, epochs=None, label_smoothing=0.0, crop_padding=4, flip=True, cutout=0,
    ),
    # Ours, aimed at ResNet-20's 91.25% CIFAR-10 test accuracy in 40 epochs (the paper: ~164): Nesterov SGD,
    # the paper's batch 128 and lr 0.1 as the peak of a one-cycle (triangular) schedule — linear warmup over
    # 6 epochs, then annealed linearly to zero — weight decay 5e-4 kept off BN and biases, label smoothing
    # 0.1.  Short schedules profit from a larger decay and an anneal to zero; batch 128 rather than 256
    # because at a fixed epoch budget twice the updates matter more than the (CPU-neutral) larger batch.
    "fast": dict(
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, wd_exclude_bn_bias=True,
        batch_size=128, schedule="onecycle", schedule_unit="epochs", warmup=6, epochs=40, max_steps=None,
        label_smoothing=0.1, crop_padding=4, flip=True, cutout=0, drop_last=True,
    ),
}


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}{hint}")


def _number(name: str, value: Any, *, low: float | None = None, low_open: bool = False,
            high: float | None = None, integer: bool = False, optional: bool = False) -> None:
    """Check ``value`` is a (finite) number in range; the message says the field, the range and the value."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{name} must be {kind}{' or None' if optional else ''}; got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}; got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}; got {value!r}")


@dataclass
class TrainConfig:
    """All settings of one training run.  Defaults live here and nowhere else.

    Length: ``epochs`` or ``max_steps`` (optimizer steps), exactly one.  ``schedule_unit`` says whether
    ``milestones`` and ``warmup`` count epochs or steps.  ``amp="auto"`` picks bf16 autocast on a CUDA
    device that supports it (fp16 otherwise), bf16 on a CPU that computes bf16 natively and float32 on other
    CPUs (see :func:`skiplab.speed.auto_autocast_dtype`; parameters, BatchNorm statistics and optimizer state
    stay float32 under autocast).
    ``out=None`` trains in memory (no files, no signal handling) — what experiments use.
    ``resume`` names a run folder: training continues from its latest checkpoint with the saved config
    (the other fields are then ignored).
    """

    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "cifar10"
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    val_split: int = 0  # images held out of the training split for validation (he2015: 5000)
    test_split: str | None = "test"  # evaluated after each eval; None skips it
    epochs: int | None = 10
    max_steps: int | None = None
    batch_size: int = 128  # the global batch; each of N DDP processes takes batch_size / N
    eval_batch_size: int = 500
    drop_last: bool = False
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW only
    weight_decay: float = 1e-4
    wd_exclude_bn_bias: bool = False
    schedule: str = "cosine"
    schedule_unit: str = "epochs"
    milestones: tuple[float, ...] = ()  # "step" schedule: lr *= gamma at each
    gamma: float = 0.1
    warmup: float = 0  # linear warmup length (schedule_unit); the peak position for "onecycle"
    min_lr_factor: float = 0.0  # "cosine" anneals to lr * min_lr_factor
    label_smoothing: float = 0.0
    loss: str = "ce"  # segmentation data may use "dice" or "ce+dice"; classification is always "ce"
    grad_clip: float | None = None  # max global gradient norm
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    augment: bool = True  # False: no crop/flip/cutout at all
    amp: str = "auto"
    # NHWC activations: measured 1.4-1.75x faster ResNet-20/56 training on this CPU (bench_train.py), and the
    # layout tensor cores want under autocast on a GPU
    channels_last: bool = True
    compile: bool = False
    # Recompute activations in this many segments during backward (SkipNet.set_checkpointing): ~0.15x the peak
    # memory of a 1000-layer net's step on CPU, for ~1.5x its time (BENCHMARKS.md).  None: off
    checkpoint_segments: int | None = None
    sync_bn: bool = False  # DDP: BatchNorm statistics over the global batch (SyncBatchNorm) instead of per rank
    seed: int = 0
    eval_every: int = 1  # epochs between evaluations; 0: only at the end
    log_every: int = 50  # steps between metric reads (the only host syncs of the loop)
    out: str | None = None
    overwrite: bool = False
    resume: str | None = None
    keep_epoch_checkpoints: bool = False
    device: str = "auto"
    num_threads: int | None = None
    progress: str = "auto"  # auto: a bar on a terminal, one line per epoch otherwise; none when out is None
    recipe: str | None = None  # recorded by from_recipe

    def __post_init__(self) -> None:
        for name in ("milestones", "betas"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field, what it expects and what it got."""
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a registered model name; got {self.model!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a dataset name; got {self.data!r}")
        for name in ("model_kwargs", "data_options"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict; got {getattr(self, name)!r}")
        for name in ("drop_last", "nesterov", "wd_exclude_bn_bias", "flip", "augment", "channels_last", "compile",
                     "sync_bn", "overwrite", "keep_epoch_checkpoints"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("schedule_unit", self.schedule_unit, SCHEDULE_UNITS)
        _choice("amp", self.amp, AMP_MODES)
        _choice("progress", self.progress, PROGRESS_MODES)
        _choice("loss", self.loss, LOSSES)
        if not (self.device in DEVICES or (isinstance(self.device, str) and self.device.startswith("cuda:"))):
            raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))} or 'cuda:N'; got {self.device!r}")
        if self.recipe is not None:
            _choice("recipe", self.recipe, tuple(RECIPES))
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set the run length: epochs (a positive integer) or max_steps; both are None")
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError(f"set either epochs or max_steps, not both; got epochs={self.epochs!r}, "
                             f"max_steps={self.max_steps!r}")
        _number("epochs", self.epochs, low=1, integer=True, optional=True)
        _number("max_steps", self.max_steps, low=1, integer=True, optional=True)
        _number("batch_size", self.batch_size, low=1, integer=True)
        _number("eval_batch_size", self.eval_batch_size, low=1, integer=True)
        _number("val_split", self.val_split, low=0, integer=True)
        _number("lr", self.lr, low=0, low_open=True)
        _number("momentum", self.momentum, low=0, high=1)
        _number("weight_decay", self.weight_decay, low=0)
        _number("gamma", self.gamma, low=0, low_open=True, high=1)
        _number("warmup", self.warmup, low=0)
        _number("min_lr_factor", self.min_lr_factor, low=0, high=1)
        _number("label_smoothing", self.label_smoothing, low=0, high=0.999)
        _number("grad_clip", self.grad_clip, low=0, low_open=True, optional=True)
        _number("checkpoint_segments", self.checkpoint_segments, low=1, integer=True, optional=True)
        _number("crop_padding", self.crop_padding, low=0, integer=True)
        _number("cutout", self.cutout, low=0, integer=True)
        _number("seed", self.seed, low=0, integer=True)
        _number("eval_every", self.eval_every, low=0, integer=True)
        _number("log_every", self.log_every, low=1, integer=True)
        _number("num_threads", self.num_threads, low=1, integer=True, optional=True)
        if not isinstance(self.betas, tuple) or len(self.betas) != 2 or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {self.betas!r}")
        if not isinstance(self.milestones, tuple):
            raise ValueError(f"milestones must be a sequence of numbers; got {self.milestones!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError(f"nesterov=True needs optimizer='sgd' with momentum > 0; got optimizer="
                             f"{self.optimizer!r}, momentum={self.momentum!r}")
        for m in self.milestones:
            _number("milestones[i]", m, low=0, low_open=True)
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing; got {self.milestones!r}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("schedule='step' needs milestones (when to multiply the lr by gamma); got none")
        if self.schedule == "onecycle" and self.warmup <= 0:
            raise ValueError(f"schedule='onecycle' needs warmup > 0 (where the lr peaks); got warmup={self.warmup!r}")
        if self.test_split is not None and not isinstance(self.test_split, str):
            raise ValueError(f"test_split must be a split name such as 'test', or None; got {self.test_split!r}")
        for name in ("out", "resume", "data_dir"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, str) and v):
                raise ValueError(f"{name} must be a path (non-empty string) or None; got {v!r}")

    @classmethod
    def from_recipe(cls, recipe: str, **overrides: Any) -> TrainConfig:
        """A config from a named recipe plus ``overrides``: ``TrainConfig.from_recipe("he2015", epochs=5)``.

        Setting one of ``epochs``/``max_steps`` in the overrides clears the recipe's other one.
        """
        _choice("recipe", recipe, tuple(RECIPES))
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
        values = dict(RECIPES[recipe])
        if "epochs" in overrides and "max_steps" not in overrides:
            values["max_steps"] = None
        if "max_steps" in overrides and "epochs" not in overrides:
            values["epochs"] = None
        values.update(overrides)
        values["recipe"] = recipe
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output (e.g. a checkpoint); unknown keys raise."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"saved config has unknown field(s) {sorted(unknown)}; was it written by a newer skiplab?")
        return cls(**d)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
