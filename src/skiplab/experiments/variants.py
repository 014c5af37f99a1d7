"""Addition vs concatenation vs gating: residual, dense and highway nets side by side, at similar parameter counts
on the same data and budget.

* addition (He et al. 2015, arXiv:1512.03385): ``y = ReLU(F(x) + x)`` — the CIFAR ResNet;
* concatenation (Huang et al. 2017, arXiv:1608.06993): ``x_l = H_l([x_0, ..., x_{l-1}])`` — DenseNet-BC;
* gating (Srivastava et al. 2015, arXiv:1505.00387): ``y = T(x) F(x) + (1 - T(x)) x`` — the ResNet's highway
  twin (1x1-conv gates, bias -2), the "exclusive gating" shortcut He et al. 2016 (arXiv:1603.05027, §3.1,
  Table 1) measured at 8.70% CIFAR-10 error against the identity shortcut's 6.61% on ResNet-110.

Reported per net: parameters, training and test error curves, final errors, and training time per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment
from skiplab.experiments.training_runs import (
    CIFAR_RECIPE, ComparisonResult, QUICK_RECIPE, Recipe, by_label, mean_of, pct, run_comparison)

MERGES = ("add", "concat", "gate")


@dataclass
class Net:
    """One contender: its ``merge`` kind, a registered ``model`` and the kwargs that set its size."""

    label: str
    merge: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)


# ResNet-56 853,018 parameters; DenseNet-BC (L=100, k=12) 769,162 (-9.8%); Highway-56 899,850 (+5.5%) at 10 classes.
FULL_NETS = (
    Net("ResNet-56", "add", "resnet56"),
    Net("DenseNet-BC-100 (k=12)", "concat", "densenet_bc_100_12"),
    Net("Highway-56", "gate", "highway56"),
)
# On 1-channel 16x16 digits: ResNet-20 x0.5 67,906; DenseNet-BC-22 (k=12) 71,254 (+4.9%); Highway-20 x0.5 71,466
# (+5.2%).  The ResNet is the degradation demo's ResNet-20, so `skiplab demo` trains it once.
QUICK_NETS = (
    Net("ResNet-20", "add", "resnet20", {"width": 0.5}),
    Net("DenseNet-BC-22 (k=12)", "concat", "densenet_bc_100_12", {"depth": 22, "growth_rate": 12}),
    Net("Highway-20", "gate", "highway20", {"width": 0.5}),
)


# The cifar setting's contenders, at ResNet-20's size (counts at 10 classes, 3 channels).
CIFAR_NETS = (
    Net("ResNet-20", "add", "resnet20"),
    Net("DenseNet-BC-52 (k=12)", "concat", "densenet_bc_100_12", {"depth": 52, "growth_rate": 12}),
    Net("Highway-20", "gate", "highway20"),
)


@dataclass
class Config(Recipe):
    """Three nets, one recipe (He et al.'s CIFAR recipe by default).  ``param_tolerance``: how far (a fraction of
    the residual net's count) a contender's parameter count may be from the residual net's before the result
    carries a warning.  ``margin``: error differences below it are ties."""

    nets: tuple[Net, ...] = FULL_NETS
    warmup: int = 400
    param_tolerance: float = 0.15
    margin: float = 0.01

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_RECIPE, nets=QUICK_NETS, warmup=0)

    @classmethod
    def cifar(cls) -> "Config":
        """Real CIFAR-10, :data:`CIFAR_RECIPE`, the three merges at ResNet-20's size (269,722 parameters):
        DenseNet-BC-52 (k=12) 264,586 (-1.9%), Highway-20 283,626 (+5.2%).  ResNet-20 comes from the shared cache
        (degradation); the other two are ~40 min of the cifar set."""
        return cls(**CIFAR_RECIPE, nets=CIFAR_NETS, warmup=0)

    def __post_init__(self) -> None:
        self.validate_recipe()
        merges = [n.merge for n in self.nets]
        for n in self.nets:
            if n.merge not in MERGES:
                raise ValueError(f"net {n.label!r}: merge must be one of {', '.join(map(repr, MERGES))}; "
                                 f"got {n.merge!r}")
        if "add" not in merges:
            raise ValueError("nets must include a residual ('add') net: the others are compared with it")
        if len({n.label for n in self.nets}) != len(self.nets):
            raise ValueError(f"net labels must be distinct; got {[n.label for n in self.nets]}")
        if not 0 <= self.margin < 1 or not 0 < self.param_tolerance < 1:
            raise ValueError(f"margin must be in [0, 1) and param_tolerance in (0, 1); got margin={self.margin!r}, "
                             f"param_tolerance={self.param_tolerance!r}")


@dataclass
class Result(ComparisonResult):
    config: Config


def run(cfg: Config, progress: Progress | None = None) -> Result:
    jobs = [(n.label, n.model, n.kwargs, seed) for n in cfg.nets for seed in cfg.seeds()]
    return run_comparison(Result, cfg, jobs, progress, claims=check_claims, tables=make_tables, notes=make_notes)


def _net(cfg: Config, merge: str) -> Net | None:
    return next((n for n in cfg.nets if n.merge == merge), None)


def check_claims(result: Result) -> list[Claim]:
    cfg, m = result.config, result.config.margin
    res = _net(cfg, "add")
    r_err = mean_of(by_label(result.runs, res.label), "final_test_error")
    claims = []
    gate = _net(cfg, "gate")
    if gate is not None:
        g_err = mean_of(by_label(result.runs, gate.label), "final_test_error")
        claims.append(Claim(
            "gating_no_better_than_identity",
            f"Gating the skip does not beat the plain identity skip: {res.label} reaches a test error at least as "
            f"low as {gate.label}.",
            bool(r_err <= g_err + m),
            f"test error: {res.label} {pct(r_err)}, {gate.label} {pct(g_err)}; training error: {res.label} "
            f"{pct(mean_of(by_label(result.runs, res.label), 'final_train_error'))}, {gate.label} "
            f"{pct(mean_of(by_label(result.runs, gate.label), 'final_train_error'))}",
            f"held if the residual net's test error is at most {100 * m:g} points above the highway net's"))
    dense = _net(cfg, "concat")
    if dense is not None:
        d_runs, r_runs = by_label(result.runs, dense.label), by_label(result.runs, res.label)
        d_err = mean_of(d_runs, "final_test_error")
        claims.append(Claim(
            "concatenation_parameter_efficient",
            f"Concatenation uses parameters at least as well as addition: {dense.label} "
            f"({d_runs[0].params:,} parameters) reaches a test error at least as low as {res.label} "
            f"({r_runs[0].params:,}).",
            bool(d_err <= r_err + m),
            f"test error: {dense.label} {pct(d_err)}, {res.label} {pct(r_err)}; seconds per epoch: "
            f"{dense.label} {mean_of(d_runs, 'epoch_time_s'):.2g}, {res.label} {mean_of(r_runs, 'epoch_time_s'):.2g}",
            f"held if the DenseNet's test error is at most {100 * m:g} points above the ResNet's"))
    return claims


def make_tables(result: Result) -> list[Table]:
    cfg = result.config
    ref = by_label(result.runs, _net(cfg, "add").label)
    rows = []
    for n in cfg.nets:
        runs = by_label(result.runs, n.label)
        if not runs:
            continue
        rows.append([n.label, n.merge, runs[0].params, f"{100 * (runs[0].params / ref[0].params - 1):+.1f}%",
                     100 * mean_of(runs, "final_train_error"), 100 * mean_of(runs, "final_test_error"),
                     mean_of(runs, "final_train_loss"), mean_of(runs, "epoch_time_s"), mean_of(runs, "train_time_s")])
    return [Table(["net", "merge", "parameters", "vs residual", "train err (%)", "test err (%)", "train loss",
                   "s / epoch", "training s"], rows,
                  f"{cfg.steps} iterations of batch {cfg.batch_size} on {cfg.data}, mean over {cfg.n_seeds} seed(s). "
                  "Seconds per epoch: median wall time of a training epoch (evaluation excluded) on this machine.")]


def make_notes(result: Result) -> list[str]:
    cfg = result.config
    ref = by_label(result.runs, _net(cfg, "add").label)[0].params
    off = [f"{r.label} ({r.params:,})" for r in result.runs if abs(r.params / ref - 1) > cfg.param_tolerance]
    notes = [f"Same recipe for every net: SGD momentum 0.9, lr {cfg.lr:g} ({cfg.schedule}), weight decay "
             f"{cfg.weight_decay:g}, batch {cfg.batch_size}, {cfg.steps} iterations."]
    if off:
        notes.append(f"Warning: parameter counts differ from the residual net's ({ref:,}) by more than "
                     f"{100 * cfg.param_tolerance:g}%: {', '.join(dict.fromkeys(off))}.")
    return notes


SPEC = register_experiment(ExperimentSpec(
    name="variants",
    title="Addition vs concatenation vs gating",
    question="At similar parameter counts, on the same data and budget, how do residual (add), dense (concatenate) "
             "and highway (gate) skips compare in accuracy, training curves and speed?",
    claim="The identity skip is not improved by gating it (He et al. 2016); concatenating features reaches similar "
          "or better accuracy for its parameters (Huang et al. 2017), at a higher cost per parameter in time.",
    citation="He et al. 2015, arXiv:1512.03385; Srivastava, Greff & Schmidhuber 2015, arXiv:1505.00387; "
             "He et al. 2016, arXiv:1603.05027 §3.1; Huang, Liu, van der Maaten & Weinberger 2017, arXiv:1608.06993",
    config_cls=Config, result_cls=Result, run=run, order=75,
))
