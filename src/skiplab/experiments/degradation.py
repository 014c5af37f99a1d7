"""The degradation problem (He, Zhang, Ren & Sun 2015, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385, Fig. 1 and 6).

Plain CIFAR nets (``plain20`` ... ``plain110``: the ResNets without their skips) and the ResNets themselves are
trained with one recipe at several depths.  He et al. saw the deeper plain nets end with *higher training error*
than the shallower ones — not overfitting (training error is what rises) and not vanishing gradients (BN keeps
the signals healthy) but an optimisation difficulty — while with identity skips the deeper nets were better.

Measured here: training and test error against iterations for every net, and the final training error
(eval mode, un-augmented training images) and test error, beside the paper's CIFAR-10 test errors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment
from skiplab.experiments.training_runs import CIFAR_RECIPE, ComparisonResult, QUICK_RECIPE, Recipe, Run, by_label, \
    mean_of, pct, run_comparison

# He et al. 2015, Table 6: CIFAR-10 test error (%) of the ResNets (110: best of 5 runs; mean 6.61 ± 0.16).
PAPER_RESNET_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
SKIPS = ("none", "residual")


def label(skip: str, depth: int) -> str:
    return f"{'plain' if skip == 'none' else 'ResNet'}-{depth}"


def model_name(skip: str, depth: int) -> str:
    return f"{'plain' if skip == 'none' else 'resnet'}{depth}"


@dataclass
class Config(Recipe):
    """He et al.'s CIFAR-10 setting (``cifar()``: the same on a 2-core CPU's budget):
    depths 20-110, 64k iterations, with the 400-step warmup they used for ResNet-110 applied to every net (the
    same recipe for all).  ``width`` multiplies the 16/32/64 channels.  ``margin``: differences in training error
    smaller than this (a fraction) count as ties in the claims."""

    depths: tuple[int, ...] = (20, 32, 44, 56, 110)
    width: float = 1.0
    warmup: int = 400
    margin: float = 0.01

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_RECIPE, depths=(20, 56), width=0.5, warmup=0)

    @classmethod
    def cifar(cls) -> "Config":
        """Real CIFAR-10, depths 20/32/44/56 at full width, :data:`CIFAR_RECIPE` (2,500 iterations).  Budget: the
        8 nets are ~75 min of the ~3 h cifar set on a 2-core bf16 CPU (ResNet-56 ~30 min, ResNet-20 ~11 min a net,
        one thread each, two processes); measured wall times are in results/cifar and RESULTS.md."""
        return cls(**CIFAR_RECIPE, depths=(20, 32, 44, 56), warmup=0)

    def __post_init__(self) -> None:
        from skiplab.models.cifar import CIFAR_DEPTHS

        self.validate_recipe()
        if len(self.depths) < 2:
            raise ValueError(f"depths needs at least two depths to compare; got {self.depths!r}")
        for d in self.depths:
            if d not in CIFAR_DEPTHS:
                raise ValueError(f"depths: there is no registered plain{d}/resnet{d}; the CIFAR depths are "
                                 f"{', '.join(map(str, CIFAR_DEPTHS))}; got {self.depths!r}")
        self.check_width_and_margin()


@dataclass
class Result(ComparisonResult):
    config: Config


def run(cfg: Config, progress: Progress | None = None) -> Result:
    # The shallowest and deepest nets first: the claims rest on them, so a run stopped part-way (the cifar setting
    # is produced in pieces) already holds them; their cached ResNet-56 / plain-56 also serve other experiments.
    depths = sorted(cfg.depths)
    order = [depths[0], depths[-1], *depths[1:-1]]
    jobs = [(label(skip, depth), model_name(skip, depth), {"width": cfg.width}, seed)
            for depth in order for skip in SKIPS for seed in cfg.seeds()]
    return run_comparison(Result, cfg, jobs, progress, claims=check_claims, tables=make_tables, notes=make_notes)


def _final(result: Result, skip: str, depth: int, attr: str = "final_train_error") -> float:
    return mean_of(by_label(result.runs, label(skip, depth)), attr)


def check_claims(result: Result) -> list[Claim]:
    cfg = result.config
    lo, hi = min(cfg.depths), max(cfg.depths)
    m = cfg.margin
    series = {s: "; ".join(f"{label(s, d)} {pct(_final(result, s, d))}" for d in sorted(cfg.depths)) for s in SKIPS}
    tests = {s: "; ".join(f"{label(s, d)} {pct(_final(result, s, d, 'final_test_error'))}"
                          for d in sorted(cfg.depths)) for s in SKIPS}
    p_lo, p_hi = _final(result, "none", lo), _final(result, "none", hi)
    r_lo, r_hi = _final(result, "residual", lo), _final(result, "residual", hi)
    return [
        Claim("plain_deeper_trains_worse",
              f"Degradation: the deeper plain net ({label('none', hi)}) ends with a higher training error than the "
              f"shallower one ({label('none', lo)}), so its higher error is not overfitting.",
              bool(p_hi > p_lo + m),
              f"final training error (eval mode): {series['none']}. Test error: {tests['none']}.",
              f"held if the deepest plain net's training error exceeds the shallowest's by more than "
              f"{100 * m:g} points (mean over seeds)"),
        Claim("residual_deeper_no_worse",
              f"With identity skips the deeper net ({label('residual', hi)}) is at least as good as the shallower one "
              f"({label('residual', lo)}): no degradation.",
              bool(r_hi <= r_lo + m),
              f"final training error (eval mode): {series['residual']}. Test error: {tests['residual']}.",
              f"held if the deepest ResNet's training error is at most {100 * m:g} points above the shallowest's"),
        Claim("skips_fix_the_deep_net",
              f"At depth {hi} the residual net trains to a lower error than its plain twin.",
              bool(r_hi < p_hi - m),
              f"depth {hi}: ResNet {pct(r_hi)} vs plain {pct(p_hi)} training error",
              f"held if the ResNet's training error is more than {100 * m:g} points below the plain net's"),
    ]


def _cell(runs: list[Run], attr: str) -> float:
    return 100 * float(np.mean([getattr(r, attr) for r in runs])) if runs else float("nan")


def make_tables(result: Result) -> list[Table]:
    cfg = result.config
    rows = []
    for d in sorted(cfg.depths):
        plain, res = by_label(result.runs, label("none", d)), by_label(result.runs, label("residual", d))
        rows.append([d, res[0].params if res else "", _cell(plain, "final_train_error"),
                     _cell(plain, "final_test_error"), _cell(res, "final_train_error"), _cell(res, "final_test_error"),
                     PAPER_RESNET_TEST_ERROR.get(d, float("nan"))])
    columns = ["depth", "parameters", "plain train err (%)", "plain test err (%)", "ResNet train err (%)",
               "ResNet test err (%)", "paper ResNet test err, CIFAR-10 (%)"]
    data = cfg.data + (f" ({cfg.image_size}x{cfg.image_size})" if cfg.image_size else "")
    return [Table(columns, rows,
                  f"Final errors after {cfg.steps} iterations on {data}, mean over {cfg.n_seeds} seed(s); training "
                  f"error in eval mode on {cfg.n_train_eval or 'all'} un-augmented training images.  The last column "
                  "is He et al. 2015 Table 6 (CIFAR-10, 64k iterations), for scale — a different dataset unless "
                  "data=cifar10 with the full recipe.")]


def make_notes(result: Result) -> list[str]:
    cfg = result.config
    notes = [f"Recipe: SGD momentum 0.9, batch {cfg.batch_size}, lr {cfg.lr:g} ({cfg.schedule} schedule"
             + (f", {cfg.warmup}-step warmup" if cfg.warmup and cfg.schedule == "step" else "")
             + f"), weight decay {cfg.weight_decay:g}, {cfg.steps} iterations, width x{cfg.width:g}; the same for "
             "every net.  Plain and residual nets have identical layers and parameter counts (option-A shortcuts)."]
    if cfg.data != "cifar10":
        notes.append("The paper's numbers are CIFAR-10 at 64k iterations; ours are on another dataset or budget, so "
                     "only the orderings (deeper vs shallower, plain vs residual) are comparable, not the values.")
    return notes


SPEC = register_experiment(ExperimentSpec(
    name="degradation",
    title="The degradation problem",
    question="Does a deeper plain network train to a lower error than a shallower one, and does a residual one?",
    claim="Deeper plain nets end with HIGHER training error than shallower ones (an optimisation difficulty, not "
          "overfitting); with identity skips, the deeper nets are at least as good.",
    citation="He, Zhang, Ren & Sun 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385, Fig. 1, "
             "Fig. 6 and Table 6",
    config_cls=Config, result_cls=Result, run=run, order=40,
))
