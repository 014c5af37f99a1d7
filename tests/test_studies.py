"""The small studies (two_layer, identity_fit, exploding) and the sigmoid-slope part of vanishing: tiny runs,
the analytic gradients against autograd, verdicts that follow the numbers (and fail when the numbers say so),
figures, JSON round trips, the report and the command line."""
from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from skiplab.analysis.derivatives import backward_factors, derivative, gaussian_derivative_rms
from skiplab.experiments import exploding, get_experiment, identity_fit, two_layer, vanishing
from skiplab.experiments.base import from_dict
from skiplab.io import to_jsonable
from skiplab.report.figures import figures_for

TINY = {
    "two_layer": two_layer.Config(dim=4, hidden=8, batch=6, scales=(1e-4, 1e-2, 1.0), n_seeds=2),
    "identity_fit": identity_fit.Config(dim=4, hidden=8, depths=(1, 3), variants=("plain", "residual"), steps=20,
                                        batch=16, n_test=64, n_seeds=2),
    "exploding": exploding.Config(depth=6, width=16, in_features=4, classes=3, batch=8, steps=6,
                                  input_scales=(1.0, 1000.0), init_depth=30, init_width=32, init_batch=32,
                                  cnn_models=("plain20", "resnet20", "no_such_net"), cnn_batch=2, cnn_image_size=8,
                                  n_seeds=2),
}
NAMES = list(TINY)


@pytest.fixture(scope="module")
def results() -> dict:
    return {name: get_experiment(name).run(cfg) for name, cfg in TINY.items()}


def _claims(result) -> dict:
    return {c.key: c for c in result.claims}


def _comparable(result) -> dict:
    data = to_jsonable(result)
    data.pop("wall_time_s")
    return data


# ------------------------------------------------------------------------------------------- every study

@pytest.mark.parametrize("name", NAMES)
def test_tiny_run_is_complete_and_deterministic(name: str, results: dict) -> None:
    spec = get_experiment(name)
    result = results[name]
    assert isinstance(result, spec.result_cls) and result.claims and result.tables and result.wall_time_s > 0
    assert all(isinstance(c.held, bool) and c.evidence and c.test for c in result.claims)
    assert _comparable(spec.run(TINY[name])) == _comparable(result)


@pytest.mark.parametrize("name", NAMES)
def test_result_survives_a_json_round_trip(name: str, results: dict) -> None:
    spec = get_experiment(name)
    data = json.loads(json.dumps(to_jsonable(results[name])))
    again = from_dict(spec.result_cls, data)
    assert isinstance(again.config, spec.config_cls)
    assert to_jsonable(again) == to_jsonable(results[name])


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_draws(name: str, results: dict) -> None:
    specs = figures_for(name)
    assert specs
    for spec in specs:
        fig = spec.draw(results[name])
        assert fig is not None, spec.slug
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=40)
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", NAMES)
def test_quick_setting_is_smaller_than_the_full_one(name: str) -> None:
    spec = get_experiment(name)
    quick, full = spec.config(quick=True), spec.config()
    assert quick != full and quick.n_seeds <= full.n_seeds


def test_configs_validate_at_the_boundary() -> None:
    with pytest.raises(ValueError, match="scales"):
        two_layer.Config(scales=(0.0,))
    with pytest.raises(ValueError, match="variants"):
        identity_fit.Config(variants=("dense",))
    with pytest.raises(ValueError, match="depths"):
        identity_fit.Config(depths=(0,))
    with pytest.raises(ValueError, match="input_scales"):
        exploding.Config(input_scales=(-1.0,))
    with pytest.raises(ValueError, match="branch_scale"):
        exploding.Config(nets=(exploding.Net("x", "residual", "none", "huge"),))
    with pytest.raises(ValueError, match="norm"):
        exploding.Config(nets=(exploding.Net("x", "none", "layer"),))


# ------------------------------------------------------------------------------------------- two_layer

@pytest.mark.parametrize("skip", two_layer.SKIPS)
def test_analytic_gradients_equal_autograd(skip: str) -> None:
    cfg = two_layer.Config(dim=5, hidden=7, batch=4, n_seeds=1)
    for scale in (1e-3, 1.0, 3.0):
        m = two_layer.measure(cfg, seed=3, skip=skip, scale=scale)
        assert m["error"] < 1e-12
        assert 0 < m["active"] < 1  # both kinds of unit: D is neither 0 nor I
        if skip == "none":
            assert m["identity_route"] == 0.0


def test_the_comparison_catches_a_wrong_formula() -> None:
    """The residual net's autograd gradient against the plain formula (identity term left out) must differ."""
    g = torch.Generator().manual_seed(0)
    d, h, n = 4, 6, 5
    u, t = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    w0, w1 = torch.eye(d, dtype=torch.float64), torch.randn(h, d, generator=g, dtype=torch.float64)
    w2, b1, b2 = torch.randn(d, h, generator=g, dtype=torch.float64), torch.zeros(h).double(), torch.zeros(d).double()
    x = (u @ w0.T).requires_grad_(True)
    y = x + torch.relu(x @ w1.T + b1) @ w2.T + b2
    ((y - t).square().sum() / (2 * n)).backward()
    right = two_layer.analytic_gradients(u, t, w0, w1, b1, w2, b2, residual=True)
    torch.testing.assert_close(right["dx"], x.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(right["dx"] - right["branch"], right["g"])  # dL/dx = g + g W2 D W1
    wrong = two_layer.analytic_gradients(u, t, w0, w1, b1, w2, b2, residual=False)
    assert float((wrong["dx"] - x.grad).abs().max()) > 1e-3


def test_two_layer_verdicts_follow_the_numbers(results: dict) -> None:
    claims = _claims(results["two_layer"])
    assert all(c.held for c in claims.values()), [c.evidence for c in claims.values() if not c.held]
    # only moderate W2 scales: nothing vanishes, so the vanishing claims must fail
    mild = two_layer.run(dataclasses.replace(TINY["two_layer"], scales=(0.5, 1.0), dead_bias=0.0))
    c = _claims(mild)
    assert not c["plain_input_gradient_vanishes"].held and not c["skip_keeps_output_gradient"].held
    assert not c["dead_units"].held  # b1 = 0: about half the units are active
    assert not c["skip_rescues_upstream_not_branch"].held
    assert c["analytic_equals_autograd"].held
    broken = dataclasses.replace(mild, sweep=[dataclasses.replace(r, error=[1e-3] * len(r.error)) for r in mild.sweep])
    assert not _claims(dataclasses.replace(broken, claims=two_layer.check_claims(broken)))[
        "analytic_equals_autograd"].held


def test_skip_hands_dl_dy_to_x_when_the_branch_is_silent(results: dict) -> None:
    r = results["two_layer"]
    plain, residual = two_layer.curve(r, "none"), two_layer.curve(r, "residual")
    assert max(plain[0].grad_x) < 1e-3 * min(plain[0].grad_y)  # W2 x 1e-4: the plain input gradient is gone
    np.testing.assert_allclose(residual[0].grad_x, residual[0].grad_y, rtol=1e-3)
    dead = {d.skip: d for d in r.dead}
    assert dead["none"].grad_x == [0.0, 0.0] and dead["residual"].grad_x == dead["residual"].grad_y


# ------------------------------------------------------------------------------------------- identity_fit

def test_build_represents_the_identity_as_the_docstring_says() -> None:
    torch.manual_seed(0)
    d = 3
    x = torch.randn(10, d)
    residual = identity_fit.build("residual", 4, d, 2 * d)
    for block in residual:
        torch.nn.init.zeros_(block.branch[2].weight)
    torch.testing.assert_close(residual(x), x)  # zero branches: the identity, weight norm of W2 = 0
    plain = identity_fit.build("plain", 4, d, 2 * d)
    with torch.no_grad():
        for block in plain:  # relu(x) - relu(-x) = x
            block.branch[0].weight.copy_(torch.cat([torch.eye(d), -torch.eye(d)]))
            block.branch[2].weight.copy_(torch.cat([torch.eye(d), -torch.eye(d)], dim=1))
    torch.testing.assert_close(plain(x), x)


def test_identity_fit_verdicts_follow_the_numbers(results: dict) -> None:
    result = results["identity_fit"]
    assert {f.variant for f in result.fits} == {"plain", "residual"} and all(len(f.final_mse) == 2 for f in result.fits)

    def fit(variant: str, depth: int, wd: float, mse: float) -> identity_fit.Fit:
        return identity_fit.Fit(variant, depth, wd, [0], [1.0], [mse], [1.0], [0], [[mse]])

    cfg = identity_fit.Config(depths=(1, 8), variants=("plain", "residual"), weight_decays=(0.0, 1.0))

    def verdicts(fits: list) -> dict:
        return _claims(identity_fit.Result(cfg, fits, identity_fit.check_claims(identity_fit.Result(cfg, fits, [], [])),
                                           []))

    textbook = [fit("plain", 1, 0.0, 0.05), fit("plain", 8, 0.0, 0.5), fit("plain", 1, 1.0, 0.06),
                fit("plain", 8, 1.0, 0.7), fit("residual", 1, 0.0, 0.01), fit("residual", 8, 0.0, 0.01),
                fit("residual", 1, 1.0, 0.005), fit("residual", 8, 1.0, 0.004)]
    held = verdicts(textbook)
    assert len(held) == 4 and all(c.held for c in held.values())
    # plain flat and untouched by decay, residual worse with depth and with decay: every claim must fail
    contrary = [fit("plain", d, wd, 0.3) for d in (1, 8) for wd in (0.0, 1.0)]
    contrary += [fit("residual", d, 0.0, 0.03 * d) for d in (1, 8)] + [fit("residual", d, 1.0, 0.9) for d in (1, 8)]
    failed = verdicts(contrary)
    assert len(failed) == 4 and not any(c.held for c in failed.values())
    strict = identity_fit.run(dataclasses.replace(TINY["identity_fit"], good_mse=1e-9))
    assert not _claims(strict)["residual_fits_at_every_depth"].held


def test_identity_fit_notes_report_the_unscaled_residual_net() -> None:
    cfg = identity_fit.Config(depths=(8,), variants=("residual_he",), weight_decays=(0.0, 1.0))
    fits = [identity_fit.Fit("residual_he", 8, 0.0, [0], [400.0], [3.0], [1.0], [0], [[3.0]]),
            identity_fit.Fit("residual_he", 8, 1.0, [0], [400.0], [0.001], [1.0], [0], [[0.001]])]
    notes = identity_fit.make_notes(identity_fit.Result(cfg, fits, [], []))
    assert "does not fit the identity at depth 8: test MSE 3" in notes[0] and "starting from 400" in notes[0]
    assert "weight decay 1 the same unscaled residual net does fit" in notes[1]
    fits[0].final_mse = [0.01]
    notes = identity_fit.make_notes(identity_fit.Result(cfg, fits, [], []))
    assert len(notes) == 1 and "fits the identity at depth 8" in notes[0] and "does not" not in notes[0]


# ------------------------------------------------------------------------------------------- exploding

def test_exploding_tiny_run_records_divergence_and_gradients(results: dict) -> None:
    result = results["exploding"]
    assert any("no_such_net" in n for n in result.notes)
    assert {r.model for r in result.init if r.family == "cnn"} == {"plain20", "resnet20"}
    for t in result.training:
        assert len(t.loss) == 2 and all(len(l) == TINY["exploding"].steps for l in t.loss)
        for losses, stop in zip(t.loss, t.diverged_at):
            if stop is None:
                assert all(math.isfinite(v) for v in losses)
            else:
                assert all(math.isnan(v) for v in losses[stop + 1:])
    raw = exploding.find(result, "none", "none", 1000.0)
    assert all(d is not None for d in raw.diverged_at)  # x1000 inputs blow the plain net up within 6 steps
    assert all(d is None for t in result.training if t.net.norm == "batch" for d in t.diverged_at)
    claims = _claims(result)
    for key in ("common_bn_fixes_exploding", "residual_twin_bounded"):
        runs = [r for r in result.init if r.norm == "batch" and r.skip == ("none" if key.startswith("common")
                                                                           else "residual")]
        assert claims[key].held == all(0.1 <= float(np.median(r.ratio)) <= 10 for r in runs)


def test_batchnorm_plain_net_explodes_and_the_page_says_so() -> None:
    cfg = dataclasses.replace(TINY["exploding"], nets=(), init_depth=30, init_width=32, init_batch=32, cnn_models=(),
                              n_seeds=1)
    result = exploding.run(cfg)
    plain = next(r for r in result.init if r.skip == "none" and r.norm == "batch")
    assert plain.ratio[0] > 10 and plain.growth[0] > 1.05  # grows toward the input, as Yang et al. 2019 predict
    claims = _claims(result)
    assert not claims["common_bn_fixes_exploding"].held and claims["residual_twin_bounded"].held
    assert "contradicts" in result.notes[0] and "arXiv:1902.08129" in result.notes[0]


def test_a_spike_counts_as_a_blow_up_even_if_it_stays_finite() -> None:
    net = exploding.Net("x", "residual", "none")
    t = exploding.Training(net, 1000.0, [0, 1], [[9.0, 3e5, 2.3, 2.3], [9.0, math.inf, math.nan, math.nan]],
                           [[5.0, 2e6, 0.1, 0.1], [5.0, math.inf, math.nan, math.nan]], [None, 1])
    assert exploding.blowup_steps(t, 1e6) == [1, 1] and exploding.blowup_steps(t, 1e7) == [None, 1]
    story = exploding._when(t, 1e6)
    assert "gradient norm 2e+06 at step 1, final loss 2.3" in story and "inf/NaN at step 1" in story
    assert exploding._when(dataclasses.replace(t, diverged_at=[None, None], grad_norm=[[1.0] * 4] * 2),
                           1e6) == "finite throughout"


def test_exploding_verdicts_fail_when_nothing_explodes() -> None:
    cfg = dataclasses.replace(TINY["exploding"], input_scales=(1.0, 1.5), init_depth=2, cnn_models=(), n_seeds=1)
    claims = _claims(exploding.run(cfg))
    assert not claims["raw_inputs_diverge"].held  # x1.5 is not unnormalised enough to blow up in 6 steps


# ------------------------------------------------------------------------------------------- sigmoid slope

def test_derivatives_and_factors() -> None:
    assert gaussian_derivative_rms("sigmoid", 0.0, 0.0) == pytest.approx(0.25)
    assert float(derivative("sigmoid", np.array([0.0]))[0]) == 0.25
    z = np.random.default_rng(0).normal(0.3, 1.5, 400_000)
    mc = math.sqrt(float(np.mean(derivative("sigmoid", z) ** 2)))
    assert gaussian_derivative_rms("sigmoid", 0.3, 1.5) == pytest.approx(mc, rel=5e-3) and mc < 0.25
    assert gaussian_derivative_rms("relu", 0.0, 1.0) == pytest.approx(math.sqrt(0.5), rel=0.05)
    assert backward_factors([8.0, 4.0, 1.0, 123.0]) == [2.0, 4.0] and backward_factors([1.0, 2.0]) == []
    with pytest.raises(ValueError, match="act"):
        derivative("gelu", np.zeros(1))


def test_vanishing_measures_the_sigmoid_factor_and_draws_it() -> None:
    cfg = vanishing.Config(depths=(3, 12), acts=("sigmoid",), norms=("none",), skips=("none",), width=32,
                           in_features=8, batch=32, n_seeds=2, cnn_models=())
    result = vanishing.run(cfg)
    claim = _claims(result)["sigmoid_factor_per_layer"]
    measured, predicted = vanishing.sigmoid_layer_factors(next(r for r in result.runs if r.depth == 12))
    assert claim.held == (float(np.median(measured)) <= 0.25) and len(measured[0]) == 12
    assert 0.1 < float(np.median(measured)) < 0.3 and 0.2 < float(np.median(predicted)) <= 0.25
    slope = next(f for f in figures_for("vanishing") if f.slug == "sigmoid_slope")
    assert slope.draw(result) is not None
    relu = vanishing.run(dataclasses.replace(cfg, acts=("relu",), depths=(3,)))
    assert slope.draw(relu) is None and "sigmoid_factor_per_layer" not in _claims(relu)


# ------------------------------------------------------------------------------------------- report and CLI

def test_report_has_the_sections_and_the_contradiction(tmp_path: Path) -> None:
    from skiplab.report.build import build_report

    page = build_report(tmp_path, quick=True, names=NAMES, configs=TINY).read_text(encoding="utf-8")
    for name in NAMES:
        assert f'id="{name}"' in page and get_experiment(name).title in page
        assert sorted(p.stem for p in (tmp_path / name).glob("*.png")) == sorted(f.slug for f in figures_for(name))
    assert "Common explanation (many tutorials)" in page and "Yang, Pennington, Rao" in page


def test_cli_runs_a_study(tmp_path: Path) -> None:
    import skiplab.cli.experiment  # noqa: F401  (registers the command)
    from skiplab.cli.app import app

    out = tmp_path / "two"
    res = CliRunner().invoke(app, ["experiment", "two_layer", "--quick", "--out", str(out), "--set", "n_seeds=1",
                                   "--set", "scales=0.001,1"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "result.json").read_text())
    assert saved["config"]["scales"] == [0.001, 1.0] and len(saved["sweep"]) == 4
    assert (out / "gradient_routes.png").is_file()
    listing = CliRunner().invoke(app, ["experiment", "--list"])
    assert all(name in listing.output for name in NAMES)
