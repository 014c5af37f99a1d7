"""Loss landscapes (Li et al. 2018): filter normalisation, the fast evaluator against the straightforward loop,
curvature measures on known surfaces, Lanczos, the experiment (and its torchrun split: same surface as one
process, only rank 0 writes) and claim verdicts that follow the numbers both ways."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from skiplab.analysis import landscape as LS
from skiplab.analysis.hooks import calibrate_batchnorm
from skiplab.experiments import landscape
from skiplab.experiments.base import from_dict
from skiplab.export import onnxruntime_available
from skiplab.io import to_jsonable
from skiplab.registry import create_model
from skiplab.report.artifacts import render_figures

TINY = dict(depth=20, width=0.25, data="synthetic_digits", image_size=8, n_train=64, n_test=32, steps=4,
            batch_size=16, schedule="onecycle", crop_padding=0, flip=False, threads=1, n_seeds=1, grid_points=3,
            line_points=3, n_eval=16, hessian_grid=2, hessian_steps=3, hessian_batch=8)


@pytest.fixture(scope="module")
def tiny_result() -> landscape.Result:
    """The tiny run, in this process, with the settings `--quick --set ...TINY` gives the command line."""
    return landscape.run(dataclasses.replace(landscape.Config.quick(), **TINY))


def _model(name: str = "resnet20") -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = create_model(name, width=0.25)
    x, y = torch.randn(20, 3, 8, 8), torch.randint(0, 10, (20,))
    calibrate_batchnorm(model, torch.randn(32, 3, 8, 8))  # non-trivial BN statistics, eval mode
    return model, x, y


def test_filter_normalised_direction() -> None:
    model, _, _ = _model()
    d = LS.random_direction(model, seed=4)
    for name, p in model.named_parameters():
        if p.dim() > 1:  # every filter has the norm of the weight's filter
            assert torch.allclose(d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-4)
        else:
            assert not d[name].any()  # biases and BN parameters: zero direction
    again = LS.random_direction(model, seed=4)
    assert all(torch.equal(d[k], again[k]) for k in d)
    assert not torch.equal(d["stem.conv.weight"], LS.random_direction(model, seed=5)["stem.conv.weight"])
    layer = LS.random_direction(model, seed=4, norm="layer", ignore_biasbn=False)
    w = dict(model.named_parameters())
    assert torch.allclose(layer["head.fc.weight"].norm(), w["head.fc.weight"].detach().norm(), rtol=1e-5)
    assert torch.equal(layer["head.fc.bias"], w["head.fc.bias"].detach())
    with pytest.raises(ValueError, match="norm must be one of"):
        LS.random_direction(model, seed=0, norm="unit")
    with pytest.raises(ValueError, match="does not match"):
        LS.GridEvaluator(model, [{"stem.conv.weight": d["stem.conv.weight"]}], torch.randn(2, 3, 8, 8),
                         torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="engine must be one of"):
        LS.GridEvaluator(model, [d], torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), engine="tvm")


ENGINES = ["torch", pytest.param("onnxruntime", marks=pytest.mark.skipif(
    not onnxruntime_available(), reason="onnxruntime is not installed (pip install 'skiplab[onnx]'; make test does)"))]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name,ignore_biasbn", [("resnet20", True), ("plain20", True), ("resnet20", False)])
def test_fast_evaluator_matches_the_straightforward_loop(name: str, ignore_biasbn: bool, engine: str) -> None:
    model, x, y = _model(name)
    dirs = [LS.random_direction(model, seed=s, ignore_biasbn=ignore_biasbn) for s in (1, 2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xs, ys = [-1.0, 0.0, 0.5], [-0.5, 0.25]
    ev = LS.GridEvaluator(model, dirs, x, y, chunk=8, engine=engine)
    assert ev.folded == ignore_biasbn and ev.engine == engine  # BN can only be folded when its direction is zero
    loss, acc = LS.evaluate_surface(ev, xs, ys)
    ref_loss, ref_acc = LS.naive_surface(model, dirs, [(x[:12], y[:12]), (x[12:], y[12:])], xs, ys)
    assert loss.shape == (2, 3)
    assert np.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6) and np.array_equal(acc, ref_acc)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    centre, _ = ev([[0.0, 0.0]])
    with torch.no_grad():
        direct = nn.functional.cross_entropy(model.eval()(x), y).item()
    assert centre[0] == pytest.approx(direct, rel=1e-5)


def test_bf16_engine_matches_the_torch_engine() -> None:
    """The bf16 engine: the same folded copy in bfloat16, each point's parameters summed in float32 and rounded
    once; its surface equals the float32 engine's to bf16 precision (the tolerance BENCHMARKS.md states)."""
    model, x, y = _model()
    dirs = [LS.random_direction(model, seed=s) for s in (1, 2, 3)]
    xs, ys = [-1.0, 0.0, 0.5], [-0.5, 0.25]
    ref_ev = LS.GridEvaluator(model, dirs[:2], x, y, chunk=8)
    ev = LS.GridEvaluator(model, dirs[:2], x, y, chunk=8, engine="bf16")
    assert ev.engine == "bf16" and ev.folded and all(p.dtype == torch.bfloat16 for p in ev.net.parameters())
    loss, acc = LS.evaluate_surface(ev, xs, ys)
    ref_loss, ref_acc = LS.evaluate_surface(ref_ev, xs, ys)
    assert loss.dtype == np.float64 and np.allclose(loss, ref_loss, rtol=2e-2, atol=1e-3)
    assert np.abs(acc - ref_acc).max() <= 2 / len(y)  # a near-tie may flip
    # with three directions each parameter is the float32 sum rounded once to bf16
    ev3 = LS.GridEvaluator(model, dirs, x, y, chunk=8, engine="bf16")
    ref3 = LS.GridEvaluator(model, dirs, x, y, chunk=8)
    c = (0.3, -0.7, 0.45)
    ev3.set_point(c)
    ref3.set_point(c)
    for k, p in ev3.params.items():
        assert torch.equal(p, ref3.params[k].to(torch.bfloat16)), k
    with pytest.raises(ValueError, match="engine must be one of"):
        LS.GridEvaluator(model, dirs, x, y, engine="fp8")


def test_curvature_of_known_surfaces() -> None:
    xs = ys = LS.axis(9, 1.0)
    a, b = np.meshgrid(xs, ys)
    lmin, lmax = LS.surface_curvature(a ** 2 - b ** 2, xs, ys)
    assert np.allclose(lmin[1:-1, 1:-1], -2) and np.allclose(lmax[1:-1, 1:-1], 2) and np.isnan(lmin[0, 0])
    assert LS.convex_fraction(a ** 2 + 3 * b ** 2 + a * b, xs, ys) == 1.0
    assert LS.convex_fraction(a ** 2 - b ** 2, xs, ys) == 0.0
    assert LS.convex_fraction(-np.cos(3 * a) + b ** 2, xs, ys, radius=0.4) == 1.0  # convex near the origin only
    assert LS.convex_fraction(-np.cos(3 * a) + b ** 2, xs, ys) < 1.0
    with pytest.raises(ValueError, match="at least 3x3"):
        LS.surface_curvature(np.zeros((2, 5)), [0, 1, 2, 3, 4], [0, 1])


def test_lanczos_and_hessian_extremes_are_exact_with_enough_steps() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(25, 25, generator=g, dtype=torch.float64)
    a = a + a.T
    ev = torch.linalg.eigvalsh(a)
    lo, hi = LS.lanczos_extremes(lambda v: a @ v, 25, 25, dtype=torch.float64)
    assert lo == pytest.approx(float(ev[0]), rel=1e-8) and hi == pytest.approx(float(ev[-1]), rel=1e-8)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))  # 31 parameters
    x, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()
    d = {k: torch.randn(p.shape) * 0.3 for k, p in net.named_parameters()}

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {k: t.view(s).float() for k, t, s in zip(names, parts, shapes)}
        return nn.functional.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    shift = torch.cat([d[k].reshape(-1) for k in names]).double()
    dense = torch.autograd.functional.hessian(loss_of, flat0 + 0.5 * shift)
    ev = torch.linalg.eigvalsh(dense.double())
    lo, hi = LS.hessian_extremes(net, x, y, point=(0.5,), directions=[d], steps=31)
    assert lo == pytest.approx(float(ev[0]), abs=1e-4) and hi == pytest.approx(float(ev[-1]), rel=1e-4)
    with pytest.raises(ValueError, match="coordinates"):
        LS.hessian_extremes(net, x, y, point=(0.5, 1.0), directions=[d])


def test_surface_npz_round_trip(tmp_path: Path) -> None:
    s = LS.Surface(np.array([0.0, 1.0]), np.array([-1.0, 0.0, 1.0]), np.arange(6.0).reshape(3, 2), np.ones((3, 2)))
    s.save(str(tmp_path / "s.npz"))
    t = LS.Surface.load(str(tmp_path / "s.npz"))
    assert all(np.array_equal(getattr(s, k), getattr(t, k)) for k in ("xs", "ys", "loss", "acc"))


def test_torchrun_splits_the_grid_and_matches_one_process(tmp_path: Path, tiny_result: landscape.Result) -> None:
    """2 processes (gloo) under torchrun: same surfaces as the in-process run, only rank 0 writes."""
    out = tmp_path / "run"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2", "-m", "skiplab",
           "experiment", "landscape", "--quick", *sets, "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    p = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert p.stdout.count("ran in") == 1  # only rank 0 reports (and writes)
    saved = json.loads((out / "result.json").read_text())
    assert saved["world_size"] == 2
    single = tiny_result
    assert single.world_size == 1
    for a, b in zip(single.nets, saved["nets"]):
        assert np.array_equal(np.asarray(a.loss), np.asarray(b["loss"]))  # the same arithmetic on each point
        assert np.array_equal(np.asarray(a.line_loss), np.asarray(b["line_loss"]))
        # the Hessian too: every rank evaluates an identical copy (same weights, same memory layout)
        assert np.allclose(a.lambda_max, b["lambda_max"], rtol=1e-9)


def test_tiny_landscape_experiment_round_trips_and_draws(tiny_result: landscape.Result) -> None:
    result = tiny_result
    assert [n.skip for n in result.nets] == ["residual", "none"]
    n = result.nets[0]
    assert np.asarray(n.loss).shape == (3, 3) and len(n.line_loss) == 3 and len(n.lambda_min) == 4
    assert n.loss[1][1] == pytest.approx(n.line_loss[1])  # the centre, computed twice
    assert {c.key for c in result.claims} == {"residual_surface_more_convex", "hessian_ratio"}
    again = from_dict(landscape.Result, json.loads(json.dumps(to_jsonable(result))))
    assert np.array_equal(np.asarray(again.nets[1].loss), np.asarray(result.nets[1].loss))
    surf = landscape.surfaces(again)[("none", 0)]
    assert surf.loss.shape == (3, 3)
    assert len(render_figures(landscape.SPEC, again)) == 4


def _net(skip: str, convex: float, lmin: list[float]) -> landscape.NetLandscape:
    return landscape.NetLandscape(skip, 0, [-1, 0, 1], [-1, 0, 1], [[1.0] * 3] * 3, [[0.5] * 3] * 3, [-1, 0, 1],
                                  [1, 0.1, 1], [0.5, 1, 0.5], [[0, 0]] * len(lmin), lmin, [10.0] * len(lmin),
                                  convex_all=convex, convex_inner=convex)


def test_claims_follow_the_numbers() -> None:
    cfg = landscape.Config(**TINY)
    good = landscape.Result(cfg, [_net("residual", 0.95, [-0.1, 0.5]), _net("none", 0.6, [-4.0, -2.0])], [], [])
    assert {c.key: c.held for c in landscape.check_claims(good)} == {"residual_surface_more_convex": True,
                                                                     "hessian_ratio": True}
    bad = landscape.Result(cfg, [_net("residual", 0.5, [-5.0, -5.0]), _net("none", 0.9, [0.0, -0.1])], [], [])
    assert {c.key: c.held for c in landscape.check_claims(bad)} == {"residual_surface_more_convex": False,
                                                                    "hessian_ratio": False}
    assert math.isclose(good.nets[0].ratio[0], 0.01) and good.nets[0].ratio[1] == 0.0
    with pytest.raises(ValueError, match="grid_points must be >= 3"):
        landscape.Config(**{**TINY, "grid_points": 2})
    assert landscape.Config().grid_points == 51 and landscape.Config().depth == 56
