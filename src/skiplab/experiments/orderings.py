"""The five residual-unit orderings of He, Zhang, Ren & Sun 2016, "Identity Mappings in Deep Residual Networks"
(arXiv:1603.05027), Fig. 4 and Table 2, trained side by side on one deep net.

(a) original ``ReLU(x + BN(W ReLU(BN(W x))))``; (b) BN after addition; (c) ReLU before addition; (d) ReLU-only
pre-activation; (e) full pre-activation ``x + W ReLU(BN(W ReLU(BN(x))))``.  He et al. found (b) and (c) worse than
(a) — (b) puts a BN on the skip path, (c) makes every residual non-negative — (d) about equal to (a), and (e) the
best: the skip path is then a clean identity from any unit to any other.  Their CIFAR-10 test errors (%):

=================  ===========  ===========
ordering           ResNet-110   ResNet-164
=================  ===========  ===========
original           6.61         5.93
bn_after_add       8.17         6.50
relu_before_add    7.84         6.14
relu_preact        6.71         5.91
full_preact        6.37         5.46
=================  ===========  ===========

The nets are :class:`~skiplab.models.preact.PreActResNet` with basic units (ResNet-110 is the paper's) — a depth
the registry has no name for, so they are built by ``preact_resnet(depth, unit=..., ordering=...)`` and trained by
:func:`~skiplab.experiments.training_runs.train_net` with the same recipe as everything else.
"""
from __future__ import annotations

from dataclasses import dataclass

from skiplab.blocks.preact import ORDERINGS
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment
from skiplab.experiments.training_runs import (
    CIFAR_RECIPE, ComparisonResult, QUICK_RECIPE, Recipe, by_label, mean_of, pct, run_comparison)

# He et al. 2016 Table 2: CIFAR-10 test error (%) by ordering, for ResNet-110 (basic) and ResNet-164 (bottleneck).
PAPER_TEST_ERROR = {
    "basic": {"original": 6.61, "bn_after_add": 8.17, "relu_before_add": 7.84, "relu_preact": 6.71,
              "full_preact": 6.37},
    "bottleneck": {"original": 5.93, "bn_after_add": 6.50, "relu_before_add": 6.14, "relu_preact": 5.91,
                   "full_preact": 5.46},
}
NAMES = {"original": "(a) original", "bn_after_add": "(b) BN after addition", "relu_before_add":
         "(c) ReLU before addition", "relu_preact": "(d) ReLU-only pre-activation",
         "full_preact": "(e) full pre-activation"}


@dataclass
class Config(Recipe):
    """The five orderings on a ``depth``-layer pre-activation-family ResNet of ``unit`` units.  Defaults: He et al.
    2016's ResNet-110 study (basic units, He et al. 2015's recipe with its 400-step warmup).  ``margin``: error
    differences below it are ties."""

    depth: int = 110
    unit: str = "basic"
    width: float = 1.0
    orderings: tuple[str, ...] = ORDERINGS
    warmup: int = 400
    margin: float = 0.0

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_RECIPE, depth=20, width=0.5, warmup=0)

    @classmethod
    def cifar(cls) -> "Config":
        """Real CIFAR-10, :data:`CIFAR_RECIPE`, the five orderings on 20-layer nets of basic units (He et al. 2016
        Table 2 uses ResNet-110: at this budget 110 layers x 5 would take ~4 h alone).  Five new nets, ~50 min of
        the cifar set."""
        return cls(**CIFAR_RECIPE, depth=20, warmup=0)

    def __post_init__(self) -> None:
        from skiplab.models.cifar import blocks_per_stage

        self.validate_recipe()
        if self.unit not in PAPER_TEST_ERROR:
            raise ValueError(f"unit must be 'basic' or 'bottleneck'; got {self.unit!r}")
        blocks_per_stage(self.depth, layers_per_block=2 if self.unit == "basic" else 3)
        bad = [o for o in self.orderings if o not in ORDERINGS]
        if bad or not self.orderings or len(set(self.orderings)) != len(self.orderings):
            raise ValueError(f"orderings must be distinct names from {', '.join(ORDERINGS)}; got {self.orderings!r}")
        self.check_width_and_margin()


@dataclass
class Result(ComparisonResult):
    config: Config


def run(cfg: Config, progress: Progress | None = None) -> Result:
    jobs = [(NAMES[o], "preact_resnet", {"depth": cfg.depth, "unit": cfg.unit, "ordering": o, "width": cfg.width},
             seed) for o in cfg.orderings for seed in cfg.seeds()]
    return run_comparison(Result, cfg, jobs, progress, claims=check_claims, tables=make_tables, notes=make_notes)


def make_notes(result: Result) -> list[str]:
    cfg = result.config
    return [
        f"Same recipe for all five: {cfg.steps} iterations of batch {cfg.batch_size} on {cfg.data}, lr {cfg.lr:g} "
        f"({cfg.schedule}), weight decay {cfg.weight_decay:g}; {cfg.depth}-layer nets of {cfg.unit} units, width "
        f"x{cfg.width:g}, projection shortcuts where the shape changes.",
    ]


def _err(result: Result, ordering: str, attr: str = "final_test_error") -> float:
    return mean_of(by_label(result.runs, NAMES[ordering]), attr)


def check_claims(result: Result) -> list[Claim]:
    cfg, m = result.config, result.config.margin
    present = set(cfg.orderings)
    claims = []
    if "original" not in present:
        return claims
    orig = _err(result, "original")
    paper = PAPER_TEST_ERROR[cfg.unit]
    for bad, why in (("bn_after_add", "a BN on the skip path alters the signal passing through every unit"),
                     ("relu_before_add", "the residual is non-negative, so each unit can only add")):
        if bad in present:
            e = _err(result, bad)
            claims.append(Claim(
                f"{bad}_worse",
                f"{NAMES[bad]} is worse than {NAMES['original']} ({why}).",
                bool(e > orig + m),
                f"test error: {NAMES[bad]} {pct(e)} vs original {pct(orig)} (paper: {paper[bad]}% vs "
                f"{paper['original']}%); training error {pct(_err(result, bad, 'final_train_error'))} vs "
                f"{pct(_err(result, 'original', 'final_train_error'))}",
                f"held if its test error exceeds the original unit's by more than {100 * m:g} points"))
    if "full_preact" in present:
        full = _err(result, "full_preact")
        best = min(present, key=lambda o: _err(result, o))
        claims.append(Claim(
            "full_preact_best",
            f"{NAMES['full_preact']} gives the lowest test error of the orderings tried.",
            bool(full <= _err(result, best) + m),
            "test error: " + "; ".join(f"{NAMES[o]} {pct(_err(result, o))}" for o in cfg.orderings),
            f"held if no ordering's test error is more than {100 * m:g} points below full pre-activation's"))
    return claims


def make_tables(result: Result) -> list[Table]:
    cfg = result.config
    rows = []
    for o in cfg.orderings:
        runs = by_label(result.runs, NAMES[o])
        if runs:
            rows.append([NAMES[o], runs[0].params, 100 * mean_of(runs, "final_train_error"),
                         100 * mean_of(runs, "final_test_error"), mean_of(runs, "final_train_loss"),
                         PAPER_TEST_ERROR[cfg.unit][o]])
    net = "ResNet-110" if cfg.unit == "basic" else "ResNet-164"
    return [Table(["ordering", "parameters", "train err (%)", "test err (%)", "train loss",
                   f"paper test err, CIFAR-10 {net} (%)"], rows,
                  f"{cfg.depth}-layer nets, mean over {cfg.n_seeds} seed(s); train error and loss in eval mode.")]


SPEC = register_experiment(ExperimentSpec(
    name="orderings",
    title="Residual-unit orderings: where BN and ReLU go",
    question="Where should batch norm and ReLU sit relative to the addition in a residual unit?",
    claim="Putting BN after the addition or ReLU before it hurts; full pre-activation (BN-ReLU-conv, nothing after "
          "the addition, a clean identity path) gives the lowest error.",
    citation="He, Zhang, Ren & Sun 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027, Fig. 4 and "
             "Table 2",
    config_cls=Config, result_cls=Result, run=run, order=77,
))
