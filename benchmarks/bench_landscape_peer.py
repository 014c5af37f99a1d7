"""Loss-landscape grid speed against the PyPI package ``loss-landscapes`` (issue 14), side by side.

The peer: ``loss_landscapes.random_plane(model, Loss(CrossEntropyLoss(), x, y), distance, steps,
normalization="filter", deepcopy_model=True)`` (version 3.0.6) — ``steps x steps`` points, each one forward of all
the images as one batch.  Ours: :class:`skiplab.analysis.landscape.GridEvaluator` (BN folded, affine parameter
updates, channels_last, chunked) with two filter-normalised directions (:func:`random_direction`) on the same
number of points, for each ``--engines`` entry (``torch``: float32; ``bf16``: the bf16 engine).  Every side's
time includes its set-up (directions, normalisation, folding) — what one surface costs a user.  Same model (a
trained resnet20 from the cache, or ``--weights``), same images (``--images`` CIFAR-10 test images, fixed subset),
same thread count; the sides take turns, ``--rounds`` times, order alternating.  ``--clock cpu`` times process CPU
time (with one thread: immune to other processes taking the core).

The peer runs in eval mode under ``torch.no_grad()`` (its README calls it without; with grad mode on it is no
faster — measured 2.51 vs 2.53 s a point here — so this is the peer at its best).

Zero BN biases: the package's filter normalisation treats each entry of a 1-D parameter as a filter and divides
by the direction's norm there, which is 0/0 where the parameter is zero (every BN shift of a freshly initialised
net): it stops with ``ZeroDivisionError``.  It cannot be told to skip them, so the peer gets a copy whose zero 1-D
entries are nudged to ``--nudge`` (1e-6); ours runs on the net as it is (its directions are zero on 1-D
parameters, as the paper's ``--xignore biasbn``).  ``--weights init`` runs that case (a freshly initialised net,
BN statistics set from the images).

The bf16 engine's surface is compared with the float32 engine's on the same grid: largest absolute and relative
loss difference, accuracy difference, and whether the contour picture changes (grid points that fall in a
different band of 12 contour levels spread over the float32 surface's range, as matplotlib would draw them).

Install the peer apart from skiplab's environment (it is only run here, never imported by skiplab):

    .venv/bin/pip download --no-deps loss-landscapes==3.0.6 -d /tmp/ll && \\
        .venv/bin/pip install --no-deps --target /tmp/ll/site /tmp/ll/loss_landscapes-3.0.6-py3-none-any.whl
    .venv/bin/python benchmarks/bench_landscape_peer.py --peer-site /tmp/ll/site --threads 1 --clock cpu
    .venv/bin/python benchmarks/bench_landscape_peer.py --peer-site /tmp/ll/site --weights init
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from skiplab.analysis.hooks import calibrate_batchnorm
from skiplab.analysis.landscape import GridEvaluator, axis, convex_fraction, evaluate_surface, random_direction
from skiplab.data import BatchLoader, load_dataset
from skiplab.registry import create_model
from skiplab.weights import load_weights

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
CACHE = os.path.expanduser("~/.cache/skiplab/nets")


def load_images(data_dir: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-10 test images, a fixed random subset (seed 0), normalised, NCHW float32."""
    ds = load_dataset("cifar10", "test", data_dir=data_dir)
    if n < len(ds):
        ds = ds.subset(torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].sort().values)
    return next(iter(BatchLoader(ds, len(ds), shuffle=False)))


def load_net(name: str, weights: str, x: torch.Tensor) -> tuple[nn.Module, str]:
    model = create_model(name, num_classes=10)
    if weights == "init":
        calibrate_batchnorm(model, x[:256])  # BN statistics from the images; shifts stay exactly zero
        return model.eval(), "freshly initialised (BN shifts zero), BN statistics from 256 of the images"
    if weights == "cached":
        paths = sorted(glob.glob(os.path.join(CACHE, f"{name}-*", "net.safetensors")), key=os.path.getmtime)
        if not paths:
            raise SystemExit(f"no cached trained {name} under {CACHE}: pass --weights PATH or --weights init")
        weights = paths[-1]
    load_weights(model, weights)
    return model.eval(), f"trained ({weights})"


def nudged(model: nn.Module, eps: float) -> tuple[nn.Module, int]:
    """A copy whose exactly-zero entries of 1-D parameters are set to ``eps`` (the peer divides by them)."""
    out = copy.deepcopy(model)
    n = 0
    with torch.no_grad():
        for p in out.parameters():
            if p.dim() == 1:
                zero = p == 0
                n += int(zero.sum())
                p[zero] = eps
    return out, n


def run_peer(ll, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> np.ndarray:
    import loss_landscapes.metrics as llm

    metric = llm.Loss(nn.CrossEntropyLoss(), x, y)
    torch.manual_seed(0)  # its directions come from torch's global generator
    with torch.no_grad():
        return np.asarray(ll.random_plane(model, metric, distance=1, steps=steps, normalization="filter",
                                          deepcopy_model=True), dtype=float)


def run_ours(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, engine: str, chunk: int
             ) -> tuple[np.ndarray, np.ndarray]:
    dirs = [random_direction(model, seed=s) for s in (1, 2)]
    ev = GridEvaluator(model, dirs, x, y, chunk=chunk, engine=engine)
    xs = axis(steps, 1.0)
    return evaluate_surface(ev, xs, xs)


def bands(loss: np.ndarray, ref: np.ndarray, levels: int = 12) -> int:
    """Grid points whose contour band (``levels`` levels over ``ref``'s range) differs between the surfaces."""
    edges = np.linspace(ref.min(), ref.max(), levels)
    return int((np.digitize(loss, edges) != np.digitize(ref, edges)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--weights", default="cached", help="'cached' (newest trained net in the cache), 'init', "
                                                        "or a weights file")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--data-dir", default=SHARED)
    ap.add_argument("--grid", type=int, default=7, help="points per axis (the peer's steps)")
    ap.add_argument("--engines", default="torch,bf16", help="our GridEvaluator engines, comma-separated")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    ap.add_argument("--nudge", type=float, default=1e-6, help="value for the peer's zero 1-D parameter entries")
    ap.add_argument("--peer-site", default=None, help="directory holding loss_landscapes (pip install --target)")
    ap.add_argument("--compare-grid", type=int, default=0,
                    help="compare the bf16 and float32 engines' surfaces on this finer grid (default: the timed one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.peer_site:
        sys.path.insert(0, args.peer_site)
    try:
        import loss_landscapes as ll
    except ImportError:
        raise SystemExit("loss_landscapes is not importable: install it apart (see this script's docstring) and "
                         "pass --peer-site") from None
    from importlib.metadata import PathDistribution
    from pathlib import Path

    peer_version = next((PathDistribution(Path(p)).version for p in glob.glob(os.path.join(
        os.path.dirname(os.path.dirname(ll.__file__)), "loss_landscapes-*.dist-info"))), "?")
    torch.set_num_threads(args.threads)
    from skiplab.speed import cpu_flags, cpu_model, native_bf16

    engines = args.engines.split(",")
    x, y = load_images(args.data_dir, args.images)
    model, what = load_net(args.model, args.weights, x)
    peer_model, n_nudged = nudged(model, args.nudge)
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    print(f"{cpu_model()} ({', '.join(simd)}; native bf16: {native_bf16()[0]}); torch {torch.__version__}, "
          f"loss-landscapes {peer_version}; {args.threads} thread(s), {args.clock} clock, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{args.model}, {what}; {len(x)} CIFAR-10 test images; {args.grid}x{args.grid} grid; "
          f"{args.rounds} alternating rounds, set-up included")
    if n_nudged:
        try:  # one point on the net as it is
            got = f"{run_peer(ll, model, x[:64], y[:64], 1).ravel().tolist()} (one point)"
        except ZeroDivisionError as e:
            got = f"ZeroDivisionError ({e})"
        print(f"{n_nudged} zero entries of 1-D parameters: loss-landscapes on the net as it is: {got}; the peer "
              f"gets them nudged to {args.nudge:g}")
    now = time.process_time if args.clock == "cpu" else time.perf_counter
    sides = {"loss-landscapes random_plane": lambda: run_peer(ll, peer_model, x, y, args.grid)}
    for e in engines:
        sides[f"ours, GridEvaluator engine={e}"] = (lambda e=e: run_ours(model, x, y, args.grid, e, args.chunk))
    times: dict[str, list[float]] = {k: [] for k in sides}
    results: dict[str, object] = {}
    for r in range(args.rounds):
        for k in (list(sides) if r % 2 == 0 else list(reversed(sides))):
            t = now()
            results[k] = sides[k]()
            times[k].append(now() - t)
            print(f"  round {r + 1}: {k}: {times[k][-1]:.1f} s", flush=True)
    points = args.grid ** 2
    peer_key = next(iter(sides))
    peer_rate = points / statistics.median(times[peer_key])
    print(f"\n{'side':40s} {'s/surface':>10s} {'points/s':>9s} {'vs peer':>8s}   (median of {args.rounds} rounds)")
    rows = []
    for k, v in times.items():
        rate = points / statistics.median(v)
        rows.append({"side": k, "seconds": v, "points_per_s": rate, "vs_peer": rate / peer_rate})
        print(f"{k:40s} {statistics.median(v):10.1f} {rate:9.2f} {rate / peer_rate:7.2f}x")
    peer_surface = results[peer_key]
    print(f"\npeer surface: min {np.nanmin(peer_surface):.4f}, max {np.nanmax(peer_surface):.4f}, "
          f"NaN {int(np.isnan(peer_surface).sum())}")
    with torch.inference_mode():
        centre = nn.functional.cross_entropy(model(x), y).item()
    ours = {e: results[f"ours, GridEvaluator engine={e}"] for e in engines}
    mid = args.grid // 2
    for e, (loss, acc) in ours.items():
        at0 = f"; at (0, 0) {loss[mid, mid]:.6f} (the model's own loss {centre:.6f})" if args.grid % 2 else ""
        print(f"ours {e}: loss min {loss.min():.4f}, max {loss.max():.4f}{at0}")
    cmp = {}
    grid = args.grid
    if args.compare_grid:  # the precision comparison on a finer grid (not timed)
        grid = args.compare_grid
        ours = {e: run_ours(model, x, y, grid, e, args.chunk) for e in ("torch", "bf16")}
    if "torch" in ours and "bf16" in ours:
        points = grid ** 2
        (l32, a32), (l16, a16) = ours["torch"], ours["bf16"]
        d = np.abs(l16 - l32)
        cmp = {"max_abs": float(d.max()), "max_rel": float((d / np.abs(l32)).max()),
               "max_acc_diff": float(np.abs(a16 - a32).max()), "bands_changed": bands(l16, l32),
               "argmin_same": bool(np.argmin(l16) == np.argmin(l32))}
        xs = axis(grid, 1.0)
        cmp["convex_fraction"] = [convex_fraction(l32, xs, xs), convex_fraction(l16, xs, xs)]
        print(f"bf16 vs float32 engine over the {points} points: loss max |diff| {cmp['max_abs']:.2e}, max relative "
              f"{cmp['max_rel']:.2e}; accuracy max |diff| {cmp['max_acc_diff']:.4f}; points in another of 12 contour "
              f"bands {cmp['bands_changed']}/{points}; same minimum point: {cmp['argmin_same']}; locally convex "
              f"share of the interior (the landscape experiment's measure) {cmp['convex_fraction'][0]:.3f} float32, "
              f"{cmp['convex_fraction'][1]:.3f} bf16")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "bf16_vs_float32": cmp,
                       "peer_surface": peer_surface.tolist(),
                       "ours": {e: [v[0].tolist(), v[1].tolist()] for e, v in ours.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
