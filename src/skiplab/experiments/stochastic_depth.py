"""Stochastic depth vs constant depth (Huang, Sun, Liu, Sedra & Weinberger 2016, "Deep Networks with Stochastic
Depth", arXiv:1603.09382).

During training each residual block's branch is dropped with probability ``p_l = l / L * p_L`` (the linear decay
rule, ``p_L = 0.5``), the block then passing only its skip; at test time every block is present.  Huang et al.
report CIFAR-10 test error 5.25% for ResNet-110 with stochastic depth against 6.41% with constant depth, a
higher training loss for the stochastic net (it is a regulariser) and ~25% less training time (the expected depth
is 3/4 of the net).  As in the paper, a block is dropped for the whole mini-batch (``drop_path_mode="batch"``)
and its branch is then not computed at all, so the time saving is real and claimed; ``drop_mode="row"`` (per
sample, masked — the modern form) is the alternative, with no saving.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment
from skiplab.experiments.training_runs import (
    CIFAR_RECIPE, ComparisonResult, QUICK_RECIPE, Recipe, Run, by_label, mean_of, pct, run_comparison)

PAPER_TEST_ERROR = {"constant": 6.41, "stochastic": 5.25}  # CIFAR-10, ResNet-110, Huang et al. 2016 Table 1


@dataclass
class Config(Recipe):
    """``resnet{depth}`` with and without stochastic depth.  Defaults: Huang et al.'s CIFAR-10 setting — ResNet-110,
    ``p_last`` 0.5, 500 epochs of batch 128 (195,500 iterations), lr 0.1 divided by 10 at 50% and 75% of the run;
    ``drop_mode`` "batch" (a block dropped for the whole batch, its branch skipped) or "row" (per sample).  ``tail``: the fraction of the run over which the running training loss is averaged for the claim."""

    depth: int = 110
    width: float = 1.0
    p_last: float = 0.5
    drop_mode: str = "batch"
    steps: int = 195_500
    tail: float = 0.2

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_RECIPE, depth=56, width=0.5)

    @classmethod
    def cifar(cls) -> "Config":
        """Real CIFAR-10, :data:`CIFAR_RECIPE` (2,500 iterations), ResNet-56 (Huang et al.: ResNet-110, 500 epochs)
        with p_L = 0.5.  The constant-depth ResNet-56 comes from the shared cache (degradation); the stochastic
        one is ~25 min of the cifar set."""
        return cls(**CIFAR_RECIPE, depth=56)

    def __post_init__(self) -> None:
        from skiplab.models.cifar import CIFAR_DEPTHS

        self.validate_recipe()
        if self.depth not in CIFAR_DEPTHS:
            raise ValueError(f"depth must be a registered CIFAR depth ({', '.join(map(str, CIFAR_DEPTHS))}); "
                             f"got {self.depth!r}")
        self.check_width_and_margin()
        if not 0 < self.p_last < 1:
            raise ValueError(f"p_last must be in (0, 1) (the last block's drop probability); got {self.p_last!r}")
        if self.drop_mode not in ("batch", "row"):
            raise ValueError(f"drop_mode must be 'batch' or 'row'; got {self.drop_mode!r}")
        if not 0 < self.tail <= 1:
            raise ValueError(f"tail must be a fraction in (0, 1]; got {self.tail!r}")


@dataclass
class Result(ComparisonResult):
    config: Config


def labels(cfg: Config) -> dict[str, str]:
    return {"constant": f"ResNet-{cfg.depth}, constant depth",
            "stochastic": f"ResNet-{cfg.depth}, stochastic depth (p_L={cfg.p_last:g})"}


def run(cfg: Config, progress: Progress | None = None) -> Result:
    names = labels(cfg)
    stochastic = {"drop_path_rate": cfg.p_last, "drop_path_mode": cfg.drop_mode}
    jobs = [(names[kind], f"resnet{cfg.depth}", {"width": cfg.width} | (stochastic if kind == "stochastic" else {}),
             seed) for kind in ("constant", "stochastic") for seed in cfg.seeds()]
    return run_comparison(Result, cfg, jobs, progress, claims=check_claims, tables=make_tables, notes=make_notes)


def make_notes(result: Result) -> list[str]:
    cfg = result.config
    return [
        f"Same recipe for both: {cfg.steps} iterations of batch {cfg.batch_size} on {cfg.data}, lr {cfg.lr:g} "
        f"({cfg.schedule}), weight decay {cfg.weight_decay:g}, width x{cfg.width:g}.  Drop probabilities decay "
        f"linearly from ~0 at the first block to {cfg.p_last:g} at the last; "
        + ("a block is dropped for the whole mini-batch and its branch is not computed (the paper's form)."
           if cfg.drop_mode == "batch" else "dropping is per sample (masked: no time saved)."),
        "Stochastic depth is a regulariser: it pays off when the constant-depth net overfits over a long run (the "
        "paper trains 500 epochs).  In a short run (like the demo's) both nets are still fitting the data and dropping "
        "blocks only slows that down, so the test-error claim is not expected to hold there.",
    ]


def tail_loss(r: Run, tail: float) -> float:
    """Mean running training loss over the last ``tail`` of the run (train mode: with blocks being dropped)."""
    if not r.steps:
        return float("nan")
    start = r.steps[-1] * (1 - tail)
    return float(np.mean([loss for s, loss in zip(r.steps, r.train_loss) if s > start]))


def check_claims(result: Result) -> list[Claim]:
    cfg = result.config
    names = labels(cfg)
    const, sd = by_label(result.runs, names["constant"]), by_label(result.runs, names["stochastic"])
    c_err, s_err = mean_of(const, "final_test_error"), mean_of(sd, "final_test_error")
    c_loss = float(np.mean([tail_loss(r, cfg.tail) for r in const]))
    s_loss = float(np.mean([tail_loss(r, cfg.tail) for r in sd]))
    claims = [
        Claim("stochastic_depth_lowers_test_error",
              f"Stochastic depth lowers the test error of ResNet-{cfg.depth} compared with constant depth.",
              bool(s_err < c_err),
              f"test error: stochastic {pct(s_err)} vs constant {pct(c_err)} (paper, CIFAR-10 ResNet-110: "
              f"{PAPER_TEST_ERROR['stochastic']}% vs {PAPER_TEST_ERROR['constant']}%)",
              "held if the stochastic-depth net's test error (mean over seeds) is strictly lower"),
        Claim("stochastic_depth_regularises",
              "It is a regulariser: during training the stochastic net's loss stays higher than the constant "
              "net's.",
              bool(s_loss > c_loss),
              f"running training loss over the last {100 * cfg.tail:g}% of the run: stochastic {s_loss:.3g} vs "
              f"constant {c_loss:.3g}",
              "held if the stochastic net's mean running training loss over that stretch is higher"),
    ]
    if cfg.drop_mode == "batch":
        c_time, s_time = mean_of(const, "epoch_time_s"), mean_of(sd, "epoch_time_s")
        expected = float(np.mean([1 - cfg.p_last * (i + 1) / n_blocks(cfg) for i in range(n_blocks(cfg))]))
        claims.append(Claim(
            "stochastic_depth_trains_faster",
            "Stochastic depth shortens training: with whole blocks skipped, an epoch takes at least 10% less time.",
            bool(s_time <= 0.9 * c_time),
            f"median time per epoch: stochastic {s_time:.2f} s vs constant {c_time:.2f} s "
            f"({100 * (1 - s_time / c_time):.0f}% less; expected share of blocks run {100 * expected:.0f}%; "
            "paper: ~25% less)",
            "held if the stochastic net's time per epoch is at most 0.9x the constant net's"))
    return claims


def n_blocks(cfg: Config) -> int:
    return 3 * ((cfg.depth - 2) // 6)


def make_tables(result: Result) -> list[Table]:
    cfg = result.config
    rows = []
    for kind, name in labels(cfg).items():
        runs = by_label(result.runs, name)
        if runs:
            rows.append([name, runs[0].params, 100 * mean_of(runs, "final_train_error"),
                         100 * mean_of(runs, "final_test_error"),
                         float(np.mean([tail_loss(r, cfg.tail) for r in runs])), mean_of(runs, "epoch_time_s"),
                         PAPER_TEST_ERROR[kind]])
    return [Table(["net", "parameters", "train err (%)", "test err (%)", "running train loss (end)", "s / epoch",
                   "paper test err, CIFAR-10 ResNet-110 (%)"], rows,
                  f"Mean over {cfg.n_seeds} seed(s); train error in eval mode (every block present).")]


SPEC = register_experiment(ExperimentSpec(
    name="stochastic_depth",
    title="Stochastic depth vs constant depth",
    question="Does randomly dropping whole residual blocks during training (a shorter expected net) help a deep "
             "ResNet?",
    claim="Training with stochastic depth (linear decay to p_L = 0.5) gives a deep ResNet a lower test error than "
          "constant depth; it acts as a regulariser (higher training loss) and shortens training (~25%).",
    citation="Huang, Sun, Liu, Sedra & Weinberger 2016, Deep Networks with Stochastic Depth, arXiv:1603.09382",
    config_cls=Config, result_cls=Result, run=run, order=76,
))
