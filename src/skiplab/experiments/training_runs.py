"""Training runs shared by the training comparisons (degradation, identity construction, skip variants,
stochastic depth, unit orderings): one :class:`Recipe` for every net of an experiment, curves against
iterations, final errors measured in eval mode, and a per-process cache.

* Every net is trained by :func:`skiplab.train.train` (``out=None``: in memory): a registered model
  (``resnet56``, ``highway20``, ``densenet_bc_100_12`` ...) by name, a net the registry has no name for — a
  pre-activation net of basic units at depth 20..110, which the ordering study needs — through its builder.
* Curves: the training error is the running error over each logging window (train mode, augmented batches:
  the quantity He et al. plot in their Fig. 1 and 6); the test error is measured at epoch ends.
* Final numbers are measured after training in eval mode: the test split, and ``n_train_eval`` training images
  (a fixed random draw) without augmentation — the *training* error a degradation claim is about.
* The cache: training is deterministic from its config on one process, so `skiplab demo`, which runs
  several of these experiments in one process, trains a net that two of them ask for (same recipe, model and
  seed) once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from skiplab.experiments.base import Claim, Progress, Table, report_progress, seed_list

SCHEDULES = ("step", "onecycle")


@dataclass
class Recipe:
    """How every net of one experiment is trained — the same for all, so the comparison is fair.

    Defaults: He et al. 2015 §4.2 (CIFAR-10, found by :func:`data_dir_of`; the generated sets are the quick
    settings' only): SGD with momentum 0.9, batch 128, lr 0.1 divided by 10 at 50% and 75%
    of the run (their 32k and 48k of 64k iterations), weight decay 1e-4, 4-pixel pad-and-crop and flips.
    ``schedule="onecycle"`` warms up over 15% of the steps then anneals to zero (short demo runs).  ``warmup``:
    linear warmup steps before a "step" schedule (He et al. train ResNet-110 at lr 0.01 for ~400 iterations
    first).  ``data``: any skiplab dataset; ``data_dir=""``: the default location ($SKIPLAB_DATA); ``image_size``,
    ``n_train``, ``n_test`` (0: the dataset's default) apply to the generated datasets only.  ``eval_points``:
    about how many test evaluations a run makes (at epoch ends).  ``n_train_eval``: training images (a fixed
    random draw) the final training error is measured on (0: all).  ``threads`` > 0 sets torch's intra-op threads
    (0: leave them).  ``amp``: autocast as :class:`skiplab.train.TrainConfig` takes it (``auto``: bf16 where the
    device computes it natively).  ``cache``: keep every trained net on disk (:func:`nets_cache_dir`), so a net
    another experiment (or an earlier, stopped run) trained with the same recipe is reused, and a net whose
    training was stopped continues from its last epoch checkpoint.  ``data_dir=""`` with a file dataset: the
    first of :func:`skiplab.data.locate_data_dir`'s places that holds it.  ``resplit`` > 0: the dataset's official
    test file alone, split by a fixed seed into ``resplit`` test images and the rest for training (the shared MNIST
    copy holds only the test set).
    """

    data: str = "cifar10"
    data_dir: str = ""
    image_size: int = 0
    n_train: int = 0
    n_test: int = 0
    steps: int = 64000
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 1e-4
    schedule: str = "step"
    warmup: int = 0
    crop_padding: int = 4
    flip: bool = True
    eval_points: int = 20
    n_train_eval: int = 10000
    n_seeds: int = 1
    first_seed: int = 0
    threads: int = 0
    device: str = "auto"
    amp: str = "auto"
    cache: bool = False
    resplit: int = 0

    def validate_recipe(self) -> None:
        """Raise ``ValueError`` naming the first bad setting, what it takes and what it got."""
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a dataset name (e.g. 'synthetic', 'cifar10'); got {self.data!r}")
        for name in ("steps", "batch_size", "eval_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        for name in ("image_size", "n_train", "n_test", "warmup", "crop_padding", "n_train_eval", "threads", "resplit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer (0: default/off); got {v!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number; got {self.lr!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0; got {self.weight_decay!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}; got {self.schedule!r}")
        if self.warmup >= self.steps:
            raise ValueError(f"warmup must be shorter than the run (steps={self.steps}); got {self.warmup}")
        from skiplab.train.config import AMP_MODES

        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(map(repr, AMP_MODES))}; got {self.amp!r}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or self.device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}")
        seed_list(self.n_seeds, self.first_seed)

    def seeds(self) -> list[int]:
        return seed_list(self.n_seeds, self.first_seed)

    def check_width_and_margin(self) -> None:
        """The ``width`` (> 0) and ``margin`` (a fraction in [0, 1)) most comparisons carry, where present."""
        width = getattr(self, "width", 1.0)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"width must be a positive number; got {width!r}")
        margin = getattr(self, "margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
            raise ValueError(f"margin must be a fraction in [0, 1); got {margin!r}")


# The demo recipe: 200 steps of batch 64 on 2,000 generated 16x16 digits (~6 epochs), lr 0.05 (He et al.'s 0.1 at
# batch 128, scaled linearly to batch 64; at 0.1 the stochastic-depth ResNet-56 diverged within its first 50 steps).
# Measured with one thread on the busy 2-core machine: ~12 s of CPU for a 20-layer half-width net, ~35 s for a 56-layer
# one; the 20-layer ResNet reaches ~0% training error while the 56-layer plain net stays near 70%.  The `synthetic`
# shapes-and-textures set needs far longer: at 16x16 every net was within 3 points of chance after 400 steps.  No
# flips: digits are not mirror-symmetric.
QUICK_RECIPE: dict[str, Any] = dict(
    data="synthetic_digits", image_size=16, n_train=2000, n_test=500, steps=200, batch_size=64, lr=0.05,
    weight_decay=5e-4, schedule="onecycle", crop_padding=2, flip=False, eval_points=8, n_train_eval=2000, threads=1,
)


# The real-data setting (`--setting cifar`) shared by every CIFAR-10 training experiment, so a net two experiments
# ask for (ResNet-56 for degradation, identity, lesion, landscape, stochastic depth) is trained once and cached on
# disk: real CIFAR-10 at 32x32, the papers' widths, He et al.'s batch 128 and lr 0.1, but 2,500 iterations (6.4
# epochs) instead of 64,000 with a one-cycle schedule (15% warmup, linear anneal to 0: what suits a short budget)
# and weight decay 5e-4.  Budget: every cifar experiment together about 3 hours on a 2-core CPU with native bf16
# (two processes of one thread; bf16 autocast): ResNet-20 ~11 min, ResNet-56 ~30 min a net there.
CIFAR_RECIPE: dict[str, Any] = dict(
    data="cifar10", steps=2500, batch_size=128, lr=0.1, weight_decay=5e-4, schedule="onecycle", crop_padding=4,
    flip=True, eval_points=7, n_train_eval=10000, cache=True,
)


@dataclass
class Run:
    """One trained net (one seed): its curves and final numbers.  Errors are fractions in [0, 1]."""

    label: str
    model: str  # registry name, or a builder of LOCAL_BUILDERS
    model_kwargs: dict[str, Any]
    seed: int
    params: int
    steps: list[int] = field(default_factory=list)  # iteration at the end of each logging window
    train_error: list[float] = field(default_factory=list)  # running error over the window (train mode, augmented)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # iterations of the test evaluations (epoch ends)
    test_error: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    final_train_error: float = math.nan  # eval mode, no augmentation, first n_train_eval training images
    final_train_loss: float = math.nan
    final_test_error: float = math.nan
    final_test_loss: float = math.nan
    train_time_s: float = 0.0  # wall time of the training loop, evaluations included
    epoch_time_s: float = 0.0  # median wall time of one training epoch (evaluation excluded)


def data_options(recipe: Recipe) -> dict[str, Any]:
    """Options for :func:`skiplab.data.load_dataset`: sizes for the generated datasets; for files only
    ``resplit`` (a copy holding just the official test file, split seeded into train and test)."""
    if not recipe.data.startswith("synthetic"):
        return {"resplit": recipe.resplit} if recipe.resplit else {}
    opts = {"image_size": recipe.image_size, "n_train": recipe.n_train, "n_test": recipe.n_test}
    return {k: v for k, v in opts.items() if v}


def data_dir_of(recipe: Recipe) -> str | None:
    """Where ``recipe``'s dataset is read from: ``data_dir`` if set, None for the generated datasets, else the
    first place :func:`skiplab.data.locate_data_dir` finds it (raising, naming every place looked, if none)."""
    if recipe.data_dir or recipe.data.startswith("synthetic"):
        return recipe.data_dir or None
    from skiplab.data import locate_data_dir

    return str(locate_data_dir(recipe.data))


def train_split(recipe: Recipe) -> Any:
    from skiplab.data import load_dataset

    return load_dataset(recipe.data, "train", data_dir=data_dir_of(recipe), **data_options(recipe))


def train_eval_subset(train_ds: Any, n: int) -> Any:
    """``n`` training images (all if 0 or more than there are) for measuring the training error: a fixed random
    draw, not the first ``n`` — image-folder datasets such as the CIFAR-10 copy are stored sorted by class."""
    if not n or n >= len(train_ds):
        return train_ds
    idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(0))[:n]
    return train_ds.subset(idx.sort().values)


def eval_loaders(recipe: Recipe, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """``(train, test)`` loaders for final measurements: the ``n_train_eval`` training images of
    :func:`train_eval_subset` and the test split, in order, without augmentation."""
    from skiplab.data import BatchLoader, load_dataset

    train_ds = train_eval_subset(train_split(recipe), recipe.n_train_eval)
    test_ds = load_dataset(recipe.data, "test", data_dir=data_dir_of(recipe), **data_options(recipe))
    return (BatchLoader(train_ds, 500, shuffle=False, device=device),
            BatchLoader(test_ds, 500, shuffle=False, device=device))


def train_config(recipe: Recipe, model: str, model_kwargs: dict[str, Any], seed: int, n_images: int) -> Any:
    """The :class:`skiplab.train.TrainConfig` for one net; ``n_images``: size of the training split."""
    from skiplab.train import TrainConfig

    steps_per_epoch = math.ceil(n_images / recipe.batch_size)
    epochs = math.ceil(recipe.steps / steps_per_epoch)
    if recipe.schedule == "step":
        schedule: dict[str, Any] = dict(schedule="step", milestones=(0.5 * recipe.steps, 0.75 * recipe.steps),
                                        gamma=0.1, warmup=recipe.warmup)
    else:
        schedule = dict(schedule="onecycle", warmup=max(1, round(0.15 * recipe.steps)))
    return TrainConfig(
        model=model, model_kwargs=dict(model_kwargs), data=recipe.data, data_dir=data_dir_of(recipe),
        data_options=data_options(recipe), max_steps=recipe.steps, epochs=None, batch_size=recipe.batch_size,
        lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay, schedule_unit="steps",
        crop_padding=recipe.crop_padding, flip=recipe.flip, test_split="test",
        eval_every=max(1, round(epochs / recipe.eval_points)), log_every=max(1, recipe.steps // 50),
        progress="none", out=None, seed=seed, num_threads=recipe.threads or None, device=recipe.device,
        amp=recipe.amp, **schedule)


# ------------------------------------------------------------------------------------------ unregistered nets
def _preact(**kwargs: Any) -> nn.Module:
    from skiplab.models.preact import preact_resnet

    return preact_resnet(**kwargs)


# Builders for nets the registry has no entry for, called with the run's model_kwargs (``depth`` among them): the
# registry holds pre-activation nets only at depths 164 and 1001, the ordering study needs basic units at 20-110.
LOCAL_BUILDERS: dict[str, Callable[..., nn.Module]] = {"preact_resnet": _preact}


def build(model: str, model_kwargs: dict[str, Any]) -> nn.Module:
    """A fresh net from a registry name or a :data:`LOCAL_BUILDERS` name; raises naming both kinds otherwise."""
    from skiplab.registry import create_model, list_models

    if model in LOCAL_BUILDERS:
        return LOCAL_BUILDERS[model](**model_kwargs)
    if model not in list_models():
        raise ValueError(f"model {model!r} is neither a registered model (`skiplab models`) nor one of "
                         f"{', '.join(LOCAL_BUILDERS)}")
    return create_model(model, **model_kwargs)


def in_training_layout(net: nn.Module, tc: Any) -> nn.Module:
    """``net`` in the memory layout :func:`skiplab.train.train` gives it under ``tc`` (channels_last unless the
    config or this torch build's CPU backward rules it out), so a rebuilt copy rounds exactly like the trained net."""
    from skiplab.speed import channels_last_hazard

    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    if tc.channels_last and channels_last_hazard(net, device) is None:
        net = net.to(memory_format=torch.channels_last)
    return net


# ------------------------------------------------------------------------------------------------- the cache
_CACHE: dict[str, tuple[Run, dict[str, torch.Tensor]]] = {}


def clear_cache() -> None:
    """Forget the nets trained in this process (tests use it to time or check a fresh run)."""
    _CACHE.clear()


def nets_cache_dir() -> Path:
    """Where ``Recipe(cache=True)`` keeps trained nets: ``$SKIPLAB_NETS``, else ``$SKIPLAB_CACHE/nets``, else
    ``~/.cache/skiplab/nets``."""
    if os.environ.get("SKIPLAB_NETS"):
        return Path(os.environ["SKIPLAB_NETS"])
    return Path(os.environ.get("SKIPLAB_CACHE") or Path.home() / ".cache" / "skiplab") / "nets"


def cache_key(tc: Any, n_train_eval: int) -> str:
    """What decides a trained net's weights: the training config without where/how it runs (device, threads,
    display, output folder, the data's folder) and with ``amp`` resolved to the dtype it runs in here."""
    from skiplab.train.loop import RUNTIME_FIELDS, resolve_amp, resolve_device

    d = tc.to_dict()
    for k in (*RUNTIME_FIELDS, "out", "resume", "overwrite", "data_dir"):
        d.pop(k, None)
    d["amp"] = str(resolve_amp(tc.amp, resolve_device(tc.device)) or "float32").removeprefix("torch.")
    return json.dumps({"train": d, "n_train_eval": n_train_eval}, sort_keys=True, default=str)


class NetBusy(Exception):
    """Another process holds the lock of the net being asked for (it is training it now)."""


def train_net(recipe: Recipe, model: str, model_kwargs: dict[str, Any], seed: int, *, label: str = "",
              on_epoch: Callable[[dict[str, Any]], None] | None = None, wait: bool = True) -> tuple[Run, nn.Module]:
    """Train ``model`` (registry name or :data:`LOCAL_BUILDERS` name) with ``model_kwargs`` as ``recipe`` says,
    with ``seed``.  Returns the :class:`Run` and the trained net in eval mode.

    A net already trained in this process with the same recipe, model, kwargs and seed is rebuilt from the cache
    (its Run carries the original timings) — a new run would compute the same weights.  With ``recipe.cache`` the
    same holds across processes through :func:`nets_cache_dir`; a net another process is training is waited for
    (``wait=False``: :class:`NetBusy` is raised instead, so a caller can train something else first)."""
    train_ds = train_split(recipe)
    tc = train_config(recipe, model, model_kwargs, seed, len(train_ds))
    key = cache_key(tc, recipe.n_train_eval)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if key in _CACHE and not distributed:
        return _from_memory(key, tc, label)
    if model not in LOCAL_BUILDERS:
        from skiplab.registry import list_models

        if model not in list_models():
            build(model, model_kwargs)  # raises the message naming what is known
    if recipe.cache and not distributed:
        run, state = _disk_cached(recipe, tc, key, train_ds, label, on_epoch, wait)
        _CACHE[key] = (run, state)
        return _from_memory(key, tc, label)
    from skiplab.train import train

    t0 = time.perf_counter()
    result = train(tc, on_epoch=on_epoch, builder=LOCAL_BUILDERS.get(model))
    run = _summarise(recipe, result.model, result.model_kwargs, result.history, result.records, model, seed,
                     label, time.perf_counter() - t0, train_ds)
    net = result.model.eval()
    if not distributed:
        _CACHE[key] = (run, {k: v.detach().clone() for k, v in net.state_dict().items()})
    return run, net


def _from_memory(key: str, tc: Any, label: str) -> tuple[Run, nn.Module]:
    run, state = _CACHE[key]
    net = build(run.model, run.model_kwargs)
    net.load_state_dict(state)
    net = in_training_layout(net.to(next(iter(state.values())).device), tc)
    return dataclasses.replace(run, label=label or run.label), net.eval()


def _summarise(recipe: Recipe, net: nn.Module, kwargs: dict[str, Any], history: list[dict[str, Any]],
               records: list[dict[str, Any]], model: str, seed: int, label: str, wall: float, train_ds: Any) -> Run:
    """A trained net's :class:`Run`: its curves from the metric records, final errors measured now."""
    from skiplab.data import BatchLoader
    from skiplab.train import evaluate

    train_eval = train_eval_subset(train_ds, recipe.n_train_eval)
    device = next(net.parameters()).device
    train_loss, train_acc = evaluate(net, BatchLoader(train_eval, 500, shuffle=False, device=device), device)
    steps = [r for r in records if r.get("kind") == "step"]
    tested = [h for h in history if h.get("test_acc") is not None]
    return Run(
        label=label or model, model=model, model_kwargs=kwargs, seed=seed,
        params=sum(p.numel() for p in net.parameters()),
        steps=[int(r["step"]) for r in steps], train_error=[1.0 - r["train_acc"] for r in steps],
        train_loss=[float(r["train_loss"]) for r in steps],
        eval_steps=[int(h["step"]) for h in tested], test_error=[1.0 - h["test_acc"] for h in tested],
        test_loss=[float(h["test_loss"]) for h in tested],
        final_train_error=1.0 - train_acc, final_train_loss=train_loss,
        final_test_error=1.0 - tested[-1]["test_acc"] if tested else math.nan,
        final_test_loss=float(tested[-1]["test_loss"]) if tested else math.nan,
        train_time_s=wall, epoch_time_s=statistics.median(h["epoch_time_s"] for h in history) if history else 0.0,
    )


def _disk_cached(recipe: Recipe, tc: Any, key: str, train_ds: Any, label: str,
                 on_epoch: Callable[[dict[str, Any]], None] | None, wait: bool
                 ) -> tuple[Run, dict[str, torch.Tensor]]:
    """The net of ``key`` from :func:`nets_cache_dir`, trained (or resumed) first if it is not there.

    Layout: ``<model>-<hash>/`` holds ``key.json`` (what was trained), ``train/`` (a skiplab run folder: epoch
    checkpoints, metrics, manifest — so a stopped training resumes), and, once complete, ``net.safetensors`` and
    ``run.json``.  An exclusive ``flock`` on ``lock`` keeps two processes from training the same net."""
    import fcntl
    import hashlib

    from skiplab.io import write_json
    from skiplab.train import TrainConfig, train
    from skiplab.weights import load_weights, save_weights

    folder = nets_cache_dir() / f"{tc.model}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise NetBusy(str(folder)) from None
        if (folder / "run.json").is_file() and (folder / "net.safetensors").is_file():
            run = _run_from_json(json.loads((folder / "run.json").read_text()))
            net = build(run.model, run.model_kwargs)
            load_weights(net, folder / "net.safetensors")
            return run, {k: v.detach().clone() for k, v in net.state_dict().items()}
        write_json(folder / "key.json", json.loads(key))
        run_dir = folder / "train"
        t0 = time.perf_counter()
        builder = LOCAL_BUILDERS.get(tc.model)
        if (run_dir / "checkpoints" / "latest.safetensors").is_file():
            runtime = dict(num_threads=tc.num_threads, device=tc.device, progress=tc.progress)
            result = train(TrainConfig(resume=str(run_dir), **runtime), on_epoch=on_epoch, builder=builder)
        else:
            if run_dir.exists():  # a run stopped before its first checkpoint: nothing to keep
                import shutil

                shutil.rmtree(run_dir)
            result = train(tc.replace(out=str(run_dir)), on_epoch=on_epoch, builder=builder)
        if result.status != "completed":
            raise RuntimeError(f"training of {tc.model} stopped ({result.status}); run the same command again to "
                               f"continue it from {run_dir}")
        records = _read_records(run_dir / "metrics.jsonl")
        wall = float(result.final.get("wall_time_s", time.perf_counter() - t0))
        run = _summarise(recipe, result.model, result.model_kwargs, result.history, records, tc.model, tc.seed,
                         label, wall, train_ds)
        net = result.model.eval()
        save_weights(net, folder / "net.safetensors")
        write_json(folder / "run.json", dataclasses.asdict(run))
        return run, {k: v.detach().clone() for k, v in net.state_dict().items()}


def _read_records(path: Path) -> list[dict[str, Any]]:
    """A run's metric records, one per (kind, step): a resumed run logs again the steps after its checkpoint."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            latest[(rec.get("kind", ""), int(rec.get("step", 0)))] = rec
    return sorted(latest.values(), key=lambda r: (int(r.get("step", 0)), r.get("kind") != "step"))


def _run_from_json(data: dict[str, Any]) -> Run:
    from skiplab.experiments.base import from_dict

    return from_dict(Run, data)


@dataclass
class ComparisonResult:
    """What a training comparison returns: every net's :class:`Run`, the claims and tables computed from them.
    Each experiment subclasses it to type ``config`` (so a saved result reloads into its Config)."""

    config: Any
    runs: list[Run]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def train_jobs(recipe: Recipe, jobs: list[tuple[str, str, dict[str, Any], int]], progress: Progress | None
               ) -> list[Run]:
    """Train each ``(label, model, model_kwargs, seed)`` with ``recipe``, reporting per net and epoch; the runs come
    back in job order.  With ``recipe.cache``, a net another process is training now is left for later (then
    waited for), so several processes started on one experiment share its nets between them."""
    runs: dict[int, Run] = {}
    pending = list(enumerate(jobs))
    for wait in (False, True):
        deferred = []
        for i, (label, model, kwargs, seed) in pending:
            what = f"training {label}, seed {seed}"
            report_progress(progress, len(runs), len(jobs), what)
            try:
                runs[i], _ = train_net(recipe, model, kwargs, seed, label=label, wait=wait,
                                       on_epoch=epoch_progress(progress, len(runs), len(jobs), what))
            except NetBusy:
                deferred.append((i, (label, model, kwargs, seed)))
        pending = deferred
    report_progress(progress, len(jobs), len(jobs), "done")
    return [runs[i] for i in range(len(jobs))]


def run_comparison(result_cls: type[ComparisonResult], recipe: Recipe,
                   jobs: list[tuple[str, str, dict[str, Any], int]], progress: Progress | None, *,
                   claims: Callable[[Any], list[Claim]], tables: Callable[[Any], list[Table]],
                   notes: Callable[[Any], list[str]]) -> Any:
    """A training comparison's ``run``: train ``jobs`` (see :func:`train_jobs`), then compute the result's claims,
    tables and notes from its runs — each experiment supplies those three and its job list."""
    t0 = time.perf_counter()
    result = result_cls(recipe, train_jobs(recipe, jobs, progress), [], [])
    result.claims = claims(result)
    result.tables = tables(result)
    result.notes = notes(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------------------- summaries
def epoch_progress(progress: Progress | None, done: int, total: int, what: str
                   ) -> Callable[[dict[str, Any]], None] | None:
    """An ``on_epoch`` callback that shows ``what`` and the epoch just finished on the progress display."""
    if progress is None:
        return None
    return lambda rec: progress(done, total, f"{what}, epoch {rec['epoch']}")


def by_label(runs: list[Run], label: str) -> list[Run]:
    """The runs (one per seed) of the net labelled ``label``."""
    return [r for r in runs if r.label == label]


def mean_of(runs: list[Run], attr: str) -> float:
    """Mean of ``attr`` over the seeds' runs (NaN when there are none)."""
    values = [getattr(r, attr) for r in runs]
    return float(sum(values) / len(values)) if values else math.nan


def pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.1f}%"
