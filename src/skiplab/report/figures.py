"""Figures: each takes an experiment's Result and returns a matplotlib Figure.  No I/O, no pyplot state (figures
are built with ``matplotlib.figure.Figure``, which draws through the Agg canvas — no display needed).

Palette: Okabe & Ito (2008), distinguishable with the common colour-vision deficiencies; lines also differ in
style or marker where colour carries meaning.  Register a figure for an experiment with :func:`figure`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # never a window, even if pyplot gets imported elsewhere
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from skiplab.analysis.shattered import correlation_matrix, power_spectrum  # noqa: E402

OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
CYCLE = [OKABE_ITO[k] for k in ("blue", "vermillion", "green", "orange", "purple", "sky", "black")]
SKIP_STYLE = {  # colour, line style, marker
    "none": (OKABE_ITO["vermillion"], "-", "o"),
    "residual": (OKABE_ITO["blue"], "-", "s"),
    "highway": (OKABE_ITO["green"], "--", "^"),
}
SKIP_NAME = {"none": "plain", "residual": "residual", "highway": "highway"}
NORM_STYLE = {"none": "-", "batch": "--", "layer": ":"}
NORM_NAME = {"none": "no norm", "batch": "batch norm", "layer": "layer norm", "group": "group norm"}
RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9.5, "xtick.labelsize": 10,
      "ytick.labelsize": 10, "figure.titlesize": 14, "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.8}


@dataclass(frozen=True)
class FigureSpec:
    experiment: str
    slug: str  # file name stem: <slug>.png
    caption: str
    draw: Callable[[Any], Figure | None]  # None: nothing to draw for this result
    dpi: int = 110


_FIGURES: dict[str, list[FigureSpec]] = {}


def figure(experiment: str, slug: str, caption: str, *, dpi: int = 110) -> Callable:
    """Register ``draw(result) -> Figure`` as one of ``experiment``'s figures (report order = registration order).
    ``dpi``: resolution of the saved PNG (noisy heatmaps are kept lower: they compress badly)."""

    def wrap(fn: Callable[[Any], Figure | None]) -> Callable[[Any], Figure | None]:
        specs = _FIGURES.setdefault(experiment, [])
        if any(s.slug == slug for s in specs):
            raise ValueError(f"figure {slug!r} is already registered for {experiment!r}")
        specs.append(FigureSpec(experiment, slug, caption, lambda result: _styled(fn, result), dpi))
        return fn

    return wrap


def figures_for(experiment: str) -> list[FigureSpec]:
    return list(_FIGURES.get(experiment, []))


def _styled(fn: Callable[[Any], Figure | None], result: Any) -> Figure | None:
    with matplotlib.rc_context(RC):
        fig = fn(result)
    if fig is not None:
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_scale() == "log":
                    axis.set_major_formatter(FuncFormatter(_power_of_ten))
                    axis.set_minor_formatter(NullFormatter())
    return fig


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _pos: int) -> str:
    """Log-axis tick labels as plain Unicode ("10⁻⁸", "0.5", "20"): readable, and no mathtext to typeset."""
    if value <= 0 or not np.isfinite(value):
        return ""
    exponent = np.log10(value)
    if abs(exponent - round(exponent)) < 1e-9 and abs(exponent) >= 3:
        return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)
    return f"{value:g}"


def _band(ax, x: Sequence[float], values: Sequence[Sequence[float]], *, color: str, ls: str = "-",
          marker: str | None = None, label: str | None = None) -> None:
    """Median over seeds as a line, min-max over seeds as a shaded band."""
    v = np.asarray(values, dtype=float)
    with np.errstate(all="ignore"):
        mid, lo, hi = np.nanmedian(v, 0), np.nanmin(v, 0), np.nanmax(v, 0)
    ax.plot(x, mid, color=color, ls=ls, marker=marker, markevery=max(1, len(x) // 8), ms=4, label=label)
    if v.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def _positive(values: Sequence[Sequence[float]]) -> list[list[float]]:
    """Zeros (an underflowed gradient) can't sit on a log axis: show them as NaN gaps."""
    return [[v if v and v > 0 else float("nan") for v in row] for row in values]


# ------------------------------------------------------------------------------------------------ vanishing

def _mlp_runs(result: Any, depth: int) -> list[Any]:
    return [r for r in result.runs if r.family == "mlp" and r.depth == depth]


@figure("vanishing", "gradients_per_layer",
        "Weight-gradient norm of every block at initialisation in the deepest MLPs, from the input (left) to the "
        "output (right); line: median over seeds, band: min-max.  Log scale.")
def vanishing_layers(result: Any) -> Figure | None:
    depth = max(result.config.depths)
    runs = _mlp_runs(result, depth)
    if not runs:
        return None
    acts, norms = list(result.config.acts), list(result.config.norms)
    fig = Figure(figsize=(3.6 * len(norms) + 0.6, 2.9 * len(acts) + 1.0), layout="constrained")
    axes = fig.subplots(len(acts), len(norms), sharex=True, squeeze=False)
    for i, act in enumerate(acts):
        for j, norm in enumerate(norms):
            ax = axes[i][j]
            for r in (r for r in runs if r.act == act and r.norm == norm):
                color, ls, marker = SKIP_STYLE[r.skip]
                _band(ax, np.arange(1, depth + 1), _positive([g[1:-1] for g in r.weight_grad]), color=color, ls=ls,
                      marker=marker, label=SKIP_NAME[r.skip])
            ax.set_yscale("log")
            ax.set_title(f"{act}, {NORM_NAME.get(norm, norm)}")
            if j == 0:
                ax.set_ylabel("‖∂L/∂W‖ (log)")
            if i == len(acts) - 1:
                ax.set_xlabel("block (input → output)")
    handles = [Line2D([], [], color=c, ls=ls, marker=m, label=SKIP_NAME[s]) for s, (c, ls, m) in SKIP_STYLE.items()
               if s in result.config.skips]
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles), title="skip")
    fig.suptitle(f"Per-layer gradient norms at initialisation, {depth}-block MLPs", x=0.02, ha="left")
    return fig


@figure("vanishing", "first_layer_vs_depth",
        "Weight-gradient norm of the first block against depth (median over seeds).  The dashed black line is the "
        "geometric fit for the plain sigmoid net, labelled with its factor per added layer.")
def vanishing_depth(result: Any) -> Figure | None:
    mlp = [r for r in result.runs if r.family == "mlp"]
    if not mlp or len(result.config.depths) < 2:
        return None
    acts = list(result.config.acts)
    fig = Figure(figsize=(4.2 * len(acts), 4.4), layout="constrained")
    axes = fig.subplots(1, len(acts), sharey=True, squeeze=False)[0]
    for ax, act in zip(axes, acts):
        for norm in result.config.norms:
            for skip in result.config.skips:
                group = sorted((r for r in mlp if (r.act, r.norm, r.skip) == (act, norm, skip)), key=lambda r: r.depth)
                if not group:
                    continue
                color, _, marker = SKIP_STYLE[skip]
                first = np.array(_positive([[g[1] for g in r.weight_grad] for r in group]), dtype=float)
                ax.plot([r.depth for r in group], np.nanmedian(first, axis=1), color=color, ls=NORM_STYLE[norm],
                        marker=marker, ms=5)
        fit = next((f for f in result.fits if (f.act, f.norm, f.skip) == (act, "none", "none")), None)
        group = sorted((r for r in mlp if (r.act, r.norm, r.skip) == (act, "none", "none")), key=lambda r: r.depth)
        if act == "sigmoid" and fit is not None and group:
            d = np.array([r.depth for r in group], dtype=float)
            y = np.array([np.nanmedian([g[1] for g in r.weight_grad]) for r in group])
            factor = float(np.nanmedian(fit.factor))
            anchor = np.exp(np.nanmean(np.log(y) - d * np.log(factor)))
            dd = np.linspace(d.min(), d.max(), 50)
            ax.plot(dd, anchor * factor ** dd, color="black", ls=(0, (4, 3)), lw=1.2)
            ax.annotate(f"plain: ×{factor:.3f} per layer", (d.max(), anchor * factor ** d.max()),
                        textcoords="offset points", xytext=(-4, 8), ha="right", fontsize=10)
        ax.set_yscale("log")
        ax.set_xlabel("depth (blocks)")
        ax.set_title(act)
    axes[0].set_ylabel("first block ‖∂L/∂W‖ (log)")
    handles = [Line2D([], [], color=c, marker=m, ls="-", label=SKIP_NAME[s]) for s, (c, _, m) in SKIP_STYLE.items()
               if s in result.config.skips]
    handles += [Line2D([], [], color="0.3", ls=NORM_STYLE[n], label=NORM_NAME[n]) for n in result.config.norms]
    fig.legend(handles=handles, loc="outside right upper")
    fig.suptitle("First-layer gradient against depth, MLPs at initialisation", x=0.02, ha="left")
    return fig


@figure("vanishing", "cnn_gradients",
        "Weight-gradient norm of every block of the CIFAR ResNets and their plain and highway twins at "
        "initialisation (random 32×32 inputs and labels), with and without batch norm.  Median over seeds.")
def vanishing_cnn(result: Any) -> Figure | None:
    cnn = [r for r in result.runs if r.family == "cnn"]
    if not cnn:
        return None
    norms = list(dict.fromkeys(r.norm for r in cnn))
    fig = Figure(figsize=(5.2 * len(norms), 4.4), layout="constrained")
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    depths = sorted({r.depth for r in cnn})
    dash = {d: ls for d, ls in zip(depths, ["-", "--", ":", "-."])}
    for ax, norm in zip(axes, norms):
        for r in (r for r in cnn if r.norm == norm):
            color, _, marker = SKIP_STYLE.get(r.skip, (OKABE_ITO["black"], "-", "o"))
            _band(ax, np.arange(1, r.depth + 1), _positive([g[1:-1] for g in r.weight_grad]), color=color,
                  ls=dash[r.depth], marker=marker, label=r.model)
        ax.set_yscale("log")
        ax.set_xlabel("residual block (input → output)")
        ax.set_title(NORM_NAME.get(norm, norm))
        ax.legend(loc="best")
    axes[0].set_ylabel("block ‖∂L/∂W‖ (log)")
    fig.suptitle("CIFAR CNNs: per-block gradient norms at initialisation", x=0.02, ha="left")
    return fig


@figure("vanishing", "activations",
        "Each block's output in the deepest MLPs without normalisation (median over seeds, band min-max): its "
        "mean in units of its standard deviation (top), and its standard deviation (bottom, log scale).")
def vanishing_activations(result: Any) -> Figure | None:
    depth = max(result.config.depths)
    runs = [r for r in _mlp_runs(result, depth) if r.norm == "none"]
    if not runs:
        return None
    acts = list(result.config.acts)
    fig = Figure(figsize=(4.2 * len(acts), 6.2), layout="constrained")
    axes = fig.subplots(2, len(acts), sharex=True, squeeze=False)
    x = np.arange(1, depth + 1)
    for j, act in enumerate(acts):
        for r in (r for r in runs if r.act == act):
            color, ls, marker = SKIP_STYLE[r.skip]
            ratio = [[m / sd if sd > 0 else float("nan") for m, sd in zip(mm[1:-1], ss[1:-1])]
                     for mm, ss in zip(r.act_mean, r.act_std)]
            _band(axes[0][j], x, ratio, color=color, ls=ls, marker=marker, label=SKIP_NAME[r.skip])
            _band(axes[1][j], x, _positive([s[1:-1] for s in r.act_std]), color=color, ls=ls, marker=marker)
        axes[0][j].set_title(f"{act}, no norm")
        axes[1][j].set_yscale("log")
        axes[1][j].set_xlabel("block (input → output)")
    axes[0][0].set_ylabel("activation mean / std")
    axes[1][0].set_ylabel("activation std (log)")
    axes[0][0].legend(loc="best")
    fig.suptitle(f"Activation statistics at initialisation, {depth}-block MLPs", x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------ shattered

def _series_color(s: Any) -> str:
    """One colour per kind of net, the same in every shattered-gradient panel and in the depth sweep."""
    if s.kind == "reference":
        return OKABE_ITO["black"] if s.label.startswith("brown") else "0.55"
    spec = s.spec
    if spec.depth == 0:
        return OKABE_ITO["orange"]
    if spec.skip == "none":
        return SKIP_STYLE["none"][0] if spec.norm != "none" else OKABE_ITO["purple"]
    return SKIP_STYLE.get(spec.skip, (OKABE_ITO["sky"],))[0]


@figure("shattered", "gradients",
        "dy/dx over the 256 input points for one seed of each net, beside brown and white noise (as in Balduzzi et "
        "al. 2017, figure 1).  Each panel has its own y-range: the shape matters, not the scale.")
def shattered_gradients(result: Any) -> Figure:
    series = result.series
    cols = 4 if len(series) > 4 else len(series)
    rows = -(-len(series) // cols)
    fig = Figure(figsize=(3.4 * cols, 2.7 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    x = np.asarray(result.x)
    for ax, s in zip(axes.flat, series):
        ax.plot(x, s.values[0], color=_series_color(s), lw=1.1)
        ax.set_title(s.label)
        ax.set_xlabel("input x" if s.kind == "net" else "x (index rescaled)")
        ax.text(0.02, 0.96, f"lag-1 {s.lag1[0]:.2f}", transform=ax.transAxes, va="top", fontsize=9,
                bbox=dict(fc="white", ec="none", alpha=0.8))
    for ax in axes.flat[len(series):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("dy/dx")
    fig.suptitle(f"Gradients of the output with respect to the input (seed {series[0].seeds[0]})", x=0.02, ha="left")
    return fig


@figure("shattered", "correlation_matrices",
        "Correlation, across seeds, between dy/dx at input point i and at point j (256 × 256).  Brown noise: a "
        "broad band that widens away from the start; white noise: only the diagonal.", dpi=85)
def shattered_covariance(result: Any) -> Figure:
    series = result.series
    cols = 4 if len(series) > 4 else len(series)
    rows = -(-len(series) // cols)
    fig = Figure(figsize=(3.2 * cols + 1.0, 3.1 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for ax, s in zip(axes.flat, series):
        c = correlation_matrix(np.asarray(s.values))
        image = ax.imshow(c, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(s.label)
        ax.set_xlabel("point j")
        ax.set_ylabel("point i")
        ax.grid(False)
    for ax in axes.flat[len(series):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, shrink=0.8, label="correlation")
    fig.suptitle(f"Gradient correlation matrices over {len(series[0].seeds)} seeds", x=0.02, ha="left")
    return fig


@figure("shattered", "autocorrelation",
        "Left: autocorrelation of dy/dx against lag (mean over seeds, band ± 1 std).  Right: power spectrum "
        "(mean over seeds; frequency ω = 2 sin(πf/n)); brown noise falls as ω⁻², white noise is flat.")
def shattered_acf(result: Any) -> Figure:
    from skiplab.analysis.shattered import autocorrelation

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    lags = np.arange(result.config.max_lag + 1)
    for s in result.series:
        color = _series_color(s)
        ls = "--" if s.kind == "reference" else "-"
        acf = autocorrelation(np.asarray(s.values), result.config.max_lag)
        mean, std = np.nanmean(acf, 0), np.nanstd(acf, 0)
        ax.plot(lags, mean, color=color, ls=ls, label=s.label)
        ax.fill_between(lags, mean - std, mean + std, color=color, alpha=0.12, lw=0)
        omega, power = power_spectrum(np.asarray(s.values))
        p = np.exp(np.nanmean(np.log(np.maximum(power, 1e-300)), 0))
        bx.plot(omega, p / p[0], color=color, ls=ls, label=f"{s.label} (slope {np.nanmean(s.slope):.2f})")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("lag (grid points)")
    ax.set_ylabel("autocorrelation")
    ax.set_title("Autocorrelation function")
    ax.legend(loc="upper right")
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("frequency ω = 2 sin(πf/n) (log)")
    bx.set_ylabel("power relative to lowest frequency (log)")
    bx.set_title("Power spectrum (geometric mean over seeds)")
    bx.legend(loc="lower left", fontsize=8.5)
    fig.suptitle("Shattering: how fast gradients decorrelate along the input", x=0.02, ha="left")
    return fig


@figure("shattered", "depth",
        "Left: lag-1 autocorrelation of dy/dx against depth for batch-normalised plain nets and resnets (mean ± "
        "std over seeds).  Right: every seed of every series as a point (lag-1 autocorrelation, spectral slope).")
def shattered_depth(result: Any) -> Figure:
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    for skip in ("none", "residual"):
        pts = sorted((p for p in result.sweep if p.skip == skip), key=lambda p: p.depth)
        if not pts:
            continue
        color, _, marker = SKIP_STYLE[skip]
        ax.errorbar([p.depth for p in pts], [np.mean(p.lag1) for p in pts], yerr=[np.std(p.lag1) for p in pts],
                    color=color, marker=marker, capsize=3, label=f"{SKIP_NAME[skip]} (BN)")
    ax.axhline(0, color="0.55", ls="--", lw=1, label="white noise")
    ax.axhline(1, color="black", ls="--", lw=1, label="brown noise (≈1)")
    depths = sorted({p.depth for p in result.sweep})
    ax.set_xscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("depth (blocks, log scale)")
    ax.set_ylabel("lag-1 autocorrelation")
    ax.set_title("Correlation between neighbouring gradients")
    ax.legend(loc="lower left")
    for s in result.series:
        marker = "x" if s.kind == "reference" else "o"
        bx.scatter(s.lag1, s.slope, s=22, color=_series_color(s), marker=marker, alpha=0.8,
                   label=s.label)
    bx.set_xlabel("lag-1 autocorrelation")
    bx.set_ylabel("spectral slope")
    bx.set_title("Each seed: white (0, 0) to brown (1, -2)")
    bx.legend(loc="lower left", fontsize=8.5)
    fig.suptitle("Shattering grows with depth; skips slow it down", x=0.02, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------ signal

def _variant_style(v: Any) -> tuple[str, str]:
    """Plain nets in vermillion, residual variants in blues/purple/orange, highway in green (colour, line style)."""
    if v.skip == "none":
        return OKABE_ITO["vermillion"], "-" if v.act == "relu" else "--"
    if v.skip == "highway":
        return OKABE_ITO["green"], "-."
    if v.zero_init:
        return OKABE_ITO["orange"], "--"
    if v.branch_scale != "1":
        return OKABE_ITO["purple"], "-"
    if v.norm != "none":
        return OKABE_ITO["sky"], ":"
    return OKABE_ITO["blue"], "-"


@figure("signal", "activation_rms",
        "RMS of each block's output at initialisation (median over seeds, band min-max), for plain, residual and "
        "highway MLPs and the ways of taming the residual branch.  Left: every net (log scale); right: the nets "
        "that stay within 100x of the stem, relative to the stem's RMS.")
def signal_rms(result: Any) -> Figure:
    fig = Figure(figsize=(12.5, 5.0), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    for r in result.runs:
        color, ls = _variant_style(r.variant)
        x = np.arange(len(r.rms[0]) - 1)
        rms = np.asarray(_positive([v[:-1] for v in r.rms]), dtype=float)
        _band(ax, x, rms, color=color, ls=ls, label=r.variant.label)
        rel = rms / rms[:, :1]
        if np.nanmax(rel) < 100:
            _band(bx, x, rel, color=color, ls=ls, label=r.variant.label)
    ax.set_yscale("log")
    ax.set_xlabel("block (0 = stem output)")
    ax.set_ylabel("activation RMS (log)")
    ax.set_title("All nets")
    bx.set_yscale("log")
    bx.axhline(1, color="0.3", lw=0.8)
    bx.set_xlabel("block (0 = stem output)")
    bx.set_ylabel("RMS / stem RMS (log)")
    bx.set_title("Zoom: nets within 100x of the stem")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4)
    fig.suptitle(f"Forward signal through {result.config.depth} blocks at initialisation", x=0.02, ha="left")
    return fig


from skiplab.report import figures_analysis  # noqa: E402,F401  (registers the lesion/landscape/features figures)
from skiplab.report import figures_training  # noqa: E402,F401  (registers the training-comparison figures)
from skiplab.report import figures_segmentation  # noqa: E402,F401  (unet_skips)
from skiplab.report import figures_studies  # noqa: E402,F401  (two_layer, identity_fit, exploding, sigmoid slope)
