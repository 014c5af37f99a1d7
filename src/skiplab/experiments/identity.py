"""The identity construction: why degradation is an optimisation problem (He et al. 2015, arXiv:1512.03385, §1).

"There exists a solution by construction to the deeper model: the added layers are identity mapping, and the
other layers are copied from the learned shallower model."  So a deeper plain net can always be as good as a
shallower one; if training does not find such a solution, the optimiser is to blame, not the architecture.

Here: train a shallow plain CIFAR net, copy its layers into the first blocks of every stage of a deeper plain net
and set each remaining block to the identity (:func:`deepen_with_identities`), check that the deep net computes
the same function, then train the deep plain net and its residual twin from scratch with the shallow net's
budget and see which of them reaches the solution that provably exists.

What "identity" means for a plain block ``x -> ReLU(BN2(conv2(ReLU(BN1(conv1(x))))))``: each conv gets the Dirac
kernel (output channel c copies input channel c), each BN is the identity in eval mode (running mean 0, running
variance 1, scale sqrt(1 + eps), shift 0), and ReLU passes its input unchanged because every block's input is
the output of an earlier ReLU, hence non-negative.  In training mode BN normalises with the batch statistics, so
the construction is a statement about the function the net can represent, not about a training trajectory.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress
from skiplab.experiments.training_runs import (
    CIFAR_RECIPE, QUICK_RECIPE, Recipe, Run, by_label, epoch_progress, eval_loaders, mean_of, pct, train_net)


# ------------------------------------------------------------------------------------------------ construction
def set_identity_(block: nn.Module) -> nn.Module:
    """Make a plain basic block (``skip="none"``, conv-BN-ReLU-conv-BN then ReLU, input and output shapes equal)
    compute the identity on non-negative inputs in eval mode; returns the block.  Raises ``ValueError`` for a
    block of another kind."""
    from skiplab.blocks.residual import BasicBlock

    if not isinstance(block, BasicBlock) or block.skip != "none" or not isinstance(block.shortcut, nn.Identity):
        raise ValueError(f"set_identity_ needs a shape-preserving plain BasicBlock (skip='none', stride 1, equal "
                         f"channels); got {type(block).__name__} with skip={getattr(block, 'skip', None)!r}")
    b = block.branch
    with torch.no_grad():
        for conv in (b.conv1, b.conv2):
            nn.init.dirac_(conv.weight)  # out channel c = in channel c (3x3 kernel: a 1 at the centre)
        for bn in (b.bn1, b.bn2):
            if not isinstance(bn, nn.BatchNorm2d):
                raise ValueError(f"set_identity_ expects BatchNorm2d layers; got {type(bn).__name__}")
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(math.sqrt(1.0 + bn.eps))  # (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) = x
            bn.bias.zero_()
    return block


def deepen_with_identities(shallow: nn.Module, deep: nn.Module) -> nn.Module:
    """Load ``shallow`` (a trained plain CIFAR net) into ``deep`` (a deeper plain CIFAR net of the same width):
    stem and head are copied, stage ``i``'s blocks fill the first blocks of the deep net's stage ``i``, and every
    remaining block is set to the identity (:func:`set_identity_`).  Returns ``deep``; in eval mode it computes
    the same function as ``shallow`` up to float rounding."""
    from skiplab.models.cifar import CifarResNet

    for name, net in (("shallow", shallow), ("deep", deep)):
        if not isinstance(net, CifarResNet) or net.skip != "none":
            raise ValueError(f"{name} must be a plain CIFAR net (plain20, plain56, ...: CifarResNet with "
                             f"skip='none'); got {type(net).__name__} with skip={getattr(net, 'skip', None)!r}")
    if len(shallow.stages) != len(deep.stages) or any(len(s) > len(d) for s, d in zip(shallow.stages, deep.stages)):
        raise ValueError(f"deep ({deep.depth} layers) must have at least as many blocks per stage as shallow "
                         f"({shallow.depth} layers)")
    try:
        deep.stem.load_state_dict(shallow.stem.state_dict())
        deep.head.load_state_dict(shallow.head.state_dict())
        for s_stage, d_stage in zip(shallow.stages, deep.stages):
            for j, block in enumerate(s_stage):
                d_stage[j].load_state_dict(block.state_dict())
            for j in range(len(s_stage), len(d_stage)):
                set_identity_(d_stage[j])
    except RuntimeError as e:  # a shape mismatch: different width, classes or input channels
        raise ValueError(f"shallow and deep nets must have the same width, classes and input channels: {e}") from None
    return deep


@torch.no_grad()
def compare_functions(a: nn.Module, b: nn.Module, loader) -> tuple[float, float, float, float]:
    """Run both nets (eval mode) over ``loader``: ``(max |logit difference|, max |logit| of a, fraction of equal
    predictions, accuracy of a - accuracy of b)``."""
    a.eval()
    b.eval()
    diff, scale, same, acc_a, acc_b, n = 0.0, 0.0, 0, 0, 0, 0
    for x, y in loader:
        la, lb = a(x), b(x)  # N, classes
        diff = max(diff, float((la - lb).abs().max()))
        scale = max(scale, float(la.abs().max()))
        same += int((la.argmax(1) == lb.argmax(1)).sum())
        acc_a += int((la.argmax(1) == y).sum())
        acc_b += int((lb.argmax(1) == y).sum())
        n += y.shape[0]
    return diff, scale, same / n, (acc_a - acc_b) / n


# ------------------------------------------------------------------------------------------------ experiment
@dataclass
class Config(Recipe):
    """Shallow ``plain{shallow}`` trained, deepened to ``plain{deep}``; then ``plain{deep}`` and ``resnet{deep}``
    from scratch with the same recipe.  Defaults: He et al.'s CIFAR recipe (64k iterations, 400-step warmup) with
    the 20- and 56-layer nets of their Fig. 1.  ``margin``: training-error differences below it are ties."""

    shallow: int = 20
    deep: int = 56
    width: float = 1.0
    warmup: int = 400
    margin: float = 0.01

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_RECIPE, width=0.5, warmup=0)

    @classmethod
    def cifar(cls) -> "Config":
        """Real CIFAR-10 with the degradation study's recipe and nets (plain-20 deepened to plain-56, plain-56 and
        ResNet-56 from scratch): all three come from the shared net cache when degradation ran first, so this
        adds only the construction's evaluation (~1 min)."""
        return cls(**CIFAR_RECIPE, shallow=20, deep=56, warmup=0)

    def __post_init__(self) -> None:
        from skiplab.models.cifar import CIFAR_DEPTHS

        self.validate_recipe()
        for name in ("shallow", "deep"):
            if getattr(self, name) not in CIFAR_DEPTHS:
                raise ValueError(f"{name} must be a registered CIFAR depth ({', '.join(map(str, CIFAR_DEPTHS))}); "
                                 f"got {getattr(self, name)!r}")
        if not self.deep > self.shallow:
            raise ValueError(f"deep must be larger than shallow; got shallow={self.shallow}, deep={self.deep}")
        self.check_width_and_margin()


@dataclass
class Construction:
    """The constructed deep plain net of one seed: how closely it matches the shallow net, and its errors."""

    seed: int
    params: int  # of the deep plain net
    identity_blocks: int
    max_logit_diff: float  # max |logit_deep - logit_shallow| over the test split
    max_logit: float  # max |logit_shallow|, for scale
    agreement: float  # fraction of test images both nets classify alike
    train_error: float  # the constructed net's, eval mode, same images as the runs' final training error
    test_error: float
    train_loss: float


@dataclass
class Result:
    config: Config
    runs: list[Run]
    constructions: list[Construction]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def labels(cfg: Config) -> dict[str, str]:
    return {"shallow": f"plain-{cfg.shallow}", "plain": f"plain-{cfg.deep} (from scratch)",
            "residual": f"ResNet-{cfg.deep} (from scratch)"}


def run(cfg: Config, progress: Progress | None = None) -> Result:
    from skiplab.registry import create_model
    from skiplab.train import evaluate

    t0 = time.perf_counter()
    names = labels(cfg)
    seeds = cfg.seeds()
    total, done = 3 * len(seeds), 0
    runs, constructions = [], []
    kwargs = {"width": cfg.width}
    for seed in seeds:
        report_progress(progress, done, total, f"training {names['shallow']}, seed {seed}")
        shallow_run, shallow = train_net(cfg, f"plain{cfg.shallow}", kwargs, seed, label=names["shallow"],
                                         on_epoch=epoch_progress(progress, done, total, f"training {names['shallow']}"))
        runs.append(shallow_run)
        done += 1
        device = next(shallow.parameters()).device
        deep = create_model(f"plain{cfg.deep}", **shallow_run.model_kwargs).to(device)
        deepen_with_identities(shallow, deep)
        train_loader, test_loader = eval_loaders(cfg, device)
        diff, scale, agree, _ = compare_functions(shallow, deep, test_loader)
        train_loss, train_acc = evaluate(deep, train_loader, device)
        _, test_acc = evaluate(deep, test_loader, device)
        n_id = sum(len(d) - len(s) for s, d in zip(shallow.stages, deep.stages))
        params = sum(p.numel() for p in deep.parameters())
        constructions.append(Construction(seed, params, n_id, diff, scale, agree, 1 - train_acc, 1 - test_acc,
                                          train_loss))
        for skip, key in (("plain", "plain"), ("resnet", "residual")):
            report_progress(progress, done, total, f"training {names[key]}, seed {seed}")
            r, _ = train_net(cfg, f"{skip}{cfg.deep}", kwargs, seed, label=names[key],
                             on_epoch=epoch_progress(progress, done, total, f"training {names[key]}"))
            runs.append(r)
            done += 1
    report_progress(progress, total, total, "done")
    result = Result(cfg, runs, constructions, [], [])
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.notes = [
        f"The constructed plain-{cfg.deep} holds plain-{cfg.shallow}'s layers in the first blocks of each stage and "
        f"{constructions[0].identity_blocks} identity blocks after them (Dirac convolutions, BN set to the identity "
        "in eval mode, ReLU on non-negative inputs).",
        f"Same recipe for all three trained nets: {cfg.steps} iterations of batch {cfg.batch_size} on {cfg.data}, "
        f"lr {cfg.lr:g} ({cfg.schedule}), weight decay {cfg.weight_decay:g}, width x{cfg.width:g}.",
    ]
    result.wall_time_s = time.perf_counter() - t0
    return result


def check_claims(result: Result) -> list[Claim]:
    cfg, cons = result.config, result.constructions
    names = labels(cfg)
    m = cfg.margin
    rel = [c.max_logit_diff / max(c.max_logit, 1e-12) for c in cons]
    built = float(np.mean([c.train_error for c in cons]))
    plain = mean_of(by_label(result.runs, names["plain"]), "final_train_error")
    res = mean_of(by_label(result.runs, names["residual"]), "final_train_error")
    shallow = mean_of(by_label(result.runs, names["shallow"]), "final_train_error")
    return [
        Claim("construction_is_exact",
              f"The deeper plain net built from {names['shallow']} plus identity blocks computes the same function.",
              all(r <= 1e-4 for r in rel) and all(c.agreement == 1.0 for c in cons),
              "; ".join(f"seed {c.seed}: max |Δlogit| {c.max_logit_diff:.2g} (logits up to {c.max_logit:.3g}), "
                        f"{100 * c.agreement:.2f}% identical predictions, training error {pct(c.train_error)} "
                        f"(shallow {pct(shallow)})" for c in cons),
              "held if on every test image the logits agree to 1e-4 of their largest magnitude and every "
              "prediction is the same"),
        Claim("plain_misses_the_solution",
              f"Trained from scratch, {names['plain']} does not find a solution as good as the constructed one.",
              bool(plain > built + m),
              f"training error: {names['plain']} {pct(plain)} vs constructed {pct(built)}",
              f"held if the from-scratch plain net's training error exceeds the constructed net's by more than "
              f"{100 * m:g} points (mean over seeds)"),
        Claim("residual_finds_it",
              f"Its residual twin, {names['residual']}, trained the same way, does at least as well as the "
              "constructed solution.",
              bool(res <= built + m),
              f"training error: {names['residual']} {pct(res)} vs constructed {pct(built)}",
              f"held if the ResNet's training error is at most {100 * m:g} points above the constructed net's"),
    ]


def make_tables(result: Result) -> list[Table]:
    cfg, names = result.config, labels(result.config)
    rows = []
    for key in ("shallow", "plain", "residual"):
        runs = by_label(result.runs, names[key])
        if runs:
            rows.append([names[key], runs[0].params, 100 * mean_of(runs, "final_train_error"),
                         100 * mean_of(runs, "final_test_error"), mean_of(runs, "final_train_loss"), "trained"])
        if key == "shallow":
            cons = result.constructions
            rows.append([f"plain-{cfg.deep} (constructed)", cons[0].params,
                         100 * float(np.mean([c.train_error for c in cons])),
                         100 * float(np.mean([c.test_error for c in cons])),
                         float(np.mean([c.train_loss for c in cons])), "copied + identity, not trained"])
    return [Table(["net", "parameters", "train err (%)", "test err (%)", "train loss", "how"], rows,
                  f"Final errors (eval mode), mean over {cfg.n_seeds} seed(s).")]


SPEC = register_experiment(ExperimentSpec(
    name="identity",
    title="The identity construction",
    question="A deeper plain net can provably do as well as a shallower one (copy it, add identity layers). "
             "Does training find that solution?",
    claim="The solution exists by construction, yet the deeper plain net trained from scratch does not reach it, "
          "while its residual twin does: degradation is an optimisation problem, and skips solve it.",
    citation="He, Zhang, Ren & Sun 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385, §1 and §3.1",
    config_cls=Config, result_cls=Result, run=run, order=45,
))
