"""The training comparisons (degradation, identity construction, skip variants, stochastic depth, unit orderings)
at tiny settings: the identity construction is exact, claims follow the numbers both ways, runs are
deterministic and cached, results survive JSON, figures draw, and `skiplab experiment` runs them."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from skiplab.experiments import degradation, get_experiment, identity, orderings, stochastic_depth, variants
from skiplab.experiments.base import from_dict, parse_override
from skiplab.experiments.identity import compare_functions, deepen_with_identities, set_identity_
from skiplab.experiments.training_runs import Recipe, Run, clear_cache, data_options, train_eval_subset, train_net
from skiplab.io import to_jsonable
from skiplab.registry import create_model
from skiplab.report.artifacts import render_figures

# 8x8 digits, 3 steps of batch 32: every net trains in well under a second.
TINY = dict(data="synthetic_digits", image_size=8, n_train=64, n_test=32, steps=3, batch_size=32, lr=0.05,
            schedule="onecycle", crop_padding=1, flip=False, eval_points=2, n_train_eval=32, threads=1)


def tiny_configs() -> dict[str, object]:
    return {
        "degradation": degradation.Config(**TINY, depths=(20, 32), width=0.25, warmup=0),
        "identity": identity.Config(**TINY, shallow=20, deep=32, width=0.25, warmup=0),
        # width 0.5 wherever a net has a stride-2 1x1 conv (highway gates, projection shortcuts): with 2-6 input
        # channels its channels_last backward corrupts the heap in torch 2.13's CPU build (reproduced outside skiplab)
        "variants": variants.Config(**TINY, warmup=0, nets=(
            variants.Net("res", "add", "resnet20", {"width": 0.5}),
            variants.Net("dense", "concat", "densenet_bc_100_12", {"depth": 10, "growth_rate": 4}),
            variants.Net("hw", "gate", "highway20", {"width": 0.5}))),
        "stochastic_depth": stochastic_depth.Config(**TINY, depth=20, width=0.25),
        "orderings": orderings.Config(**TINY, depth=8, width=0.5, warmup=0,
                                      orderings=("original", "bn_after_add", "full_preact")),
    }


def _randomise_bn(model: nn.Module) -> None:
    """Give every BN layer non-trivial running statistics and affine parameters, as training would."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


# ------------------------------------------------------------------------------------------ identity construction

def test_deepened_plain_net_computes_the_same_function() -> None:
    shallow = create_model("plain20", width=0.25, in_channels=1, num_classes=7)
    _randomise_bn(shallow)
    shallow.eval()
    deep = deepen_with_identities(shallow, create_model("plain44", width=0.25, in_channels=1, num_classes=7))
    x = torch.randn(16, 1, 12, 12)
    diff, scale, agree, acc_gap = compare_functions(shallow, deep, [(x, torch.zeros(16, dtype=torch.long))])
    assert scale > 0.1 and diff <= 1e-5 * scale and agree == 1.0 and acc_gap == 0.0
    # the copied blocks sit first in every stage, identity blocks after them
    assert torch.equal(deep.stages[1][2].branch.conv1.weight, shallow.stages[1][2].branch.conv1.weight)
    assert deep.stages[2][5].branch.conv2.weight[3, 3, 1, 1] == 1.0
    # an identity block is the identity only on non-negative inputs (its input is always a ReLU output)
    block = set_identity_(create_model("plain20", width=0.25).stages[0][1]).eval()
    z = torch.rand(2, 4, 5, 5)
    assert torch.allclose(block(z), z, atol=1e-6) and not torch.allclose(block(-z), -z)


def test_construction_refuses_what_it_cannot_build() -> None:
    shallow = create_model("plain20", width=0.25)
    with pytest.raises(ValueError, match="plain CIFAR net"):
        deepen_with_identities(create_model("resnet20", width=0.25), create_model("plain32", width=0.25))
    with pytest.raises(ValueError, match="at least as many blocks"):
        deepen_with_identities(create_model("plain32", width=0.25), shallow)
    with pytest.raises(ValueError, match="same width"):
        deepen_with_identities(shallow, create_model("plain32", width=0.5))
    with pytest.raises(ValueError, match="shape-preserving plain BasicBlock"):
        set_identity_(shallow.stages[1][0])  # the downsampling block changes shape


# ------------------------------------------------------------------------------------------------ configs

def test_configs_validate_with_actionable_messages() -> None:
    for name in ("degradation", "identity", "variants", "stochastic_depth", "orderings"):
        spec = get_experiment(name)
        assert spec.config(quick=True).steps < spec.config().steps  # quick really is smaller
    with pytest.raises(ValueError, match="schedule must be one of"):
        degradation.Config(schedule="cosine")
    with pytest.raises(ValueError, match="warmup must be shorter"):
        degradation.Config(steps=10, warmup=10)
    with pytest.raises(ValueError, match="no registered plain26"):
        degradation.Config(depths=(20, 26))
    with pytest.raises(ValueError, match="at least two depths"):
        degradation.Config(depths=(20,))
    with pytest.raises(ValueError, match="deep must be larger"):
        identity.Config(shallow=56, deep=20)
    with pytest.raises(ValueError, match="residual \\('add'\\) net"):
        variants.Config(nets=(variants.Net("d", "concat", "densenet_bc_100_12"),))
    with pytest.raises(ValueError, match="orderings must be distinct"):
        orderings.Config(orderings=("original", "sideways"))
    with pytest.raises(ValueError, match="p_last"):
        stochastic_depth.Config(p_last=1.0)
    with pytest.raises(ValueError, match="n_seeds"):
        degradation.Config(n_seeds=0)
    # --set data=cifar10 works: file datasets get no generator options
    key, value = parse_override(degradation.Config, "data=cifar10")
    cfg = dataclasses.replace(degradation.Config.quick(), **{key: value})
    assert cfg.data == "cifar10" and data_options(cfg) == {}
    assert parse_override(degradation.Config, "depths=20,56") == ("depths", (20, 56))


def test_training_error_is_measured_on_a_random_draw_not_the_first_images() -> None:
    from skiplab.data import load_dataset

    ds = load_dataset("synthetic_digits", "train", image_size=8, n_train=300)
    by_class = ds.subset(torch.argsort(ds.labels, stable=True))  # stored sorted by class, like the CIFAR-10 copy
    sub = train_eval_subset(by_class, 40)
    assert len(sub) == 40 and len(torch.unique(sub.labels)) >= 8
    assert torch.equal(train_eval_subset(by_class, 40).labels, sub.labels)  # a fixed draw
    assert train_eval_subset(by_class, 0) is by_class and train_eval_subset(by_class, 10_000) is by_class


# ------------------------------------------------------------------------------------------------ claims

def _run(label: str, train: float, test: float, **kw) -> Run:
    return Run(label=label, model="m", model_kwargs={}, seed=0, params=100, steps=[1, 2], train_error=[0.5, train],
               train_loss=kw.get("loss", [1.0, 0.5]), eval_steps=[2], test_error=[test], test_loss=[0.1],
               final_train_error=train, final_test_error=test, final_train_loss=0.1, epoch_time_s=1.0)


@pytest.mark.parametrize("plain_deep, res_deep, expect", [
    (0.60, 0.01, {"plain_deeper_trains_worse": True, "residual_deeper_no_worse": True, "skips_fix_the_deep_net": True}),
    (0.05, 0.20, {"plain_deeper_trains_worse": False, "residual_deeper_no_worse": False,
                  "skips_fix_the_deep_net": False}),
])
def test_degradation_claims_follow_the_numbers(plain_deep: float, res_deep: float, expect: dict) -> None:
    cfg = degradation.Config(depths=(20, 56))
    runs = [_run("plain-20", 0.05, 0.06), _run("plain-56", plain_deep, plain_deep),
            _run("ResNet-20", 0.02, 0.03), _run("ResNet-56", res_deep, res_deep)]
    claims = degradation.check_claims(degradation.Result(cfg, runs, [], []))
    assert {c.key: c.held for c in claims} == expect


def test_variant_stochastic_and_ordering_claims_can_fail() -> None:
    v = variants.Config()
    runs = [_run("ResNet-56", 0.0, 0.10), _run("DenseNet-BC-100 (k=12)", 0.0, 0.30), _run("Highway-56", 0.0, 0.02)]
    assert not any(c.held for c in variants.check_claims(variants.Result(v, runs, [], [])))
    s = stochastic_depth.Config()
    names = stochastic_depth.labels(s)
    runs = [_run(names["constant"], 0.0, 0.05, loss=[1.0, 0.2]), _run(names["stochastic"], 0.0, 0.08, loss=[1.0, 0.1])]
    assert not any(c.held for c in stochastic_depth.check_claims(stochastic_depth.Result(s, runs, [], [])))
    o = orderings.Config()
    errs = {"original": 0.10, "bn_after_add": 0.05, "relu_before_add": 0.10, "relu_preact": 0.02, "full_preact": 0.09}
    runs = [_run(orderings.NAMES[k], e, e) for k, e in errs.items()]
    held = {c.key: c.held for c in orderings.check_claims(orderings.Result(o, runs, [], []))}
    assert held == {"bn_after_add_worse": False, "relu_before_add_worse": False, "full_preact_best": False}


# ------------------------------------------------------------------------------------------------ real runs

@pytest.mark.parametrize("name", ["degradation", "identity", "variants", "stochastic_depth", "orderings"])
def test_tiny_run_gives_a_complete_serialisable_result(name: str) -> None:
    clear_cache()
    spec = get_experiment(name)
    cfg = tiny_configs()[name]
    result = spec.run(cfg)
    assert result.claims and result.tables and result.wall_time_s > 0
    for r in result.runs:
        assert len(r.steps) == len(r.train_error) == len(r.train_loss) > 0 and r.steps[-1] == cfg.steps
        assert r.eval_steps[-1] == cfg.steps and 0 <= r.final_test_error <= 1 and r.params > 0
        assert all(math.isfinite(v) for v in r.train_loss)
    again = from_dict(spec.result_cls, json.loads(json.dumps(to_jsonable(result))))
    assert to_jsonable(again) == to_jsonable(result)
    assert len(render_figures(spec, result)) >= 1


def test_identity_construction_claim_holds_on_a_trained_net() -> None:
    clear_cache()
    result = identity.run(tiny_configs()["identity"])
    held = {c.key: c.held for c in result.claims}
    assert held["construction_is_exact"], result.claims[0].evidence
    (c,) = result.constructions
    shallow = next(r for r in result.runs if r.label == "plain-20")
    assert c.identity_blocks == 6 and c.train_error == pytest.approx(shallow.final_train_error)


def test_runs_are_deterministic_and_cached() -> None:
    recipe = Recipe(**TINY)
    clear_cache()
    a, net_a = train_net(recipe, "preact_resnet", {"depth": 8, "unit": "basic", "width": 0.5}, seed=3)
    clear_cache()
    b, net_b = train_net(recipe, "preact_resnet", {"depth": 8, "unit": "basic", "width": 0.5}, seed=3)
    c, net_c = train_net(recipe, "preact_resnet", {"depth": 8, "unit": "basic", "width": 0.5}, seed=3, label="x")
    timing = ("train_time_s", "epoch_time_s", "label")

    def strip(r: Run) -> dict:
        return {k: v for k, v in dataclasses.asdict(r).items() if k not in timing}

    assert strip(a) == strip(b) == strip(c) and c.label == "x"
    for p, q, r in zip(net_a.state_dict().values(), net_b.state_dict().values(), net_c.state_dict().values()):
        assert torch.equal(p, q) and torch.equal(q, r)
    d, _ = train_net(recipe, "preact_resnet", {"depth": 8, "unit": "basic", "width": 0.5}, seed=4)
    assert d.train_loss != a.train_loss
    with pytest.raises(ValueError, match="neither a registered model"):
        train_net(recipe, "no_such_net", {}, seed=0)


def test_cli_runs_an_experiment_with_overrides(tmp_path: Path) -> None:
    import skiplab.cli.experiment  # noqa: F401  (registers the command)
    from skiplab.cli.app import app

    clear_cache()
    sets = ["depths=20,32", "width=0.25", "image_size=8", "n_train=64", "n_test=32", "steps=3", "batch_size=32",
            "n_train_eval=32", "eval_points=2"]
    args = ["experiment", "degradation", "--quick", "--out", str(tmp_path / "deg")]
    for s in sets:
        args += ["--set", s]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    saved = json.loads((tmp_path / "deg" / "result.json").read_text())
    assert saved["config"]["depths"] == [20, 32] and len(saved["runs"]) == 4
    assert (tmp_path / "deg" / "curves.png").stat().st_size > 1000


def test_stochastic_depth_time_claim_follows_the_epoch_times() -> None:
    s = stochastic_depth.Config()
    names = stochastic_depth.labels(s)
    for t, held in ((0.75, True), (0.95, False)):
        runs = [_run(names["constant"], 0.0, 0.05), dataclasses.replace(_run(names["stochastic"], 0.0, 0.05),
                                                                          epoch_time_s=t)]
        claims = {c.key: c for c in stochastic_depth.check_claims(stochastic_depth.Result(s, runs, [], []))}
        assert claims["stochastic_depth_trains_faster"].held is held
        assert "expected share of blocks run 75%" in claims["stochastic_depth_trains_faster"].evidence
    row = stochastic_depth.Config(drop_mode="row")
    assert "stochastic_depth_trains_faster" not in {
        c.key for c in stochastic_depth.check_claims(stochastic_depth.Result(row, runs, [], []))}


@pytest.mark.filterwarnings("ignore::skiplab.data.errors.NonOfficialDataWarning")  # 16 images, not 10,000
def test_experiments_run_on_a_cifar10_release_folder(tmp_path, monkeypatch) -> None:
    """`--set data=cifar10 --set data_dir=...` : the comparisons and analyses train on the official format too
    (a tiny fake release: 5 x 16 training images, 16 test images, 32x32 RGB)."""
    import pickle

    import numpy as np

    from skiplab.experiments import lesion

    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"labels": rng.integers(0, 10, 16).tolist(), "data": rng.integers(0, 256, (16, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    cifar = dict(TINY, data="cifar10", data_dir=str(folder), image_size=0, n_train=0, n_test=0, crop_padding=4,
                 flip=True)
    clear_cache()
    result = degradation.run(degradation.Config(**cifar, depths=(20, 32), width=0.25, warmup=0))
    assert {r.label for r in result.runs} == {"plain-20", "plain-32", "ResNet-20", "ResNet-32"}
    assert all(r.steps[-1] == 3 and 0 <= r.final_test_error <= 1 for r in result.runs)
    les = lesion.run(lesion.Config(**cifar, depth=20, width=0.25, n_eval=16, draws=1, path_samples=1, path_batch=4))
    assert les.nets and all(len(n.single) == 9 for n in les.nets)  # 9 blocks of a ResNet-20, each lesioned
