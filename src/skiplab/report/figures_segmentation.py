"""Figures of the segmentation experiment (``unet_skips``): predicted masks side by side, error against stroke
width, and the long-skip lesion."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from skiplab.report.figures import OKABE_ITO, figure

NET_STYLE = {  # colour, line style, marker
    "U-Net": (OKABE_ITO["blue"], "-", "s"),
    "additive": (OKABE_ITO["green"], "--", "^"),
    "plain twin": (OKABE_ITO["vermillion"], "-", "o"),
}
# mask panels: background black, correct stroke white, false positive orange, missed stroke sky blue
HIT, FALSE_POS, MISS = (1.0, 1.0, 1.0), (0.902, 0.624, 0.0), (0.337, 0.706, 0.914)


def _overlay(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3): the prediction's foreground against the target's (see the colours above)."""
    p, t = pred > 0, target > 0
    rgb = np.zeros((*pred.shape, 3))
    rgb[p & t] = HIT
    rgb[p & ~t] = FALSE_POS
    rgb[~p & t] = MISS
    return rgb


@figure("unet_skips", "masks",
        "Test images from the thinnest to the thickest strokes (rows): the input, the target mask, and each net's "
        "prediction (first seed) — white: stroke found, orange: false stroke, blue: stroke missed.", dpi=90)
def unet_masks(result: Any) -> Figure | None:
    from skiplab.experiments.unet_skips import decode_image, decode_mask

    ex = result.examples
    labels = [lab for lab in ("U-Net", "additive", "plain twin") if lab in ex.preds]
    if not ex.indices or not labels:
        return None
    s = ex.size
    rows, cols = len(ex.indices), 2 + len(labels)
    fig = Figure(figsize=(1.45 * cols + 0.3, 1.45 * rows + 0.9), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols))
    for i in range(rows):
        target = np.asarray(decode_mask(ex.targets[i], s))
        panels = [(np.asarray(decode_image(ex.inputs[i], s)), "input", "gray"), (target > 0, "target", "gray")]
        panels += [(_overlay(np.asarray(decode_mask(ex.preds[lab][i], s)), target), lab, None) for lab in labels]
        for j, (img, title, cmap) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, cmap=cmap, interpolation="nearest", vmin=0, vmax=255 if j == 0 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(title, fontsize=10)
        axes[i, 0].set_ylabel(f"width {ex.widths[i]:.1f}", fontsize=9)
    fig.legend(handles=[Patch(color=HIT, label="stroke found", ec="k"), Patch(color=FALSE_POS, label="false stroke"),
                        Patch(color=MISS, label="stroke missed")], loc="outside lower center", ncols=3, fontsize=9)
    return fig


@figure("unet_skips", "width",
        "Error (1 - foreground IoU, left) and boundary F1 (right) on test images binned by the width of their target "
        "strokes; mean over seeds, bars: min-max.")
def unet_width(result: Any) -> Figure | None:
    from skiplab.experiments.unet_skips import runs_of

    edges = result.width_edges
    if len(edges) < 2:
        return None
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for label, (color, ls, marker) in NET_STYLE.items():
        runs = runs_of(result, label)
        if not runs:
            continue
        for ax, attr, scale in ((axes[0], "fg_error_by_width", 100), (axes[1], "boundary_f1_by_width", 100)):
            vals = np.array([getattr(r, attr) for r in runs], dtype=float) * scale  # (seeds, bins)
            m = np.nanmean(vals, 0)
            ax.errorbar(centres, m, yerr=[m - np.nanmin(vals, 0), np.nanmax(vals, 0) - m], color=color, ls=ls,
                        marker=marker, capsize=3, label=label)
    axes[0].set_ylabel("error: 1 - foreground IoU (%)")
    axes[1].set_ylabel(f"boundary F1 at {result.config.tolerance} px (%)")
    for ax in axes:
        ax.set_xlabel("stroke width (pixels; bin centre)")
    axes[0].set_ylim(0, None)
    axes[0].legend(loc="best")
    return fig


@figure("unet_skips", "lesion",
        "Each long skip cut in turn in the trained nets (bridge replaced by zeros): change in boundary F1 (left) "
        "and mean IoU (right) against the intact net, by resolution level; mean over seeds.")
def unet_lesion(result: Any) -> Figure | None:
    from skiplab.experiments.unet_skips import _resolution, _tol_index, runs_of

    depth, tol = result.config.depth, _tol_index(result.config)
    nets = [(lab, runs_of(result, lab)) for lab in ("U-Net", "additive")]
    nets = [(lab, rs) for lab, rs in nets if rs and all(len(r.lesion_miou) == depth for r in rs)]
    if not nets or tol is None:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    x = np.arange(depth)
    width = 0.8 / len(nets)
    for k, (label, rs) in enumerate(nets):
        color = NET_STYLE[label][0]
        bf1 = [np.mean([r.lesion_boundary_f1[lv] - r.boundary_f1[tol] for r in rs]) * 100 for lv in range(depth)]
        miou = [np.mean([r.lesion_miou[lv] - r.miou for r in rs]) * 100 for lv in range(depth)]
        for ax, vals in ((axes[0], bf1), (axes[1], miou)):
            ax.bar(x + (k - (len(nets) - 1) / 2) * width, vals, width, color=color, label=label)
    for ax, what in ((axes[0], f"boundary F1 ({result.config.tolerance} px)"), (axes[1], "mean IoU")):
        ax.set_xticks(x, [f"{lv}\n{_resolution(result, lv)}" for lv in range(depth)])
        ax.set_xlabel("long skip cut (level, resolution)")
        ax.set_ylabel(f"change in {what} (points)")
        ax.axhline(0, color="k", lw=0.8)
    axes[0].legend(loc="best")
    if not all(math.isfinite(v) for v in axes[0].get_ylim()):
        return None
    return fig
