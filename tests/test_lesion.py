"""Lesion analysis (Veit et al. 2016): lesion semantics, path counting, path gradients that sum to the true
gradient, the experiment at a tiny setting, and claim verdicts that follow the numbers both ways."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skiplab.analysis import lesion as L
from skiplab.blocks.base import zero_init_last
from skiplab.experiments import lesion
from skiplab.experiments.base import from_dict
from skiplab.io import to_jsonable
from skiplab.models.cifar import cifar_resnet
from skiplab.registry import create_model
from skiplab.report.artifacts import render_figures

TINY = dict(depth=20, width=0.25, data="synthetic_digits", image_size=8, n_train=64, n_test=32, steps=4,
            batch_size=16, schedule="onecycle", crop_padding=0, flip=False, threads=1, n_seeds=1)


def _with_bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_path_length_distribution_is_binomial() -> None:
    p = L.path_length_distribution(4)
    assert p == pytest.approx([1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16])
    assert sum(L.path_length_distribution(54)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-negative integer"):
        L.path_length_distribution(-1)
    assert L.effective_path_contribution([1.0, 0.5, 0.25]) == pytest.approx([1 / 2.25, 1 / 2.25, 0.25 / 2.25])


def test_lesioned_restores_and_refuses_shape_changing_plain_blocks() -> None:
    plain = create_model("plain20", width=0.25)
    blocks = L.blocks_of(plain)
    down = [i for i, b in enumerate(blocks) if L.is_downsampling(b)]
    assert down == [3, 6]  # first block of stages 2 and 3
    with L.lesioned(plain, [0, 1]):
        assert not blocks[0].branch_enabled and not blocks[1].branch_enabled and blocks[2].branch_enabled
    assert all(b.branch_enabled for b in blocks)
    with pytest.raises(ValueError, match="block 3 .* cannot be removed"):
        with L.lesioned(plain, [3]):
            pass
    with pytest.raises(ValueError, match=r"in \[0, 9\)"):
        with L.lesioned(plain, [9]):
            pass
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    errors = L.single_lesion_errors(plain, x, y)
    assert [math.isnan(e) for e in errors] == [i in down for i in range(9)]
    assert all(b.branch_enabled for b in blocks)


def test_a_block_computing_zero_can_be_removed_without_any_change() -> None:
    # zero-initialised residual branches compute F = 0: removing them must not change the function at all
    model = zero_init_last(_with_bn_stats(create_model("resnet20", width=0.25)))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    with torch.no_grad():
        full = model(x)
        with L.lesioned(model, [0, 4, 8]):
            lesioned_out = model(x)
    assert torch.allclose(full, lesioned_out, atol=1e-6)
    base = L.top1_error(model, x, y)
    assert L.single_lesion_errors(model, x, y) == [base] * 9
    draws = L.random_lesion_errors(model, x, y, [1, 9], draws=2, seed=0)
    assert draws == [[base, base], [base, base]]
    with pytest.raises(ValueError, match="only 9"):
        L.random_lesion_errors(model, x, y, [10], draws=1, seed=0)


def test_path_gradients_sum_to_the_true_gradient() -> None:
    model = _with_bn_stats(cifar_resnet(8, width=0.5))  # 3 blocks: 8 paths
    x, y = torch.randn(5, 3, 8, 8), torch.randint(0, 10, (5,))
    with L._unrolled(model, x, y) as (units, g_out):
        total = sum(L.path_gradient(units, g_out, set(on)) for r in range(4)
                    for on in itertools.combinations(range(3), r))
    h = model.stem(x).detach().requires_grad_(True)
    out = h
    for stage in model.stages:
        out = stage(out)
    true = torch.autograd.grad(F.cross_entropy(model.forward_head(out), y), h)[0]
    assert torch.allclose(total, true, atol=1e-6 * float(true.abs().max()) + 1e-9)
    norms = L.path_gradient_norms(model, x, y, samples_per_length=2, seed=0)
    assert len(norms) == 4 and all(v >= 0 for v in norms)
    with pytest.raises(TypeError, match="residual unit"):
        L.path_gradient_norms(create_model("plain20", width=0.25), x, y, samples_per_length=1, seed=0)


def test_tiny_lesion_experiment_runs_round_trips_and_draws() -> None:
    # the quick setting shrunk: the same training settings as the landscape and features tests (one training per
    # net for all three in one pytest process)
    cfg = dataclasses.replace(lesion.Config.quick(), **TINY, n_eval=32, draws=2, path_samples=1, path_batch=8)
    result = lesion.run(cfg)
    assert [(n.skip, len(n.single)) for n in result.nets] == [("residual", 9), ("none", 9)]
    res, plain = result.nets
    assert not any(math.isnan(e) for e in res.single) and sum(math.isnan(e) for e in plain.single) == 2
    assert res.ks == list(range(1, 10)) and plain.ks == list(range(1, 8))
    assert len(res.path_norms) == 10 and plain.path_norms == []
    assert {c.key for c in result.claims} >= {"residual_survives_single_lesions", "plain_collapses",
                                              "smooth_degradation"}
    again = from_dict(lesion.Result, json.loads(json.dumps(to_jsonable(result))))
    assert again.nets[1].single[3] != again.nets[1].single[3]  # NaN survives as NaN
    assert again.claims[0].held == result.claims[0].held
    assert len(render_figures(lesion.SPEC, result)) == 3


def _net(skip: str, base: float, single: list[float], random: list[list[float]]) -> lesion.NetLesions:
    return lesion.NetLesions(skip, 0, base, 0.9, [False, True, False, False], single, list(range(1, len(random) + 1)),
                             random, path_norms=[1.0, 0.1, 0.01, 0.001, 0.0001] if skip == "residual" else [])


def test_claims_follow_the_numbers() -> None:
    cfg = lesion.Config(**TINY)
    ensemble = lesion.Result(cfg, [
        _net("residual", 0.05, [0.06, 0.30, 0.07, 0.08], [[0.07], [0.12], [0.2], [0.3]]),
        _net("none", 0.10, [0.85, float("nan"), 0.88, 0.9], [[0.85], [0.9], [0.9]]),
    ], [], [])
    verdicts = {c.key: c.held for c in lesion.check_claims(ensemble)}
    assert verdicts == {"residual_survives_single_lesions": True, "plain_collapses": True,
                        "downsampling_blocks_hurt_most": True, "smooth_degradation": True,
                        "short_effective_paths": True}
    # a residual net that breaks when one block goes, and a plain net that shrugs lesions off: every verdict flips
    fragile = lesion.Result(cfg, [
        _net("residual", 0.05, [0.8, 0.1, 0.85, 0.9], [[0.8], [0.85], [0.9], [0.9]]),
        _net("none", 0.10, [0.12, float("nan"), 0.11, 0.13], [[0.12], [0.13], [0.15]]),
    ], [], [])
    fragile.nets[0].path_norms = [0.0001, 0.001, 0.01, 0.1, 1.0]
    verdicts = {c.key: c.held for c in lesion.check_claims(fragile)}
    assert not any(verdicts.values()), verdicts
    # a plain net that never learnt cannot "collapse": not held, and the evidence says why
    untrained = lesion.Result(cfg, [ensemble.nets[0], _net("none", 0.88, [0.9, float("nan"), 0.9, 0.9],
                                                              [[0.9], [0.9], [0.9]])], [], [])
    claim = next(c for c in lesion.check_claims(untrained) if c.key == "plain_collapses")
    assert not claim.held and "did not train" in claim.evidence


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        lesion.Config(**{**TINY, "depth": 8})
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        lesion.Config(**TINY, draws=0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        lesion.Config(**{**TINY, "schedule": "cosine"})
    assert lesion.Config().depth == 110 and lesion.Config.quick().depth == 32
    assert np.isclose(lesion.damage([0.5], 0.1, 0.9)[0], 0.5)
