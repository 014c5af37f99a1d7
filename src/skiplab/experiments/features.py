"""Seeing inside: feature maps of a residual net trained on digits, layer by layer, and how early and late
blocks of the residual net and its plain twin transform what they receive.

The digits are MNIST's (IDX files; ``cifar()`` trains on the shared copy's test file split seeded 8,000 / 2,000);
the quick setting uses the embedded ``synthetic_digits``.  He et al. 2015 (arXiv:1512.03385, §4.2, Fig. 7) report that the residual
functions respond weakly — the standard deviation of each branch's output is smaller than the same layer's in
the plain net — so a residual block nudges its input, while a plain block rewrites it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from skiplab.analysis.features import block_changes, branch_views, first_layer_filters, stage_outputs
from skiplab.experiments.base import Claim, ExperimentSpec, Progress, Table, register_experiment, report_progress, \
    seed_list, torch_threads
from skiplab.experiments.lesion import QUICK_TRAINING, NetTraining, eval_tensors, model_name, trained_net


@dataclass
class Config(NetTraining):
    """A ResNet-20 and its plain twin trained on 28x28 digits (He et al.'s recipe, shortened to 5,000 steps: digits
    are learnt long before 64k).  ``n_images`` test images are shown with ``n_channels`` channels per layer;
    block statistics use ``n_stats`` test images."""

    depth: int = 20
    data: str = "mnist"
    steps: int = 5000
    crop_padding: int = 2
    flip: bool = False  # a mirrored digit is another glyph
    n_images: int = 3
    n_channels: int = 8
    n_stats: int = 500

    @classmethod
    def quick(cls) -> "Config":
        return cls(**QUICK_TRAINING, n_images=3, n_channels=8, n_stats=256)

    @classmethod
    def cifar(cls) -> "Config":
        """Real MNIST digits: the shared copy holds only the official test set, so its 10,000 digits are split by
        a fixed seed into 8,000 for training and 2,000 for testing (``resplit=2000``).  ResNet-20 and plain-20 at
        full width, 600 iterations of batch 128 (~10 epochs), one-cycle, no flips (a mirrored digit is another
        glyph), 2-pixel crops: ~3 min a net."""
        return cls(data="mnist", resplit=2000, steps=600, batch_size=128, lr=0.1, weight_decay=5e-4,
                   schedule="onecycle", crop_padding=2, flip=False, eval_points=3, n_train_eval=2000, cache=True,
                   depth=20, n_images=3, n_channels=8, n_stats=500)

    def __post_init__(self) -> None:
        self.validate_training()
        for name in ("n_images", "n_channels", "n_stats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")


@dataclass
class NetFeatures:
    """One net (one seed): feature maps for the shown images and per-block statistics."""

    skip: str
    seed: int
    test_error: float
    units: list[str]  # stem, stage1, ...
    maps: list[list[list[list[list[float]]]]]  # [image][unit][channel][H][W]: the first n_channels channels
    mean_maps: list[list[list[list[float]]]]  # [image][unit][H][W]: mean over all channels
    predictions: list[int]
    relative_update: list[float]  # per block
    cosine: list[float]
    response_std: list[float]
    downsampling: list[bool]
    train_seconds: float = 0.0
    # For the first shown image, per block: channel means of its input, of its branch's output F(x) and of its
    # output, [block][3][H][W] (the input at its own resolution); and the first layer's filters [out][in][kh][kw].
    block_views: list[list[list[list[float]]]] = field(default_factory=list)
    filters: list[list[list[list[float]]]] = field(default_factory=list)


@dataclass
class Result:
    config: Config
    images: list[list[list[list[float]]]]  # [image][C][H][W], as the net sees them (normalised)
    labels: list[int]
    nets: list[NetFeatures]
    claims: list[Claim]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0


def run(cfg: Config, progress: Progress | None = None) -> Result:
    if cfg.threads:
        with torch_threads(cfg.threads):
            return _run(cfg, progress)
    return _run(cfg, progress)


def _shown(y: torch.Tensor, n: int) -> list[int]:
    """Indices of the first test image of each of the first ``n`` distinct labels (distinct digits to look at)."""
    out, seen = [], set()
    for i, label in enumerate(y.tolist()):
        if label not in seen:
            out.append(i)
            seen.add(label)
        if len(out) == n:
            break
    return out


def _run(cfg: Config, progress: Progress | None) -> Result:
    t0 = time.perf_counter()
    seeds = seed_list(cfg.n_seeds, cfg.first_seed)
    x, y = eval_tensors(cfg, "test", cfg.n_stats)
    shown = _shown(y, cfg.n_images)
    nets, total = [], 2 * len(seeds)
    for seed in seeds:
        for skip in ("residual", "none"):
            what = f"{model_name(cfg, skip)}, seed {seed}"
            report_progress(progress, len(nets), total, f"{what}: training")
            model, seconds = trained_net(cfg, skip, seed)
            device = next(model.parameters()).device
            xd = x.to(device)
            report_progress(progress, len(nets), total, f"{what}: features")
            with torch.inference_mode():
                err = float((model.eval()(xd).argmax(1).cpu() != y).float().mean())
                preds = model(xd[shown]).argmax(1).cpu().tolist()
            outs = stage_outputs(model, xd[shown])
            # 4 decimals are plenty for a picture and keep result.json small
            maps = [[o[i, :cfg.n_channels].cpu().numpy().round(4).tolist() for _, o in outs]
                    for i in range(len(shown))]
            means = [[o[i].mean(0).cpu().numpy().round(4).tolist() for _, o in outs] for i in range(len(shown))]
            ch = block_changes(model, xd)
            views = [[v.inputs[0].mean(0).numpy().round(4).tolist(), v.branch[0].mean(0).numpy().round(4).tolist(),
                      v.outputs[0].mean(0).numpy().round(4).tolist()] for v in branch_views(model, xd[shown[:1]])]
            filters = first_layer_filters(model).cpu().numpy().round(4).tolist()
            nets.append(NetFeatures(skip, seed, err, [n for n, _ in outs], maps, means, preds, ch.relative_update,
                                    ch.cosine, ch.response_std, ch.downsampling, seconds, views, filters))
    report_progress(progress, total, total, "done")
    result = Result(cfg, x[shown].cpu().numpy().round(4).tolist(), y[shown].tolist(), nets, [], [])
    result.claims = check_claims(result)
    result.tables = make_tables(result)
    result.notes = [f"Nets: resnet{cfg.depth} and plain{cfg.depth} (width x{cfg.width:g}) trained {cfg.steps} steps "
                    f"of batch {cfg.batch_size} on {cfg.data}; statistics on {cfg.n_stats} test images.  Where a "
                    "block changes shape its input is compared after the parameter-free map of shortcut A "
                    "(subsample, zero-pad channels)."]
    result.wall_time_s = time.perf_counter() - t0
    return result


def _pairs(result: Result) -> list[tuple[NetFeatures, NetFeatures]]:
    by = {(n.seed, n.skip): n for n in result.nets}
    return [(by[(s, "residual")], by[(s, "none")]) for s in sorted({n.seed for n in result.nets})
            if (s, "residual") in by and (s, "none") in by]


def _inner(values: list[float], down: list[bool]) -> np.ndarray:
    return np.array([v for v, d in zip(values, down) if not d])


def check_claims(result: Result) -> list[Claim]:
    pairs = _pairs(result)
    if not pairs:
        return []
    resp = [(float(np.mean(r.response_std)), float(np.mean(p.response_std))) for r, p in pairs]
    upd = [(float(np.median(_inner(r.relative_update, r.downsampling))),
            float(np.median(_inner(p.relative_update, p.downsampling)))) for r, p in pairs]
    cos = [(float(np.median(_inner(r.cosine, r.downsampling))), float(np.median(_inner(p.cosine, p.downsampling))))
           for r, p in pairs]
    return [
        Claim("small_responses",
              "The residual functions respond weakly: the standard deviation of each residual branch's output "
              "(last BN, before the addition) is smaller than the same layer's in the plain net (He et al. Fig. 7).",
              all(a < 0.8 * b for a, b in resp),
              ", ".join(f"seed {r.seed}: mean response std {a:.3f} (residual) vs {b:.3f} (plain)"
                        for (r, _), (a, b) in zip(pairs, resp)),
              "held if, for every seed, the mean over blocks of the branch-output std of the residual net is below "
              "0.8 x the plain net's (clearly smaller, not a rounding-level difference)"),
        Claim("incremental_updates",
              "A residual block makes a small incremental change to what it receives (the output stays close to "
              "the input), while a plain block rewrites its input.",
              all(a < 0.5 * b and ca > cb for (a, b), (ca, cb) in zip(upd, cos)),
              ", ".join(f"seed {r.seed}: median ||out - in|| / ||in|| {a:.2f} (residual) vs {b:.2f} (plain); median "
                        f"cosine(in, out) {ca:.2f} vs {cb:.2f}" for (r, _), (a, b), (ca, cb) in zip(pairs, upd, cos)),
              "held if, for every seed, over the blocks that keep their shape, the residual net's median relative "
              "change is below half the plain net's and its median input-output cosine is higher"),
    ]


def make_tables(result: Result) -> list[Table]:
    rows = []
    for n in result.nets:
        k = len(n.relative_update)
        for i in range(k):
            rows.append([model_name(result.config, n.skip), n.seed, i + 1,
                         "yes" if n.downsampling[i] else "", n.relative_update[i], n.cosine[i], n.response_std[i]])
    early_late = []
    for n in result.nets:  # blocks grouped by stage: a stage starts at a downsampling block (or the first block)
        starts = [0] + [i for i, d in enumerate(n.downsampling) if d]
        for j, (a, b) in enumerate(zip(starts, starts[1:] + [len(n.downsampling)])):
            early_late.append([model_name(result.config, n.skip), n.seed, f"stage {j + 1}",
                               float(np.mean(n.relative_update[a:b])), float(np.mean(n.cosine[a:b])),
                               float(np.mean(n.response_std[a:b]))])
    return [
        Table(["net", "seed", "test error %"], [[model_name(result.config, n.skip), n.seed,
                                                100 * n.test_error] for n in result.nets],
              f"Test error on {result.config.n_stats} images."),
        Table(["net", "seed", "stage", "mean ||out - in|| / ||in||", "mean cos(in, out)", "mean response std"],
              early_late, "Early vs late: the block statistics averaged per stage (stage 1 sees the input side)."),
        Table(["net", "seed", "block", "downsamples", "||out - in|| / ||in||", "cos(in, out)", "branch response std"],
              rows, "Per block, from the input side (block 1) to the output side."),
    ]


SPEC = register_experiment(ExperimentSpec(
    name="features",
    title="Seeing inside: feature maps and incremental updates",
    question="What do the layers of a residual net trained on digits compute, and how much does each block change "
             "what it receives, compared with the plain twin?",
    claim="Residual blocks make small incremental updates to a representation carried along the skip path (their "
          "branch responses are smaller than a plain net's layers'), while each plain layer rewrites its input.",
    citation="He, Zhang, Ren & Sun 2015, arXiv:1512.03385 (§4.2, Fig. 7)",
    config_cls=Config, result_cls=Result, run=run, order=80,
))
