"""Learning the identity: fit y = x with plain and residual stacks of growing depth.

He et al. 2015 ("Deep Residual Learning for Image Recognition", arXiv:1512.03385, §3.1) explain the degradation
problem with it: "if the added layers can be constructed as identity mappings, a deeper model should have training
error no greater than its shallower counterpart ... the solvers might have difficulties in approximating identity
mappings by multiple nonlinear layers", while "if identity mappings are optimal, it would be easier to push the
residual to zero".  Here the task *is* the identity, so that sentence is tested directly.

Every net is ``depth`` two-layer blocks on R^d, ``x -> W2 relu(W1 x + b1) + b2``, wrapped in skiplab's
:class:`~skiplab.blocks.wrap.Residual` (residual) or its plain twin (``skip="none"``); no stem, no head, no
normalisation.  Both nets can represent y = x exactly when the hidden width is >= 2d (relu(x) - relu(-x) = x):
the plain net needs ``W1 = [I; -I]``, ``W2 = [I, -I]`` in *every* block (weight norm growing with depth), the
residual net needs all branch weights at zero (weight norm 0).  Weight decay (AdamW, decoupled) pulls weights
toward zero — toward the identity for the residual net, away from it for the plain net.

Initialisation: W1 ~ N(0, 1/d), W2 ~ N(0, 2/h) (the plain net then keeps the signal's size through depth).  A
residual net whose branches start at that size doubles the signal's variance per block (see the ``signal``
experiment), so the residual nets' W2 start scaled by 1/sqrt(depth) by default (as in Fixup / SkipInit, Zhang et
al. 2019 arXiv:1901.09321, De & Smith 2020 arXiv:2002.10444); the variant "residual_he" keeps the unscaled init
to show what the skip alone does.  Same optimiser, learning rate, steps and data for every net; the error is the
test MSE per coordinate (the target has variance 1, so 1.0 is "learned nothing").
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

# variant -> (skip, W2 init multiplier as a function of depth)
VARIANTS = {
    "plain": ("none", lambda depth: 1.0),
    "residual": ("residual", lambda depth: 1.0 / math.sqrt(depth)),
    "residual_he": ("residual", lambda depth: 1.0),
}
LABELS = {"plain": "plain", "residual": "residual (branch init / sqrt(L))", "residual_he": "residual (He init)"}


@dataclass
class Config:
    dim: int = 16
    hidden: int = 64
    depths: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # two-layer blocks
    variants: tuple[str, ...] = ("plain", "residual", "residual_he")
    weight_decays: tuple[float, ...] = (0.0, 1.0)  # AdamW's decoupled weight decay
    steps: int = 1000
    batch: int = 128
    lr: float = 1e-3  # at 3e-3 the 32-block residual net ended at MSE 0.067 after 1000 steps (2 seeds)
    n_test: int = 2048
    n_seeds: int = 2
    first_seed: int = 0
    good_mse: float = 0.05  # "fits the identity": test MSE below this (5% of the target's variance)

    @classmethod
    def quick(cls) -> "Config":
        # fewer steps at a larger learning rate: 200 steps at 1e-3 left the residual nets at MSE ~0.05
        return cls(depths=(1, 4, 16), variants=("plain", "residual"), steps=200, lr=3e-3, n_seeds=1, n_test=1024)

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "steps", "batch", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not self.depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.depths):
            raise ValueError(f"depths must be positive integers (blocks); got {self.depths!r}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if not self.variants or unknown:
            raise ValueError(f"variants must be among {', '.join(VARIANTS)}; got {self.variants!r}")
        if not self.weight_decays or any(not (isinstance(w, (int, float)) and w >= 0) for w in self.weight_decays):
            raise ValueError(f"weight_decays must be numbers >= 0; got {self.weight_decays!r}")
        if not (self.lr > 0 and self.good_mse > 0):
            raise ValueError(f"lr and good_mse must be positive; got lr={self.lr!r}, good_mse={self.good_mse!r}")
        seed_list(self.n_seeds, self.first_seed)


@dataclass
class Fit:
    """One variant, depth and weight decay, every seed."""

    variant: str
    depth: int
    weight_decay: float
    seeds: list[int]
    initial_mse: list[float]
    final_mse: list[float]
    branch_norm: list[float]  # sqrt(sum of squared W1, W2 entries over all blocks) after training
    curve_steps: list[int]
    curves: list[list[float]]  # [seed][point]: training-batch MSE at curve_steps


@dataclass
class Result:
    config: Config
    fits: list[Fit]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def build(variant: str, depth: int, dim: int, hidden: int) -> nn.Sequential:
    """``depth`` blocks ``Residual(Linear(dim, hidden) -> ReLU -> Linear(hidden, dim))`` (plain twin for "plain"),
    initialised as the module docstring says (uses the global RNG)."""
    skip, w2_scale = VARIANTS[variant]
    blocks = []
    for _ in range(depth):
        block = Residual(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)), skip=skip)
        first, last = block.branch[0], block.branch[2]
        with torch.no_grad():
            first.weight.normal_(0.0, math.sqrt(1.0 / dim))
            last.weight.normal_(0.0, math.sqrt(2.0 / hidden) * w2_scale(depth))
            first.bias.zero_()
            last.bias.zero_()
        blocks.append(block)
    return nn.Sequential(*blocks)


def weight_norm(model: nn.Module) -> float:
    return math.sqrt(sum(float(p.detach().square().sum()) for p in model.parameters() if p.dim() > 1))


def train_fit(cfg: Config, variant: str, depth: int, weight_decay: float, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build(variant, depth, cfg.dim, cfg.hidden)
    data = torch.Generator().manual_seed(1_000 + seed)  # the same batches for every net of a seed
    x_test = torch.randn(cfg.n_test, cfg.dim, generator=torch.Generator().manual_seed(2_000 + seed))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=weight_decay, foreach=True)

    def test_mse() -> float:
        with torch.no_grad():
            return float((model(x_test) - x_test).square().mean())

    initial, every = test_mse(), max(1, cfg.steps // 50)
    steps, curve = [], []
    for step in range(cfg.steps):
        x = torch.randn(cfg.batch, cfg.dim, generator=data)  # (N, d); the target is x itself
        loss = (model(x) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == cfg.steps - 1:
            steps.append(step)
            curve.append(float(loss.detach()))
    return {"initial": initial, "final": test_mse(), "norm": weight_norm(model), "steps": steps, "curve": curve}


def run(cfg: Config, progress: Progress | None = None) -> Result:
    with torch_threads(1):
        return _run(cfg, progress)


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    jobs = [(v, d, wd) for wd in cfg.weight_decays for v in cfg.variants for d in sorted(cfg.depths)]
    fits = []
    for i, (variant, depth, wd) in enumerate(jobs):
        report_progress(progress, i, len(jobs), f"{variant}, depth {depth}, weight decay {wd:g}")
        runs = [train_fit(cfg, variant, depth, wd, s) for s in seeds]
        fits.append(Fit(variant, depth, float(wd), seeds, [r["initial"] for r in runs], [r["final"] for r in runs],
                        [r["norm"] for r in runs], runs[0]["steps"], [r["curve"] for r in runs]))
    report_progress(progress, len(jobs), len(jobs), "done")
    result = Result(cfg, fits, [], [])
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.notes = make_notes(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------ claims and tables

def errors(result: Result, variant: str, weight_decay: float) -> dict[int, float]:
    """depth -> median final test MSE over seeds."""
    return {f.depth: float(np.median(f.final_mse)) for f in result.fits
            if f.variant == variant and f.weight_decay == weight_decay}


def _listing(errs: dict[int, float]) -> str:
    return ", ".join(f"{d}: {e:.3g}" for d, e in sorted(errs.items()))


def check_claims(result: Result) -> list[Claim]:
    cfg, claims = result.config, []
    wd0, decays = min(cfg.weight_decays), sorted(w for w in cfg.weight_decays if w > 0)
    plain, residual = errors(result, "plain", wd0), errors(result, "residual", wd0)
    if len(plain) >= 2:
        lo, hi = min(plain), max(plain)
        claims.append(Claim(
            "plain_error_grows_with_depth",
            "A deep plain net cannot easily learn the identity: the deeper the stack, the worse it fits y = x.",
            bool(plain[hi] > 2 * plain[lo] and plain[hi] > cfg.good_mse),
            f"plain test MSE by depth (weight decay {wd0:g}): {_listing(plain)}",
            f"held if the deepest plain net's median MSE is > 2x the shallowest's and above {cfg.good_mse:g}"))
    if residual:
        bad = {d: e for d, e in residual.items() if not e < cfg.good_mse}
        claims.append(Claim(
            "residual_fits_at_every_depth",
            "A residual net fits the identity at every depth: it only has to push its branches to zero.",
            not bad,
            f"residual test MSE by depth (weight decay {wd0:g}): {_listing(residual)}"
            + (f"; above {cfg.good_mse:g} at depth {', '.join(map(str, bad))}" if bad else ""),
            f"held if the median MSE is below {cfg.good_mse:g} (5% of the target's variance) at every depth"))
    for wd in decays[-1:]:  # the strongest decay tested
        p_wd, r_wd = errors(result, "plain", wd), errors(result, "residual", wd)
        deep = [d for d in plain if d >= 4 and d in p_wd] or [d for d in plain if d in p_wd]
        if deep:
            worse = [d for d in deep if p_wd[d] > plain[d]]
            claims.append(Claim(
                "weight_decay_hurts_plain",
                "Weight decay makes the plain nets fit the identity worse: it pulls their weights away from the "
                "identity-computing ones.",
                len(worse) > len(deep) / 2,
                f"plain MSE without / with weight decay {wd:g}: "
                + ", ".join(f"depth {d}: {plain[d]:.3g} / {p_wd[d]:.3g}" for d in deep),
                "held if the MSE with weight decay is higher at more than half the depths >= 4"))
        common = [d for d in residual if d in r_wd]
        if common:
            hurt = [d for d in common if r_wd[d] > max(1.5 * residual[d], residual[d] + 0.01)]
            claims.append(Claim(
                "weight_decay_spares_residual",
                "Weight decay does not hurt the residual nets: for them the identity costs zero weight norm.",
                not hurt,
                f"residual MSE without / with weight decay {wd:g}: "
                + ", ".join(f"depth {d}: {residual[d]:.3g} / {r_wd[d]:.3g}" for d in common)
                + (f"; worse at depth {', '.join(map(str, hurt))}" if hurt else ""),
                "held if at no depth the MSE with weight decay exceeds both 1.5x and 0.01 more than without"))
    return claims


def make_tables(result: Result) -> list[Table]:
    depths = sorted(result.config.depths)
    rows = []
    for wd in result.config.weight_decays:
        for v in result.config.variants:
            errs = errors(result, v, wd)
            norms = {f.depth: float(np.median(f.branch_norm)) for f in result.fits
                     if f.variant == v and f.weight_decay == wd}
            rows.append([LABELS[v], wd, *(errs.get(d, float("nan")) for d in depths),
                         norms.get(depths[-1], float("nan"))])
    columns = ["net", "weight decay", *(f"MSE @{d}" for d in depths), f"weight norm @{depths[-1]}"]
    return [Table(columns, rows, f"Test MSE of y = x after {result.config.steps} AdamW steps (median over seeds; "
                                 "1.0 = nothing learned), and the weight norm of the deepest net after training.")]


def make_notes(result: Result) -> list[str]:
    notes = []
    cfg = result.config
    he = errors(result, "residual_he", min(cfg.weight_decays))
    if he:
        d = max(he)
        init = float(np.median(next(f.initial_mse for f in result.fits if f.variant == "residual_he" and f.depth == d
                                    and f.weight_decay == min(cfg.weight_decays))))
        fits = he[d] < cfg.good_mse
        notes.append(f"The residual net with unscaled (He) branches {'fits' if fits else 'does not fit'} the identity "
                     f"at depth {d}: test MSE {he[d]:.3g}, starting from {init:.3g} (without normalisation the "
                     "signal doubles its variance per block at init)."
                     + ("" if fits else " Being able to represent the identity with zero branches helps only if the "
                        "branches start small enough for the optimiser to get there."))
        decayed = {wd: errors(result, "residual_he", wd).get(d) for wd in cfg.weight_decays if wd > 0}
        for wd, mse in sorted(decayed.items()):
            if mse is not None and mse < cfg.good_mse <= he[d]:
                notes.append(f"With weight decay {wd:g} the same unscaled residual net does fit it at depth {d} "
                             f"(test MSE {mse:.3g}): the decay pulls every branch toward zero, which for a residual "
                             "net is the identity.")
    return notes


SPEC = register_experiment(ExperimentSpec(
    name="identity_fit",
    title="Deep plain nets struggle to learn the identity",
    question="Fit y = x with plain and residual stacks of growing depth, with and without weight decay: which "
             "of them find the identity?",
    claim="The plain nets' error grows with depth and weight decay makes it worse; the residual nets fit the "
          "identity at every depth, with or without weight decay (the identity is their zero-weight point).",
    citation="He et al. 2015, arXiv:1512.03385 §3.1; Zhang et al. 2019 (Fixup), arXiv:1901.09321; "
             "De & Smith 2020, arXiv:2002.10444",
    config_cls=Config, result_cls=Result, run=run, order=44,
))
