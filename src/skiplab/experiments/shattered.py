"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem: If resnets are the answer, then
what is the question?", ICML, arXiv:1702.08591), figures 1-2 and the correlation-vs-depth analysis.

Setup, following the paper: a scalar input on a grid of 256 points in [-2, 2], a scalar output, 200 ReLU units
per hidden layer, He-normal weights; ``dy/dx`` at every grid point, over many seeds.

Normalisation — what we could establish and what we chose:
* the paper's figure-1 resnet is described (in a public summary of the paper) as having skip connections *and*
  batch normalisation, and its analysis of resnets with batch norm is what gives the sub-linear (~1/sqrt(L))
  decay of gradient correlations: in ``x + W relu(BN(x))`` the branch adds O(1) variance while the skip path's
  variance grows with depth, so BN shrinks the branch's relative weight ~1/sqrt(l);
* we therefore use batch norm in the deep nets, with the statistics of the whole 256-point grid (the grid is
  the batch), placed pre-activation inside the branch (``x + W relu(BN(x))``), no extra branch rescaling; the
  plain twin is the same stack without the skip.  BN statistics are computed once on the grid and then frozen,
  so each point's ``dy/dx`` is the derivative of one fixed function (``analysis.shattered.input_gradients``);
* the 1-hidden-layer net has no BN: BN before its only ReLU would subtract each unit's bias and put every kink at
  the grid's mean.  Biases are N(0, 1) so the kinks spread over the interval (with zero biases a ReLU net
  without BN is positively homogeneous and its gradient is a single step);
* the extra "24-layer plain, no BN" net shows that without batch norm a plain He-initialised ReLU net at this
  depth does *not* shatter — batch norm over the grid is what decorrelates its units (the paper's
  co-activation analysis makes the same point).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from skiplab.analysis.shattered import autocorrelation, brown_noise, input_gradients, lag1_autocorrelation, \
    spectral_slope, white_noise
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads
from skiplab.models.mlp import MLP


@dataclass
class NetSpec:
    """One network: ``depth`` MLP blocks (0 = one hidden layer; a depth-d plain net has d + 1 hidden layers)."""

    label: str
    depth: int
    skip: str = "none"
    norm: str = "batch"
    branch_scale: float = 1.0


PAPER_NETS = (
    NetSpec("1-layer", 0, "none", "none"),
    NetSpec("24-layer plain", 23, "none", "batch"),
    NetSpec("50-block resnet", 50, "residual", "batch"),
)
EXTRA_NETS = (
    NetSpec("24-layer plain, no BN", 23, "none", "none"),
    NetSpec("50-block highway", 50, "highway", "batch"),
)


@dataclass
class Config:
    nets: tuple[NetSpec, ...] = PAPER_NETS + EXTRA_NETS
    n_points: int = 256
    x_min: float = -2.0
    x_max: float = 2.0
    width: int = 200
    n_seeds: int = 100
    first_seed: int = 0
    bias_std: float = 1.0
    max_lag: int = 64
    sweep_depths: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # lag-1 autocorrelation against depth
    sweep_seeds: int = 10
    shallow: str = "1-layer"  # the nets the claims compare, by label
    plain: str = "24-layer plain"
    resnet: str = "50-block resnet"

    @classmethod
    def quick(cls) -> "Config":
        return cls(n_seeds=12, sweep_depths=(1, 4, 16, 50), sweep_seeds=3)

    def __post_init__(self) -> None:
        if self.n_points < 8:
            raise ValueError(f"n_points must be >= 8; got {self.n_points!r}")
        if not self.x_min < self.x_max:
            raise ValueError(f"x_min must be < x_max; got {self.x_min!r}, {self.x_max!r}")
        if not 1 <= self.max_lag < self.n_points:
            raise ValueError(f"max_lag must be in [1, n_points); got {self.max_lag!r}")
        labels = [n.label for n in self.nets]
        if len(set(labels)) != len(labels):
            raise ValueError(f"net labels must be unique; got {labels}")
        seed_list(self.n_seeds, self.first_seed)


@dataclass
class GradientSeries:
    """``values[seed][point]`` for one net (or a noise reference) and its statistics per seed."""

    label: str
    kind: str  # "net" or "reference"
    spec: NetSpec | None
    seeds: list[int]
    values: list[list[float]]
    lag1: list[float]
    slope: list[float]
    acf: list[float]  # mean over seeds, lags 0..max_lag


@dataclass
class SweepPoint:
    skip: str
    depth: int
    lag1: list[float]  # per seed


@dataclass
class Result:
    config: Config
    x: list[float]
    series: list[GradientSeries]
    sweep: list[SweepPoint]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0

    def get(self, label: str) -> GradientSeries:
        for s in self.series:
            if s.label == label:
                return s
        raise KeyError(f"no series {label!r}; have {[s.label for s in self.series]}")


def build_net(spec: NetSpec, cfg: Config) -> MLP:
    return MLP(spec.depth, cfg.width, 1, 1, act="relu", norm=spec.norm, skip=spec.skip, init="he",
               branch_scale=spec.branch_scale, bias_std=cfg.bias_std)


def net_gradients(spec: NetSpec, cfg: Config, seed: int, x: torch.Tensor) -> np.ndarray:
    torch.manual_seed(seed)
    return input_gradients(build_net(spec, cfg), x)


def _series(label: str, kind: str, spec: NetSpec | None, seeds: list[int], values: np.ndarray,
            max_lag: int) -> GradientSeries:
    return GradientSeries(label, kind, spec, seeds, values.tolist(), np.asarray(lag1_autocorrelation(values)).tolist(),
                          np.asarray(spectral_slope(values)).tolist(),
                          np.nanmean(autocorrelation(values, max_lag), axis=0).tolist())


def run(cfg: Config, progress: Progress | None = None) -> Result:
    with torch_threads(1):
        return _run(cfg, progress)


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    x = torch.linspace(cfg.x_min, cfg.x_max, cfg.n_points).unsqueeze(1)  # (n_points, 1)
    sweep_jobs = [(skip, d) for skip in ("none", "residual") for d in cfg.sweep_depths]
    total = len(cfg.nets) * len(seeds) + len(sweep_jobs) * cfg.sweep_seeds
    done = 0
    series = []
    for spec in cfg.nets:
        grads = []
        for seed in seeds:
            report_progress(progress, done, total, f"{spec.label}, seed {seed}")
            grads.append(net_gradients(spec, cfg, seed, x))
            done += 1
        series.append(_series(spec.label, "net", spec, seeds, np.stack(grads), cfg.max_lag))
    # References drawn with numpy from the same seed range (one fixed offset so they differ from nothing above).
    series.append(_series("white noise", "reference", None, seeds,
                          white_noise(len(seeds), cfg.n_points, 1_000 + cfg.first_seed), cfg.max_lag))
    series.append(_series("brown noise", "reference", None, seeds,
                          brown_noise(len(seeds), cfg.n_points, 2_000 + cfg.first_seed), cfg.max_lag))

    sweep = []
    for skip, depth in sweep_jobs:
        spec = NetSpec(f"sweep {skip} {depth}", depth, skip, "batch")
        lag1 = []
        for seed in seed_list(cfg.sweep_seeds, cfg.first_seed):
            report_progress(progress, done, total, f"depth sweep: {skip} depth {depth}, seed {seed}")
            lag1.append(float(lag1_autocorrelation(net_gradients(spec, cfg, seed, x))))
            done += 1
        sweep.append(SweepPoint(skip, depth, lag1))
    report_progress(progress, total, total, "done")

    result = Result(cfg, x[:, 0].tolist(), series, sweep, [], [])
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


def _ms(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{np.nanmean(v):.2f} ± {np.nanstd(v):.2f}"


def check_claims(result: Result) -> list[Claim]:
    cfg = result.config
    labels = {s.label for s in result.series}
    if not {cfg.shallow, cfg.plain, cfg.resnet} <= labels:
        return []
    shallow, plain, res = result.get(cfg.shallow), result.get(cfg.plain), result.get(cfg.resnet)
    white = result.get("white noise")
    m = {s.label: (float(np.nanmean(s.lag1)), float(np.nanmean(s.slope))) for s in result.series}
    claims = [
        Claim("shallow_brown", f"A shallow net's gradients look like brown noise ({cfg.shallow}).",
              m[cfg.shallow][0] > 0.8 and m[cfg.shallow][1] < -1.5,
              f"{cfg.shallow}: lag-1 autocorrelation {_ms(shallow.lag1)}, spectral slope {_ms(shallow.slope)} "
              f"(brown noise: {_ms(result.get('brown noise').lag1)}, {_ms(result.get('brown noise').slope)})",
              "held if mean lag-1 autocorrelation > 0.8 and mean spectral slope < -1.5"),
        Claim("deep_plain_white", f"A deep plain net's gradients look like white noise ({cfg.plain}).",
              abs(m[cfg.plain][0]) < 0.2 and abs(m[cfg.plain][1]) < 0.5,
              f"{cfg.plain}: lag-1 {_ms(plain.lag1)}, slope {_ms(plain.slope)} "
              f"(white noise: {_ms(white.lag1)}, {_ms(white.slope)})",
              "held if |mean lag-1 autocorrelation| < 0.2 and |mean spectral slope| < 0.5"),
        Claim("resnet_between",
              f"A resnet's gradients lie between brown and white noise, far from white ({cfg.resnet}).",
              m[cfg.plain][0] < m[cfg.resnet][0] < m[cfg.shallow][0] and m[cfg.plain][1] > m[cfg.resnet][1] >
              m[cfg.shallow][1] and m[cfg.resnet][0] > 0.3,
              f"{cfg.resnet}: lag-1 {_ms(res.lag1)}, slope {_ms(res.slope)}; between {cfg.plain} "
              f"({m[cfg.plain][0]:.2f}, {m[cfg.plain][1]:.2f}) and {cfg.shallow} ({m[cfg.shallow][0]:.2f}, "
              f"{m[cfg.shallow][1]:.2f})",
              "held if the resnet's mean lag-1 and mean slope both lie strictly between the deep plain net's and the "
              "shallow net's, and its lag-1 autocorrelation > 0.3 (white noise: ~0 ± 0.06 at 256 points)"),
    ]
    plain_sweep = {p.depth: float(np.nanmean(p.lag1)) for p in result.sweep if p.skip == "none"}
    res_sweep = {p.depth: float(np.nanmean(p.lag1)) for p in result.sweep if p.skip == "residual"}
    if len(plain_sweep) >= 2 and len(res_sweep) >= 2:
        deepest = max(set(plain_sweep) & set(res_sweep))
        claims.append(Claim(
            "correlation_decay", "Gradient correlation decays exponentially with depth in plain nets and "
            "sub-linearly in resnets (both with batch norm).",
            plain_sweep[deepest] < 0.2 < res_sweep[deepest],
            "lag-1 by depth — plain: " + ", ".join(f"{d}: {v:.2f}" for d, v in sorted(plain_sweep.items()))
            + "; resnet: " + ", ".join(f"{d}: {v:.2f}" for d, v in sorted(res_sweep.items())),
            f"held if at the deepest swept depth ({deepest}) the plain net's mean lag-1 < 0.2 and the resnet's > 0.2"))
    return claims


def make_tables(result: Result) -> list[Table]:
    rows = []
    for s in result.series:
        spec = s.spec
        rows.append([s.label, "-" if spec is None else spec.depth, "-" if spec is None else spec.skip,
                     "-" if spec is None else spec.norm, _ms(s.lag1), _ms(s.slope), len(s.seeds)])
    tables = [Table(["series", "blocks", "skip", "norm", "lag-1 autocorrelation", "spectral slope", "seeds"], rows,
                    "Statistics of dy/dx over the grid, mean ± std over seeds "
                    "(white noise: 0, 0; brown noise: 1, -2).")]
    if result.sweep:
        depths = sorted({p.depth for p in result.sweep})
        sweep_rows = []
        for skip in ("none", "residual"):
            by = {p.depth: p for p in result.sweep if p.skip == skip}
            sweep_rows.append(["plain (BN)" if skip == "none" else "resnet (BN)",
                               *(_ms(by[d].lag1) if d in by else "-" for d in depths)])
        tables.append(Table(["net", *(f"depth {d}" for d in depths)], sweep_rows,
                            "Lag-1 autocorrelation of dy/dx against depth (blocks), mean ± std over seeds."))
    return tables


SPEC = register_experiment(ExperimentSpec(
    name="shattered",
    title="Shattered gradients",
    question="As nets get deeper, do their gradients keep any spatial structure, or do they become noise?",
    claim="Gradients of deep plain nets resemble white noise (correlations decay exponentially with depth), "
          "shallow nets' resemble brown noise, and resnets' decay sub-linearly: in between and far from white.",
    citation="Balduzzi, Frean, Leary, Lewis, Ma & McWilliams 2017, \"The Shattered Gradients Problem: If resnets are "
             "the answer, then what is the question?\", ICML, arXiv:1702.08591 (figures 1-2)",
    config_cls=Config, result_cls=Result, run=run, order=20,
))
