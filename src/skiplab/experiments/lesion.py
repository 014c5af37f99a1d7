"""Lesion study: residual networks behave like ensembles of relatively shallow networks (Veit, Wilber &
Belongie 2016, arXiv:1605.06431).

Train a CIFAR residual net and its plain twin (same layers, no skips), then delete blocks at test time:
each block in turn (residual: drop the branch, keep the skip; plain: drop the layer where input and output
shapes agree) and ``k`` random blocks for ``k = 1..n``.  Veit et al. found ResNet-110's error barely moves
when one block is removed (except at the downsampling blocks) and rises smoothly with ``k``, while removing any
layer of a plain (VGG) net drops it to chance.  The reason: an ``n``-block residual net holds ``2**n`` paths,
``C(n, k)`` of length ``k``; a lesion deletes half of them and leaves the rest working, and the gradient comes
mostly from the short ones (their Fig. 6).

This module also holds :class:`NetTraining` and :func:`trained_net` (a residual net or its plain twin trained
by the shared :mod:`~skiplab.experiments.training_runs`), which the landscape and feature-map experiments use.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from skiplab.analysis.lesion import blocks_of, effective_path_contribution, is_downsampling, path_gradient_norms, \
    path_length_distribution, random_lesion_errors, single_lesion_errors, top1_error
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads
from skiplab.experiments.training_runs import CIFAR_RECIPE, Recipe, data_dir_of, data_options, train_net

SKIP_PREFIX = {"residual": "resnet", "none": "plain"}
MIN_GAP = 0.2  # a net whose error is not this far below chance did not learn enough to lesion meaningfully


# ----------------------------------------------------------------------------- training shared by part 2

@dataclass
class NetTraining(Recipe):
    """How the CIFAR ResNet (``resnet{depth}``) and its plain twin (``plain{depth}``) are trained: a
    :class:`~skiplab.experiments.training_runs.Recipe` (He et al. 2015 §4.2 by default) plus the net's depth and
    width.  Nets are trained (and cached per process) by :func:`~skiplab.experiments.training_runs.train_net`."""

    depth: int = 110
    width: float = 1.0

    def validate_training(self) -> None:
        from skiplab.models.cifar import CIFAR_DEPTHS

        self.validate_recipe()
        if self.depth not in CIFAR_DEPTHS:
            raise ValueError(f"depth must be one of the registered CIFAR depths {CIFAR_DEPTHS} (resnet<depth> and "
                             f"plain<depth>); got {self.depth!r}")
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or not self.width > 0:
            raise ValueError(f"width must be a positive number; got {self.width!r}")


def model_name(cfg: NetTraining, skip: str) -> str:
    return f"{SKIP_PREFIX[skip]}{cfg.depth}"


def trained_net(cfg: NetTraining, skip: str, seed: int) -> tuple[nn.Module, float]:
    """``(model in eval mode, training seconds)`` for the ``skip`` twin trained as ``cfg`` says with ``seed``."""
    run, model = train_net(cfg, model_name(cfg, skip), {"width": cfg.width}, seed)
    return model, run.train_time_s


def eval_tensors(cfg: NetTraining, split: str, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of ``split`` (all if 0) as one normalised float batch ``(x, y)``: a fixed random subset
    (seed 0), because files may be sorted by class (an ImageFolder CIFAR-10 test split starts with 1,000
    airplanes)."""
    from skiplab.data import BatchLoader, load_dataset

    ds = load_dataset(cfg.data, split, data_dir=data_dir_of(cfg), **data_options(cfg))
    if n and n < len(ds):
        ds = ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].sort().values)
    x, y = next(iter(BatchLoader(ds, len(ds), shuffle=False)))
    return x, y


def chance_error(y: torch.Tensor) -> float:
    """The error of always answering the most frequent class."""
    counts = torch.bincount(y.flatten().cpu())
    return 1.0 - float(counts.max()) / y.numel()


# ----------------------------------------------------------------------------------------------- experiment

@dataclass
class Config(NetTraining):
    """Veit et al. lesion ResNet-110 trained on CIFAR-10 (He et al.'s recipe): the defaults.
    ``draws``: random subsets per ``k``; ``path_samples``: sampled paths per length for the gradient measurement, on ``path_batch`` test images."""

    n_eval: int = 0  # test images to measure errors on (0: the whole test split)
    draws: int = 10
    path_samples: int = 20
    path_batch: int = 128
    n_seeds: int = 2

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_TRAINING, n_eval=500, draws=6, path_samples=4, path_batch=64)

    @classmethod
    def cifar(cls) -> "Config":
        """Real CIFAR-10: the degradation study's ResNet-56 and plain-56 (shared cache; Veit et al. lesion
        ResNet-110), errors on 2,000 test images, 5 random draws per number of deleted blocks."""
        return cls(**CIFAR_RECIPE, depth=56, n_seeds=1, n_eval=2000, draws=5, path_samples=10, path_batch=128)

    def __post_init__(self) -> None:
        self.validate_training()
        if isinstance(self.n_eval, bool) or not isinstance(self.n_eval, int) or self.n_eval < 0:
            raise ValueError(f"n_eval must be a non-negative integer (0: all); got {self.n_eval!r}")
        for name in ("draws", "path_samples", "path_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")


# The demo setting shared by the part-2 analyses (same settings, so `skiplab demo` trains each net once): a 32-layer
# net (15 blocks) at half width trained 160 steps (~5 epochs) on 2,000 generated 16x16 digits, ~15 s per net on one
# CPU thread.  Measured: resnet32 0.2% test error, plain32 32% — 15 blocks are the fewest for which single lesions
# left the residual net nearly intact (with 9, removing an early block cost it a third of the way to chance).
QUICK_TRAINING: dict[str, Any] = dict(
    depth=32, width=0.5, data="synthetic_digits", image_size=16, n_train=2000, n_test=500, steps=160, batch_size=64,
    lr=0.1, weight_decay=5e-4, schedule="onecycle", crop_padding=2, flip=False, n_seeds=1, threads=1,
    eval_points=1, n_train_eval=500,
)


@dataclass
class NetLesions:
    """One trained net (one seed) and what removing its blocks did."""

    skip: str
    seed: int
    base_error: float
    chance_error: float
    downsampling: list[bool]  # per block
    single: list[float]  # per block: error with that block removed (NaN: cannot be removed)
    ks: list[int]
    random: list[list[float]]  # [k index][draw]
    path_norms: list[float] = field(default_factory=list)  # residual only: gradient norm per path length 0..n
    train_seconds: float = 0.0


@dataclass
class Result:
    config: Config
    nets: list[NetLesions]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def damage(errors: Any, base: float, chance: float) -> np.ndarray:
    """Error increase as a fraction of the way from the intact net's error to chance (0: harmless, 1: chance)."""
    return (np.asarray(errors, dtype=float) - base) / max(chance - base, 1e-9)


def run(cfg: Config, progress: Progress | None = None) -> Result:
    if cfg.threads:
        with torch_threads(cfg.threads):
            return _run(cfg, progress)
    return _run(cfg, progress)


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    x, y = eval_tensors(cfg, "test", cfg.n_eval)
    total, done, nets = 2 * len(seeds), 0, []
    for seed in seeds:
        for skip in ("residual", "none"):
            report_progress(progress, done, total, f"{model_name(cfg, skip)}, seed {seed}: training")
            model, seconds = trained_net(cfg, skip, seed)
            device = next(model.parameters()).device
            xd, yd = x.to(device), y.to(device)
            report_progress(progress, done, total, f"{model_name(cfg, skip)}, seed {seed}: lesions")
            blocks = blocks_of(model)
            n_removable = sum(b.can_lesion() for b in blocks)
            ks = list(range(1, n_removable + 1))
            net = NetLesions(
                skip, seed, top1_error(model, xd, yd), chance_error(y), [is_downsampling(b) for b in blocks],
                single_lesion_errors(model, xd, yd), ks,
                random_lesion_errors(model, xd, yd, ks, cfg.draws, seed=1000 + seed), train_seconds=seconds)
            if skip == "residual":
                net.path_norms = path_gradient_norms(model, xd[:cfg.path_batch], yd[:cfg.path_batch],
                                                     samples_per_length=cfg.path_samples, seed=2000 + seed)
            nets.append(net)
            done += 1
    report_progress(progress, total, total, "done")
    result = Result(cfg, nets, [], [])
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.notes = make_notes(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


def _nets(result: Result, skip: str) -> list[NetLesions]:
    return [n for n in result.nets if n.skip == skip]


def check_claims(result: Result) -> list[Claim]:
    claims = []
    res, plain = _nets(result, "residual"), _nets(result, "none")
    if res and plain:
        rd = [float(np.median(damage([e for e, d in zip(n.single, n.downsampling) if not d], n.base_error,
                                     n.chance_error))) for n in res]
        pd = [float(np.nanmedian(damage(n.single, n.base_error, n.chance_error))) for n in plain]
        claims.append(Claim(
            "residual_survives_single_lesions",
            "Removing a single (non-downsampling) block from a trained residual net barely changes its error: "
            "the net is not a single deep path but an ensemble of many paths.",
            all(d < 0.2 for d in rd) and all(n.chance_error - n.base_error >= MIN_GAP for n in res),
            "median damage over non-downsampling blocks (0 = intact error, 1 = chance): "
            + ", ".join(f"seed {n.seed}: {d:.2f} (intact {100 * n.base_error:.1f}% error, lesioned median "
                        f"{100 * np.median([e for e, s in zip(n.single, n.downsampling) if not s]):.1f}%)"
                        for n, d in zip(res, rd)),
            "held if, for every seed, the median over non-downsampling blocks of (error - intact) / (chance - "
            "intact) is below 0.2"))
        trained = [n.chance_error - n.base_error >= MIN_GAP for n in plain]
        claims.append(Claim(
            "plain_collapses",
            "Removing a single layer from the plain twin breaks it: its error moves most of the way to chance.",
            all(d > 0.5 for d in pd) and all(trained),
            "median damage over the removable plain blocks: " + ", ".join(
                f"seed {n.seed}: {d:.2f} (intact {100 * n.base_error:.1f}%, lesioned median "
                f"{100 * np.nanmedian(n.single):.1f}%, chance {100 * n.chance_error:.0f}%)" for n, d in zip(plain, pd))
            + ("" if all(trained) else "; the plain net did not train well enough to test this (intact error "
               f"within {100 * MIN_GAP:.0f} points of chance)"),
            f"held if, for every seed, the plain net trained (intact error at least {100 * MIN_GAP:.0f} points below "
            "chance) and the median damage over its removable blocks exceeds 0.5"))
    if res:
        down = [(float(np.mean(damage([e for e, d in zip(n.single, n.downsampling) if d], n.base_error,
                                      n.chance_error))),
                 float(np.mean(damage([e for e, d in zip(n.single, n.downsampling) if not d], n.base_error,
                                      n.chance_error)))) for n in res]
        claims.append(Claim(
            "downsampling_blocks_hurt_most",
            "The exception: removing a downsampling block (the skip is then a strided, zero-padded shortcut) "
            "hurts more than removing any other block.",
            all(a > b for a, b in down),
            ", ".join(f"seed {n.seed}: mean damage {a:.2f} at downsampling blocks vs {b:.2f} elsewhere"
                      for n, (a, b) in zip(res, down)),
            "held if, for every seed, the mean damage of the downsampling blocks exceeds the others'"))
        smooth = []
        for n in res:
            curve = np.array([np.mean(r) for r in n.random])
            steps = np.diff(np.concatenate([[n.base_error], curve]))
            smooth.append(float(steps.max() / max(n.chance_error - n.base_error, 1e-9)))
        plain_k1 = [float(damage(np.mean(n.random[0]), n.base_error, n.chance_error)) for n in plain]
        claims.append(Claim(
            "smooth_degradation",
            "Removing more and more blocks at random degrades the residual net smoothly: no single extra block "
            "collapses it (while one removal is enough to break the plain net).",
            all(jump < 0.35 for jump in smooth),
            ", ".join(f"seed {n.seed}: the largest rise from one more removed block is {jump:.2f} of the "
                      "intact-to-chance gap" for n, jump in zip(res, smooth))
            + (f"; plain net, one random block removed: {', '.join(f'{d:.2f}' for d in plain_k1)} of its gap"
               if plain_k1 else ""),
            "held if, for every seed, each extra removed block (k-1 -> k, mean over draws) adds less than 0.35 of "
            "the residual net's intact-to-chance gap"))
        eff = [(float(np.dot(range(len(n.path_norms)), effective_path_contribution(n.path_norms))),
                (len(n.path_norms) - 1) / 2) for n in res if n.path_norms]
        if eff:
            claims.append(Claim(
                "short_effective_paths",
                "The gradient comes mostly from short paths: weighted by their gradient, paths are much shorter "
                "than the typical path in the net (Veit et al.: 5-17 of 54 blocks in ResNet-110).",
                all(m < 0.75 * typ for m, typ in eff),
                ", ".join(f"seed {n.seed}: gradient-weighted mean path length {m:.1f} vs {typ:.1f} for all paths"
                          for n, (m, typ) in zip([n for n in res if n.path_norms], eff)),
                "held if, for every seed, the gradient-weighted mean path length is below 0.75 x n/2"))
    return claims


def make_tables(result: Result) -> list[Table]:
    rows = []
    for n in result.nets:
        single = np.asarray(n.single, dtype=float)
        down = np.asarray(n.downsampling)
        rows.append([model_name(result.config, n.skip), n.seed, 100 * n.base_error,
                     100 * float(np.nanmedian(single[~down])) if (~down).any() else float("nan"),
                     100 * float(np.nanmax(single)), 100 * float(np.mean(n.random[0])),
                     100 * float(np.mean(n.random[len(n.random) // 2])), 100 * float(np.mean(n.random[-1])),
                     100 * n.chance_error])
    columns = ["net", "seed", "intact error %", "one block removed (median) %", "worst single removal %",
               "k=1 random %", "k=n/2 random %", "all removable removed %", "chance %"]
    tables = [Table(columns, rows, "Test error after removing blocks at test time (residual: branch dropped, skip "
                                   "kept; plain: layer dropped where its shape allows).")]
    res = [n for n in _nets(result, "residual") if n.path_norms]
    if res:
        n_blocks = len(res[0].path_norms) - 1
        binom = path_length_distribution(n_blocks)
        contrib = np.mean([effective_path_contribution(n.path_norms) for n in res], axis=0)
        norms = np.mean([n.path_norms for n in res], axis=0)
        tables.append(Table(["path length k", "paths C(n,k)", "share of paths", "gradient per path",
                             "share of total gradient"],
                            [[k, math.comb(n_blocks, k), binom[k], float(norms[k]), float(contrib[k])]
                             for k in range(n_blocks + 1)],
                            f"Paths through the {n_blocks}-block residual net (mean over seeds): how many there are of "
                            "each length and how much of the gradient at the first block they carry."))
    return tables


def make_notes(result: Result) -> list[str]:
    cfg = result.config
    notes = [f"Nets: resnet{cfg.depth} and plain{cfg.depth} (width x{cfg.width:g}) trained {cfg.steps} steps of "
             f"batch {cfg.batch_size} on {cfg.data}; errors on {cfg.n_eval or 'all'} test images."]
    plain = _nets(result, "none")
    if plain:
        n_fixed = sum(not math.isfinite(e) for e in plain[0].single)
        notes.append(f"{n_fixed} of the plain net's {len(plain[0].single)} blocks change shape and cannot be removed "
                     "(no path around them); the residual net's downsampling blocks fall back on their zero-padded "
                     "strided shortcut.")
    return notes


SPEC = register_experiment(ExperimentSpec(
    name="lesion",
    title="Lesion study: residual nets as ensembles",
    question="What happens to a trained network when blocks are deleted at test time, with and without skips?",
    claim="Deleting a block from a residual net barely hurts (except downsampling blocks) and the error rises "
          "smoothly as more are deleted; deleting a layer from a plain net drops it toward chance.  A residual net "
          "is an ensemble of 2^n paths, and the gradient flows mostly through the short ones.",
    citation="Veit, Wilber & Belongie 2016, arXiv:1605.06431",
    config_cls=Config, result_cls=Result, run=run, order=60,
))
