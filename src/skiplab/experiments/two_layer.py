"""The two-layer case study: the gradient routes through ``y = W2 relu(W1 x + b1) + b2`` with and without the skip.

Let ``g = dL/dy`` and ``D = diag(relu'(W1 x + b1))``.  Then, per sample (row vectors)::

    plain     y = W2 relu(W1 x + b1) + b2        dL/dx = g W2 D W1
    residual  y = x + W2 relu(W1 x + b1) + b2    dL/dx = g (I + W2 D W1) = g  +  g W2 D W1
                                                                      identity    branch route

The identity term hands ``dL/dy`` to ``x`` whatever ``W2``, ``D`` and ``W1`` are (He et al. 2016, "Identity
Mappings in Deep Residual Networks", arXiv:1603.05027, eq. 5 for one block); the plain net has only the branch
route, which shrinks with ``W2`` and is exactly zero when every hidden unit is dead (``D = 0``).  The weights
inside the branch see ``dL/dW1 = D W2^T g x^T`` in both nets: the skip does not rescue the branch's own first
layer when ``W2`` is small, it rescues everything *before* the block.  To show that, the block's input comes
from one linear layer, ``x = W0 u``, and ``dL/dW0 = dL/dx^T u``.

The block is skiplab's :class:`~skiplab.blocks.wrap.Residual` around ``Linear -> ReLU -> Linear`` (its plain
twin: ``skip="none"``).  Loss: ``L = sum_i ||y_i - t_i||^2 / (2 N)`` with Gaussian inputs ``u`` and targets ``t``;
``W2`` is He-initialised and multiplied by each ``scale`` in turn; float64 so the analytic formulas can be
compared with autograd to ~1e-15.  The "dead" case sets ``b1`` so low that no hidden unit is active.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from skiplab.blocks.wrap import Residual
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads

SKIPS = ("none", "residual")


@dataclass
class Config:
    dim: int = 32  # d: x, y in R^d
    hidden: int = 128  # h: W1 is h x d, W2 is d x h
    batch: int = 64
    scales: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0)  # multiplier on He-init W2
    dead_bias: float = -50.0  # b1 in the dead-units case (pre-activations W1 x have std ~1)
    n_seeds: int = 10
    first_seed: int = 0
    tolerance: float = 1e-10  # analytic vs autograd, relative to the largest gradient entry (float64)

    @classmethod
    def quick(cls) -> "Config":
        return cls(dim=16, hidden=64, batch=32, scales=(1e-4, 1e-3, 1e-2, 0.1, 1.0, 3.0), n_seeds=3)

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not self.scales or any(not (isinstance(s, (int, float)) and s > 0 and math.isfinite(s))
                                  for s in self.scales):
            raise ValueError(f"scales must be positive finite numbers; got {self.scales!r}")
        if not (isinstance(self.tolerance, (int, float)) and self.tolerance > 0):
            raise ValueError(f"tolerance must be a positive number; got {self.tolerance!r}")
        seed_list(self.n_seeds, self.first_seed)


@dataclass
class Gradients:
    """One net at one W2 scale, every seed (index [seed]); norms are Frobenius norms over the batch."""

    skip: str
    scale: float
    grad_y: list[float]  # ||dL/dy||
    grad_x: list[float]  # ||dL/dx||
    identity_route: list[float]  # ||g||: the skip's term of dL/dx (0 for the plain net)
    branch_route: list[float]  # ||g W2 D W1||
    grad_w0: list[float]  # the layer before the block
    grad_w1: list[float]  # the branch's first layer
    grad_w2: list[float]  # the branch's second layer
    active: list[float]  # fraction of (sample, hidden unit) pairs with relu' = 1
    error: list[float]  # max |analytic - autograd| over dL/dx, dL/dW0, dL/dW1, dL/dW2, / max |autograd|


@dataclass
class Result:
    config: Config
    sweep: list[Gradients]  # every (skip, scale)
    dead: list[Gradients]  # every skip, with b1 = dead_bias (scale 1)
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def make_block(dim: int, hidden: int, skip: str) -> Residual:
    """``Residual(Linear(dim, hidden) -> ReLU -> Linear(hidden, dim))``; ``skip="none"`` is its plain twin."""
    return Residual(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)), skip=skip)


def analytic_gradients(u: torch.Tensor, t: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                       w2: torch.Tensor, b2: torch.Tensor, residual: bool) -> dict[str, torch.Tensor]:
    """The chain rule written out for ``L = ||y - t||^2 / (2N)``, ``x = u W0^T``, ``y = [x +] relu(x W1^T + b1)
    W2^T + b2`` (rows are samples).  Returns ``y, g = dL/dy, d (relu' per sample and unit), identity, branch,
    dx = identity + branch, dw0, dw1, dw2``."""
    n = u.shape[0]
    x = u @ w0.T  # (N, d)
    z = x @ w1.T + b1  # (N, h)
    d = (z > 0).to(u.dtype)  # (N, h): the diagonal of D for each sample
    y = (x if residual else 0) + torch.relu(z) @ w2.T + b2  # (N, d)
    g = (y - t) / n  # (N, d)
    branch = ((g @ w2) * d) @ w1  # g W2 D W1, (N, d)
    identity = g if residual else torch.zeros_like(g)
    dx = identity + branch
    return {"y": y, "g": g, "d": d, "identity": identity, "branch": branch, "dx": dx,
            "dw0": dx.T @ u, "dw1": ((g @ w2) * d).T @ x, "dw2": g.T @ torch.relu(z)}


def measure(cfg: Config, seed: int, skip: str, scale: float, b1_value: float | None = None) -> dict[str, float]:
    """One net, one seed: autograd through the skiplab block, the analytic formulas, and the norms."""
    g = torch.Generator().manual_seed(seed)
    d, h, n = cfg.dim, cfg.hidden, cfg.batch
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    t = torch.randn(n, d, generator=g, dtype=torch.float64)
    w0 = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)  # LeCun: x has unit variance
    w1 = torch.randn(h, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    w2 = torch.randn(d, h, generator=g, dtype=torch.float64) * math.sqrt(2.0 / h) * scale  # He, then scaled
    b1 = torch.full((h,), float(b1_value)) if b1_value is not None else torch.zeros(h)
    b1, b2 = b1.double(), torch.zeros(d, dtype=torch.float64)

    stem = nn.Linear(d, d, bias=False).double()
    block = make_block(d, h, skip).double()
    with torch.no_grad():
        stem.weight.copy_(w0)
        first, last = block.branch[0], block.branch[2]
        for param, value in ((first.weight, w1), (first.bias, b1), (last.weight, w2), (last.bias, b2)):
            param.copy_(value)
    x = stem(u)
    x.retain_grad()
    y = block(x)
    y.retain_grad()
    loss = (y - t).square().sum() / (2 * n)
    loss.backward()
    autograd = {"dx": x.grad, "dw0": stem.weight.grad, "dw1": first.weight.grad, "dw2": last.weight.grad}

    a = analytic_gradients(u, t, w0, w1, b1, w2, b2, residual=skip == "residual")
    error = max(float((a[k] - v).abs().max() / v.abs().max().clamp_min(1e-300)) for k, v in autograd.items())
    error = max(error, float((a["g"] - y.grad).abs().max() / y.grad.abs().max().clamp_min(1e-300)))
    return {"grad_y": float(y.grad.norm()), "grad_x": float(x.grad.norm()),
            "identity_route": float(a["identity"].norm()), "branch_route": float(a["branch"].norm()),
            "grad_w0": float(stem.weight.grad.norm()), "grad_w1": float(first.weight.grad.norm()),
            "grad_w2": float(last.weight.grad.norm()), "active": float(a["d"].mean()), "error": error}


def _collect(cfg: Config, skip: str, scale: float, b1_value: float | None = None) -> Gradients:
    per_seed = [measure(cfg, seed, skip, scale, b1_value) for seed in seed_list(cfg.n_seeds, cfg.first_seed)]
    return Gradients(skip, float(scale), **{k: [m[k] for m in per_seed] for k in per_seed[0]})


def run(cfg: Config, progress: Progress | None = None) -> Result:
    with torch_threads(1):
        return _run(cfg, progress)


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    scales = sorted(cfg.scales)
    total = len(SKIPS) * (len(scales) + 1)
    sweep, dead = [], []
    for i, skip in enumerate(SKIPS):
        for j, scale in enumerate(scales):
            report_progress(progress, i * (len(scales) + 1) + j, total, f"{skip}, W2 x {scale:g}")
            sweep.append(_collect(cfg, skip, scale))
        report_progress(progress, i * (len(scales) + 1) + len(scales), total, f"{skip}, dead hidden units")
        dead.append(_collect(cfg, skip, 1.0, cfg.dead_bias))
    report_progress(progress, total, total, "done")
    result = Result(cfg, sweep, dead, [], [])
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.notes = make_notes(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------ claims and tables

def curve(result: Result, skip: str) -> list[Gradients]:
    return sorted((r for r in result.sweep if r.skip == skip), key=lambda r: r.scale)


def _ratio(a: list[float], b: list[float]) -> np.ndarray:
    return np.asarray(a, dtype=float) / np.maximum(np.asarray(b, dtype=float), 1e-300)


def loglog_slope(points: list[Gradients], attr: str) -> float:
    """Slope of log(median ||grad||) against log(scale) over the given points (NaN with fewer than two)."""
    xs = [p.scale for p in points]
    ys = [float(np.median(getattr(p, attr))) for p in points]
    keep = [(x, y) for x, y in zip(xs, ys) if y > 0]
    if len(keep) < 2:
        return float("nan")
    return float(np.polyfit(np.log([k[0] for k in keep]), np.log([k[1] for k in keep]), 1)[0])


def check_claims(result: Result) -> list[Claim]:
    """Every verdict compares this run's numbers with the threshold stated in its ``test``."""
    cfg, claims = result.config, []
    everything = result.sweep + result.dead
    worst = max(max(r.error) for r in everything)
    claims.append(Claim(
        "analytic_equals_autograd",
        "With the skip dL/dx = dL/dy (I + W2 D W1), without it dL/dx = dL/dy W2 D W1, where D = diag(relu'(W1 x "
        "+ b1)); dL/dW1 = D W2^T dL/dy x^T in both.",
        bool(worst <= cfg.tolerance),
        f"largest relative difference between the formulas and autograd over {len(everything)} nets x "
        f"{cfg.n_seeds} seeds (dL/dy, dL/dx, dL/dW0, dL/dW1, dL/dW2; float64): {worst:.1e}",
        f"held if max |analytic - autograd| / max |autograd| <= {cfg.tolerance:g} for every gradient"))

    plain, residual = curve(result, "none"), curve(result, "residual")
    if plain and residual:
        lo, hi = plain[0].scale, plain[-1].scale
        p_rel = _ratio(plain[0].grad_x, plain[0].grad_y)
        r_rel = np.abs(_ratio(residual[0].grad_x, residual[0].grad_y) - 1.0)
        claims.append(Claim(
            "plain_input_gradient_vanishes",
            "Without the skip every route from the loss to x passes through W2: as W2 -> 0 the input gradient "
            "vanishes in proportion to W2.",
            bool(np.all(p_rel < 1e-2)),
            f"plain net at W2 x {lo:g}: ||dL/dx|| / ||dL/dy|| = {np.median(p_rel):.2e} (max over seeds "
            f"{p_rel.max():.2e}); log-log slope of ||dL/dx|| against the scale over the three smallest scales "
            f"{loglog_slope(plain[:3], 'grad_x'):.3f}",
            "held if ||dL/dx|| / ||dL/dy|| < 0.01 at the smallest W2 scale for every seed"))
        claims.append(Claim(
            "skip_keeps_output_gradient",
            "With the skip, dL/dx keeps dL/dy however small W2 is: the identity term bypasses W2 and W1.",
            bool(np.all(r_rel < 1e-2)),
            f"residual net at W2 x {lo:g}: | ||dL/dx|| / ||dL/dy|| - 1 | = {np.median(r_rel):.2e} (max "
            f"{r_rel.max():.2e}); the branch route is {np.median(_ratio(residual[0].branch_route, residual[0].grad_y)):.2e}"
            f" of dL/dy there and {np.median(_ratio(residual[-1].branch_route, residual[-1].grad_y)):.3g} at "
            f"W2 x {hi:g}",
            "held if ||dL/dx|| is within 1% of ||dL/dy|| at the smallest W2 scale for every seed"))

        # against He scale (the scale nearest 1): at larger scales dL/dy itself grows with W2
        ref = min(range(len(plain)), key=lambda i: abs(math.log(plain[i].scale)))
        he = plain[ref].scale
        w1_drop = {s: _ratio(c[0].grad_w1, c[ref].grad_w1) for s, c in (("plain", plain), ("residual", residual))}
        w0_keep = _ratio(residual[0].grad_w0, residual[ref].grad_w0)
        w0_plain = _ratio(plain[0].grad_w0, plain[ref].grad_w0)
        claims.append(Claim(
            "skip_rescues_upstream_not_branch",
            "The skip does not keep the branch's own first layer trainable when W2 is small (dL/dW1 = D W2^T dL/dy "
            "x^T shrinks with W2 in both nets); what it keeps alive is the gradient of the layer before the block.",
            bool(max(w1_drop["plain"].max(), w1_drop["residual"].max()) < 1e-2 and w0_keep.min() > 0.1),
            f"from W2 x {he:g} to W2 x {lo:g}: ||dL/dW1|| falls to {np.median(w1_drop['plain']):.1e} (plain) and "
            f"{np.median(w1_drop['residual']):.1e} (residual) of its value; ||dL/dW0|| (the layer before) keeps "
            f"{np.median(w0_keep):.3g} of its value in the residual net, {np.median(w0_plain):.1e} in the plain net",
            f"held if ||dL/dW1|| at the smallest scale is < 1% of its value at W2 x {he:g} for every seed of both "
            "nets, and the residual net's ||dL/dW0|| keeps > 10% of its value"))

    dead = {r.skip: r for r in result.dead}
    if set(dead) == set(SKIPS):
        p, r = dead["none"], dead["residual"]
        active = max(max(p.active), max(r.active))
        p_zero = max(p.grad_x) == 0.0 and max(p.grad_w0) == 0.0
        r_same = float(np.max(np.abs(_ratio(r.grad_x, r.grad_y) - 1.0)))
        claims.append(Claim(
            "dead_units",
            "When every hidden unit is dead (relu' = 0, D = 0) the plain net passes no gradient to x or to the "
            "layers before it; the residual net passes dL/dy unchanged.",
            bool(active == 0.0 and p_zero and r_same <= 1e-12),
            f"b1 = {cfg.dead_bias:g}: active units {active:.3f}; plain ||dL/dx|| max over seeds {max(p.grad_x):.1e}, "
            f"||dL/dW0|| {max(p.grad_w0):.1e}; residual | ||dL/dx|| / ||dL/dy|| - 1 | = {r_same:.1e}",
            "held if no hidden unit is active, the plain net's dL/dx and dL/dW0 are exactly 0, and the residual "
            "net's ||dL/dx|| equals ||dL/dy|| to 1e-12"))
    return claims


def make_tables(result: Result) -> list[Table]:
    med = lambda v: float(np.median(v))  # noqa: E731
    rows = []
    for p, r in zip(curve(result, "none"), curve(result, "residual")):
        rows.append([p.scale, med(p.grad_x), med(r.grad_x), med(r.grad_y), med(r.identity_route), med(r.branch_route),
                     med(p.grad_w0), med(r.grad_w0), med(p.grad_w1), med(r.grad_w1)])
    columns = ["W2 scale", "plain |dL/dx|", "residual |dL/dx|", "residual |dL/dy|", "identity route",
               "branch route", "plain |dL/dW0|", "residual |dL/dW0|", "plain |dL/dW1|", "residual |dL/dW1|"]
    tables = [Table(columns, rows, "Gradient norms against the scale of W2 (median over seeds). Routes are the two "
                                   "terms of the residual net's dL/dx; the plain net has only the branch route.")]
    if result.dead:
        tables.append(Table(["net", "active units", "|dL/dy|", "|dL/dx|", "|dL/dW0|", "|dL/dW1|"],
                            [["plain" if r.skip == "none" else r.skip, med(r.active), med(r.grad_y), med(r.grad_x),
                              med(r.grad_w0), med(r.grad_w1)] for r in result.dead],
                            f"Every hidden unit dead (b1 = {result.config.dead_bias:g}), W2 at He scale."))
    return tables


def make_notes(result: Result) -> list[str]:
    residual = curve(result, "residual")
    if not residual:
        return []
    top = residual[-1]
    share = float(np.median(_ratio(top.branch_route, top.identity_route)))
    return [f"At W2 x {top.scale:g} the branch route is {share:.2g}x the identity route in size: the two terms "
            "of dL/dx are added as vectors, so the branch can also cancel part of the identity term; it never "
            "removes it, which is why the residual net's input gradient cannot vanish with W2."]


SPEC = register_experiment(ExperimentSpec(
    name="two_layer",
    title="Two layers, two gradient routes",
    question="In y = W2 relu(W1 x) with and without the skip, which routes does the gradient take back to x, and "
             "what happens to them when W2 is small or the hidden units are dead?",
    claim="With the skip, dL/dx = dL/dy (I + W2 D W1): the identity term bypasses W2 and W1, so the input gradient "
          "survives small or dead branches, which silence the plain net; the branch's own weights are not rescued.",
    citation="He et al. 2016, arXiv:1603.05027 (eq. 5); He et al. 2015, arXiv:1512.03385",
    config_cls=Config, result_cls=Result, run=run, order=5,
))
