"""Figures of the training comparisons: degradation, the identity construction, skip variants, stochastic depth
and unit orderings.  Each takes the experiment's Result and returns a Figure (no I/O); registered with
:func:`skiplab.report.figures.figure`.  Curves show the median over seeds with a min-max band.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skiplab.experiments.training_runs import by_label
from skiplab.report.figures import CYCLE, OKABE_ITO, SKIP_STYLE, _band, figure

MERGE_STYLE = {"add": SKIP_STYLE["residual"], "concat": (OKABE_ITO["orange"], "-.", "D"),
               "gate": SKIP_STYLE["highway"]}


def _curve(ax, runs: Sequence[Any], x: str, y: str, *, color: str, ls: str = "-", marker: str | None = None,
           label: str | None = None, scale: float = 100.0, lw: float | None = None) -> None:
    """Median over the seeds' runs of ``run.<y>`` against ``run.<x>`` (the same steps for every seed)."""
    runs = [r for r in runs if getattr(r, x)]
    if not runs:
        return
    n = min(len(getattr(r, x)) for r in runs)
    xs = getattr(runs[0], x)[:n]
    _band(ax, xs, [[scale * v for v in getattr(r, y)[:n]] for r in runs], color=color, ls=ls, marker=marker,
          label=label)
    if lw is not None:
        ax.lines[-1].set_linewidth(lw)


def _depth_colors(depths: Sequence[int]) -> dict[int, str]:
    return {d: CYCLE[i % len(CYCLE)] for i, d in enumerate(sorted(depths))}


def _mean(runs: Sequence[Any], attr: str) -> float:
    return float(np.mean([getattr(r, attr) for r in runs])) if runs else float("nan")


# ---------------------------------------------------------------------------------------------- degradation
@figure("degradation", "curves",
        "Training error (thin, dashed: running error over each logging window, augmented batches) and test error "
        "(bold) against iterations, plain nets (left) and ResNets (right), as in He et al. 2015 Fig. 1 and 6.")
def degradation_curves(result: Any) -> Figure | None:
    from skiplab.experiments.degradation import label

    cfg = result.config
    colors = _depth_colors(cfg.depths)
    fig = Figure(figsize=(10.5, 4.3), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, skip, title in zip(axes, ("none", "residual"), ("plain", "residual")):
        for d in sorted(cfg.depths):
            runs = by_label(result.runs, label(skip, d))
            _curve(ax, runs, "steps", "train_error", color=colors[d], ls="--", lw=1.1)
            _curve(ax, runs, "eval_steps", "test_error", color=colors[d], ls="-", marker="o", label=f"{d}-layer",
                   lw=2.2)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.set_ylim(0, None)
    axes[0].set_ylabel("error (%)")
    handles = [Line2D([], [], color=colors[d], lw=2.2, label=f"{d} layers") for d in sorted(cfg.depths)]
    handles += [Line2D([], [], color="0.3", ls="--", lw=1.1, label="training"),
                Line2D([], [], color="0.3", ls="-", marker="o", lw=2.2, label="test")]
    fig.legend(handles=handles, loc="outside right upper")
    fig.suptitle(f"Plain vs residual nets on {cfg.data}", x=0.02, ha="left")
    return fig


@figure("degradation", "final_vs_depth",
        "Final training error (eval mode, un-augmented training images; left) and test error (right) against "
        "depth.  With data=cifar10, black crosses mark He et al.'s ResNet test errors.")
def degradation_depth(result: Any) -> Figure | None:
    from skiplab.experiments.degradation import PAPER_RESNET_TEST_ERROR, label

    cfg = result.config
    depths = sorted(cfg.depths)
    fig = Figure(figsize=(9.5, 3.9), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, attr, title in zip(axes, ("final_train_error", "final_test_error"), ("training error", "test error")):
        for skip, name in (("none", "plain"), ("residual", "ResNet")):
            color, ls, marker = SKIP_STYLE[skip]
            vals = [[100 * getattr(r, attr) for r in by_label(result.runs, label(skip, d))] for d in depths]
            ax.plot(depths, [np.median(v) if v else np.nan for v in vals], color=color, ls=ls, marker=marker,
                    label=name)
            for d, v in zip(depths, vals):
                ax.scatter([d] * len(v), v, color=color, s=10, alpha=0.5)
        if attr == "final_test_error" and cfg.data == "cifar10":
            ax.scatter(depths, [PAPER_RESNET_TEST_ERROR.get(d, np.nan) for d in depths], color="black", marker="x",
                       label="He et al. ResNet")
        ax.set_xticks(depths)
        ax.set_xlabel("depth (layers)")
        ax.set_title(title)
        ax.set_ylim(0, None)
    axes[0].set_ylabel("error (%)")
    axes[1].legend(loc="best")
    return fig


# ---------------------------------------------------------------------------------------------- identity
@figure("identity", "errors",
        "Training and test error of the shallow plain net, the deeper plain net built from it (copied layers + "
        "identity blocks, not trained), and the deeper plain and residual nets trained from scratch with the same "
        "budget.  Mean over seeds.")
def identity_errors(result: Any) -> Figure | None:
    from skiplab.experiments.identity import labels

    cfg, names = result.config, labels(result.config)
    cons = result.constructions
    if not cons:
        return None
    bars = [(names["shallow"], _mean(by_label(result.runs, names["shallow"]), "final_train_error"),
             _mean(by_label(result.runs, names["shallow"]), "final_test_error"), OKABE_ITO["sky"]),
            (f"plain-{cfg.deep}\n(constructed)", _mean(cons, "train_error"), _mean(cons, "test_error"),
             OKABE_ITO["green"]),
            (names["plain"].replace(" (", "\n("), _mean(by_label(result.runs, names["plain"]), "final_train_error"),
             _mean(by_label(result.runs, names["plain"]), "final_test_error"), SKIP_STYLE["none"][0]),
            (names["residual"].replace(" (", "\n("),
             _mean(by_label(result.runs, names["residual"]), "final_train_error"),
             _mean(by_label(result.runs, names["residual"]), "final_test_error"), SKIP_STYLE["residual"][0])]
    fig = Figure(figsize=(8.6, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(bars))
    ax.bar(x - 0.2, [100 * b[1] for b in bars], 0.4, color=[b[3] for b in bars], label="training")
    ax.bar(x + 0.2, [100 * b[2] for b in bars], 0.4, color=[b[3] for b in bars], alpha=0.45, hatch="//",
           label="test")
    for xi, b in zip(x, bars):
        ax.annotate(f"{100 * b[1]:.1f}", (xi - 0.2, 100 * b[1]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, [b[0] for b in bars])
    ax.set_ylabel("error (%)")
    ax.legend(loc="upper left")
    worst = max(cons, key=lambda c: c.max_logit_diff)
    ax.set_title(f"construction check: max |Δlogit| = {worst.max_logit_diff:.1e}, "
                 f"{100 * min(c.agreement for c in cons):.1f}% identical predictions", fontsize=10)
    return fig


@figure("identity", "curves",
        "Running training error of the nets trained from scratch; the dashed green line is the training error of "
        "the constructed deep plain net — a solution the deep plain net could have found.")
def identity_curves(result: Any) -> Figure | None:
    from skiplab.experiments.identity import labels

    names = labels(result.config)
    if not result.constructions:
        return None
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = {"shallow": (OKABE_ITO["sky"], ":", None), "plain": (*SKIP_STYLE["none"][:2], None),
              "residual": (*SKIP_STYLE["residual"][:2], None)}
    for key, (color, ls, marker) in styles.items():
        _curve(ax, by_label(result.runs, names[key]), "steps", "train_error", color=color, ls=ls, marker=marker,
               label=names[key])
    ax.axhline(100 * _mean(result.constructions, "train_error"), color=OKABE_ITO["green"], ls="--",
               label=f"constructed plain-{result.config.deep}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training error (%)")
    ax.set_ylim(0, None)
    ax.legend(loc="best")
    return fig


# ---------------------------------------------------------------------------------------------- variants
@figure("variants", "curves",
        "Training error (running, left) and test error (right) against iterations for the residual (add), dense "
        "(concatenate) and highway (gate) nets.")
def variants_curves(result: Any) -> Figure | None:
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for n in result.config.nets:
        runs = by_label(result.runs, n.label)
        color, ls, marker = MERGE_STYLE[n.merge]
        params = f" ({runs[0].params:,} p.)" if runs else ""
        _curve(axes[0], runs, "steps", "train_error", color=color, ls=ls, label=f"{n.label}{params}")
        _curve(axes[1], runs, "eval_steps", "test_error", color=color, ls=ls, marker=marker)
    for ax, title in zip(axes, ("training error", "test error")):
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.set_ylim(0, None)
    axes[0].set_ylabel("error (%)")
    axes[0].legend(loc="best")
    return fig


@figure("variants", "cost",
        "Parameters, final test error and training time per epoch (median, this machine) of each net.")
def variants_cost(result: Any) -> Figure | None:
    nets = [n for n in result.config.nets if by_label(result.runs, n.label)]
    if not nets:
        return None
    fig = Figure(figsize=(10.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    colors = [MERGE_STYLE[n.merge][0] for n in nets]
    x = np.arange(len(nets))
    values = [([by_label(result.runs, n.label)[0].params / 1e3 for n in nets], "parameters (thousands)"),
              ([100 * _mean(by_label(result.runs, n.label), "final_test_error") for n in nets], "test error (%)"),
              ([_mean(by_label(result.runs, n.label), "epoch_time_s") for n in nets], "seconds per epoch")]
    for ax, (vals, title) in zip(axes, values):
        ax.bar(x, vals, color=colors)
        ax.set_xticks(x, [n.merge for n in nets])
        ax.set_title(title)
        for xi, v in zip(x, vals):
            ax.annotate(f"{v:.3g}", (xi, v), ha="center", va="bottom", fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------- stochastic depth
@figure("stochastic_depth", "curves",
        "Running training loss (left; with blocks being dropped for the stochastic net) and test error (right) "
        "against iterations, constant vs stochastic depth.")
def stochastic_curves(result: Any) -> Figure | None:
    from skiplab.experiments.stochastic_depth import labels

    names = labels(result.config)
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    styles = {"constant": (OKABE_ITO["blue"], "-", "s"), "stochastic": (OKABE_ITO["vermillion"], "--", "^")}
    for kind, (color, ls, marker) in styles.items():
        runs = by_label(result.runs, names[kind])
        _curve(axes[0], runs, "steps", "train_loss", color=color, ls=ls, label=names[kind], scale=1.0)
        _curve(axes[1], runs, "eval_steps", "test_error", color=color, ls=ls, marker=marker)
    axes[0].set_ylabel("training loss")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("test error (%)")
    axes[1].set_ylim(0, None)
    for ax in axes:
        ax.set_xlabel("iteration")
    axes[0].legend(loc="best")
    return fig


# ---------------------------------------------------------------------------------------------- orderings
@figure("orderings", "curves",
        "Running training loss (left) and test error (right) against iterations for the five unit orderings of "
        "He et al. 2016 Fig. 4.")
def orderings_curves(result: Any) -> Figure | None:
    from skiplab.experiments.orderings import NAMES

    fig = Figure(figsize=(11, 4.3), layout="constrained")
    axes = fig.subplots(1, 2)
    markers = ["o", "s", "^", "D", "v"]
    for i, o in enumerate(result.config.orderings):
        runs = by_label(result.runs, NAMES[o])
        color = CYCLE[i % len(CYCLE)]
        _curve(axes[0], runs, "steps", "train_loss", color=color, label=NAMES[o], scale=1.0)
        _curve(axes[1], runs, "eval_steps", "test_error", color=color, marker=markers[i % len(markers)])
    axes[0].set_ylabel("training loss")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("test error (%)")
    axes[1].set_ylim(0, None)
    for ax in axes:
        ax.set_xlabel("iteration")
    fig.legend(loc="outside right upper")
    fig.suptitle(f"{result.config.depth}-layer nets, {result.config.unit} units", x=0.02, ha="left")
    return fig


@figure("orderings", "final",
        "Final test error per ordering: ours (left) and He et al. 2016 Table 2 on CIFAR-10 (right).")
def orderings_final(result: Any) -> Figure | None:
    from skiplab.experiments.orderings import PAPER_TEST_ERROR

    cfg = result.config
    ords = list(cfg.orderings)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    x = np.arange(len(ords))
    colors = [CYCLE[i % len(CYCLE)] for i in range(len(ords))]
    from skiplab.experiments.orderings import NAMES

    ours = [100 * _mean(by_label(result.runs, NAMES[o]), "final_test_error") for o in ords]
    paper = [PAPER_TEST_ERROR[cfg.unit][o] for o in ords]
    tick = [NAMES[o].split(" ")[0] for o in ords]
    for ax, vals, title in ((axes[0], ours, f"ours: {cfg.depth} layers, {cfg.data}"),
                            (axes[1], paper, "He et al. 2016, CIFAR-10 " +
                             ("ResNet-110" if cfg.unit == "basic" else "ResNet-164"))):
        ax.bar(x, vals, color=colors)
        ax.set_xticks(x, tick)
        ax.set_title(title, fontsize=10)
        for xi, v in zip(x, vals):
            ax.annotate(f"{v:.2f}", (xi, v), ha="center", va="bottom", fontsize=9)
    axes[0].set_ylabel("test error (%)")
    return fig
