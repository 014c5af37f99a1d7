"""Figures of the small studies (two_layer, identity_fit, exploding) and the sigmoid-slope figure of vanishing.
Same contract as :mod:`skiplab.report.figures` (Result -> Figure, no I/O, no pyplot); imported at the end of
that module, so registering happens on import."""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skiplab.analysis.derivatives import derivative, sigmoid
from skiplab.report.figures import CYCLE, OKABE_ITO, SKIP_STYLE, _band, _positive, figure

PLAIN, RESIDUAL = SKIP_STYLE["none"][0], SKIP_STYLE["residual"][0]


# ------------------------------------------------------------------------------------------------ vanishing
@figure("vanishing", "sigmoid_slope",
        "Left: the logistic sigmoid and its derivative, which peaks at 1/4.  Right: the measured factor by which "
        "each block of the deepest plain sigmoid MLP multiplies the back-propagated gradient (median over seeds, "
        "band min-max), beside 1/4 and the RMS of sigmoid' over each block's input predicted from its mean and std.")
def vanishing_sigmoid(result: Any) -> Figure | None:
    from skiplab.experiments.vanishing import sigmoid_layer_factors

    depth = max(result.config.depths)
    run = next((r for r in result.runs if r.family == "mlp" and r.depth == depth
                and (r.act, r.norm, r.skip) == ("sigmoid", "none", "none")), None)
    if run is None:
        return None
    measured, predicted = sigmoid_layer_factors(run)
    fig = Figure(figsize=(11.5, 4.2), layout="constrained")
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.5]})
    z = np.linspace(-6, 6, 400)
    ax.plot(z, sigmoid(z), color=OKABE_ITO["blue"], label="σ(z)")
    ax.plot(z, derivative("sigmoid", z), color=OKABE_ITO["vermillion"], label="σ'(z) = σ(1 − σ)")
    ax.axhline(0.25, color="0.3", ls="--", lw=1)
    ax.annotate("max σ' = 1/4 at z = 0", (0, 0.25), textcoords="offset points", xytext=(8, 6), fontsize=9.5)
    ax.set_xlabel("z")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="center right")
    ax.set_title("The sigmoid and its slope")
    blocks = np.arange(1, len(measured[0]) + 1)
    _band(bx, blocks, measured, color=OKABE_ITO["vermillion"], label="measured ‖∂L/∂h₍ₗ₋₁₎‖ / ‖∂L/∂hₗ‖")
    bx.plot(blocks, np.nanmedian(np.asarray(predicted, dtype=float), 0), color=OKABE_ITO["blue"], ls=":",
            label="predicted: RMS of σ' over the block's input")
    bx.axhline(0.25, color="0.3", ls="--", lw=1, label="1/4")
    med = float(np.nanmedian(np.asarray(measured, dtype=float)))
    bx.set_ylim(0, max(0.4, float(np.nanmax(measured)) * 1.05))
    bx.set_xlabel("block (input → output)")
    bx.set_ylabel("gradient factor per block")
    bx.set_title(f"Plain sigmoid MLP, {depth} blocks: median ×{med:.3f} per block")
    bx.legend(loc="lower right", fontsize=9)
    return fig


# ------------------------------------------------------------------------------------------------ two_layer
@figure("two_layer", "gradient_routes",
        "y = W2 relu(W1 x) with (blue) and without (vermillion) the skip, with W2 scaled from tiny to large "
        "(median over seeds).  Left: the input gradient; the dotted line is dL/dy, which the skip hands to x "
        "unchanged.  Middle: the layer before the block (W0) and the branch's own first layer (W1).  Right: the "
        "two routes of dL/dx relative to dL/dy.")
def two_layer_routes(result: Any) -> Figure | None:
    from skiplab.experiments.two_layer import curve

    plain, residual = curve(result, "none"), curve(result, "residual")
    if not plain or not residual:
        return None
    med = lambda pts, attr: [float(np.median(getattr(p, attr))) for p in pts]  # noqa: E731
    scales = [p.scale for p in plain]
    fig = Figure(figsize=(14.5, 4.4), layout="constrained")
    ax, bx, cx = fig.subplots(1, 3)
    ax.plot(scales, med(plain, "grad_x"), color=PLAIN, marker="o", label="plain ‖∂L/∂x‖")
    ax.plot(scales, med(residual, "grad_x"), color=RESIDUAL, marker="s", label="residual ‖∂L/∂x‖")
    ax.plot(scales, med(residual, "grad_y"), color="black", ls=":", label="residual ‖∂L/∂y‖")
    ax.set_title("Input gradient")
    for name, attr, ls in (("W0 (before)", "grad_w0", "-"), ("W1 (branch)", "grad_w1", "--")):
        bx.plot(scales, _positive([med(plain, attr)])[0], color=PLAIN, ls=ls, marker="o", ms=4,
                label=f"plain ‖∂L/∂{name}‖")
        bx.plot(scales, _positive([med(residual, attr)])[0], color=RESIDUAL, ls=ls, marker="s", ms=4,
                label=f"residual ‖∂L/∂{name}‖")
    bx.set_title("Weight gradients")
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("scale of W2 (× He init)")
        a.legend(loc="upper left", fontsize=8.5)
    ax.set_ylabel("norm (log)")

    cases = [(f"W2 × {plain[0].scale:g}", plain[0], residual[0])]
    he = min(range(len(plain)), key=lambda i: abs(np.log(plain[i].scale)))
    if he != 0:
        cases.append((f"W2 × {plain[he].scale:g}", plain[he], residual[he]))
    dead = {r.skip: r for r in result.dead}
    if "none" in dead and "residual" in dead:
        cases.append(("dead units", dead["none"], dead["residual"]))
    x = np.arange(len(cases))
    rel = lambda pt, attr: float(np.median(np.asarray(getattr(pt, attr)) / np.asarray(pt.grad_y)))  # noqa: E731
    bars = [("residual: identity", lambda p, r: rel(r, "identity_route"), RESIDUAL, None),
            ("residual: branch", lambda p, r: rel(r, "branch_route"), OKABE_ITO["sky"], "//"),
            ("plain: branch (only route)", lambda p, r: rel(p, "branch_route"), PLAIN, "..")]
    for k, (label, value, color, hatch) in enumerate(bars):
        values = [value(p, r) for _, p, r in cases]
        cx.bar(x + (k - 1) * 0.27, values, 0.27, color=color, hatch=hatch, edgecolor="white", label=label)
        for xi, v in zip(x, values):
            cx.annotate(f"{v:.2g}", (xi + (k - 1) * 0.27, v), ha="center", va="bottom", fontsize=8.5)
    cx.set_xticks(x, [c[0] for c in cases])
    cx.set_ylabel("route norm / ‖∂L/∂y‖")
    cx.set_title("The two routes of ∂L/∂x")
    cx.legend(loc="upper left", fontsize=8.5)
    cx.set_ylim(0, max(1.3, cx.get_ylim()[1] * 1.1))
    fig.suptitle("dL/dx = dL/dy (I + W2 D W1) with the skip, dL/dy W2 D W1 without", x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------ identity_fit
def _fit_style(variant: str) -> tuple[str, str]:
    return {"plain": (PLAIN, "o"), "residual": (RESIDUAL, "s"), "residual_he": (OKABE_ITO["purple"], "^")}.get(
        variant, (OKABE_ITO["black"], "x"))


@figure("identity_fit", "error_vs_depth",
        "Test MSE of y = x after the same training for every net, against depth (median over seeds, band "
        "min-max; log scales).  Solid: no weight decay; dashed: the strongest weight decay.  The grey line is the "
        "fit threshold used by the verdicts; 1.0 means nothing was learned.")
def identity_fit_depth(result: Any) -> Figure | None:
    from skiplab.experiments.identity_fit import LABELS

    if not result.fits:
        return None
    cfg = result.config
    decays = sorted(set(cfg.weight_decays))
    shown = [decays[0], decays[-1]] if len(decays) > 1 else decays
    fig = Figure(figsize=(7.8, 4.8), layout="constrained")
    ax = fig.subplots()
    for v in cfg.variants:
        color, marker = _fit_style(v)
        for wd, ls in zip(shown, ("-", "--")):
            fits = sorted((f for f in result.fits if f.variant == v and f.weight_decay == wd), key=lambda f: f.depth)
            if fits:
                values = _positive(np.asarray([f.final_mse for f in fits], dtype=float).T.tolist())
                _band(ax, [f.depth for f in fits], values, color=color, ls=ls, marker=marker)
    ax.axhline(cfg.good_mse, color="0.5", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(cfg.depths), [str(d) for d in sorted(cfg.depths)])
    ax.set_xlabel("depth (two-layer blocks)")
    ax.set_ylabel("test MSE (log)")
    handles = [Line2D([], [], color=_fit_style(v)[0], marker=_fit_style(v)[1], label=LABELS[v]) for v in cfg.variants]
    handles += [Line2D([], [], color="0.3", ls=ls, label=f"weight decay {wd:g}") for wd, ls in zip(shown, ("-", "--"))]
    ax.legend(handles=handles, loc="best", fontsize=9)
    ax.set_title(f"Fitting y = x in R^{cfg.dim}, {cfg.steps} AdamW steps")
    return fig


@figure("identity_fit", "curves",
        "Training MSE against step for the deepest nets (first seed), without (solid) and with (dashed) weight "
        "decay.  Log scale.")
def identity_fit_curves(result: Any) -> Figure | None:
    from skiplab.experiments.identity_fit import LABELS

    if not result.fits:
        return None
    depth = max(result.config.depths)
    decays = sorted(set(result.config.weight_decays))
    fig = Figure(figsize=(7.8, 4.4), layout="constrained")
    ax = fig.subplots()
    for f in (f for f in result.fits if f.depth == depth):
        color, _ = _fit_style(f.variant)
        ls = "-" if f.weight_decay == decays[0] else "--"
        ax.plot(f.curve_steps, _positive([f.curves[0]])[0], color=color, ls=ls,
                label=f"{LABELS[f.variant]}, wd {f.weight_decay:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training MSE (log)")
    ax.legend(loc="best", fontsize=8.5)
    ax.set_title(f"{depth} blocks")
    return fig


# ------------------------------------------------------------------------------------------------ exploding
def _net_colors(nets: Any) -> dict[str, str]:
    preferred = {("none", "none"): PLAIN, ("residual", "none"): OKABE_ITO["purple"],
                 ("none", "batch"): OKABE_ITO["orange"], ("residual", "batch"): RESIDUAL}
    colors, spare = {}, iter([c for c in CYCLE if c not in preferred.values()])
    for n in nets:
        key = (n.skip, n.norm)
        colors[n.label] = preferred.pop(key) if key in preferred else next(spare, "0.4")
    return colors


@figure("exploding", "divergence",
        "Training the same nets on inputs of growing scale.  Left and middle: loss and gradient norm per step for "
        "the largest input scale (solid) and standardised inputs (dotted), first seed; a cross marks the last "
        "finite value before inf/NaN.  Right: the step at which each seed blew up (loss or gradient inf/NaN, or a "
        "gradient norm above the blow-up threshold, 1e5 by default).")
def exploding_divergence(result: Any) -> Figure | None:
    from skiplab.experiments.exploding import blowup_steps

    if not result.training:
        return None
    cfg = result.config
    lo, hi = min(cfg.input_scales), max(cfg.input_scales)
    colors = _net_colors(cfg.nets)
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    ax, bx, cx = fig.subplots(1, 3)
    for t in result.training:
        if t.input_scale not in (lo, hi):
            continue
        ls = "-" if t.input_scale == hi else ":"
        for a, series in ((ax, t.loss[0]), (bx, t.grad_norm[0])):
            y = np.asarray(series, dtype=float)
            ok = np.isfinite(y) & (y > 0)
            a.plot(np.arange(len(y))[ok], y[ok], color=colors[t.net.label], ls=ls, lw=1.5)
            if t.diverged_at[0] is not None and ok.any():
                last = int(np.flatnonzero(ok)[-1])
                a.plot([last], [y[last]], marker="X", ms=9, color=colors[t.net.label], ls="none")
    for a, name in ((ax, "loss"), (bx, "gradient norm")):
        a.set_yscale("log")
        a.set_xlabel("step")
        a.set_ylabel(f"{name} (log)")
    ax.set_title(f"Loss, inputs × {hi:g} (solid) and × {lo:g} (dotted)")
    bx.set_title("Gradient norm")
    scales = sorted(cfg.input_scales)
    never = cfg.steps * 1.15
    for k, net in enumerate(cfg.nets):
        for t in (t for t in result.training if t.net.label == net.label):
            ys = [never if d is None else d for d in blowup_steps(t, cfg.blowup_grad)]
            xs = [t.input_scale * (1 + 0.06 * (k - len(cfg.nets) / 2))] * len(ys)  # spread the nets apart
            cx.scatter(xs, ys, color=colors[net.label], marker="o", s=30, zorder=3)
    cx.axhline(cfg.steps, color="0.5", lw=1)
    cx.annotate(f"no blow-up in {cfg.steps} steps", (scales[0], never), textcoords="offset points",
                xytext=(0, 8), fontsize=9)
    cx.set_xscale("log")
    cx.set_ylim(-0.05 * never, never * 1.12)
    cx.set_xlabel("input scale (× standardised)")
    cx.set_ylabel("first blow-up step")
    cx.set_title("When training blew up")
    handles = [Line2D([], [], color=colors[n.label], lw=2.5, label=n.label) for n in cfg.nets]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    fig.suptitle(f"{cfg.depth}-block ReLU MLPs, SGD lr {cfg.lr:g}: unnormalised inputs", x=0.02, ha="left")
    return fig


@figure("exploding", "bn_at_init",
        "Weight-gradient norm of every block at initialisation, from the input (left) to the output (right); "
        "median over seeds, band min-max, log scale.  The dashed black line (MLPs, one BN-ReLU-Linear layer per "
        "block) grows by the mean-field rate sqrt(π/(π−1)) ≈ 1.21 per layer toward the input, anchored at the plain "
        "BN net's last block.")
def exploding_bn(result: Any) -> Figure | None:
    from skiplab.experiments.exploding import MEAN_FIELD_GROWTH, _name

    if not result.init:
        return None
    families = [f for f in ("mlp", "cnn") if any(r.family == f for r in result.init)]
    fig = Figure(figsize=(6.4 * len(families), 4.6), layout="constrained")
    axes = fig.subplots(1, len(families), squeeze=False)[0]
    styles = {("none", "batch"): (OKABE_ITO["orange"], "-"), ("residual", "batch"): (RESIDUAL, "-"),
              ("none", "none"): (PLAIN, "--")}
    for ax, family in zip(axes, families):
        runs = [r for r in result.init if r.family == family]
        for r in runs:
            color, ls = styles.get((r.skip, r.norm), ("0.4", ":"))
            blocks = np.arange(1, r.blocks + 1)
            ratio = float(np.median(r.ratio))
            _band(ax, blocks, _positive([g[1:-1] for g in r.weight_grad]), color=color, ls=ls,
                  label=f"{_name(r)}: first/last {ratio:.2g}")
            if family == "mlp" and (r.skip, r.norm) == ("none", "batch"):  # one BN-ReLU-Linear layer per block
                last = float(np.median([g[-2] for g in r.weight_grad]))
                ax.plot(blocks, last * MEAN_FIELD_GROWTH ** (r.blocks - blocks), color="black", ls=(0, (4, 3)),
                        lw=1.1)
        ax.set_yscale("log")
        ax.set_xlabel("block (input → output)")
        ax.set_ylabel("‖∂L/∂W‖ (log)")
        ax.set_title("MLPs" if family == "mlp" else "CIFAR CNNs")
        ax.legend(loc="best", fontsize=8.5)
    fig.suptitle("Batch norm makes a plain ReLU net's gradients explode at initialisation", x=0.02, ha="left")
    return fig
