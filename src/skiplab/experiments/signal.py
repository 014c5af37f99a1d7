"""Forward signal propagation at initialisation: activation size through depth, plain vs residual vs highway,
and what 1/sqrt(depth) branch scaling or a zero-initialised last layer do to a residual net.

Expected from variance bookkeeping (He-normal ReLU layers keep E[h^2]; a residual block adds its branch's
variance to the skip's):
* unnormalised residual: the variance doubles per block, RMS x sqrt(2) per block (why Fixup / SkipInit exist);
* batch norm in the branch: each block adds O(1) variance, so RMS grows ~ sqrt(depth) (De & Smith 2020);
* branch scaled by 1/sqrt(L): (1 + 1/L)^L <= e, RMS grows at most ~ sqrt(e) ~ 1.65x over the whole net;
* zero-initialised last layer: every block is the identity, the signal passes unchanged;
* plain ReLU (He init) keeps the RMS on average; plain tanh (Xavier) lets it shrink.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from skiplab.analysis.gradient_flow import fit_geometric
from skiplab.analysis.signal import activation_rms
from skiplab.blocks.base import zero_init_last
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads
from skiplab.models.mlp import MLP


@dataclass
class Variant:
    """One net. ``branch_scale``: a number, or "1/sqrt(L)"; ``zero_init``: apply each block's zero_init_last()."""

    label: str
    skip: str
    act: str = "relu"
    norm: str = "none"
    branch_scale: str = "1"
    zero_init: bool = False


VARIANTS = (
    Variant("plain ReLU", "none"),
    Variant("plain tanh", "none", act="tanh"),
    Variant("residual", "residual"),
    Variant("residual, BN in branch", "residual", norm="batch"),
    Variant("residual, branch x 1/sqrt(L)", "residual", branch_scale="1/sqrt(L)"),
    Variant("residual, zero-init last", "residual", zero_init=True),
    Variant("highway (gate bias -2)", "highway"),
)


@dataclass
class Config:
    depth: int = 100
    width: int = 256
    batch: int = 256
    n_seeds: int = 5
    first_seed: int = 0
    variants: tuple[Variant, ...] = VARIANTS

    @classmethod
    def quick(cls) -> "Config":
        return cls(width=128, batch=128, n_seeds=2)

    def __post_init__(self) -> None:
        for name in ("depth", "width", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        seed_list(self.n_seeds, self.first_seed)
        for v in self.variants:
            branch_scale(v, self.depth)  # validates


def branch_scale(v: Variant, depth: int) -> float:
    if v.branch_scale == "1/sqrt(L)":
        return 1.0 / math.sqrt(depth)
    try:
        return float(v.branch_scale)
    except ValueError:
        raise ValueError(f"variant {v.label!r}: branch_scale must be a number or '1/sqrt(L)'; "
                         f"got {v.branch_scale!r}") from None


@dataclass
class Propagation:
    variant: Variant
    layer_names: list[str]
    seeds: list[int]
    rms: list[list[float]]  # [seed][unit]: stem, block1..blockL, head
    growth: list[float]  # per seed: ratio of the last block's RMS to the stem's
    factor: list[float]  # per seed: fitted geometric RMS factor per block


@dataclass
class Result:
    config: Config
    runs: list[Propagation]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def build(v: Variant, cfg: Config) -> MLP:
    model = MLP(cfg.depth, cfg.width, cfg.width, 10, act=v.act, norm=v.norm, skip=v.skip,
                init="he" if v.act == "relu" else "xavier", branch_scale=branch_scale(v, cfg.depth))
    if v.zero_init:
        zero_init_last(model)
    return model


def run(cfg: Config, progress: Progress | None = None) -> Result:
    with torch_threads(1):
        return _run(cfg, progress)


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    total, done, runs = len(cfg.variants) * len(seeds), 0, []
    for v in cfg.variants:
        rms_runs, names = [], []
        for seed in seeds:
            report_progress(progress, done, total, f"{v.label}, seed {seed}")
            torch.manual_seed(seed)
            model = build(v, cfg).train()  # BN (where present) normalises with the batch, as at the first step
            x = torch.randn(cfg.batch, cfg.width, generator=torch.Generator().manual_seed(10_000 + seed))
            names, rms = activation_rms(model, x)
            rms_runs.append(rms)
            done += 1
        growth = [r[-2] / r[0] for r in rms_runs]
        factor = [fit_geometric(range(len(r) - 1), r[:-1])[0] for r in rms_runs]  # stem..last block
        runs.append(Propagation(v, names, seeds, rms_runs, growth, factor))
    report_progress(progress, total, total, "done")
    result = Result(cfg, runs, [], [])
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


def _find(result: Result, **match) -> Propagation | None:
    return next((r for r in result.runs if all(getattr(r.variant, k) == v for k, v in match.items())), None)


def check_claims(result: Result) -> list[Claim]:
    claims = []
    L = result.config.depth
    raw = _find(result, skip="residual", norm="none", branch_scale="1", zero_init=False, act="relu")
    if raw is not None:
        f = np.array(raw.factor)
        claims.append(Claim(
            "residual_doubles_variance",
            "Without normalisation or scaling, each residual block adds its branch's variance to the skip's: the "
            "activations grow exponentially with depth (x sqrt(2) per block for He-initialised ReLU branches).",
            bool(np.all(f > 1.2)),
            f"{raw.variant.label}: RMS x {f.mean():.3f} ± {f.std():.3f} per block; last block / stem = "
            f"{np.median(raw.growth):.2g} after {L} blocks (sqrt(2)^{L} = {math.sqrt(2) ** L:.2g})",
            "held if every seed's fitted RMS factor per block > 1.2"))
    tamed = [r for r in result.runs if r.variant.skip == "residual" and r.variant.norm == "none"
             and (r.variant.zero_init or r.variant.branch_scale == "1/sqrt(L)")]
    if tamed:
        bad = [r.variant.label for r in tamed if not all(0.5 <= g <= 2.0 for g in r.growth)]
        claims.append(Claim(
            "identity_path_preserves_signal",
            "When the branch starts small (scaled by 1/sqrt(depth), or its last layer zero-initialised) the "
            "identity path carries the signal through any depth unchanged in size.",
            not bad,
            "; ".join(f"{r.variant.label}: last block / stem = {np.median(r.growth):.3g} "
                      f"(range {min(r.growth):.3g}-{max(r.growth):.3g})" for r in tamed),
            f"held if every seed's last-block / stem RMS is in [0.5, 2] after {L} blocks"))
    bn = _find(result, skip="residual", norm="batch")
    if bn is not None:
        slopes = []
        for r in bn.rms:  # log RMS against log block index: RMS ~ l^p
            idx = np.arange(1, len(r) - 1)
            slopes.append(float(np.polyfit(np.log(idx), np.log(r[1:-1]), 1)[0]))
        claims.append(Claim(
            "bn_residual_sqrt_growth",
            "Batch norm in the branch downscales it relative to the skip: the activations grow only like "
            "sqrt(depth) instead of exponentially.",
            bool(0.3 <= np.mean(slopes) <= 0.7),
            f"{bn.variant.label}: RMS ~ depth^{np.mean(slopes):.2f} ± {np.std(slopes):.2f}; last block / stem = "
            f"{np.median(bn.growth):.3g}",
            "held if the mean fitted exponent of RMS against block index is in [0.3, 0.7]"))
    return claims


def make_tables(result: Result) -> list[Table]:
    rows = [[r.variant.label, r.variant.act, r.variant.norm, r.variant.branch_scale,
             "yes" if r.variant.zero_init else "no", float(np.median(r.growth)), float(np.mean(r.factor))]
            for r in result.runs]
    columns = ["net", "act", "norm", "branch scale", "zero-init last", "last block / stem RMS", "RMS factor per block"]
    return [Table(columns, rows,
                  f"Activation RMS at initialisation, depth {result.config.depth} (median / mean over seeds).")]


SPEC = register_experiment(ExperimentSpec(
    name="signal",
    title="Forward signal propagation",
    question="How does the size of the activations change through a deep net at initialisation, with and without "
             "skips, and how do branch scalings change that?",
    claim="The identity path preserves the signal; an unscaled, unnormalised residual branch doubles the variance "
          "per block, which batch norm (implicitly), 1/sqrt(depth) scaling or a zero-initialised last layer tame.",
    citation="He et al. 2016, arXiv:1603.05027; Zhang, Dauphin & Ma 2019 (Fixup), arXiv:1901.09321; "
             "De & Smith 2020 (SkipInit), arXiv:2002.10444; Goyal et al. 2017, arXiv:1706.02677",
    config_cls=Config, result_cls=Result, run=run, order=30,
))
