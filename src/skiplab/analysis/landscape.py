"""Loss landscapes along random directions with filter normalisation (Li, Xu, Taylor, Studer & Goldstein 2018,
"Visualizing the Loss Landscape of Neural Nets", arXiv:1712.09913).

Around trained weights ``θ`` the loss is evaluated at ``θ + a·δ + b·η`` on a grid of ``(a, b)``.  Each direction
is Gaussian noise *filter-normalised*: every filter (a slice along dim 0 of a conv or linear weight) is
rescaled to the norm of the matching filter of ``θ``, so the plot is not distorted by the scale invariance that
batch norm gives each filter.  Following the paper (and its ``--xignore biasbn``), 1-D parameters — biases
and BatchNorm scales and shifts — get a zero direction.  The net is evaluated in eval mode (BatchNorm with its
running statistics), as the paper's code does.

Speed (:class:`GridEvaluator`): the straightforward loop (:func:`naive_surface`: write ``θ + a·δ + b·η`` into
the model, run the data loader through it, restore) spends its time in the forward passes, so the evaluator
makes those cheaper and does the rest once:

* a private eval-mode copy whose BatchNorms are folded into the convolutions
  (:func:`skiplab.export.fold_batchnorm`).  BN has a zero direction, so the folded weights are an *affine*
  function of ``(a, b)``: ``fold(θ + aδ + bη) = fold(θ) + a·δ' + b·η'`` with ``δ' = fold(θ + δ) - fold(θ)``
  (computed once, in float64); each grid point is then two in-place axpys into the copy's parameters — no BN
  pass, no state-dict copies, no restore;
* the evaluation images pre-loaded once as one normalised tensor, NHWC (channels_last, oneDNN's native
  layout), run in cache-sized chunks under ``torch.inference_mode``;
* points split over the processes of a ``torchrun`` launch (:func:`evaluate_points`): rank ``r`` of ``w`` takes
  points ``r, r + w, ...``, and a sum-all-reduce of the zero-filled result vectors gathers them everywhere.
* on CPU, ``engine="auto"`` picks by the CPU (:func:`skiplab.speed.landscape_engine_choice`): where torch has
  only AVX2 the forward passes run by onnxruntime when installed — the folded net is exported once and each point
  gets a session built with its parameters (:class:`_OrtPoints`); its prepacked convolutions were ~1.4x torch's
  on an AVX2-only EPYC, ~1.27x per point with the session build — and where torch has AVX-512, torch itself
  (1.33x onnxruntime on an AVX-512 BF16 EPYC).

Measured (benchmarks/bench_landscape.py, resnet20, 256 images a point, one thread, shared AVX2 CPU), torch
engine: 1.5-1.6x the straightforward loop's points per second, and the same points to 3e-7 relative; see
BENCHMARKS.md for the onnxruntime engine.  What is left is the
convolutions themselves (~96% of the time in a profile, at ~80 GFLOP/s a core); fusing each conv with its
ReLU and skip addition into one oneDNN call, or evaluating several points in one pass with grouped
convolutions (``torch.func.vmap``), did not help (1-6%; 2-3x slower).  More throughput comes from
more processes.

The Hessian's extreme eigenvalues (the paper's measure of non-convexity, ``|λmin / λmax|``) come from
Lanczos iteration on Hessian-vector products (double backward through one kept graph; measured here ~10x
faster than ``torch.func``'s forward-over-reverse ``jvp(grad)`` on CPU).
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Direction = dict[str, torch.Tensor]  # parameter name -> tensor of the parameter's shape
NORMS = ("filter", "layer", "none")
ENGINES = ("torch", "bf16", "onnxruntime", "auto")


# ------------------------------------------------------------------------------------------------ directions

def random_direction(model: nn.Module, *, seed: int, norm: str = "filter", ignore_biasbn: bool = True) -> Direction:
    """A Gaussian direction in the model's parameter space, normalised as Li et al. §4.

    ``norm="filter"``: each filter ``d_i`` (slice along dim 0 of every parameter with more than one dim)
    becomes ``d_i / ||d_i|| * ||θ_i||``; ``"layer"``: the same per whole tensor; ``"none"``: raw noise.
    ``ignore_biasbn``: 1-D parameters (biases, BN scales/shifts) get a zero direction (the paper's setting);
    otherwise they take the parameter's own values, as the paper's code does.  Drawn on the CPU from ``seed``,
    so the direction is the same on every device and process.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}; got {norm!r}")
    g = torch.Generator().manual_seed(int(seed))
    out: Direction = {}
    for name, p in model.named_parameters():
        w = p.detach()
        if w.dim() <= 1:
            out[name] = torch.zeros_like(w) if ignore_biasbn else w.clone()
            continue
        d = torch.randn(w.shape, generator=g, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
        if norm == "filter":
            wn = w.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))  # per filter
            dn = d.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))
            d = d * (wn / (dn + 1e-10))
        elif norm == "layer":
            d = d * (w.norm() / (d.norm() + 1e-10))
        out[name] = d
    return out


def check_directions(model: nn.Module, directions: Sequence[Direction]) -> None:
    """Raise ValueError unless every direction has exactly the model's parameter names and shapes."""
    params = dict(model.named_parameters())
    for i, d in enumerate(directions):
        if set(d) != set(params):
            missing, extra = sorted(set(params) - set(d)), sorted(set(d) - set(params))
            raise ValueError(f"direction {i} does not match the model's parameters (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
        for k, v in d.items():
            if v.shape != params[k].shape:
                raise ValueError(f"direction {i}[{k!r}] has shape {tuple(v.shape)}; the parameter has "
                                 f"{tuple(params[k].shape)}")


def grid_coords(xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """``(len(ys) * len(xs), 2)`` points ``(a, b)``, row-major: ``b`` (the y axis) outer, ``a`` inner."""
    a, b = np.meshgrid(np.asarray(xs, float), np.asarray(ys, float))
    return np.stack([a.ravel(), b.ravel()], 1)


def axis(n: int, span: float) -> list[float]:
    """``n`` evenly spaced values on ``[-span, span]`` (the paper: 51 on [-1, 1])."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of points must be a positive integer; got {n!r}")
    if not span > 0:
        raise ValueError(f"span must be a positive number; got {span!r}")
    return np.linspace(-span, span, n).tolist() if n > 1 else [0.0]


# ------------------------------------------------------------------------------------------------ evaluation

def _bn_params(model: nn.Module) -> set[str]:
    return {f"{mn}.{pn}" if mn else pn for mn, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) for pn, _ in m.named_parameters(recurse=False)}


class GridEvaluator:
    """Mean cross-entropy and accuracy of ``model`` at ``θ + Σ c_i d_i`` on the fixed batch ``(x, y)``.

    ``evaluator(coords)`` with ``coords`` of shape ``(P, len(directions))`` returns two float64 arrays of ``P``
    values.  The model itself is never modified (the evaluator works on a private copy); see the module
    docstring for what makes it fast.  ``fold_bn`` needs every BatchNorm direction to be zero (the paper's
    setting); with a non-zero one it falls back to the unfolded copy.  ``chunk``: images per forward pass.
    ``engine``: ``"torch"``, ``"onnxruntime"`` (CPU: the net exported once, a session built per point with that
    point's parameters as its initializers — ~1.27x torch's points/s here, see :class:`_OrtPoints`),
    ``"bf16"`` (the torch engine with the folded copy and the images in bfloat16: each point's parameters are
    computed in float32 and rounded once; logits return as float32 and the loss is summed in float64 — only
    where bf16 is native: :func:`skiplab.speed.native_bf16`, or a CUDA GPU), or ``"auto"``
    (:func:`skiplab.speed.landscape_engine_choice` on CPU, torch on a GPU).
    """

    def __init__(self, model: nn.Module, directions: Sequence[Direction], x: torch.Tensor, y: torch.Tensor, *,
                 fold_bn: bool = True, channels_last: bool = True, chunk: int = 64, engine: str = "torch") -> None:
        if not directions:
            raise ValueError("need at least one direction")
        check_directions(model, directions)
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"x and y must hold the same, non-zero number of samples; got {x.shape[0]}, {y.shape[0]}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {engine!r}")
        if engine == "auto":  # chosen from what this CPU is (skiplab.speed.landscape_engine_choice)
            from skiplab.speed import landscape_engine_choice

            engine = landscape_engine_choice()[0] if x.device.type == "cpu" else "torch"
        self.engine = engine
        channels_last = channels_last and engine in ("torch", "bf16")  # onnxruntime takes NCHW arrays
        bn = _bn_params(model)
        self.folded = fold_bn and all(not bool(d[k].any()) for d in directions for k in bn)
        self.net, self.base, self.dirs = _prepare(model, directions, self.folded)
        self.channels_last = channels_last and x.dim() == 4
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        device = next(self.net.parameters()).device
        self.x = x.to(device).contiguous(memory_format=torch.channels_last) if self.channels_last else x.to(device)
        if engine == "bf16":  # the copy computes in bf16; base and directions stay in the model's dtype (below)
            self.net = self.net.to(torch.bfloat16)
            self.x = self.x.to(torch.bfloat16)
        self.y = y.to(device)
        self.chunk = chunk
        self.params = dict(self.net.named_parameters())
        # base and directions in each parameter's own memory layout, so the per-point axpys are straight copies;
        # with a lower-precision copy they keep their own dtype, and each point is summed in a scratch tensor of
        # that dtype and rounded once into the parameter
        self.base = {k: torch.empty_like(p, dtype=self.base[k].dtype).copy_(self.base[k])
                     for k, p in self.params.items()}
        self.dirs = [{k: torch.empty_like(self.base[k]).copy_(d[k]) for k in self.params} for d in self.dirs]
        self._scratch = {k: torch.empty_like(b) for k, b in self.base.items()
                         if b.dtype != self.params[k].dtype}
        if self.engine == "onnxruntime":
            self._ort = _OrtPoints(self.net, self.x, self.params)

    @torch.no_grad()
    def set_point(self, c: Sequence[float]) -> None:
        """Write ``θ + Σ c_i d_i`` into the private copy (in place, no allocation)."""
        for name, p in self.params.items():
            acc = self._scratch.get(name, p)  # the bf16 engine sums in the model's dtype, then rounds once
            torch.add(self.base[name], self.dirs[0][name], alpha=float(c[0]), out=acc)
            for ci, d in zip(c[1:], self.dirs[1:]):
                acc.add_(d[name], alpha=float(ci))
            if acc is not p:
                p.copy_(acc)

    def __call__(self, coords: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
        coords = np.asarray(coords, dtype=float).reshape(-1, len(self.dirs))
        losses, accs = np.empty(len(coords)), np.empty(len(coords))
        n = self.x.shape[0]
        for i, c in enumerate(coords):
            self.set_point(c)
            run = self._ort.session() if self.engine == "onnxruntime" else self.net
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.x.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.x.device)
            with torch.inference_mode():
                for j in range(0, n, self.chunk):
                    logits = run(self.x[j:j + self.chunk]).float()
                    t = self.y[j:j + self.chunk]
                    loss_sum += F.cross_entropy(logits, t, reduction="sum").double()
                    correct += (logits.argmax(1) == t).sum()
            losses[i], accs[i] = float(loss_sum) / n, int(correct) / n
        return losses, accs


class _OrtPoints:
    """The evaluator's net exported to ONNX once; :meth:`session` gives an onnxruntime session built from that
    graph with the current parameter values as its initializers, i.e. the net at the current point.

    Measured here (resnet20, 256 images, one thread): building the session ~30 ms, its forward passes ~1.4x
    faster than torch's (onnxruntime prepacks the constant weights), ~1.27x per point in all.  Feeding the
    weights as graph inputs instead keeps one session but loses the prepacking (1.6x slower than torch), and
    ``SessionOptions.add_initializer`` does not replace a graph's own initializers (onnxruntime 1.2x).
    The export is made from a copy with random parameter values, so that no two parameters are equal and the
    exporter's de-duplication of identical initializers cannot merge two of them under one name."""

    def __init__(self, net: nn.Module, x: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        import io

        import onnx
        import onnxruntime as ort

        probe = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            for p in probe.parameters():
                p.normal_()
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the input checks: expected
            torch.onnx.export(probe, (x[:1].contiguous(),), buf, dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=False)
        self.proto = onnx.load_from_string(buf.getvalue())
        self.inits = {init.name: init for init in self.proto.graph.initializer}
        missing = sorted(set(params) - set(self.inits))
        if missing:
            raise RuntimeError(f"the ONNX export lost parameters {missing[:3]}; use engine='torch'")
        if any(p.dtype != torch.float32 for p in params.values()):
            raise ValueError("engine='onnxruntime' needs float32 parameters; use engine='torch'")
        self.ort, self.params = ort, params
        self.threads = torch.get_num_threads()

    def session(self) -> Callable[[torch.Tensor], torch.Tensor]:
        for name, p in self.params.items():
            self.inits[name].raw_data = p.detach().contiguous().numpy().tobytes()
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        sess = self.ort.InferenceSession(self.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])

        def run(xb: torch.Tensor) -> torch.Tensor:
            (out,) = sess.run(None, {"input": xb.contiguous().numpy()})
            return torch.from_numpy(out)

        return run


def _prepare(model: nn.Module, directions: Sequence[Direction], fold: bool
             ) -> tuple[nn.Module, dict[str, torch.Tensor], list[Direction]]:
    """(eval-mode private copy, its base parameters, directions in its parameter space)."""
    if not fold:
        net = copy.deepcopy(model).eval().requires_grad_(False)
        base = {k: p.detach().clone() for k, p in net.named_parameters()}
        return net, base, [{k: v.detach().to(base[k].dtype) for k, v in d.items()} for d in directions]
    from skiplab.export import fold_batchnorm

    def folded_params(shift: Direction | None) -> dict[str, torch.Tensor]:
        m64 = copy.deepcopy(model).double().eval()
        if shift is not None:
            with torch.no_grad():
                for k, p in m64.named_parameters():
                    p.add_(shift[k].double())
        return {k: p.detach() for k, p in fold_batchnorm(m64, inplace=True).named_parameters()}

    base64 = folded_params(None)
    dirs = []
    for d in directions:  # folding is affine in the conv weights when BN is fixed: fold(θ+d) - fold(θ) is exact
        shifted = folded_params(d)
        dirs.append({k: shifted[k] - base64[k] for k in base64})
    net = fold_batchnorm(model).requires_grad_(False)  # a copy, in the model's dtype
    base = {k: p.detach().clone() for k, p in net.named_parameters()}
    return net, base, [{k: v.to(base[k].dtype) for k, v in d.items()} for d in dirs]


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def split_map(fn, items: Sequence, n_out: int, *, progress=None) -> np.ndarray:
    """``out[:, i] = fn(items[i])`` (a tuple of ``n_out`` floats) with the items split over the processes of an
    initialised process group — rank ``r`` of ``w`` takes items ``r, r+w, ...`` — and gathered on every rank by a
    sum-all-reduce of zero-filled arrays (each entry is non-zero on one rank only, so the sum is exact).
    Without a process group it is a plain loop.  ``progress(done, total)`` is called after each local item."""
    import torch.distributed as dist

    rank, world = dist_rank_world()
    mine = range(rank, len(items), world)
    out = np.zeros((n_out, len(items)))
    for j, i in enumerate(mine):
        out[:, i] = fn(items[i])
        if progress is not None:
            progress(j + 1, len(mine))
    if world > 1:
        t = torch.from_numpy(out)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out = t.cpu().numpy()
    return out


def evaluate_points(evaluator: GridEvaluator, coords: np.ndarray, *, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Loss and accuracy at every point of ``coords``, split over the processes of a ``torchrun`` launch and
    gathered on every rank (:func:`split_map`)."""
    coords = np.asarray(coords, dtype=float)
    out = split_map(lambda c: tuple(v[0] for v in evaluator(c[None])), coords, 2, progress=progress)
    return out[0], out[1]


def evaluate_surface(evaluator: GridEvaluator, xs: Sequence[float], ys: Sequence[float], *, progress=None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(loss, accuracy)`` arrays of shape ``(len(ys), len(xs))`` — row ``j`` is ``b = ys[j]``."""
    loss, acc = evaluate_points(evaluator, grid_coords(xs, ys), progress=progress)
    return loss.reshape(len(ys), len(xs)), acc.reshape(len(ys), len(xs))


@torch.no_grad()
def naive_surface(model: nn.Module, directions: Sequence[Direction], loader: Iterable, xs: Sequence[float],
                  ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward loop, as the paper's code does it: for each point write ``θ + aδ + bη`` into the
    model's parameters, run the loader's batches through it (eval mode, no gradients, one ``.item()`` per batch),
    and finally restore ``θ``.  The reference for :class:`GridEvaluator`'s results and speed."""
    check_directions(model, directions)
    was_training = model.training
    model.eval()
    params = list(model.named_parameters())
    saved = [p.data.clone() for _, p in params]
    loss, acc = np.empty((len(ys), len(xs))), np.empty((len(ys), len(xs)))
    try:
        for j, b in enumerate(ys):
            for i, a in enumerate(xs):
                for (name, p), w in zip(params, saved):
                    p.data = w + a * directions[0][name] + b * directions[1][name]
                total, correct, n = 0.0, 0, 0
                for xb, yb in loader:
                    out = model(xb)
                    total += F.cross_entropy(out, yb).item() * yb.shape[0]
                    correct += (out.argmax(1) == yb).sum().item()
                    n += yb.shape[0]
                loss[j, i], acc[j, i] = total / n, correct / n
    finally:
        for (_, p), w in zip(params, saved):
            p.data = w
        model.train(was_training)
    return loss, acc


# ------------------------------------------------------------------------------------------------- curvature

def hessian_extremes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, point: Sequence[float] = (),
                     directions: Sequence[Direction] = (), steps: int = 20, seed: int = 0) -> tuple[float, float]:
    """Estimates ``(λmin, λmax)`` of the Hessian of the mean cross-entropy on ``(x, y)`` with respect to all
    parameters, at ``θ + Σ point_i d_i`` (eval-mode BatchNorm): the extreme Ritz values of ``steps`` Lanczos
    iterations (with full re-orthogonalisation) on Hessian-vector products.

    Li et al. §6 map ``|λmin / λmax|`` over the landscape: near 0 where the loss is locally convex, large where
    strong negative curvature makes it chaotic.  Ritz values lie inside the spectrum and converge to its ends
    first, so with few steps both estimates err toward zero (``λmax`` converges fastest).  Cost: one forward
    and backward pass with a kept graph, then one double-backward pass per step.
    """
    if len(point) != len(directions):
        raise ValueError(f"point has {len(point)} coordinates for {len(directions)} directions")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2; got {steps!r}")
    net = copy.deepcopy(model).eval()
    params = [p for p in net.parameters()]
    with torch.no_grad():
        for c, d in zip(point, directions):
            for (k, p) in net.named_parameters():
                p.add_(d[k], alpha=float(c))
    with torch.enable_grad():
        for p in params:
            p.requires_grad_(True)
        loss = F.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        sizes = [p.numel() for p in params]

        def hvp(v: torch.Tensor) -> torch.Tensor:
            parts = [t.view_as(p) for t, p in zip(torch.split(v, sizes), params)]
            hv = torch.autograd.grad(grads, params, parts, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in hv])

        return lanczos_extremes(hvp, sum(sizes), steps, seed=seed, device=params[0].device, dtype=params[0].dtype)


def lanczos_extremes(matvec, n: int, steps: int, *, seed: int = 0, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """Smallest and largest Ritz values of ``steps`` Lanczos iterations of the symmetric operator ``matvec``
    (a function of a length-``n`` vector) from a seeded random start; exact for ``steps >= n``."""
    g = torch.Generator().manual_seed(int(seed))
    q = torch.randn(n, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    q = q / q.norm()
    basis = torch.empty(min(steps, n), n, device=device, dtype=dtype)
    alphas, betas = [], []
    for j in range(min(steps, n)):
        basis[j] = q
        w = matvec(q)
        alphas.append(float(w @ q))
        for _ in range(2):  # full re-orthogonalisation, twice: keeps spurious copies of converged values away
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        b = float(w.norm())
        if j == min(steps, n) - 1 or b < 1e-8 * max(1.0, abs(alphas[-1])):
            break
        betas.append(b)
        q = w / b
    t = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1], -1)
    ev = np.linalg.eigvalsh(t)
    return float(ev[0]), float(ev[-1])


def surface_curvature(loss: np.ndarray, xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``(λmin, λmax)`` of the 2x2 Hessian of the plotted surface at every interior grid point,
    from central second differences; NaN on the border.  The curvature a reader sees in the contour plot."""
    z = np.asarray(loss, dtype=float)
    if z.ndim != 2 or min(z.shape) < 3:
        raise ValueError(f"need a 2-D surface with at least 3x3 points; got shape {z.shape}")
    hx, hy = float(np.diff(xs).mean()), float(np.diff(ys).mean())
    lmin, lmax = np.full(z.shape, np.nan), np.full(z.shape, np.nan)
    c = z[1:-1, 1:-1]
    zxx = (z[1:-1, 2:] - 2 * c + z[1:-1, :-2]) / hx ** 2
    zyy = (z[2:, 1:-1] - 2 * c + z[:-2, 1:-1]) / hy ** 2
    zxy = (z[2:, 2:] - z[2:, :-2] - z[:-2, 2:] + z[:-2, :-2]) / (4 * hx * hy)
    mean, dev = (zxx + zyy) / 2, np.sqrt(((zxx - zyy) / 2) ** 2 + zxy ** 2)
    lmin[1:-1, 1:-1], lmax[1:-1, 1:-1] = mean - dev, mean + dev
    return lmin, lmax


def convex_fraction(loss: np.ndarray, xs: Sequence[float], ys: Sequence[float], *, radius: float = math.inf,
                    rel_tol: float = 0.01) -> float:
    """The fraction of interior grid points within ``radius`` of the origin where the plotted surface is locally
    convex: both curvature eigenvalues >= ``-rel_tol`` times the largest curvature magnitude on the grid (so
    rounding noise on a flat region does not count as non-convex)."""
    lmin, lmax = surface_curvature(loss, xs, ys)
    a, b = np.meshgrid(np.asarray(xs, float), np.asarray(ys, float))
    inside = np.isfinite(lmin) & (np.hypot(a, b) <= radius + 1e-12)
    if not inside.any():
        return math.nan
    scale = np.nanmax(np.abs(np.concatenate([lmin[inside], lmax[inside]])))
    return float(np.mean(lmin[inside] >= -rel_tol * scale))


@dataclass
class Surface:
    """A computed 2-D surface, for saving and re-plotting without recomputation (:meth:`save` / :meth:`load`:
    numpy ``.npz``, no pickle)."""

    xs: np.ndarray
    ys: np.ndarray
    loss: np.ndarray  # (len(ys), len(xs))
    acc: np.ndarray

    def save(self, path: str) -> None:
        np.savez(path, xs=self.xs, ys=self.ys, loss=self.loss, acc=self.acc)

    @classmethod
    def load(cls, path: str) -> "Surface":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["xs"], f["ys"], f["loss"], f["acc"])
