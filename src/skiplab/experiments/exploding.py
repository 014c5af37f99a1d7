"""Exploding gradients: unnormalised inputs that drive training to inf/NaN, and batch norm at initialisation.

Part 1, training.  A deep ReLU MLP (skiplab ``mlp``/``plain_mlp``, He init) learns a 10-class task on Gaussian
features ``z`` (labels ``argmax(z R)`` for a fixed random ``R``), fed as ``x = scale * z``: scale 1 is the
standardised input, 1000 an input left in units 1000x too small.  SGD with momentum at a learning rate that
trains the standardised plain net; for every input scale and net we record the loss and the gradient norm per
step and the first step at which either is non-finite (inf or NaN).  Nets: plain and residual, each without and
with batch norm.  Why the raw inputs blow up: the first-layer weight gradient is ``dL/dh x^T`` (proportional to
the input scale) and the logits are proportional to it too, so one SGD step can multiply the weights by ~1e4, and
the next forward pass overflows float32 (LeCun et al. 1998, "Efficient BackProp", §4.3 on normalising inputs).

Part 2, batch norm at initialisation.  Tutorials often say batch norm with ReLU "fixes exploding gradients".
Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019 ("A Mean Field Theory of Batch Normalization", ICLR,
arXiv:1902.08129) prove the opposite for deep plain nets at initialisation: with batch norm the gradient norm
*grows* geometrically going back toward the input (for ReLU, by sqrt(pi / (pi - 1)) ~ 1.21 per layer for wide
layers and large batches), whatever the initialisation.  We measure per-layer weight-gradient norms of one
cross-entropy backward pass (random labels, batch statistics as at the first step) in a deep plain BN+ReLU MLP and
CIFAR CNN, their residual twins, and a plain ReLU MLP without batch norm, and state first block / last block.
The ``vanishing`` experiment measures the same effect across depths; here it is set against the common claim.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

import skiplab
from skiplab.analysis.gradient_flow import fit_geometric, gradient_flow
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads
from skiplab.registry import get_entry

MEAN_FIELD_GROWTH = math.sqrt(math.pi / (math.pi - 1.0))  # Yang et al. 2019, ReLU + batch norm, per layer


@dataclass
class Net:
    label: str
    skip: str  # "none" or "residual"
    norm: str  # "none" or "batch"
    branch_scale: str = "1"  # a number, or "1/sqrt(L)" (keeps an unnormalised residual net's signal bounded)

    def scale(self, depth: int) -> float:
        if self.branch_scale == "1/sqrt(L)":
            return 1.0 / math.sqrt(depth)
        try:
            return float(self.branch_scale)
        except ValueError:
            raise ValueError(f"net {self.label!r}: branch_scale must be a number or '1/sqrt(L)'; "
                             f"got {self.branch_scale!r}") from None


NETS = (Net("plain", "none", "none"), Net("residual", "residual", "none"),
        Net("residual, branch / sqrt(L)", "residual", "none", "1/sqrt(L)"),
        Net("plain + BN", "none", "batch"), Net("residual + BN", "residual", "batch"))
INIT_NETS = (Net("plain + BN", "none", "batch"), Net("residual + BN", "residual", "batch"),
             Net("plain, no norm", "none", "none"))


@dataclass
class Config:
    # part 1: training on inputs of growing scale
    depth: int = 20  # MLP blocks
    width: int = 64
    in_features: int = 32
    classes: int = 10
    batch: int = 64
    steps: int = 150
    lr: float = 0.01
    momentum: float = 0.9
    blowup_grad: float = 1e5  # counts as a blow-up even if finite: 1000x what any net here starts with at x1
    input_scales: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    nets: tuple[Net, ...] = NETS
    # part 2: gradients at initialisation
    init_depth: int = 50
    init_width: int = 128
    init_batch: int = 64
    init_nets: tuple[Net, ...] = INIT_NETS
    cnn_models: tuple[str, ...] = ("plain56", "resnet56")
    cnn_batch: int = 64
    cnn_image_size: int = 32
    n_seeds: int = 3
    first_seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls(steps=60, input_scales=(1.0, 1000.0), n_seeds=1, init_width=64,
                   cnn_models=("plain20", "resnet20"), cnn_batch=16, cnn_image_size=16)

    def __post_init__(self) -> None:
        for name in ("depth", "width", "in_features", "classes", "batch", "steps", "init_depth", "init_width",
                     "init_batch", "cnn_batch", "cnn_image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.classes < 2 or self.init_depth < 2:
            raise ValueError(f"classes and init_depth must be >= 2; got {self.classes}, {self.init_depth}")
        if not self.input_scales or any(not (isinstance(s, (int, float)) and 0 < s < math.inf)
                                        for s in self.input_scales):
            raise ValueError(f"input_scales must be positive finite numbers; got {self.input_scales!r}")
        if not (self.blowup_grad > 0):
            raise ValueError(f"blowup_grad must be positive; got {self.blowup_grad!r}")
        if not (self.lr > 0 and 0 <= self.momentum < 1):
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1; got lr={self.lr!r}, momentum={self.momentum!r}")
        for net in (*self.nets, *self.init_nets):
            if net.skip not in ("none", "residual") or net.norm not in ("none", "batch"):
                raise ValueError(f"net {net.label!r}: skip must be 'none'/'residual' and norm 'none'/'batch'; "
                                 f"got skip={net.skip!r}, norm={net.norm!r}")
            net.scale(self.depth)  # validates branch_scale
        seed_list(self.n_seeds, self.first_seed)


@dataclass
class Training:
    """One net at one input scale, every seed ([seed][step]; NaN after the run stopped)."""

    net: Net
    input_scale: float
    seeds: list[int]
    loss: list[list[float]]
    grad_norm: list[list[float]]
    diverged_at: list[int | None]  # first step with a non-finite loss or gradient; None: finite throughout


@dataclass
class InitGradients:
    """Per-unit weight-gradient norms at initialisation ([seed][unit]: stem, blocks..., head)."""

    label: str
    family: str  # "mlp" or "cnn"
    model: str
    skip: str
    norm: str
    blocks: int
    seeds: list[int]
    weight_grad: list[list[float]]
    ratio: list[float]  # per seed: first block / last block
    growth: list[float]  # per seed: fitted factor per block going back toward the input


@dataclass
class Result:
    config: Config
    training: list[Training]
    init: list[InitGradients]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def _mlp(net: Net, depth: int, width: int, in_features: int, classes: int) -> torch.nn.Module:
    name = "mlp" if net.skip == "residual" else "plain_mlp"
    return skiplab.create_model(name, depth=depth, width=width, in_features=in_features, out_features=classes,
                                act="relu", norm=net.norm, init="he", branch_scale=net.scale(depth))


def train_once(cfg: Config, net: Net, scale: float, seed: int) -> tuple[list[float], list[float], int | None]:
    torch.manual_seed(seed)
    model = _mlp(net, cfg.depth, cfg.width, cfg.in_features, cfg.classes).train()
    g = torch.Generator().manual_seed(1_000 + seed)
    teacher = torch.randn(cfg.in_features, cfg.classes, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    losses, norms = [math.nan] * cfg.steps, [math.nan] * cfg.steps
    for step in range(cfg.steps):
        z = torch.randn(cfg.batch, cfg.in_features, generator=g)  # standardised features, (N, in_features)
        loss = F.cross_entropy(model(scale * z), (z @ teacher).argmax(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None))
        losses[step], norms[step] = float(loss.detach()), grad
        if not (math.isfinite(losses[step]) and math.isfinite(grad)):
            return losses, norms, step
        opt.step()
    return losses, norms, None


def _init_gradients(label: str, family: str, name: str, kwargs: dict, skip: str, norm: str, seeds: list[int],
                    data, dtype: torch.dtype) -> InitGradients:
    grads = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = skiplab.create_model(name, **kwargs).to(dtype).train()  # BN: batch statistics, as at step 1
        x, y = data(seed)
        grads.append(gradient_flow(model, x.to(dtype), y).weight_grad_norm)
    blocks = len(grads[0]) - 2
    ratio = [g[1] / g[-2] if g[-2] > 0 else math.inf for g in grads]
    # fit_geometric gives the factor per block toward the output; its inverse is the growth going back
    growth = [1.0 / fit_geometric(range(1, blocks + 1), g[1:-1])[0] for g in grads]
    return InitGradients(label, family, name, skip, norm, blocks, seeds, grads, ratio, growth)


def run(cfg: Config, progress: Progress | None = None) -> Result:
    with torch_threads(1):
        return _run(cfg, progress)


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    notes: list[str] = []
    available = set(skiplab.list_models())
    cnns = [m for m in cfg.cnn_models if m in available]
    notes += [f"CNN {m!r} is not a registered model; skipped." for m in cfg.cnn_models if m not in available]
    jobs = [(n, s) for n in cfg.nets for s in sorted(cfg.input_scales)]
    total, done = len(jobs) + len(cfg.init_nets) + len(cnns), 0

    training = []
    for net, scale in jobs:
        report_progress(progress, done, total, f"training {net.label}, inputs x {scale:g}")
        runs = [train_once(cfg, net, scale, s) for s in seeds]
        training.append(Training(net, float(scale), seeds, [r[0] for r in runs], [r[1] for r in runs],
                                 [r[2] for r in runs]))
        done += 1

    def mlp_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(10_000 + seed)
        x = torch.randn(cfg.init_batch, cfg.init_width, generator=g, dtype=torch.float64)
        return x, torch.randint(0, cfg.classes, (cfg.init_batch,), generator=g)

    init = []
    for net in cfg.init_nets:
        report_progress(progress, done, total, f"gradients at init: {net.label}, {cfg.init_depth} blocks")
        kwargs = dict(depth=cfg.init_depth, width=cfg.init_width, in_features=cfg.init_width,
                      out_features=cfg.classes, act="relu", norm=net.norm, skip=net.skip, init="he",
                      branch_scale=net.scale(cfg.init_depth))
        init.append(_init_gradients(net.label, "mlp", "mlp", kwargs, net.skip, net.norm, seeds, mlp_data,
                                    torch.float64))  # float64: a 1e-6 ratio must not be rounding
        done += 1

    def cnn_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(20_000 + seed)
        s = cfg.cnn_image_size
        return torch.randn(cfg.cnn_batch, 3, s, s, generator=g), torch.randint(0, 10, (cfg.cnn_batch,), generator=g)

    for name in cnns:
        report_progress(progress, done, total, f"gradients at init: {name}")
        skip = get_entry(name).skip
        init.append(_init_gradients(name, "cnn", name, {"norm": "batch"}, skip, "batch", seeds, cnn_data,
                                    torch.float32))
        done += 1
    report_progress(progress, total, total, "done")

    result = Result(cfg, training, init, [], [], notes)
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.notes += make_notes(result)
    result.wall_time_s = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------------ claims and tables

def find(result: Result, skip: str, norm: str, scale: float, branch_scale: str = "1") -> Training | None:
    return next((t for t in result.training if (t.net.skip, t.net.norm, t.input_scale, t.net.branch_scale)
                 == (skip, norm, scale, branch_scale)), None)


def blowup_steps(t: Training, threshold: float) -> list[int | None]:
    """Per seed: the first step whose loss or gradient is non-finite or whose gradient norm is >= ``threshold``
    (a net can blow up and then die, every ReLU off and the loss back at chance, without ever reaching inf)."""
    steps = []
    for grads, stop in zip(t.grad_norm, t.diverged_at):
        big = next((i for i, g in enumerate(grads) if math.isfinite(g) and g >= threshold), None)
        steps.append(min((v for v in (big, stop) if v is not None), default=None))
    return steps


def _tail_loss(losses: list[float]) -> float:
    return float(np.mean(losses[-max(1, len(losses) // 10):]))


def _when(t: Training, threshold: float = math.inf) -> str:
    """What happened to each seed: inf/NaN at a step, a gradient spike >= threshold, or nothing."""
    stories = []
    for losses, grads, stop in zip(t.loss, t.grad_norm, t.diverged_at):
        if stop is not None:
            stories.append(f"inf/NaN at step {stop}")
            continue
        peak = int(np.nanargmax(grads))
        stories.append(f"gradient norm {grads[peak]:.2g} at step {peak}, final loss {_tail_loss(losses):.3g}"
                       if grads[peak] >= threshold else "finite")
    return "finite throughout" if all(v == "finite" for v in stories) else "seeds: " + " | ".join(stories)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def _final_loss(t: Training) -> float:
    """Median over seeds of the mean loss over the last 10% of steps (inf for a seed that diverged)."""
    return _median([_tail_loss(l) if d is None else math.inf for l, d in zip(t.loss, t.diverged_at)])


def check_claims(result: Result) -> list[Claim]:
    cfg, claims = result.config, []
    lo, hi = min(cfg.input_scales), max(cfg.input_scales)
    raw, std = find(result, "none", "none", hi), find(result, "none", "none", lo)
    if raw is not None and std is not None and hi > lo:
        std_trains = all(d is None for d in std.diverged_at) and all(_tail_loss(l) < l[0] for l in std.loss)
        claims.append(Claim(
            "raw_inputs_diverge",
            f"Inputs left unnormalised (x {hi:g}) make a deep plain net's loss and gradients reach inf/NaN at a "
            "learning rate that trains it on standardised inputs.",
            bool(std_trains and all(d is not None for d in raw.diverged_at)),
            f"plain, {cfg.depth} blocks, SGD lr {cfg.lr:g}: inputs x {hi:g}: {_when(raw)} (first gradient norm "
            f"{_median([g[0] for g in raw.grad_norm]):.3g}); inputs x {lo:g}: {_when(std)}, loss "
            f"{_median([l[0] for l in std.loss]):.3g} -> {_final_loss(std):.3g}",
            f"held if every seed at input scale {hi:g} hits a non-finite loss or gradient and every seed at scale "
            f"{lo:g} stays finite with its final loss below its first"))
    unnormed = [t for t in result.training if t.net.skip == "residual" and t.net.norm == "none"]
    res_raw = [t for t in unnormed if t.input_scale == hi]
    if res_raw:
        at_lo = {t.net.label: t for t in unnormed if t.input_scale == lo and hi > lo}
        claims.append(Claim(
            "skips_alone_do_not_help",
            "Skip connections alone do not protect against unnormalised inputs: residual nets without "
            "normalisation blow up as well.",
            all(d is not None for t in res_raw for d in blowup_steps(t, cfg.blowup_grad)),
            "; ".join(f"{t.net.label}, inputs x {hi:g}: {_when(t, cfg.blowup_grad)}"
                      + (f" (inputs x {lo:g}: {_when(at_lo[t.net.label], cfg.blowup_grad)})"
                         if t.net.label in at_lo else "") for t in res_raw),
            f"held if every seed of every residual net without normalisation at input scale {hi:g} blows up: a "
            f"non-finite loss or gradient, or a gradient norm >= {cfg.blowup_grad:g}"))
    bn = [t for t in result.training if t.net.norm == "batch"]
    if bn:
        blown = [f"{t.net.label} x {t.input_scale:g}" for t in bn
                 if any(d is not None for d in blowup_steps(t, cfg.blowup_grad))]
        claims.append(Claim(
            "batchnorm_absorbs_input_scale",
            "With batch norm in the net the input scale stops mattering: plain and residual BN nets train without "
            "inf/NaN at every input scale.",
            not blown,
            "; ".join(f"{t.net.label} x {t.input_scale:g}: final loss {_final_loss(t):.3g}" for t in bn)
            + (f"; non-finite: {', '.join(blown)}" if blown else ""),
            f"held if no seed of any batch-norm net, at any input scale, hits a non-finite loss or gradient or a "
            f"gradient norm >= {cfg.blowup_grad:g}"))

    plain_bn = [r for r in result.init if r.skip == "none" and r.norm == "batch"]
    if plain_bn:
        rows = [f"{_name(r)}: first/last block {_median(r.ratio):.3g}, x{_median(r.growth):.3f} per block"
                for r in plain_bn]
        claims.append(Claim(
            "common_bn_fixes_exploding",
            "Common explanation (many tutorials): batch norm with ReLU fixes exploding gradients, so a deep plain "
            "BN+ReLU net starts with well-scaled gradients (first and last layer within 10x of each other).",
            all(0.1 <= _median(r.ratio) <= 10 for r in plain_bn),
            "; ".join(rows) + f" (mean-field prediction for ReLU + BN: x{MEAN_FIELD_GROWTH:.3f} per layer, Yang et "
            "al. 2019)",
            "held if the median over seeds of first-block / last-block weight-gradient norm is in [0.1, 10] for "
            "every plain BN+ReLU net at initialisation"))
    res_bn = [r for r in result.init if r.skip == "residual" and r.norm == "batch"]
    if res_bn:
        claims.append(Claim(
            "residual_twin_bounded",
            "The residual twins (batch norm inside the branch, identity skip) keep the first block's gradient "
            "within 10x of the last block's.",
            all(0.1 <= _median(r.ratio) <= 10 for r in res_bn),
            "; ".join(f"{_name(r)}: first/last block {_median(r.ratio):.3g} (seeds {min(r.ratio):.3g}-"
                      f"{max(r.ratio):.3g})" for r in res_bn),
            "held if the median over seeds of first-block / last-block weight-gradient norm is in [0.1, 10] for "
            "every residual BN net"))
    return claims


def _name(r: InitGradients) -> str:
    return f"{r.model} ({r.blocks} blocks)" if r.family == "cnn" else f"{r.label} MLP ({r.blocks} blocks)"


def make_tables(result: Result) -> list[Table]:
    cfg = result.config
    scales = sorted(cfg.input_scales)
    rows = []
    for net in cfg.nets:
        cells = [net.label]
        for s in scales:
            t = find(result, net.skip, net.norm, s, net.branch_scale)
            blown = t is not None and any(d is not None for d in blowup_steps(t, cfg.blowup_grad))
            cells.append("–" if t is None else _when(t, cfg.blowup_grad) if blown else f"{_final_loss(t):.3g}")
        rows.append(cells)
    tables = [Table(["net", *(f"inputs x {s:g}" for s in scales)], rows,
                    f"Training {cfg.depth}-block MLPs for {cfg.steps} SGD steps (lr {cfg.lr:g}, momentum "
                    f"{cfg.momentum:g}): final loss (median over seeds, mean of the last 10% of steps), or, where a "
                    f"seed blew up (inf/NaN, or a gradient norm >= {cfg.blowup_grad:g}), what each seed did.")]
    if result.init:
        tables.append(Table(
            ["net", "blocks", "first/last block", "growth per block toward input", "seeds' first/last"],
            [[_name(r), r.blocks, _median(r.ratio), _median(r.growth),
              ", ".join(f"{v:.3g}" for v in r.ratio)] for r in result.init],
            f"Weight-gradient norms at initialisation (one backward pass, batch statistics; MLP batch "
            f"{cfg.init_batch}, CNN batch {cfg.cnn_batch}); mean-field rate for plain ReLU + BN: "
            f"{MEAN_FIELD_GROWTH:.3f} per layer."))
    return tables


def make_notes(result: Result) -> list[str]:
    cfg, notes = result.config, []
    lo = min(cfg.input_scales)
    for t in result.training:
        if t.input_scale == lo and any(d is not None for d in blowup_steps(t, cfg.blowup_grad)):
            why = (" Without normalisation or branch scaling its forward signal grows with every block at "
                   "initialisation (see the signal experiment)." if t.net.skip == "residual" and t.net.norm == "none"
                   and t.net.branch_scale == "1" else "")
            notes.append(f"{t.net.label} blew up even on inputs x {lo:g}: {_when(t, cfg.blowup_grad)}.{why}")
    bn = {t.net.skip: t for t in result.training if t.net.norm == "batch" and t.input_scale == lo}
    if set(bn) == {"none", "residual"}:
        notes.append(f"With batch norm, after {cfg.steps} steps on inputs x {lo:g} the plain net's loss is "
                     f"{_final_loss(bn['none']):.3g} and the residual net's {_final_loss(bn['residual']):.3g} "
                     f"(chance: ln {cfg.classes} = {math.log(cfg.classes):.3g}).")
    claim = next((c for c in result.claims if c.key == "common_bn_fixes_exploding"), None)
    if claim is None:
        return notes
    plain_bn = [r for r in result.init if r.skip == "none" and r.norm == "batch"]
    res = {r.family: r for r in result.init if r.skip == "residual" and r.norm == "batch"}
    twin = "; ".join(f"residual twin {_name(res[r.family])}: {_median(res[r.family].ratio):.3g}"
                     for r in plain_bn if r.family in res)
    numbers = ", ".join(f"{_name(r)} first/last block = {_median(r.ratio):.3g}" for r in plain_bn)
    if claim.held:
        return [f"In this setting our numbers agree with the common explanation ({numbers}); Yang et al. 2019 "
                "predict growth for deeper plain BN nets, so try a larger init_depth."] + notes
    bounded = next((c.held for c in result.claims if c.key == "residual_twin_bounded"), False)
    return [f"Our measurement contradicts the common explanation that batch norm with ReLU fixes exploding "
            f"gradients: at initialisation a deep plain BN+ReLU net's gradient grows toward the input ({numbers}"
            + (f"; {twin}" if twin else "") + "). This is what Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz "
            "prove (2019, \"A Mean Field Theory of Batch Normalization\", ICLR, arXiv:1902.08129): batch norm "
            "keeps the forward activations normalised, but in a plain net it makes the gradients explode."
            + (" What keeps them bounded here is the identity skip, not the normalisation." if bounded else "")] \
        + notes


SPEC = register_experiment(ExperimentSpec(
    name="exploding",
    title="Exploding gradients: raw inputs, and batch norm at initialisation",
    question="What drives a deep net's gradients to inf/NaN, and what do input normalisation, batch norm and skips "
             "change?  Does batch norm + ReLU really fix exploding gradients?",
    claim="Unnormalised inputs blow a deep net's training up to inf/NaN, with or without skips; batch norm absorbs "
          "the input scale.  But batch norm does not fix exploding gradients at initialisation: in a deep plain "
          "BN+ReLU net they grow toward the input, and the residual twin is what keeps them bounded.",
    citation="LeCun et al. 1998 (Efficient BackProp); Yang et al. 2019, arXiv:1902.08129 (ICLR); "
             "He et al. 2016, arXiv:1603.05027",
    config_cls=Config, result_cls=Result, run=run, order=12,
))
