"""Feature maps and block changes: exact values on blocks whose branch computes zero, shapes of the recorded
maps, the experiment at a tiny setting, and claim verdicts that follow the numbers both ways."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from skiplab.analysis.features import block_changes, match_shape, stage_outputs
from skiplab.analysis.hooks import calibrate_batchnorm
from skiplab.blocks.base import zero_init_last
from skiplab.experiments import features
from skiplab.experiments.base import from_dict
from skiplab.io import to_jsonable
from skiplab.registry import create_model
from skiplab.report.artifacts import render_figures

TINY = dict(depth=20, width=0.25, data="synthetic_digits", image_size=8, n_train=64, n_test=32, steps=4,
            batch_size=16, schedule="onecycle", crop_padding=0, flip=False, threads=1, n_seeds=1, n_images=2,
            n_channels=3, n_stats=16)


def test_match_shape_is_shortcut_a() -> None:
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).view(2, 2, 4, 4)
    assert match_shape(x, torch.zeros(2, 2, 4, 4)) is x
    y = match_shape(x, torch.zeros(2, 5, 2, 2))
    assert y.shape == (2, 5, 2, 2) and torch.equal(y[:, :2], x[:, :, ::2, ::2]) and not y[:, 2:].any()
    with pytest.raises(ValueError, match="cannot map"):
        match_shape(x, torch.zeros(2, 1, 2, 2))


def test_zero_branches_change_nothing_in_a_resnet_and_everything_in_a_plain_net() -> None:
    x = torch.randn(6, 3, 8, 8)
    res = create_model("resnet20", width=0.25)
    calibrate_batchnorm(res, x)
    zero_init_last(res)  # F = 0: each unit outputs relu(x) = x (its input is a ReLU output)
    ch = block_changes(res, x)
    inner = [i for i, d in enumerate(ch.downsampling) if not d]
    assert ch.downsampling == [i in (3, 6) for i in range(9)]
    assert np.allclose([ch.relative_update[i] for i in inner], 0, atol=1e-6)
    assert np.allclose([ch.cosine[i] for i in inner], 1, atol=1e-5)
    assert np.allclose(ch.response_std, 0) and np.allclose(ch.relative_update, 0, atol=1e-6)  # A maps exactly
    plain = create_model("plain20", width=0.25)
    calibrate_batchnorm(plain, x)
    for b in plain.modules():
        if hasattr(b, "zero_init_last") and getattr(b, "skip", None) == "none":
            b.zero_init_last()  # F = 0 without a skip: the unit outputs zeros, a complete rewrite
    ch = block_changes(plain, x)
    assert ch.relative_update[0] == pytest.approx(1.0) and ch.cosine[0] == pytest.approx(0.0)


def test_stage_outputs_shapes() -> None:
    model = create_model("resnet20", width=0.5, in_channels=1)
    outs = stage_outputs(model, torch.randn(2, 1, 16, 16))
    assert [(n, tuple(t.shape)) for n, t in outs] == [("stem", (2, 8, 16, 16)), ("stage1", (2, 8, 16, 16)),
                                                       ("stage2", (2, 16, 8, 8)), ("stage3", (2, 32, 4, 4))]
    assert model.training  # the mode is restored


def test_tiny_features_experiment_round_trips_and_draws() -> None:
    result = features.run(dataclasses.replace(features.Config.quick(), **TINY))  # training shared with the others
    res, plain = result.nets
    assert (res.skip, plain.skip) == ("residual", "none") and len(result.images) == 2
    assert len(res.maps) == 2 and len(res.maps[0]) == 4 and len(res.maps[0][0]) == 3  # images, units, channels
    assert np.asarray(res.maps[0][3]).shape == (3, 2, 2) and len(res.relative_update) == 9
    assert len(set(result.labels)) == 2  # two different digits are shown
    again = from_dict(features.Result, json.loads(json.dumps(to_jsonable(result))))
    assert again.nets[0].cosine == result.nets[0].cosine
    # per block: channel means of x, F(x) and the output for the first digit; the stem's filters (4 of 1x3x3)
    assert len(res.block_views) == 9 and [np.asarray(m).shape for m in res.block_views[0]] == [(8, 8)] * 3
    assert np.asarray(res.filters).shape == (4, 1, 3, 3) and again.nets[1].block_views == plain.block_views
    # the residual block's output is its input plus F(x) (through the final ReLU): where the sum is positive
    x, fx, out = (np.asarray(m) for m in res.block_views[0])
    assert not np.allclose(fx, 0) and np.all(out >= 0)
    slugs = [f.spec.slug for f in render_figures(features.SPEC, again)]
    assert sorted(slugs) == ["block_changes", "branch_maps", "feature_maps", "first_filters"]


def _net(skip: str, update: float, cos: float, std: float) -> features.NetFeatures:
    down = [False, True, False]
    return features.NetFeatures(skip, 0, 0.1, ["stem"], [], [], [], [update] * 3, [cos] * 3, [std] * 3, down)


def test_claims_follow_the_numbers() -> None:
    cfg = features.Config(**TINY)
    good = features.Result(cfg, [], [], [_net("residual", 0.2, 0.95, 0.5), _net("none", 1.1, 0.3, 1.0)], [], [])
    assert {c.key: c.held for c in features.check_claims(good)} == {"small_responses": True,
                                                                    "incremental_updates": True}
    bad = features.Result(cfg, [], [], [_net("residual", 0.9, 0.4, 0.95), _net("none", 1.0, 0.3, 1.0)], [], [])
    assert {c.key: c.held for c in features.check_claims(bad)} == {"small_responses": False,
                                                                   "incremental_updates": False}
    with pytest.raises(ValueError, match="n_channels must be a positive integer"):
        features.Config(**{**TINY, "n_channels": 0})
