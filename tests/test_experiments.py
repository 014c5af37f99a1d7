"""Analyses and experiments at tiny settings: metrics on synthetic noise, the vanishing-gradient effect itself,
per-seed results, determinism, JSON round trips, and the `skiplab experiment` command."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from skiplab.analysis.gradient_flow import fit_geometric, gradient_flow
from skiplab.analysis.hooks import calibrate_batchnorm, main_path_units
from skiplab.analysis.shattered import autocorrelation, brown_noise, correlation_matrix, input_gradients, \
    lag1_autocorrelation, spectral_slope, white_noise
from skiplab.experiments import get_experiment, shattered, signal, vanishing
from skiplab.experiments.base import from_dict, parse_override
from skiplab.io import to_jsonable
from skiplab.models.mlp import MLP

TINY = {
    "vanishing": vanishing.Config(depths=(3, 6), acts=("sigmoid", "relu"), norms=("none", "batch"),
                                  skips=("none", "residual"), width=8, in_features=6, batch=8, n_seeds=2,
                                  cnn_models=()),
    "shattered": shattered.Config(nets=(shattered.NetSpec("1-layer", 0, "none", "none"),
                                        shattered.NetSpec("24-layer plain", 6, "none", "batch"),
                                        shattered.NetSpec("50-block resnet", 6, "residual", "batch")),
                                  n_points=32, width=16, n_seeds=2, max_lag=8, sweep_depths=(1, 3), sweep_seeds=2),
    "signal": signal.Config(depth=6, width=16, batch=16, n_seeds=2),
}


# ------------------------------------------------------------------------------------------- metrics

def test_noise_references_have_textbook_statistics() -> None:
    white, brown = white_noise(200, 256, seed=0), brown_noise(200, 256, seed=1)
    assert abs(np.mean(lag1_autocorrelation(white))) < 0.02
    assert np.mean(lag1_autocorrelation(brown)) > 0.95
    assert abs(np.mean(spectral_slope(white))) < 0.05
    assert np.mean(spectral_slope(brown)) == pytest.approx(-2.0, abs=0.05)
    acf = autocorrelation(white[:3], 5)
    assert acf.shape == (3, 6) and np.allclose(acf[:, 0], 1.0)
    assert isinstance(lag1_autocorrelation(white[0]), float)


def test_correlation_matrix_has_unit_diagonal_and_sees_structure() -> None:
    c_white = correlation_matrix(white_noise(400, 32, seed=2))
    c_brown = correlation_matrix(brown_noise(400, 32, seed=3))
    assert c_white.shape == (32, 32) and np.allclose(np.diag(c_white), 1.0)
    assert abs(c_white[10, 11]) < 0.2 < c_brown[10, 11]
    with pytest.raises(ValueError, match="realisations"):
        correlation_matrix(white_noise(1, 32, seed=0))


def test_fit_geometric_recovers_a_factor() -> None:
    factor, r2 = fit_geometric([1, 2, 3, 4], [0.5, 0.25, 0.125, 0.0625])
    assert factor == pytest.approx(0.5) and r2 == pytest.approx(1.0)
    assert all(math.isnan(v) for v in fit_geometric([1], [1.0]))


# ------------------------------------------------------------------------------------------- analysis on nets

def test_calibrated_batchnorm_reproduces_train_mode_exactly() -> None:
    torch.manual_seed(0)
    model = MLP(3, 16, 1, 1, norm="batch")
    x = torch.linspace(-2, 2, 64).unsqueeze(1)
    model.train()
    with torch.no_grad():
        train_out = model(x)
    assert calibrate_batchnorm(model, x) == 4
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(x), train_out, rtol=1e-4, atol=1e-5)


def test_input_gradients_match_per_point_autograd() -> None:
    torch.manual_seed(0)
    model = MLP(2, 16, 1, 1, norm="batch", bias_std=1.0)
    x = torch.linspace(-2, 2, 32).unsqueeze(1)
    grads = input_gradients(model, x)  # calibrates BN on x, then eval mode
    for i in (0, 7, 31):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi).sum(), xi)
        assert grads[i] == pytest.approx(g.item(), rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="one output"):
        input_gradients(MLP(1, 8, 1, 2), x)


def test_gradient_flow_reads_every_unit() -> None:
    torch.manual_seed(0)
    model = MLP(4, 8, 5, 3, skip="highway")
    flow = gradient_flow(model, torch.randn(6, 5), torch.randint(0, 3, (6,)))
    assert flow.names == ["stem", "block1", "block2", "block3", "block4", "head"]
    assert len(flow.weight_grad_norm) == 6 and all(g > 0 for g in flow.weight_grad_norm)
    assert all(math.isfinite(v) for v in flow.act_std + flow.output_grad_norm)
    with pytest.raises(TypeError, match="stem"):
        main_path_units(torch.nn.Linear(2, 2))


def test_sigmoid_plain_gradient_shrinks_with_depth_but_residual_does_not() -> None:
    """The effect itself, measured: this fails if skips stop carrying gradient or sigmoid nets stop vanishing."""
    cfg = vanishing.Config(depths=(4, 16), acts=("sigmoid",), norms=("none",), skips=("none", "residual"), width=16,
                           in_features=8, batch=16, n_seeds=2, cnn_models=())
    result = vanishing.run(cfg)
    plain = {r.depth: r for r in result.runs if r.skip == "none"}
    residual = {r.depth: r for r in result.runs if r.skip == "residual"}
    fit = {f.skip: f for f in result.fits}
    assert max(fit["none"].factor) < 0.5  # per-layer factor ~ 0.25 (sigmoid' <= 1/4)
    assert max(plain[16].ratio) < 1e-5 and max(plain[16].ratio) < min(plain[4].ratio)
    assert all(0.2 < r < 5 for r in residual[16].ratio)
    assert 0.8 < min(fit["residual"].factor) and max(fit["residual"].factor) < 1.25
    claims = {c.key: c for c in result.claims}
    assert claims["sigmoid_plain_geometric"].held and claims["identity_skip_within_10x"].held


# ------------------------------------------------------------------------------------------- experiments

@pytest.fixture(scope="module")
def tiny_results() -> dict:
    return {name: get_experiment(name).run(cfg) for name, cfg in TINY.items()}


def _comparable(result) -> dict:
    data = to_jsonable(result)
    data.pop("wall_time_s")
    return data


@pytest.mark.parametrize("name", list(TINY))
def test_run_keeps_per_seed_values_and_is_deterministic(name: str, tiny_results: dict) -> None:
    spec = get_experiment(name)
    result = tiny_results[name]
    assert isinstance(result, spec.result_cls) and result.claims and result.tables
    assert all(isinstance(c.held, bool) and c.evidence for c in result.claims)
    if name == "vanishing":
        assert all(len(r.weight_grad) == 2 and len(r.ratio) == 2 for r in result.runs)
    elif name == "shattered":
        assert all(len(s.values) == 2 and len(s.values[0]) == 32 and len(s.lag1) == 2 for s in result.series)
    else:
        assert all(len(r.rms) == 2 and len(r.rms[0]) == 6 + 2 for r in result.runs)
    assert _comparable(spec.run(TINY[name])) == _comparable(result)


@pytest.mark.parametrize("name", list(TINY))
def test_result_survives_a_json_round_trip(name: str, tiny_results: dict) -> None:
    spec = get_experiment(name)
    data = json.loads(json.dumps(to_jsonable(tiny_results[name])))
    again = from_dict(spec.result_cls, data)
    assert isinstance(again.config, spec.config_cls)
    assert to_jsonable(again) == to_jsonable(tiny_results[name])


def test_vanishing_covers_a_cifar_cnn_through_the_common_interface() -> None:
    cfg = vanishing.Config(depths=(2,), acts=("relu",), norms=("none",), skips=("none",), width=4, in_features=4,
                           batch=4, n_seeds=1, cnn_models=("resnet20", "no_such_model"), cnn_norms=("batch",),
                           cnn_batch=2, cnn_image_size=8)
    result = vanishing.run(cfg)
    cnn = [r for r in result.runs if r.family == "cnn"]
    assert len(cnn) == 1 and cnn[0].depth == 9 and len(cnn[0].weight_grad[0]) == 9 + 2
    assert any("no_such_model" in n for n in result.notes)


def test_configs_validate_at_the_boundary() -> None:
    with pytest.raises(ValueError, match="depths"):
        vanishing.Config(depths=(1,))
    with pytest.raises(ValueError, match="n_seeds"):
        signal.Config(n_seeds=0)
    with pytest.raises(ValueError, match="max_lag"):
        shattered.Config(max_lag=0)
    with pytest.raises(ValueError, match="branch_scale"):
        signal.Config(variants=(signal.Variant("x", "residual", branch_scale="big"),))
    assert parse_override(shattered.Config, "sweep_depths=1,2") == ("sweep_depths", (1, 2))
    assert parse_override(vanishing.Config, "width=4") == ("width", 4)
    with pytest.raises(ValueError, match="no setting"):
        parse_override(vanishing.Config, "colour=red")
    with pytest.raises(ValueError, match="width takes an integer"):
        parse_override(vanishing.Config, "width=wide")
    with pytest.raises(KeyError, match="unknown experiment"):
        get_experiment("degradation_typo")


def test_cli_experiment_writes_result_figures_and_manifest(tmp_path: Path) -> None:
    import skiplab.cli.experiment  # noqa: F401  (registers the command)
    from skiplab.cli.app import app

    out = tmp_path / "sig"
    args = ["experiment", "signal", "--quick", "--out", str(out)]
    for s in ["n_seeds=2", "width=8", "depth=5", "batch=8"]:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "result.json").is_file() and (out / "manifest.json").is_file()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["activation_rms.png"]
    assert (out / pngs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experiment"] == "signal" and manifest["config"]["n_seeds"] == 2
    assert manifest["seeds"] == [0, 1] and "--set depth=5" in manifest["rerun"]
    saved = json.loads((out / "result.json").read_text())
    assert len(saved["runs"][0]["rms"]) == 2 and len(saved["runs"][0]["rms"][0]) == 5 + 2
    assert "held" in res.output and str(out) in res.output.replace("\n", "")
    listing = CliRunner().invoke(app, ["experiment", "--list"])
    assert listing.exit_code == 0 and "vanishing" in listing.output
    bad = CliRunner().invoke(app, ["experiment", "signal", "--set", "depth=deep", "--out", str(out)])
    assert bad.exit_code != 0 and "depth" in str(bad.exception)
    before = (out / "result.json").read_bytes()
    again = CliRunner().invoke(app, args)  # the folder holds a result: refused, nothing touched
    assert again.exit_code != 0 and "pass --overwrite" in str(again.exception)
    assert (out / "result.json").read_bytes() == before
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
