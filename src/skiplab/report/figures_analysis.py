"""Figures of the part-2 analyses: lesion study, loss landscapes, feature maps.  Same rules as
:mod:`skiplab.report.figures` (Result -> Figure, no I/O, no pyplot); imported at the end of that module, so
its registrations happen whenever the figures are looked up."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from skiplab.report.figures import OKABE_ITO, SKIP_NAME, SKIP_STYLE, _band, figure

PREFIX = {"residual": "resnet", "none": "plain"}


def _label(skip: str, depth: int) -> str:
    return f"{PREFIX.get(skip, skip)}{depth}"


# ------------------------------------------------------------------------------------------------ lesion

@figure("lesion", "single_block",
        "Test error after deleting one block at test time (first seed), residual net (branch removed, skip kept) "
        "and plain twin (layer removed; × marks blocks that change shape and cannot be removed).  Shaded: "
        "downsampling blocks.  Dashed: intact error; dotted: chance.")
def lesion_single(result: Any) -> Figure | None:
    nets = [n for n in result.nets if n.seed == result.nets[0].seed]
    if not nets:
        return None
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax = fig.subplots()
    n_blocks = len(nets[0].single)
    idx = np.arange(1, n_blocks + 1)
    for i, d in enumerate(nets[0].downsampling):
        if d:
            ax.axvspan(idx[i] - 0.5, idx[i] + 0.5, color="0.85", lw=0)
    width = 0.8 / len(nets)
    for j, n in enumerate(nets):
        color = SKIP_STYLE[n.skip][0]
        err = 100 * np.asarray(n.single, dtype=float)
        pos = idx - 0.4 + width * (j + 0.5)
        ax.bar(pos, np.nan_to_num(err), width, color=color, label=_label(n.skip, result.config.depth))
        bad = ~np.isfinite(err)
        ax.plot(pos[bad], np.zeros(bad.sum()) + 1, "x", color=color, ms=7, mew=2)
        ax.axhline(100 * n.base_error, color=color, ls="--", lw=1.2)
    ax.axhline(100 * nets[0].chance_error, color="0.3", ls=":", lw=1.2, label="chance")
    ax.set_xlim(0.4, n_blocks + 0.6)
    ax.set_xticks(idx if n_blocks <= 30 else idx[::3])
    ax.set_xlabel("deleted block (input side → output side)")
    ax.set_ylabel("test error %")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right")
    fig.suptitle("Deleting single blocks (Veit et al. 2016, Fig. 3/5)", x=0.02, ha="left")
    return fig


@figure("lesion", "random_blocks",
        "Test error after deleting k blocks chosen at random: mean over draws and seeds as a line (what the claim "
        "tests), band min–max over all draws; residual net vs plain twin.")
def lesion_random(result: Any) -> Figure | None:
    if not result.nets:
        return None
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    for skip in ("residual", "none"):
        nets = [n for n in result.nets if n.skip == skip]
        if not nets:
            continue
        color, ls, marker = SKIP_STYLE[skip]
        ks = [0] + list(nets[0].ks)
        draws = [[[100 * n.base_error]] + [[100 * v for v in r] for r in n.random] for n in nets]
        per_k = [np.concatenate([np.asarray(d[j]) for d in draws]) for j in range(len(ks))]
        ax.plot(ks, [v.mean() for v in per_k], color=color, ls=ls, marker=marker, ms=4,
                label=_label(skip, result.config.depth))
        ax.fill_between(ks, [v.min() for v in per_k], [v.max() for v in per_k], color=color, alpha=0.18, lw=0)
    ax.axhline(100 * result.nets[0].chance_error, color="0.3", ls=":", lw=1.2, label="chance")
    ax.set_xlabel("blocks deleted (k)")
    ax.set_ylabel("test error %")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    fig.suptitle("Deleting many blocks at random (Veit et al. Fig. 6a)", x=0.02, ha="left")
    return fig


@figure("lesion", "path_lengths",
        "Left: how many of the 2ⁿ paths through the residual net have each length (binomial C(n,k)/2ⁿ).  Right: "
        "the gradient magnitude reaching the first block along one path of length k (log), and the share of the "
        "total gradient that all paths of length k carry (Veit et al. Fig. 6).")
def lesion_paths(result: Any) -> Figure | None:
    from skiplab.analysis.lesion import effective_path_contribution, path_length_distribution

    nets = [n for n in result.nets if n.skip == "residual" and n.path_norms]
    if not nets:
        return None
    n_blocks = len(nets[0].path_norms) - 1
    k = np.arange(n_blocks + 1)
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    ax.bar(k, path_length_distribution(n_blocks), color=OKABE_ITO["sky"], label="all paths")
    contrib = np.asarray([effective_path_contribution(n.path_norms) for n in nets])
    ax.plot(k, contrib.mean(0), color=OKABE_ITO["vermillion"], marker="o", ms=4, label="share of the gradient")
    ax.set_xlabel("path length k (blocks whose branch the path goes through)")
    ax.set_ylabel("fraction")
    ax.set_title(f"Paths through {n_blocks} residual blocks")
    ax.legend(loc="upper right")
    norms = np.asarray([n.path_norms for n in nets], dtype=float)
    norms = np.where(norms > 0, norms, np.nan)
    _band(bx, k, norms, color=OKABE_ITO["blue"], marker="s", label="gradient norm per path")
    bx.set_yscale("log")
    bx.set_xlabel("path length k")
    bx.set_ylabel("gradient norm at the first block (log)")
    bx.set_title("Longer paths carry exponentially less gradient")
    fig.suptitle("Residual nets as ensembles of paths", x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------ landscape

LOSS_LEVELS = np.arange(0.1, 10.0, 0.5)  # Li et al.'s contour levels (vmin 0.1, vmax 10, step 0.5)


def _first_pair(result: Any) -> list[Any]:
    seed = result.nets[0].seed
    return sorted((n for n in result.nets if n.seed == seed), key=lambda n: n.skip != "residual")


@figure("landscape", "contours",
        "Training-loss contours around each trained net along two filter-normalised random directions (first seed). "
        "Colour: log₁₀ loss; lines: Li et al.'s levels 0.1, 0.6, …, 9.6.")
def landscape_contours(result: Any) -> Figure | None:
    if not result.nets:
        return None
    nets = _first_pair(result)
    fig = Figure(figsize=(5.6 * len(nets) + 0.8, 5.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(nets)))
    lo = math.log10(max(min(float(np.nanmin(n.loss)) for n in nets), 1e-4))
    hi = math.log10(max(max(float(np.nanmax(n.loss)) for n in nets), 1e-4))
    levels = MaxNLocator(24).tick_values(lo, max(hi, lo + 0.1))  # shared, round numbers
    image = None
    for ax, n in zip(axes, nets):
        a, b = np.meshgrid(n.xs, n.ys)
        z = np.asarray(n.loss, dtype=float)
        image = ax.contourf(a, b, np.log10(np.maximum(z, 1e-4)), levels=levels, cmap="viridis")
        ax.contour(a, b, z, levels=LOSS_LEVELS, colors="white", linewidths=0.7, alpha=0.8)
        ax.plot([0], [0], "+", color=OKABE_ITO["vermillion"], ms=10, mew=2)
        ax.set_aspect("equal")
        ax.set_title(_label(n.skip, result.config.depth))
        ax.set_xlabel("δ")
        ax.set_ylabel("η")
        ax.grid(False)
    fig.colorbar(image, ax=list(axes), shrink=0.85, label="log₁₀ training loss")
    fig.suptitle("Loss landscape, 2-D (Li et al. 2018, Fig. 5)", x=0.02, ha="left")
    return fig


@figure("landscape", "surfaces_3d",
        "The same surfaces in 3-D (loss clipped at 10 as in Li et al.).")
def landscape_3d(result: Any) -> Figure | None:
    if not result.nets:
        return None
    nets = _first_pair(result)
    fig = Figure(figsize=(5.8 * len(nets), 5.0), layout="constrained")
    for i, n in enumerate(nets):
        ax = fig.add_subplot(1, len(nets), i + 1, projection="3d")
        a, b = np.meshgrid(n.xs, n.ys)
        z = np.minimum(np.asarray(n.loss, dtype=float), 10.0)
        ax.plot_surface(a, b, z, cmap="viridis", linewidth=0, antialiased=True, rstride=1, cstride=1)
        ax.set_title(_label(n.skip, result.config.depth))
        ax.set_xlabel("δ")
        ax.set_ylabel("η")
        ax.set_zlabel("loss")
        ax.view_init(elev=35, azim=-60)
    fig.suptitle("Loss landscape, 3-D", x=0.02, ha="left")
    return fig


@figure("landscape", "slice_1d",
        "1-D slice along the first direction δ: training loss (log, left) and accuracy (right); one line per seed.")
def landscape_1d(result: Any) -> Figure | None:
    if not result.nets:
        return None
    fig = Figure(figsize=(12, 4.4), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    labelled = set()
    for n in result.nets:
        color, ls, _ = SKIP_STYLE[n.skip]
        label = None if n.skip in labelled else _label(n.skip, result.config.depth)
        labelled.add(n.skip)
        ax.plot(n.line_xs, np.maximum(n.line_loss, 1e-6), color=color, ls=ls, label=label)
        bx.plot(n.line_xs, 100 * np.asarray(n.line_acc), color=color, ls=ls, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("α (θ + α δ)")
    ax.set_ylabel("training loss (log)")
    bx.set_xlabel("α")
    bx.set_ylabel("training accuracy %")
    ax.legend(loc="upper center")
    fig.suptitle("Loss along one filter-normalised direction", x=0.02, ha="left")
    return fig


@figure("landscape", "hessian_ratio",
        "|λmin/λmax| of the full Hessian at the sampled grid points (first seed; Lanczos estimates): 0 where "
        "the loss curves upward in every direction, larger where negative curvature is strong (Li et al. Fig. 6).")
def landscape_hessian(result: Any) -> Figure | None:
    nets = [n for n in _first_pair(result)] if result.nets else []
    nets = [n for n in nets if n.lambda_min]
    if not nets:
        return None
    fig = Figure(figsize=(5.0 * len(nets) + 0.8, 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(nets)))
    vmax = max(float(np.max(n.ratio)) for n in nets) or 1.0
    image = None
    for ax, n in zip(axes, nets):
        pts = np.asarray(n.hessian_points)
        side = int(round(math.sqrt(len(pts))))
        grid = np.asarray(n.ratio).reshape(side, side)
        half = (pts[:, 0].max() - pts[:, 0].min()) / max(side - 1, 1) / 2  # cells centred on the points
        ext = [pts[:, 0].min() - half, pts[:, 0].max() + half, pts[:, 1].min() - half, pts[:, 1].max() + half]
        image = ax.imshow(grid, origin="lower", extent=ext, cmap="magma", vmin=0, vmax=vmax, aspect="equal")
        for (a, b), r in zip(pts, n.ratio):
            ax.text(a, b, f"{r:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if r < 0.6 * vmax else "black")
        ax.set_title(_label(n.skip, result.config.depth))
        ax.set_xlabel("δ")
        ax.set_ylabel("η")
        ax.grid(False)
    fig.colorbar(image, ax=list(axes), shrink=0.85, label="|λmin / λmax|")
    fig.suptitle("Non-convexity from the Hessian", x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------ features

@figure("features", "feature_maps",
        "Feature maps of the residual net (first seed) for test digits: the input, then the first channels after "
        "the stem and after each stage (each map scaled to its own range; bright = strong).  Early layers respond "
        "to strokes and edges at full resolution; later ones to coarser, more abstract parts.", dpi=90)
def features_maps(result: Any) -> Figure | None:
    nets = [n for n in result.nets if n.skip == "residual"]
    if not nets:
        return None
    n = nets[0]
    n_img, n_units = len(n.maps), len(n.units)
    n_ch = len(n.maps[0][0])
    fig = Figure(figsize=(1.15 * (n_ch + 1) + 0.4, 1.25 * n_img * n_units + 0.6), layout="constrained")
    axes = fig.subplots(n_img * n_units, n_ch + 1, squeeze=False)
    for i in range(n_img):
        for u in range(n_units):
            row = axes[i * n_units + u]
            if u == 0:
                img = np.asarray(result.images[i], dtype=float)
                row[0].imshow(img[0] if img.shape[0] == 1 else np.moveaxis(_unit_range(img), 0, -1),
                              cmap="gray" if img.shape[0] == 1 else None)
                row[0].set_title(f"label {result.labels[i]}, pred {n.predictions[i]}", fontsize=8)
            else:
                row[0].imshow(np.asarray(n.mean_maps[i][u], dtype=float), cmap="gray")
                row[0].set_title("channel mean", fontsize=8)
            for c in range(n_ch):
                row[c + 1].imshow(np.asarray(n.maps[i][u][c], dtype=float), cmap="inferno")
            row[1].set_title(n.units[u], fontsize=8, loc="left")
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
    fig.suptitle(f"Inside {_label('residual', result.config.depth)}: input, stem, stages", x=0.02, ha="left")
    return fig


@figure("features", "branch_maps",
        "What each block adds, for the first shown digit (first seed): per block, the channel mean of what enters "
        "it (x), of what its branch computes (F(x), before the merge) and of what leaves it.  In the residual net "
        "the output is x + F(x): the digit stays visible through every block and F(x) is a correction; in the "
        "plain twin the output is F(x) alone and each block redraws the picture.", dpi=80)
def features_branch_maps(result: Any) -> Figure | None:
    nets = {n.skip: n for n in reversed(result.nets) if n.block_views}
    if not nets:
        return None
    skips = [s for s in ("residual", "none") if s in nets]
    k = max(len(nets[s].block_views) for s in skips)
    fig = Figure(figsize=(1.3 * 3 * len(skips) + 0.6, 1.25 * k + 0.8), layout="constrained")
    axes = fig.subplots(k, 3 * len(skips), squeeze=False)
    for j, skip in enumerate(skips):
        for b in range(k):
            for c, name in enumerate(("x", "F(x)", "out")):
                ax = axes[b][3 * j + c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if b < len(nets[skip].block_views):
                    m = np.asarray(nets[skip].block_views[b][c], dtype=float)
                    if name == "F(x)":  # signed: white = adds nothing, red / blue = adds / removes
                        lim = float(np.abs(m).max()) or 1.0
                        ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
                    else:
                        ax.imshow(m, cmap="gray")
                if b == 0:
                    ax.set_title(f"{_label(skip, result.config.depth)}\n{name}" if c == 0 else name, fontsize=8)
                if c == 0 and j == 0:
                    ax.set_ylabel(f"block {b + 1}", fontsize=8)
    fig.suptitle("Residual branches F(x) beside their inputs and outputs", x=0.02, ha="left")
    return fig


@figure("features", "first_filters",
        "The first layer's 3x3 filters after training (first seed), residual net above, plain twin below; each "
        "filter scaled to its own range, input channels averaged.", dpi=90)
def features_filters(result: Any) -> Figure | None:
    nets = [n for skip in ("residual", "none") for n in result.nets[:2] if n.skip == skip and n.filters]
    if not nets:
        return None
    n_f = len(nets[0].filters)
    fig = Figure(figsize=(0.55 * n_f + 1.2, 0.75 * len(nets) + 0.6), layout="constrained")
    axes = fig.subplots(len(nets), n_f, squeeze=False)
    for r, n in enumerate(nets):
        for f in range(n_f):
            ax = axes[r][f]
            ax.imshow(_unit_range(np.asarray(n.filters[f], dtype=float).mean(0)), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes[r][0].set_ylabel(_label(n.skip, result.config.depth), fontsize=7)
    fig.suptitle("First-layer filters", x=0.02, ha="left")
    return fig


def _unit_range(img: np.ndarray) -> np.ndarray:
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo) if hi > lo else img * 0


@figure("features", "block_changes",
        "How much each block changes what it receives, from the input side to the output side (median over "
        "seeds; band min–max).  Left: ‖out − in‖ / ‖in‖; middle: cosine between input and output; right: "
        "standard deviation of the branch output before the addition (He et al. 2015, Fig. 7).  Shaded: "
        "downsampling blocks.")
def features_changes(result: Any) -> Figure | None:
    if not result.nets:
        return None
    fig = Figure(figsize=(14, 4.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for skip in ("residual", "none"):
        nets = [n for n in result.nets if n.skip == skip]
        if not nets:
            continue
        color, ls, marker = SKIP_STYLE[skip]
        k = np.arange(1, len(nets[0].relative_update) + 1)
        label = _label(skip, result.config.depth)
        for ax, attr in zip(axes, ("relative_update", "cosine", "response_std")):
            _band(ax, k, [getattr(n, attr) for n in nets], color=color, ls=ls, marker=marker, label=label)
    for i, d in enumerate(result.nets[0].downsampling):
        if d:
            for ax in axes:
                ax.axvspan(i + 0.5, i + 1.5, color="0.88", lw=0)
    axes[0].set_ylim(bottom=0)
    titles = ("relative change ‖out − in‖ / ‖in‖", "cosine(in, out)", "branch response std")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("block")
        ax.set_title(title)
    axes[0].legend(loc="best")
    fig.suptitle(f"Incremental updates ({SKIP_NAME['residual']}) vs rewrites ({SKIP_NAME['none']})", x=0.02, ha="left")
    return fig
