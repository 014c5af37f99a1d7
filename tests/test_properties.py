"""Property-based tests (issue 8): whatever arguments a model or a training run is given, the result is a
clean validation error raised by skiplab (a ValueError/TypeError with a message) or something that works —
never a crash deep inside torch.

``tests/test_train.py::test_any_config_is_valid_or_a_clean_value_error`` already throws arbitrary values at
every ``TrainConfig`` field; the property here goes one step further: a config that validates must also
*train* (or stop with TrainingDiverged) — validation may not let through what the loop cannot run.
"""
from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from skiplab.registry import create_model, get_entry
from skiplab.train import TrainConfig, TrainingDiverged, train

PACKAGE = str(Path(__import__("skiplab").__file__).parent)


def assert_clean(e: BaseException) -> None:
    """A validation error: the right type, a message, raised by skiplab's own code (the innermost frame is in
    the skiplab package — an argument error at a call skiplab makes counts, one from inside torch does not)."""
    assert isinstance(e, (ValueError, TypeError)), f"{type(e).__name__}: {e}"
    assert str(e).strip(), f"{type(e).__name__} without a message"
    where = traceback.extract_tb(e.__traceback__)[-1].filename
    assert where.startswith(PACKAGE), f"{type(e).__name__}: {e}\nraised in {where}"


# --------------------------------------------------------------------------------------------- models
# A small model of each family (the base), whose arguments hypothesis then overrides with values drawn from
# pools mixing valid, invalid and wrongly typed ones (sizes capped so any model that builds runs in ms).
BAD = [None, True, -1, 0, 2.5, float("nan"), float("inf"), "x", [1]]
RESNET = {"num_classes": [1, 3], "in_channels": [1, 2], "skip": ["residual", "none", "highway", "dense"],
          "shortcut": ["A", "B", "C", "none", "D"], "width": [0.125, 0.5, 1], "zero_init_residual": [True, False],
          "drop_path_rate": [0.0, 0.2, 0.99, 1.0], "norm": ["batch", "group", "none", "layer"],
          "act": ["relu", "tanh", "gelu", "swish"]}
FAMILIES: dict[str, tuple[dict[str, Any], dict[str, list[Any]]]] = {  # name: (base kwargs, argument pools)
    "resnet20": ({"width": 0.25}, RESNET),
    "plain20": ({"width": 0.25}, RESNET),
    "highway20": ({"width": 0.25}, RESNET),
    "resnet18": ({"width": 0.125}, {**RESNET, "stride_in_1x1": [True, False], "base_width": [64, 128],
                                    "stem": ["standard", "deep", "bogus"]}),
    "plain_resnet50": ({"width": 0.0625}, {**RESNET, "stride_in_1x1": [True, False], "base_width": [4, 128]}),
    "preact_resnet164": ({"width": 0.25}, {**RESNET, "unit": ["basic", "bottleneck", "wide"],
                                           "ordering": ["original", "full_preact", "relu_only_preact", "bogus"]}),
    "densenet_bc_100_12": ({"depth": 10, "growth_rate": 4}, {
        "depth": [10, 16, 13, 4, 1], "growth_rate": [2, 4], "num_classes": [1, 3], "bottleneck": [True, False],
        "compression": [0.5, 1.0, 1.5], "drop_rate": [0.0, 0.5, 1.0], "in_channels": [1], "skip": ["dense", "none",
                                                                                                  "residual"]}),
    "mlp": ({"depth": 2, "width": 8, "in_features": 6}, {
        "depth": [0, 1, 3], "width": [1, 8, 0.5], "in_features": [1, 6], "out_features": [1, 4],
        "act": ["relu", "tanh", "sigmoid", "swish"], "norm": ["none", "batch", "layer", "group"],
        "skip": ["residual", "none", "highway", "dense"], "init": ["he", "xavier", "lecun", "torch", "orthogonal"],
        "gate_bias": [-2.0, 0.0], "branch_scale": [0.5, 1.0], "bias": [True, False], "bias_std": [0.0, 0.1]}),
    "rnn_classifier": ({"hidden_size": 8, "input_size": 5}, {
        "cell": ["lstm", "gru", "rnn", "transformer"], "num_layers": [0, 1, 2], "hidden_size": [4, 8],
        "input_size": [3, 5], "num_classes": [1, 4], "vocab_size": [None, 7], "pool": ["last", "mean", "max"],
        "dropout": [0.0, 0.5, 1.5], "skip": ["residual", "none", "highway"]}),
    "unet": ({"base_width": 4, "depth": 2}, {
        "in_channels": [1, 3], "num_classes": [1, 2], "depth": [0, 1, 3], "base_width": [2, 4],
        "norm": ["batch", "group", "none", "layer"], "up_mode": ["transpose", "bilinear", "nearest"],
        "skip": ["concat", "none", "residual"]}),
}


def sample_input(model: torch.nn.Module, name: str) -> torch.Tensor:
    """A valid input batch of 2 for ``model``, as small as the model allows."""
    family = get_entry(name).family
    if family == "mlp":
        return torch.randn(2, model.in_channels)
    if family == "rnn":
        if getattr(model, "vocab_size", None) is not None:
            return torch.randint(0, model.vocab_size, (2, 5))
        return torch.randn(2, 5, model.in_channels)
    size = max(8, model.min_input_size)
    return torch.randn(2, model.in_channels, size, size)


@st.composite
def model_arguments(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(FAMILIES)))
    base, pools = FAMILIES[name]
    keys = draw(st.sets(st.sampled_from(sorted(pools) + ["not_an_argument"]), min_size=1, max_size=3))
    # three draws in four from the argument's own pool, so that a fair share of the models build
    values = {k: draw(st.sampled_from(pools.get(k, [1]) if draw(st.integers(0, 3)) else BAD)) for k in sorted(keys)}
    return name, {**base, **values}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_arguments())
# Arguments that once failed outside skiplab's checks, always tried: a TypeError the CLI showed with a
# traceback, an OverflowError, a RuntimeError only at the first forward pass.
@example(("resnet20", {"width": 0.25, "bogus": 1}))
@example(("resnet20", {"width": 0.25, "depth": 56}))
@example(("resnet20", {"width": float("inf")}))
@example(("highway20", {"width": 0.25, "shortcut": "none"}))
@example(("plain_densenet_bc_100_12", {"depth": 10, "growth_rate": 4, "skip": "dense"}))
@example(("resnet20", {"width": 0.25, "drop_path_rate": "0.1"}))
def test_any_model_arguments_build_a_working_model_or_a_clean_error(args: tuple[str, dict[str, Any]]) -> None:
    name, kwargs = args
    try:
        model = create_model(name, **kwargs)
    except Exception as e:  # noqa: BLE001 - the property is about which exceptions
        assert_clean(e)
        event("refused")
        return
    event("built")
    model.eval()
    with torch.no_grad():
        y = model(sample_input(model, name))
    assert y.shape[0] == 2 and torch.isfinite(y).all(), (name, kwargs, y.shape)
    assert model.model_kwargs == kwargs  # the identity a checkpoint records


# --------------------------------------------------------------------------------------------- training
TINY = dict(model="resnet20", model_kwargs={"width": 0.25}, data="synthetic",
            data_options={"n_train": 24, "n_test": 8, "image_size": 8}, epochs=None, max_steps=2, batch_size=8,
            eval_batch_size=8, num_threads=1, progress="none", log_every=1, test_split=None)
FIELDS: dict[str, list[Any]] = {
    "optimizer": ["sgd", "adamw", "adam"], "lr": [1e-3, 0.1, 1e6, 0, -0.1, float("nan")],
    "momentum": [0.0, 0.9, 1.0, 1.5], "nesterov": [True, False], "weight_decay": [0.0, 5e-4, -1.0],
    "wd_exclude_bn_bias": [True, False], "betas": [(0.9, 0.999), (0.5, 0.5), (1.0, 0.9)],
    "schedule": ["step", "cosine", "onecycle", "constant", "linear"], "schedule_unit": ["epochs", "steps"],
    "milestones": [(), (1,), (0.5, 1), (2, 1)], "gamma": [0.1, 1.0, 0.0], "warmup": [0, 0.5, 1, 3, -1],
    "min_lr_factor": [0.0, 0.5, 1.5], "label_smoothing": [0.0, 0.1, 0.999, 1.0], "grad_clip": [None, 0.5, 0.0],
    "crop_padding": [0, 4, 16], "flip": [True, False], "cutout": [0, 4, 100], "augment": [True, False],
    "amp": ["none", "auto", "fp8"], "channels_last": [True, False], "drop_last": [True, False],
    "val_split": [0, 8, 24, 100], "batch_size": [1, 8, 16, 64, 0], "eval_every": [0, 1, 5],
    "test_split": [None, "test", "valid"], "max_steps": [1, 3], "epochs": [None, 1],
    "model_kwargs": [{"width": 0.25}, {"width": 0.25, "norm": "none"}, {"width": 0.25, "num_classes": 3},
                     {"width": 0.25, "in_channels": 1}, {"width": 0.25, "bogus": 1}],
    "data_options": [{"n_train": 24, "n_test": 8, "image_size": 8}, {"n_train": 24, "n_test": 8, "image_size": 2},
                     {"n_train": 0, "n_test": 8, "image_size": 8}, {"n_train": 24, "colour": True}],
}


@st.composite
def config_overrides(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.sets(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=4))
    return {k: draw(st.sampled_from(FIELDS[k])) for k in sorted(keys)}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_overrides())
def test_a_config_that_validates_also_trains(overrides: dict[str, Any]) -> None:
    kwargs = {**TINY, **overrides}
    if kwargs["epochs"] is not None and "max_steps" not in overrides:
        kwargs["max_steps"] = None  # asking for epochs replaces the default length
    try:
        cfg = TrainConfig(**kwargs)
    except ValueError as e:
        assert_clean(e)
        event("config refused")
        return
    try:
        result = train(cfg)
    except TrainingDiverged as e:  # a legitimate outcome (lr=1e6): the message names the step
        assert "at step" in str(e)
        event("diverged")
        return
    except Exception as e:  # noqa: BLE001
        assert_clean(e)  # e.g. a val_split larger than the data, known only once the data is loaded
        event("refused by train")
        return
    event("trained")
    assert result.status == "completed" and result.step >= 1
    assert all(math.isfinite(h["train_loss"]) for h in result.history), result.history
