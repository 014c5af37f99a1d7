"""``train(cfg) -> TrainResult``: the training loop, with exact resume, clean stops and a NaN guard.

Exactness: everything that decides the next update — weights and buffers, optimizer buffers, the step
(the lr schedule is a function of it), the torch/numpy/python RNG states and the data loader's position
and generator — goes into each checkpoint, so a CPU run stopped at any step and resumed ends with the
same weights, bit for bit, as one that never stopped.  The loop never reads a tensor back to the host
except every ``log_every`` steps (accumulators live on the device), so a GPU is never stalled per step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import random
import shutil
import signal
import threading
import warnings
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.io import build_manifest, write_json
from skiplab.layers.drop_path import DropPath
from skiplab.speed import channels_last_hazard, set_malloc_policy, tune_malloc
from skiplab.train import distributed as dist_
from skiplab.train.checkpoint import load_checkpoint, load_model_state, remove_stale_temps, save_checkpoint
from skiplab.train.config import TrainConfig
from skiplab.train.faults import fault_point
from skiplab.train.metrics import (CSV_COLUMNS, SEG_CSV_COLUMNS, Display, MetricsLog, accumulate, epoch_record,
                                   resolve_mode, window_record, zero_acc)
from skiplab.train.optim import build_optimizer, match_state_layout
from skiplab.train.schedule import Schedule
from skiplab.train.segmentation import (IGNORE_INDEX, SEG_METRICS, SegmentationLoss, check_model_task,
                                        evaluate_segmentation)

RUN_MARKERS = ("manifest.json", "checkpoints", "metrics.jsonl")
# Settings a resumed run may change: where and how it executes, not what it computes.
RUNTIME_FIELDS = ("device", "num_threads", "progress", "checkpoint_segments")  # change where/how, not what
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or Inf; the message names the step, likely causes and the last good
    checkpoint."""


@dataclass
class TrainResult:
    """What :func:`train` returns.  ``history`` has one dict per epoch (train loss/acc, val/test loss/acc
    when evaluated, lr, images/s, epoch time); ``final`` the metrics at the end; ``status`` is
    ``"completed"`` or ``"interrupted"`` (a signal stopped it; a checkpoint to resume from was written)."""

    config: TrainConfig
    model: nn.Module
    history: list[dict[str, Any]]
    final: dict[str, Any]
    run_dir: Path | None
    status: str = "completed"
    step: int = 0
    epoch: int = 0
    wall_time_s: float = 0.0
    signal: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)  # every metrics record
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # what built the model (classes/channels filled in)


# ------------------------------------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available on this machine; use device='cpu' or 'auto'")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: float32).  ``auto``: :func:`skiplab.speed.auto_autocast_dtype` — bf16 on a CUDA
    GPU that has it (fp16 on older GPUs), bf16 on a CPU that computes it natively (AVX-512 BF16 / AMX / Arm BF16),
    float32 on other CPUs, where bf16 is emulated (measured ~10x slower on an AVX2-only EPYC)."""
    from skiplab.speed import auto_autocast_dtype

    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    return auto_autocast_dtype(device)[0]


TTA_MODES = ("none", "flip")


def evaluate(model: nn.Module, loader: Any, device: torch.device | str | None = None, *,
             amp: torch.dtype | None = None, tta: str = "none") -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` over ``loader`` (batches ``(x, y)``), in eval mode
    and without gradients.  ``device`` is where the model runs (default: where its parameters are).
    ``tta="flip"``: test-time augmentation — logits averaged over each image and its mirror image (twice the
    cost; for datasets trained with flips).  Training runs report plain accuracy; TTA is an ``eval`` option."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(map(repr, TTA_MODES))}; got {tta!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, amp):
                logits = model(x).float()
                if tta == "flip":
                    logits = (logits + model(x.flip(-1)).float()) / 2
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            seen += y.shape[0]
            fault_point("eval")
    model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return float(loss_sum) / seen, int(correct) / seen


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_train_step(fwd: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, *,
                    device: torch.device, amp: torch.dtype | None = None,
                    scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None
                    ) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One optimizer update on a batch: ``step(x, y) -> (loss, logits)`` (both still on the device, no sync).

    ``fwd`` is what runs the forward (the model, or its DDP / compiled wrapper); the loss is computed in
    float32 even under autocast.  With ``scaler`` (fp16) gradients are unscaled before clipping."""
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(device, amp):
            logits = fwd(x)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return loss.detach(), logits.detach()

    return step


def _timed(batches: Any, clock: dict[str, float], key: str) -> Iterator[Any]:
    """Yield from ``batches``, adding the time spent waiting for each one to ``clock[key]``."""
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        clock[key] += time.perf_counter() - t0
        yield item


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_run_dir(out: str, *, overwrite: bool, create: bool = True) -> Path:
    """Create the run folder (``create=False``: only check it could be).  An existing non-empty folder is
    refused unless ``overwrite``; even then only a folder that looks like a skiplab run (or is empty) is
    deleted, never an arbitrary directory."""
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise FileExistsError(f"out={out!r} exists and is a file, not a run folder")
    if run.is_dir() and any(run.iterdir()):
        if not overwrite:
            raise FileExistsError(f"run folder {out!r} already exists; pass --overwrite (overwrite=True) to replace "
                                  f"it, or --resume {out} to continue it")
        if not any((run / m).exists() for m in RUN_MARKERS):
            raise FileExistsError(f"refusing to overwrite {out!r}: it is not empty and does not look like a skiplab "
                                  f"run folder (no {', '.join(RUN_MARKERS)}); choose another --out")
        if not create:
            return run
        shutil.rmtree(run)
    if not create:
        return run
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write to run folder {out!r}: {e.strerror or e}") from None
    return run


def _build_model(cfg: TrainConfig, num_classes: int, in_channels: int,
                 builder: Callable[..., nn.Module] | None = None, *,
                 always_in_channels: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The model (``builder(**kwargs)``, by default the registry's ``cfg.model``) with kwargs completed from the
    data (classes, channels) when the user did not set them.  Classifiers get ``in_channels`` only when it is not
    3 (their default); ``always_in_channels`` (segmentation: U-Net's default is 1) passes it always."""
    from skiplab.registry import create_model

    if builder is None:
        def builder(**kw: Any) -> nn.Module:
            return create_model(cfg.model, **kw)
    kwargs = dict(cfg.model_kwargs)
    auto = {}
    if "num_classes" not in kwargs:
        auto["num_classes"] = num_classes
    if "in_channels" not in kwargs and (in_channels != 3 or always_in_channels):
        auto["in_channels"] = in_channels
    try:
        model = builder(**kwargs, **auto)
        kwargs.update(auto)
    except TypeError as e:  # a model without a num_classes/in_channels argument
        if not any(k in str(e) for k in auto):
            raise
        model = builder(**kwargs)
    return model, kwargs


def _check_free_space(run_dir: Path, model: nn.Module, cfg: TrainConfig, n_epochs: int) -> None:
    """Refuse to start when the disk cannot hold the checkpoints (a temp copy beside ``latest`` while it is
    replaced, the per-epoch copies if kept, the final weights): better now than after hours of training."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    buffers = {"sgd": 1 if cfg.momentum else 0, "adamw": 2}[cfg.optimizer]
    per_ckpt = weights * (1 + buffers) + (1 << 20)  # + RNG states, loader state, history
    need = per_ckpt * (2 + (n_epochs if cfg.keep_epoch_checkpoints else 0)) + weights
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise OSError(errno.ENOSPC, f"not enough free disk space for the checkpoints of this run in {run_dir}: "
                      f"{free / 2**20:.0f} MiB free, about {need / 2**20:.0f} MiB needed")


@contextlib.contextmanager
def _stop_on_signals(enabled: bool, display: Display) -> Iterator[dict[str, Any]]:
    """SIGINT/SIGTERM set a flag the loop checks after each step (a second SIGINT aborts at once)."""
    flag: dict[str, Any] = {"signal": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signal"] = signal.Signals(signum).name
        display.message(f"{flag['signal']} received: stopping after this step and writing a checkpoint "
                        "(Ctrl-C again to abort without one)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ------------------------------------------------------------------------------------------------ training
def train(cfg: TrainConfig, *, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          builder: Callable[..., nn.Module] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` as ``cfg`` says; see :class:`TrainConfig`.

    ``builder``: for a net the registry has no name for — called as ``builder(**cfg.model_kwargs, num_classes=...,
    in_channels=...)`` (the last two from the data unless given); ``cfg.model`` then only names the run, and a
    resume must pass the same builder.

    With ``cfg.out`` it writes a run folder (manifest.json, metrics.jsonl/.csv, checkpoints/latest.safetensors,
    model.safetensors, result.json) and stops cleanly on SIGINT/SIGTERM; with ``cfg.resume`` it continues that
    folder's run exactly.  ``on_epoch`` is called with each epoch's record (experiments use it to watch).
    Raises :class:`TrainingDiverged` if the loss becomes NaN/Inf.
    """
    t_start = time.perf_counter()
    ckpt = None
    if cfg.resume is not None:
        ckpt = load_checkpoint(cfg.resume)
        saved = TrainConfig.from_dict(ckpt.meta["config"])
        run_dir_path = Path(cfg.resume) if Path(cfg.resume).is_dir() else ckpt.path.parent.parent
        # Where and how it runs may change (device, threads, display) when set to a non-default value;
        # what it computes may not.
        runtime = {k: getattr(cfg, k) for k in RUNTIME_FIELDS if getattr(cfg, k) != _DEFAULTS[k]}
        cfg = saved.replace(out=str(run_dir_path), resume=None, overwrite=False, **runtime)
    device = resolve_device(cfg.device)
    threads_before = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    info = dist_.init(device)
    try:
        if device.type == "cuda" and info.enabled:
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        if cfg.batch_size % info.world_size:
            raise ValueError(f"batch_size must be divisible by the number of processes ({info.world_size}) so "
                             f"the global batch stays {cfg.batch_size}; got batch_size={cfg.batch_size}")
        return _train(cfg, ckpt, device, info, t_start, on_epoch, builder)
    finally:
        dist_.shutdown(info)
        torch.set_num_threads(threads_before)  # in-process callers (experiments) get their setting back


def _train(cfg: TrainConfig, ckpt: Any, device: torch.device, info: dist_.DistInfo, t_start: float,
           on_epoch: Callable[[dict[str, Any]], None] | None,
           builder: Callable[..., nn.Module] | None) -> TrainResult:
    from skiplab.data import Augment, BatchLoader, load_dataset

    main = info.is_main
    if cfg.out is not None and ckpt is None and main:  # refuse an existing folder before any work
        prepare_run_dir(cfg.out, overwrite=cfg.overwrite, create=False)
    _seed_everything(cfg.seed)

    # ---- data
    train_ds = load_dataset(cfg.data, "train", data_dir=cfg.data_dir, **cfg.data_options)
    seg = train_ds.task == "segmentation"  # per-pixel masks: skiplab.train.segmentation's loss and metrics
    if cfg.loss != "ce" and not seg:
        raise ValueError(f"loss={cfg.loss!r} is for segmentation data; data={cfg.data!r} is a {train_ds.task} "
                         f"dataset, trained with loss='ce' (cross-entropy)")
    val_ds = None
    if cfg.val_split:
        if cfg.val_split >= len(train_ds):
            raise ValueError(f"val_split must be smaller than the training split ({len(train_ds)} images); "
                             f"got {cfg.val_split}")
        train_ds, val_ds = train_ds.split(cfg.val_split, seed=cfg.seed)
    test_ds = load_dataset(cfg.data, cfg.test_split, data_dir=cfg.data_dir, **cfg.data_options) \
        if cfg.test_split else None
    augment = Augment(crop_padding=cfg.crop_padding, flip=cfg.flip, cutout=cfg.cutout) if cfg.augment else None
    loader = BatchLoader(train_ds, cfg.batch_size // info.world_size, shuffle=True, augment=augment, seed=cfg.seed,
                         device=device, drop_last=cfg.drop_last, channels_last=cfg.channels_last,
                         rank=info.rank, world_size=info.world_size)
    eval_loaders = {name: BatchLoader(ds, cfg.eval_batch_size, shuffle=False, augment=None, device=device,
                                      channels_last=cfg.channels_last)
                    for name, ds in (("val", val_ds), ("test", test_ds)) if ds is not None}
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_ds)} images, fewer than one batch of "
                         f"{cfg.batch_size // info.world_size} with drop_last=True; lower batch_size")
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    schedule = Schedule.from_config(cfg, total_steps, steps_per_epoch)

    # ---- model, optimizer
    n_cls = cfg.model_kwargs.get("num_classes")
    if isinstance(n_cls, int) and n_cls < train_ds.num_classes:
        raise ValueError(f"model_kwargs num_classes={n_cls} is too small: data={cfg.data!r} has labels 0.."
                         f"{train_ds.num_classes - 1} ({train_ds.num_classes} classes)")
    model, model_kwargs = _build_model(cfg, train_ds.num_classes, train_ds.image_shape[0], builder,
                                       always_in_channels=seg)
    model.to(device)
    check_model_task(model, train_ds.image_shape, train_ds.task, train_ds.num_classes, model_name=cfg.model,
                     data_name=cfg.data, device=device)
    hazard = channels_last_hazard(model, device) if cfg.channels_last else None
    if hazard is not None:
        warnings.warn(f"channels_last off: layer {hazard!r} (a 1x1 strided conv with <8 input channels) crashes "
                      f"this torch build's CPU backward in that layout; training in NCHW", RuntimeWarning, stacklevel=3)
        loader.channels_last = False
        for el in eval_loaders.values():
            el.channels_last = False
    elif cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.checkpoint_segments:
        if not hasattr(model, "set_checkpointing"):
            raise ValueError(f"checkpoint_segments needs a skiplab model (SkipNet); {type(model).__name__} is not one")
        model.set_checkpointing(cfg.checkpoint_segments)
    if device.type == "cpu":
        # checkpointing is for memory: give freed activations back at once (else RSS stays at the high-water
        # mark); otherwise keep them for reuse instead of page-faulting them in every step (skiplab.speed)
        set_malloc_policy("memory") if cfg.checkpoint_segments else tune_malloc()
    if info.enabled and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # keeps the parameters and the top module
    optimizer = build_optimizer(model, cfg)
    amp = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    fwd: nn.Module = model
    if info.enabled:
        # batch-mode stochastic depth leaves a dropped block's parameters out of that step's graph
        skips = any(isinstance(m, DropPath) and m.mode == "batch" and m.p > 0 for m in model.modules())
        fwd = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                  find_unused_parameters=skips)
    if cfg.compile:
        fwd = torch.compile(fwd)

    # ---- the run folder: created only now, so bad data or model arguments leave nothing behind
    run_dir: Path | None = None
    if cfg.out is not None:
        run_dir = Path(cfg.out)
        if ckpt is None and main:
            prepare_run_dir(cfg.out, overwrite=cfg.overwrite)
        if main:
            _check_free_space(run_dir, model, cfg, math.ceil(total_steps / steps_per_epoch))
        dist_.barrier(info)

    # ---- state that a checkpoint restores
    step, epoch, epoch_step = 0, 0, 0
    history: list[dict[str, Any]] = []
    acc_state = zero_acc(device)
    if ckpt is not None:
        load_model_state(model, ckpt, model_name=cfg.model, model_kwargs=model_kwargs)
        s = ckpt.state
        optimizer.load_state_dict(s["optimizer"])
        match_state_layout(optimizer)
        if scaler is not None and s.get("scaler"):
            scaler.load_state_dict(s["scaler"])
        loader.load_state_dict(s["loader"])
        _set_rng_state(s["rng"])
        step, epoch, epoch_step = ckpt.meta["step"], ckpt.meta["epoch"], s["epoch_step"]
        history = s["history"]
        acc_state = {k: v.to(device) for k, v in s["acc"].items()}
        t_start -= s.get("elapsed_s", 0.0)  # times in the history and result count all sessions

    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    last_ckpt: dict[str, Any] = {"path": None, "step": None, "epoch": None}
    if ckpt is not None:
        last_ckpt = {"path": ckpt.path, "step": step, "epoch": epoch}
    manifest_extra: dict[str, Any] = {
        "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "world_size": info.world_size,
        "compute_dtype": str(amp or torch.float32).removeprefix("torch."),
        "data": {"train": len(train_ds), "val": len(val_ds) if val_ds else 0, "test": len(test_ds) if test_ds else 0},
    }
    if main and run_dir is not None:
        if ckpt_dir.exists():
            remove_stale_temps(ckpt_dir)
        prev = {}
        if ckpt is not None and (run_dir / "manifest.json").exists():
            with contextlib.suppress(ValueError, OSError):
                prev = json.loads((run_dir / "manifest.json").read_text())
        resumes = list(prev.get("resumed_at_steps", [])) + ([step] if ckpt is not None else [])
        manifest_extra["resumed_at_steps"] = resumes
        write_json(run_dir / "manifest.json", build_manifest(
            kind="train", config=cfg.to_dict(), seeds=[cfg.seed], model_name=cfg.model, model_kwargs=model_kwargs,
            device=str(device), extra=manifest_extra))
    log = MetricsLog(run_dir if main else None, columns=SEG_CSV_COLUMNS if seg else CSV_COLUMNS)
    log.start(resume_step=step if ckpt is not None else None)
    display = Display(resolve_mode(cfg.progress, run_dir is not None) if main else "none", total_steps)

    def save(reason: str) -> Path | None:
        if run_dir is None:
            return None
        path = ckpt_dir / "latest.safetensors"
        if main:
            state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                     "loader": loader.state_dict(), "rng": _rng_state(), "epoch_step": epoch_step,
                     "history": history, "acc": acc_state, "reason": reason,
                     "elapsed_s": time.perf_counter() - t_start}
            try:
                save_checkpoint(path, model, model_name=cfg.model, model_kwargs=model_kwargs, step=step,
                                epoch=epoch, config=cfg.to_dict(), state=state)
            except OSError as e:  # disk full, folder turned read-only: say what survived and how to go on
                kept = (f"the last good checkpoint {last_ckpt['path']} (step {last_ckpt['step']}) is intact; free "
                        f"space and resume with: skiplab train --resume {run_dir}" if last_ckpt["path"] else
                        "no earlier checkpoint exists; free space and start again with --overwrite")
                msg = f"{e.strerror or e} while writing checkpoint {path} at step {step}; {kept}"
                raise (type(e)(e.errno, msg) if e.errno is not None else type(e)(msg)) from None
            if reason == "epoch" and cfg.keep_epoch_checkpoints:
                shutil.copyfile(path, ckpt_dir / f".epoch_{epoch:04d}.safetensors.tmp")
                (ckpt_dir / f".epoch_{epoch:04d}.safetensors.tmp").replace(ckpt_dir / f"epoch_{epoch:04d}.safetensors")
        dist_.barrier(info)
        last_ckpt.update(path=path, step=step, epoch=epoch)
        return path

    def diverged(bad_step: int) -> TrainingDiverged:
        where = (f"the last good checkpoint is {last_ckpt['path']} (epoch {last_ckpt['epoch']}, step "
                 f"{last_ckpt['step']})" if last_ckpt["path"] else
                 "no checkpoint was written before it" + ("" if run_dir else " (out=None trains in memory)"))
        tips = [f"lower the learning rate (lr={cfg.lr:g})"]
        if cfg.grad_clip is None:
            tips.append("clip gradients (--grad-clip 1.0)")
        if amp == torch.float16:
            tips.append("use --amp bf16 or none (fp16 overflows)")
        if cfg.warmup == 0 and cfg.schedule != "onecycle":
            tips.append("add a warmup (--warmup 1)")
        log.write({"kind": "error", "step": bad_step, "epoch": epoch + 1, "error": "non-finite loss"})
        return TrainingDiverged(
            f"training loss became NaN/Inf at step {bad_step} (epoch {epoch + 1}). Likely cause: the learning "
            f"rate is too high for this model and batch size, or exploding gradients. Try: {'; '.join(tips)}. "
            f"{where[0].upper() + where[1:]}.")

    # ---- the loop
    criterion = SegmentationLoss(cfg.loss, cfg.label_smoothing) if seg else \
        nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    train_step = make_train_step(fwd, optimizer, criterion,
                                 device=device, amp=amp, scaler=scaler, grad_clip=cfg.grad_clip)
    display.start(step)
    stop_sig = None
    window = {"t": time.perf_counter(), "images": 0}
    clock = {"data": 0.0}  # seconds this epoch spent waiting for the loader (a resumed epoch: since the resume)
    epoch_t0 = time.perf_counter()
    epoch_images = 0
    lr = cfg.lr * schedule.factor(max(0, step - 1))
    try:
        with _stop_on_signals(run_dir is not None, display) as flag:
            while step < total_steps:
                if epoch_step == 0:
                    loader.set_epoch(epoch)
                    epoch_t0, epoch_images = time.perf_counter(), 0
                    clock["data"] = 0.0
                model.train()
                for x, y in _timed(loader, clock, "data"):
                    lr = cfg.lr * schedule.factor(step)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    loss, logits = train_step(x, y)
                    step += 1
                    epoch_step += 1
                    n = y.shape[0]
                    epoch_images += n * info.world_size
                    window["images"] += n * info.world_size
                    # segmentation: loss and accuracy are means over labelled pixels (a device tensor: no sync)
                    accumulate(acc_state, loss, logits, y, (y != IGNORE_INDEX).sum() if seg else n, step)
                    fault_point("step")
                    last = step >= total_steps
                    if step % cfg.log_every == 0 or last:
                        bad = dist_.first_bad_step(acc_state["first_bad"], info)  # the host sync, every log_every steps
                        if bad >= 0:
                            raise diverged(bad)
                        rec = window_record(acc_state, info, step, epoch, lr, window)
                        if main:
                            log.write(rec)
                            display.update(rec)
                    if last:
                        break
                    # a signal at an epoch's last batch is handled at the epoch end, after its evaluation
                    if epoch_step < steps_per_epoch and dist_.any_flag(flag["signal"] is not None, info, device):
                        stop_sig = flag["signal"] or "SIGTERM"
                        break
                if stop_sig is not None:
                    break
                # ---- epoch end (the loader is exhausted, or the run's last step was taken)
                bad = dist_.first_bad_step(acc_state["first_bad"], info)
                if bad >= 0:
                    raise diverged(bad)
                epoch += 1
                rec = epoch_record(acc_state, info, step, epoch, lr, time.perf_counter() - epoch_t0, epoch_images,
                                    time.perf_counter() - t_start)
                rec["data_time_s"] = clock["data"]
                if seg:  # like val/test loss and acc: None in an epoch without evaluation
                    rec.update(dict.fromkeys(f"{s}_{k}" for s in ("val", "test") for k in SEG_METRICS))
                t_eval = time.perf_counter()
                if (cfg.eval_every and epoch % cfg.eval_every == 0) or step >= total_steps:
                    for name, el in eval_loaders.items():
                        if seg:
                            m = evaluate_segmentation(model, el, device, amp=amp)
                            rec.update({f"{name}_{k}": m[k] for k in ("loss", "acc", *SEG_METRICS)})
                        else:
                            rec[f"{name}_loss"], rec[f"{name}_acc"] = evaluate(model, el, device, amp=amp)
                rec["eval_time_s"] = time.perf_counter() - t_eval
                history.append(rec)
                epoch_step = 0
                acc_state = zero_acc(device, first_bad=acc_state["first_bad"])
                if main:  # logged before the checkpoint: a resume cuts the log back to the checkpoint's step
                    log.write(rec)
                    display.epoch(rec)
                save("epoch")
                if on_epoch is not None:
                    on_epoch(rec)
                if step < total_steps and dist_.any_flag(flag["signal"] is not None, info, device):
                    stop_sig = flag["signal"] or "SIGTERM"  # arrived late in the epoch, in evaluation or saving
                    break
            if stop_sig is not None and epoch_step > 0:
                save("signal")
    finally:
        display.close()

    wall = time.perf_counter() - t_start
    status = "interrupted" if stop_sig is not None else "completed"
    final = {"step": step, "epoch": epoch, "status": status, "wall_time_s": wall}
    if history:
        final.update({k: v for k, v in history[-1].items() if k not in ("kind", "step", "epoch")})
    if main and run_dir is not None:
        if status == "completed":
            from skiplab.weights import save_weights

            save_weights(model, run_dir / "model.safetensors")  # carries model_name + kwargs
        write_json(run_dir / "result.json", {"final": final, "history": history})
        manifest_extra["final"] = final
        write_json(run_dir / "manifest.json", build_manifest(
            kind="train", config=cfg.to_dict(), seeds=[cfg.seed], model_name=cfg.model, model_kwargs=model_kwargs,
            device=str(device), wall_time_s=wall, extra=manifest_extra))
        if stop_sig is not None:
            display.message(f"stopped by {stop_sig} at step {step}/{total_steps} (epoch {epoch + (epoch_step > 0)}). "
                            f"Checkpoint: {last_ckpt['path']}\nResume with:  skiplab train --resume {run_dir}")
    return TrainResult(cfg, model, history, final, run_dir, status, step, epoch, wall, stop_sig, log.records,
                       model_kwargs)
