"""Loss landscapes: skip connections keep the loss surface smooth and convex-looking, while the plain twin's
turns chaotic with depth (Li, Xu, Taylor, Studer & Goldstein 2018, arXiv:1712.09913, Fig. 5 and 6).

For a trained residual net and its plain twin: the training loss on ``θ + a·δ + b·η`` over a grid of
``(a, b)`` (paper: 51x51 on [-1, 1]) along two filter-normalised random directions, a finer 1-D slice along
``δ``, and the Hessian's extreme eigenvalues at a sub-grid of points (the paper's ``|λmin / λmax|`` map).
The surfaces are kept in the Result (``result.json``), so figures can be redrawn without recomputing them
(``skiplab report --reuse``); :func:`surfaces` returns them as :class:`skiplab.analysis.landscape.Surface`.

Under ``torchrun --nproc_per_node=N -m skiplab experiment landscape`` the nets are trained one per process
(round-robin, each single-process, so the result does not depend on ``N``) and broadcast; every grid, slice
and Hessian point is evaluated by exactly one process and the values are gathered on all of them; only rank 0
writes files.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from skiplab.analysis.landscape import ENGINES, GridEvaluator, Surface, axis, convex_fraction, dist_rank_world, \
    evaluate_points, evaluate_surface, grid_coords, hessian_extremes, random_direction, split_map
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads
from skiplab.experiments.lesion import QUICK_TRAINING, NetTraining, eval_tensors, model_name, trained_net
from skiplab.experiments.training_runs import CIFAR_RECIPE, data_dir_of, in_training_layout, train_config, train_split


@dataclass
class Config(NetTraining):
    """ResNet-56 vs plain-56 (Li et al. Fig. 5), trained with He et al.'s recipe on CIFAR-10.
    ``grid_points`` x ``grid_points`` on ``[-span, span]^2``; ``line_points`` on
    the 1-D slice; the loss is measured on ``n_eval`` training images (Li et al.: the whole training set; 0 here
    means the whole split).  ``hessian_grid`` x ``hessian_grid`` points get ``hessian_steps`` Lanczos steps on
    ``hessian_batch`` images (0 points: skip).  ``chunk``: images per forward pass."""

    depth: int = 56
    grid_points: int = 51
    span: float = 1.0
    line_points: int = 51
    n_eval: int = 10000
    hessian_grid: int = 11
    hessian_steps: int = 20
    hessian_batch: int = 1000
    chunk: int = 64
    engine: str = "auto"  # the grid's forward passes: torch, onnxruntime, or auto (onnxruntime where installed)

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_TRAINING, grid_points=11, line_points=21, n_eval=256, hessian_grid=3, hessian_steps=10,
                   hessian_batch=64)

    @classmethod
    def cifar(cls) -> "Config":
        """Real CIFAR-10: the degradation study's ResNet-56 and plain-56 (shared cache), as Li et al. Fig. 5, on a
        13 x 13 grid over [-1, 1]^2 with the loss on 1,000 training images (the paper: 51 x 51, the whole
        training set), no Hessian map (its Lanczos steps would cost more than the grid)."""
        return cls(**CIFAR_RECIPE, depth=56, n_seeds=1, grid_points=13, line_points=25, n_eval=1000, hessian_grid=0)

    def __post_init__(self) -> None:
        self.validate_training()
        for name in ("grid_points", "line_points", "chunk", "hessian_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if self.grid_points < 3:
            raise ValueError(f"grid_points must be >= 3 (curvature needs neighbours); got {self.grid_points}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {self.engine!r}")
        for name in ("n_eval", "hessian_grid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {v!r}")
        if isinstance(self.hessian_steps, bool) or not isinstance(self.hessian_steps, int) or self.hessian_steps < 2:
            raise ValueError(f"hessian_steps must be an integer >= 2; got {self.hessian_steps!r}")
        if not (isinstance(self.span, (int, float)) and self.span > 0):
            raise ValueError(f"span must be a positive number; got {self.span!r}")


@dataclass
class NetLandscape:
    """One net's landscape (one seed).  ``loss``/``acc`` rows follow ``ys``; the Hessian values follow
    ``hessian_points``."""

    skip: str
    seed: int
    xs: list[float]
    ys: list[float]
    loss: list[list[float]]
    acc: list[list[float]]
    line_xs: list[float]
    line_loss: list[float]
    line_acc: list[float]
    hessian_points: list[list[float]] = field(default_factory=list)
    lambda_min: list[float] = field(default_factory=list)
    lambda_max: list[float] = field(default_factory=list)
    convex_all: float = math.nan  # fraction of interior grid points where the plotted surface is locally convex
    convex_inner: float = math.nan  # the same within radius span/2
    points_per_s: float = math.nan  # grid evaluation speed (all processes together)
    train_seconds: float = 0.0

    @property
    def ratio(self) -> np.ndarray:
        """``|λmin / λmax|`` at each Hessian point (0 when λmin >= 0: locally convex)."""
        lmin, lmax = np.asarray(self.lambda_min, float), np.asarray(self.lambda_max, float)
        return np.abs(np.minimum(lmin, 0.0)) / np.maximum(np.abs(lmax), 1e-12)


@dataclass
class Result:
    config: Config
    nets: list[NetLandscape]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    world_size: int = 1


def surfaces(result: Result) -> dict[tuple[str, int], Surface]:
    """The saved 2-D surfaces by ``(skip, seed)``, ready to re-plot or ``.save("x.npz")``."""
    return {(n.skip, n.seed): Surface(np.asarray(n.xs), np.asarray(n.ys), np.asarray(n.loss), np.asarray(n.acc))
            for n in result.nets}


# ------------------------------------------------------------------------------------------------ processes

@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Join the process group a ``torchrun`` launch describes (gloo on CPU, nccl on CUDA) unless one exists;
    yields ``(rank, world size)`` and leaves the group it created on exit.  Without torchrun: ``(0, 1)``."""
    import torch.distributed as dist

    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # a generous timeout: a rank may wait for another's training run before the first collective
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=48))
        created = True
    try:
        yield dist_rank_world()
    finally:
        if created:
            dist.destroy_process_group()


@contextlib.contextmanager
def _single_process_env() -> Iterator[None]:
    """Hide the torchrun variables so :func:`skiplab.train.train` trains in this process alone."""
    saved = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _broadcast_model(model: nn.Module | None, src: int, template: nn.Module) -> nn.Module:
    """Every rank gets ``src``'s trained weights (``template``: a model of the same architecture elsewhere)."""
    import torch.distributed as dist

    target = model if model is not None else template
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    for t in list(target.state_dict().values()):
        # a dense (NCHW-contiguous) copy on both sides: the trained weights may be channels_last, the template not
        buf = t.detach().to(device).contiguous()
        dist.broadcast(buf, src=src)
        if model is None:
            t.copy_(buf.to(t.device))
    return target


def _trained_nets(cfg: Config, jobs: list[tuple[int, str]], rank: int, world: int
                  ) -> dict[tuple[int, str], tuple[nn.Module, float]]:
    """Train each (seed, skip) job on rank ``i % world`` (single-process, so results do not depend on the
    number of processes) and share the weights with every rank."""
    if world == 1:
        return {job: trained_net(cfg, job[1], job[0]) for job in jobs}
    from skiplab.registry import create_model

    out = {}
    for i, (seed, skip) in enumerate(jobs):
        mine = i % world == rank
        model, seconds = None, 0.0
        if mine:
            with _single_process_env():
                model, seconds = trained_net(cfg, skip, seed)
        # the other ranks build the same architecture: the training split fixes classes and channels
        x, _ = eval_tensors(cfg, "test", 1)
        template = None if mine else create_model(model_name(cfg, skip), width=cfg.width,
                                                  num_classes=_num_classes(cfg), in_channels=x.shape[1])
        if template is not None:
            template = template.cuda() if torch.cuda.is_available() else template
            # the trainer's layout: the same rounding on every rank
            template = in_training_layout(template, train_config(cfg, model_name(cfg, skip), {"width": cfg.width},
                                                                 seed, len(train_split(cfg))))
        model = _broadcast_model(model, i % world, template).eval()
        out[(seed, skip)] = (model, seconds)
    return out


def _num_classes(cfg: Config) -> int:
    from skiplab.data import load_dataset
    from skiplab.experiments.lesion import data_options

    return load_dataset(cfg.data, "train", data_dir=data_dir_of(cfg), **data_options(cfg)).num_classes


# ------------------------------------------------------------------------------------------------ the run

def run(cfg: Config, progress: Progress | None = None) -> Result:
    with process_group() as (rank, world):
        if cfg.threads:
            with torch_threads(cfg.threads):
                return _run(cfg, progress, rank, world)
        return _run(cfg, progress, rank, world)


def _run(cfg: Config, progress: Progress | None, rank: int, world: int) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    jobs = [(seed, skip) for seed in seeds for skip in ("residual", "none")]
    report_progress(progress, 0, len(jobs), "training")
    nets = _trained_nets(cfg, jobs, rank, world)
    x, y = eval_tensors(cfg, "train", cfg.n_eval)
    xs = ys = axis(cfg.grid_points, cfg.span)
    line_xs = axis(cfg.line_points, cfg.span)
    hx = axis(cfg.hessian_grid, cfg.span) if cfg.hessian_grid else []
    out = []
    for done, (seed, skip) in enumerate(jobs):
        what = f"{model_name(cfg, skip)}, seed {seed}"
        model, seconds = nets[(seed, skip)]
        device = next(model.parameters()).device
        # the same noise for both twins (their parameters have the same names and shapes), each normalised
        # by its own weights
        dirs = [random_direction(model, seed=10_000 + 2 * seed + i) for i in range(2)]
        ev = GridEvaluator(model, dirs, x.to(device), y.to(device), chunk=cfg.chunk, engine=cfg.engine)

        def tick(i: int, n: int, stage: str) -> None:
            report_progress(progress, done, len(jobs), f"{what}: {stage} {i}/{n}")

        t1 = time.perf_counter()
        loss, acc = evaluate_surface(ev, xs, ys, progress=lambda i, n: tick(i, n, "grid"))
        pps = len(xs) * len(ys) / (time.perf_counter() - t1)
        line_loss, line_acc = evaluate_points(ev, [(a, 0.0) for a in line_xs])
        net = NetLandscape(skip, seed, xs, ys, loss.tolist(), acc.tolist(), line_xs, line_loss.tolist(),
                           line_acc.tolist(), convex_all=convex_fraction(loss, xs, ys),
                           convex_inner=convex_fraction(loss, xs, ys, radius=cfg.span / 2), points_per_s=pps,
                           train_seconds=seconds)
        if hx:
            pts = grid_coords(hx, hx)
            xh, yh = x[:cfg.hessian_batch].to(device), y[:cfg.hessian_batch].to(device)
            lam = split_map(lambda c: hessian_extremes(model, xh, yh, point=tuple(c), directions=dirs,
                                                       steps=cfg.hessian_steps, seed=seed),
                            pts, 2, progress=lambda i, n: tick(i, n, "Hessian"))
            net.hessian_points, net.lambda_min, net.lambda_max = pts.tolist(), lam[0].tolist(), lam[1].tolist()
        out.append(net)
    report_progress(progress, len(jobs), len(jobs), "done")
    result = Result(cfg, out, [], [], world_size=world)
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.notes = make_notes(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------------ verdicts

def _pairs(result: Result) -> list[tuple[NetLandscape, NetLandscape]]:
    by = {(n.seed, n.skip): n for n in result.nets}
    return [(by[(s, "residual")], by[(s, "none")]) for s in sorted({n.seed for n in result.nets})
            if (s, "residual") in by and (s, "none") in by]


def check_claims(result: Result) -> list[Claim]:
    pairs = _pairs(result)
    if not pairs:
        return []
    claims = [Claim(
        "residual_surface_more_convex",
        "With skip connections the loss surface around the minimum stays smooth and convex-looking; without them "
        "it is more chaotic (more places where it curves down).",
        all(r.convex_all > p.convex_all for r, p in pairs),
        ", ".join(f"seed {r.seed}: locally convex at {100 * r.convex_all:.0f}% of the grid (residual) vs "
                  f"{100 * p.convex_all:.0f}% (plain); within radius {result.config.span / 2:g}: "
                  f"{100 * r.convex_inner:.0f}% vs {100 * p.convex_inner:.0f}%" for r, p in pairs),
        "held if, for every seed, the residual surface is locally convex (2-D finite-difference Hessian PSD up to "
        "1% of the largest curvature) at a larger fraction of interior grid points than the plain one")]
    if all(r.lambda_min and p.lambda_min for r, p in pairs):
        stats = [(float(np.mean(r.ratio)), float(np.mean(p.ratio))) for r, p in pairs]
        claims.append(Claim(
            "hessian_ratio",
            "The paper's measure agrees: the full Hessian's |λmin/λmax| (negative curvature relative to positive) "
            "is smaller around the residual net's minimum than around the plain net's.",
            all(a < b for a, b in stats),
            ", ".join(f"seed {r.seed}: mean |λmin/λmax| over {len(r.ratio)} points {a:.3f} (residual) vs {b:.3f} "
                      f"(plain); at the centre λmax {r.lambda_max[len(r.lambda_max) // 2]:.3g} vs "
                      f"{p.lambda_max[len(p.lambda_max) // 2]:.3g}" for (r, p), (a, b) in zip(pairs, stats)),
            f"held if, for every seed, the mean ratio over the {result.config.hessian_grid}x"
            f"{result.config.hessian_grid} Hessian points is lower for the residual net (Lanczos, "
            f"{result.config.hessian_steps} steps, {result.config.hessian_batch} images)"))
    return claims


def make_tables(result: Result) -> list[Table]:
    rows = []
    for n in result.nets:
        loss = np.asarray(n.loss)
        c = loss.shape[0] // 2, loss.shape[1] // 2
        ratio = n.ratio if n.lambda_min else np.array([math.nan])
        rows.append([model_name(result.config, n.skip), n.seed, float(loss[c]),
                     100 * (1 - float(np.asarray(n.acc)[c])), float(np.nanmax(loss)), 100 * n.convex_all,
                     100 * n.convex_inner, float(np.mean(ratio)), float(np.max(ratio)), n.points_per_s])
    columns = ["net", "seed", "loss at minimum", "train error at minimum %", "max loss on grid", "convex % (grid)",
               "convex % (inner)", "mean |λmin/λmax|", "max |λmin/λmax|", "grid points/s"]
    return [Table(columns, rows, f"{result.config.grid_points}x{result.config.grid_points} grid on "
                                 f"[-{result.config.span:g}, {result.config.span:g}]^2, training loss on "
                                 f"{result.config.n_eval or 'all'} images.")]


def make_notes(result: Result) -> list[str]:
    cfg = result.config
    notes = [f"Nets: resnet{cfg.depth} and plain{cfg.depth} (width x{cfg.width:g}) trained {cfg.steps} steps of batch "
             f"{cfg.batch_size} on {cfg.data}.  Directions: Gaussian, filter-normalised, zero for biases and BN "
             "parameters; BN in eval mode."]
    if result.world_size > 1:
        notes.append(f"Grid, slice and Hessian points were split over {result.world_size} processes (torchrun).")
    return notes


SPEC = register_experiment(ExperimentSpec(
    name="landscape",
    title="Loss landscapes",
    question="What does the loss surface around a trained network look like, with and without skip connections?",
    claim="Along filter-normalised random directions the residual net's loss surface is smooth and nearly convex, "
          "while the plain twin's becomes chaotic as depth grows; the Hessian's |λmin/λmax| agrees.",
    citation="Li, Xu, Taylor, Studer & Goldstein 2018, arXiv:1712.09913",
    config_cls=Config, result_cls=Result, run=run, order=70,
))
