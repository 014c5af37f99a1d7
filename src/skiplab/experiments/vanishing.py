"""Vanishing and exploding gradients at initialisation, in plain, residual and highway nets.

One forward/backward of a cross-entropy loss (random labels, Gaussian inputs; BatchNorm in train mode, as at the
first training step) per net and seed; per layer we keep the weight-gradient norm, the gradient norm of the
layer's output, and the activation mean/std.  MLPs run in float64 so a 100-layer sigmoid net's first-layer
gradient (~1e-60) does not underflow; CNNs (the CIFAR ResNets and their twins) in float32.

Claims checked (verdicts computed below, from the numbers):
* sigmoid' <= 1/4, so a plain sigmoid net's first-layer gradient shrinks geometrically with depth
  (Hochreiter 1991; Bengio, Simard & Frasconi 1994; Glorot & Bengio 2010) — we fit the per-layer factor;
* block by block, that factor is about the RMS of sigmoid' over the block's input, at most 1/4 in the median
  (:func:`sigmoid_layer_factors`; drawn beside the sigmoid and its derivative);
* with identity skips the first layer's gradient stays within 10x of the last layer's even at depth 100
  (He et al. 2016, "Identity Mappings in Deep Residual Networks", arXiv:1603.05027, eq. 5);
* normalisation + ReLU keeps plain nets' gradients from vanishing at init (He et al. 2015, arXiv:1512.03385,
  section 4.1: degradation is "unlikely to be caused by vanishing gradients");
* but batch norm makes deep plain ReLU nets' gradients *explode* at init (Yang et al. 2019, "A Mean Field
  Theory of Batch Normalization", arXiv:1902.08129).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import skiplab
from skiplab.analysis.derivatives import backward_factors, gaussian_derivative_rms
from skiplab.analysis.gradient_flow import fit_geometric, gradient_flow
from skiplab.blocks.base import skip_blocks
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads
from skiplab.registry import get_entry

SKIP_LABEL = {"none": "plain", "residual": "residual", "highway": "highway"}


@dataclass
class Config:
    depths: tuple[int, ...] = (10, 20, 50, 100)  # MLP blocks
    acts: tuple[str, ...] = ("sigmoid", "tanh", "relu")
    norms: tuple[str, ...] = ("none", "batch", "layer")
    skips: tuple[str, ...] = ("none", "residual", "highway")
    width: int = 128
    in_features: int = 64
    classes: int = 10
    batch: int = 128
    n_seeds: int = 5
    first_seed: int = 0
    init_relu: str = "he"  # He et al. 2015 for ReLU
    init_saturating: str = "xavier"  # Glorot & Bengio 2010 for sigmoid/tanh
    cnn_models: tuple[str, ...] = ("resnet20", "plain20", "highway20", "resnet56", "plain56", "highway56")
    cnn_norms: tuple[str, ...] = ("batch", "none")
    cnn_batch: int = 16
    cnn_image_size: int = 32

    @classmethod
    def quick(cls) -> "Config":
        return cls(depths=(10, 30, 100), width=64, batch=64, n_seeds=2,
                   cnn_models=("resnet20", "plain20", "highway20"), cnn_batch=8)

    def __post_init__(self) -> None:
        if not self.depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 2 for d in self.depths):
            raise ValueError(f"depths must be integers >= 2 (blocks); got {self.depths!r}")
        for name in ("width", "in_features", "classes", "batch", "cnn_batch", "cnn_image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        seed_list(self.n_seeds, self.first_seed)


@dataclass
class GradientRun:
    """One architecture at one depth, every seed (index [seed][layer]; layers = stem, blocks..., head)."""

    label: str
    family: str  # "mlp" or "cnn"
    model: str
    kwargs: dict[str, Any]
    depth: int  # blocks
    act: str
    norm: str
    skip: str
    layer_names: list[str]
    seeds: list[int]
    weight_grad: list[list[float]]
    output_grad: list[list[float]]
    act_mean: list[list[float]]
    act_std: list[list[float]]
    ratio: list[float]  # per seed: first block's weight-gradient norm / last block's


@dataclass
class DepthFit:
    """First block's gradient against depth, one geometric fit per seed (MLPs)."""

    act: str
    norm: str
    skip: str
    factor: list[float]  # per seed: exp(slope of log first-block gradient against depth)
    r2: list[float]


@dataclass
class Result:
    config: Config
    runs: list[GradientRun]
    fits: list[DepthFit]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def _block_ratio(weight_grad: list[float]) -> float:
    first, last = weight_grad[1], weight_grad[-2]  # [0] is the stem, [-1] the head
    return first / last if last > 0 else float("inf")


def _measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    model.train()
    flow = gradient_flow(model, x, y)
    return {"names": flow.names, "weight_grad": flow.weight_grad_norm, "output_grad": flow.output_grad_norm,
            "act_mean": flow.act_mean, "act_std": flow.act_std}


def _collect(label: str, family: str, name: str, kwargs: dict, depth: int, act: str, norm: str, skip: str,
             seeds: list[int], build, data) -> GradientRun:
    per_seed = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build()
        x, y = data(seed)
        per_seed.append(_measure(model, x, y))
    return GradientRun(label, family, name, kwargs, depth, act, norm, skip, per_seed[0]["names"], seeds,
                       [m["weight_grad"] for m in per_seed], [m["output_grad"] for m in per_seed],
                       [m["act_mean"] for m in per_seed], [m["act_std"] for m in per_seed],
                       [_block_ratio(m["weight_grad"]) for m in per_seed])


def run(cfg: Config, progress: Progress | None = None) -> Result:
    with torch_threads(1):
        return _run(cfg, progress)


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    notes: list[str] = []
    available = set(skiplab.list_models())
    cnn_jobs = []
    for name in cfg.cnn_models:
        if name not in available:
            notes.append(f"CNN {name!r} is not a registered model; skipped.")
            continue
        cnn_jobs += [(name, norm) for norm in cfg.cnn_norms]
    mlp_jobs = [(a, n, s, d) for a in cfg.acts for n in cfg.norms for s in cfg.skips for d in sorted(cfg.depths)]
    total, done = len(mlp_jobs) + len(cnn_jobs), 0
    runs: list[GradientRun] = []

    def mlp_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(10_000 + seed)
        x = torch.randn(cfg.batch, cfg.in_features, generator=g, dtype=torch.float64)
        return x, torch.randint(0, cfg.classes, (cfg.batch,), generator=g)

    for act, norm, skip, depth in mlp_jobs:
        report_progress(progress, done, total, f"MLP {act}/{norm}/{SKIP_LABEL[skip]} depth {depth}")
        kwargs = dict(depth=depth, width=cfg.width, in_features=cfg.in_features, out_features=cfg.classes, act=act,
                      norm=norm, skip=skip, init=cfg.init_relu if act == "relu" else cfg.init_saturating)
        build = lambda kw=kwargs: skiplab.create_model("mlp", **kw).double()  # noqa: E731
        runs.append(_collect(f"{act} / {norm} / {SKIP_LABEL[skip]}", "mlp", "mlp", kwargs, depth, act, norm, skip,
                             seeds, build, mlp_data))
        done += 1

    def cnn_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(20_000 + seed)
        s = cfg.cnn_image_size
        return torch.randn(cfg.cnn_batch, 3, s, s, generator=g), torch.randint(0, 10, (cfg.cnn_batch,), generator=g)

    for name, norm in cnn_jobs:
        report_progress(progress, done, total, f"CNN {name} norm={norm}")
        kwargs = {"norm": norm}
        try:
            torch.manual_seed(seeds[0])
            probe = skiplab.create_model(name, **kwargs)
        except (TypeError, ValueError) as e:
            notes.append(f"CNN {name!r} with norm={norm!r} could not be built ({e}); skipped.")
            done += 1
            continue
        skip = get_entry(name).skip
        depth = len(skip_blocks(probe.stages))
        runs.append(_collect(f"{name} / {norm}", "cnn", name, kwargs, depth, "relu", norm, skip, seeds,
                             lambda n=name, kw=kwargs: skiplab.create_model(n, **kw), cnn_data))
        done += 1
    report_progress(progress, total, total, "done")

    fits = _depth_fits(runs, cfg)
    result = Result(cfg, runs, fits, [], [], notes)
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


def _depth_fits(runs: list[GradientRun], cfg: Config) -> list[DepthFit]:
    fits = []
    for act in cfg.acts:
        for norm in cfg.norms:
            for skip in cfg.skips:
                group = sorted((r for r in runs if r.family == "mlp" and (r.act, r.norm, r.skip) == (act, norm, skip)),
                               key=lambda r: r.depth)
                if len(group) < 2:
                    continue
                factors, r2s = [], []
                for i in range(len(group[0].seeds)):
                    f, r2 = fit_geometric([r.depth for r in group], [r.weight_grad[i][1] for r in group])
                    factors.append(f)
                    r2s.append(r2)
                fits.append(DepthFit(act, norm, skip, factors, r2s))
    return fits


# ------------------------------------------------------------------------------------------ claims and tables

def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _mlp(result: Result, **match: Any) -> list[GradientRun]:
    return [r for r in result.runs if r.family == "mlp" and all(getattr(r, k) == v for k, v in match.items())]


def sigmoid_layer_factors(run: GradientRun) -> tuple[list[list[float]], list[list[float]]]:
    """Per seed and block l: the measured factor ||dL/dh_(l-1)|| / ||dL/dh_l||, and the RMS of act' over
    N(mean, std) of h_(l-1) (the block's input), which predicts it when W^T keeps norms."""
    measured = [backward_factors(g) for g in run.output_grad]
    predicted = [[gaussian_derivative_rms(run.act, m, s) for m, s in zip(means[:-2], stds[:-2])]
                 for means, stds in zip(run.act_mean, run.act_std)]
    return measured, predicted


def check_claims(result: Result) -> list[Claim]:
    """Every verdict is a comparison of this run's numbers with a threshold stated in ``Claim.test``."""
    claims: list[Claim] = []
    max_depth = max(result.config.depths)

    fit = next((f for f in result.fits if (f.act, f.norm, f.skip) == ("sigmoid", "none", "none")), None)
    if fit is not None:
        factors, r2 = np.array(fit.factor), np.array(fit.r2)
        deepest = _mlp(result, act="sigmoid", norm="none", skip="none", depth=max_depth)
        within = ""
        if deepest:
            # fit_geometric gives the growth per block toward the output; its inverse is the shrink going back
            per_layer = [1.0 / fit_geometric(range(1, len(g) - 1), g[1:-1])[0] for g in deepest[0].weight_grad]
            within = (f"; within the depth-{max_depth} net the gradient is multiplied by {np.mean(per_layer):.3f} "
                      f"per block going back, first/last block = {_median(deepest[0].ratio):.1e}")
        held = bool(np.all(factors < 0.9) and np.median(r2) >= 0.9)
        claims.append(Claim(
            "sigmoid_plain_geometric",
            "The sigmoid's derivative never exceeds 1/4, so a plain sigmoid net's first-layer gradient shrinks "
            "roughly geometrically with depth.",
            held,
            f"first-block gradient vs depth {list(sorted(result.config.depths))}: factor per layer "
            f"{factors.mean():.3f} ± {factors.std():.3f} (R² {np.median(r2):.3f}) over {len(factors)} seeds{within}",
            "held if every seed's fitted per-layer factor < 0.9 and the median R² of the log-linear fit >= 0.9",
        ))

    deepest = _mlp(result, act="sigmoid", norm="none", skip="none", depth=max_depth)
    if deepest:
        factors, predicted = sigmoid_layer_factors(deepest[0])
        f = np.array([v for per_seed in factors for v in per_seed if math.isfinite(v)])
        p = np.array([v for per_seed in predicted for v in per_seed if math.isfinite(v)])
        if f.size:
            claims.append(Claim(
                "sigmoid_factor_per_layer",
                "Back through each plain sigmoid layer the gradient is multiplied by about the sigmoid's slope, "
                "which never exceeds 1/4 (with Xavier weights, W^T neither grows nor shrinks it on average).",
                bool(np.median(f) <= 0.25),
                f"plain sigmoid MLP, depth {max_depth}: ||dL/dh_(l-1)|| / ||dL/dh_l|| has median {np.median(f):.3f} "
                f"(5-95% of blocks x seeds: {np.percentile(f, 5):.3f}-{np.percentile(f, 95):.3f}; "
                f"{np.mean(f > 0.25):.0%} above 1/4, where W^T amplified); the RMS of sigmoid' over each layer's "
                f"input (Gaussian with the measured mean and std) predicts {np.median(p):.3f}",
                "held if the median over blocks and seeds of the measured per-block factor is <= 0.25"))

    residual = _mlp(result, skip="residual", depth=max_depth)
    if residual:
        rows = [(f"{r.act}/{r.norm}", _median(r.ratio)) for r in residual]
        listing = ", ".join(f"{k} {v:.2g}" for k, v in rows)
        plain = _mlp(result, act="sigmoid", norm="none", skip="none", depth=max_depth)
        contrast = f"; plain sigmoid at the same depth: {_median(plain[0].ratio):.1e}" if plain else ""
        vanished = [f"{k} {v:.2g}" for k, v in rows if not v >= 0.1]
        claims.append(Claim(
            "identity_skip_no_vanishing",
            "With identity skips the gradient reaching the first layer does not vanish: the skip path carries "
            "dL/dx_L to every block unchanged (He et al. 2016, eq. 5).",
            not vanished,
            f"{len(rows) - len(vanished)}/{len(rows)} residual MLPs at depth {max_depth} have first/last block "
            f">= 0.1 ({listing})" + (f"; vanished: {', '.join(vanished)}" if vanished else "") + contrast,
            f"held if the median over seeds of first/last block gradient is >= 0.1 for every residual MLP "
            f"(every activation and normalisation run) at depth {max_depth}",
        ))
        outside = [f"{k} {v:.2g}x" for k, v in rows if not 0.1 <= v <= 10]
        claims.append(Claim(
            "identity_skip_within_10x",
            "With identity skips the first layer's gradient stays within an order of magnitude of the last "
            f"layer's, even at depth {max_depth} (neither vanishing nor exploding).",
            not outside,
            f"{len(rows) - len(outside)}/{len(rows)} residual MLPs at depth {max_depth} within 10x"
            + (f"; outside: {', '.join(outside)}" if outside else "") + contrast,
            f"held if the median over seeds of first/last block gradient is in [0.1, 10] for every residual MLP "
            f"(every activation and normalisation run) at depth {max_depth}",
        ))

    healthy = [r for r in result.runs if r.skip == "none" and r.act == "relu" and r.norm != "none"]
    if healthy:
        rows = [(f"{r.model if r.family == 'cnn' else 'mlp'}/{r.norm}/L{r.depth}", _median(r.ratio)) for r in healthy]
        vanished = [f"{k} {v:.2g}" for k, v in rows if not v >= 0.1]
        exploded = [f"{k} {v:.2g}" for k, v in rows if v > 10]
        claims.append(Claim(
            "norm_relu_plain_no_vanishing",
            "Normalisation + ReLU alone keeps plain nets' gradients healthy at init: degradation is not "
            "simply vanishing gradients.",
            not vanished,
            f"{len(rows) - len(vanished)}/{len(rows)} plain ReLU nets with normalisation keep first/last block "
            f">= 0.1 (" + ", ".join(f"{k} {v:.2g}" for k, v in rows) + ")"
            + (f"; vanished: {', '.join(vanished)}" if vanished else "")
            + (f"; but {len(exploded)} grew > 10x toward the input (exploding): {', '.join(exploded)}"
               if exploded else ""),
            "held if no plain ReLU net with batch/layer norm (MLPs at every depth, CNN plain twins) has a median "
            "first/last block gradient below 0.1",
        ))

    bn = _mlp(result, act="relu", norm="batch", skip="none", depth=max_depth)
    if bn:
        per_layer = [1.0 / fit_geometric(range(1, len(g) - 1), g[1:-1])[0] for g in bn[0].weight_grad]
        ratio = _median(bn[0].ratio)
        claims.append(Claim(
            "batchnorm_plain_explodes",
            "Batch norm makes a deep plain ReLU net's gradients explode at initialisation (growing geometrically "
            "toward the input; mean-field rate sqrt(pi/(pi-1)) ~ 1.21 per layer for wide layers and large batches).",
            bool(ratio > 10 and np.median(per_layer) > 1.05),
            f"plain ReLU + batch norm MLP, depth {max_depth}: gradient grows by {np.mean(per_layer):.3f} ± "
            f"{np.std(per_layer):.3f} per layer toward the input; first/last block = {ratio:.2g}",
            "held if first/last block > 10 and the fitted growth per layer (toward the input) > 1.05",
        ))
    return claims


def make_tables(result: Result) -> list[Table]:
    depths = sorted(result.config.depths)
    tables = []
    rows = []
    for act in result.config.acts:
        for norm in result.config.norms:
            for skip in result.config.skips:
                cells: list[Any] = [act, norm, SKIP_LABEL[skip]]
                for d in depths:
                    match = _mlp(result, act=act, norm=norm, skip=skip, depth=d)
                    cells.append(_median(match[0].ratio) if match else float("nan"))
                fit = next((f for f in result.fits if (f.act, f.norm, f.skip) == (act, norm, skip)), None)
                cells.append(_median(fit.factor) if fit else float("nan"))
                rows.append(cells)
    tables.append(Table(["activation", "norm", "skip", *(f"first/last @{d}" for d in depths), "factor/layer vs depth"],
                        rows, "MLPs: first block's weight-gradient norm over the last block's (median over seeds), and "
                        "the geometric factor per added layer of the first block's gradient."))
    cnn = [r for r in result.runs if r.family == "cnn"]
    if cnn:
        tables.append(Table(
            ["model", "norm", "skip", "blocks", "first/last", "min block grad", "max block grad"],
            [[r.model, r.norm, SKIP_LABEL.get(r.skip, r.skip), r.depth, _median(r.ratio),
              _median([min(g[1:-1]) for g in r.weight_grad]), _median([max(g[1:-1]) for g in r.weight_grad])]
             for r in cnn],
            "CIFAR CNNs (random 32x32 inputs, random labels): per-block weight-gradient norms, median over seeds."))
    return tables


SPEC = register_experiment(ExperimentSpec(
    name="vanishing",
    title="Vanishing and exploding gradients at initialisation",
    question="Do gradients reach the first layers of deep plain, residual and highway nets at initialisation?",
    claim="A plain sigmoid net's gradient shrinks geometrically with depth (sigmoid' <= 1/4); identity skips keep "
          "the first layer's gradient within an order of magnitude of the last layer's; normalisation + ReLU keeps "
          "plain nets from vanishing, so degradation is not simply vanishing gradients.",
    citation="Glorot & Bengio 2010 (AISTATS); He et al. 2015, arXiv:1512.03385 §4.1; He et al. 2016, "
             "arXiv:1603.05027; Yang et al. 2019, arXiv:1902.08129",
    config_cls=Config, result_cls=Result, run=run, order=10,
))
