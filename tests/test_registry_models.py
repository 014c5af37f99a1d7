"""Tests generated from the registry: every registered model gets the same checks on a tiny input."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import skiplab
from skiplab.blocks.base import SkipBlock, count_skips, skip_blocks, zero_init_last
from skiplab.models.base import SkipNet
from skiplab.registry import get_entry

ALL = skiplab.list_models()
# Over 300M parameters: the generated checks need gigabytes and a minute each, so they run with -m slow only (their
# counts are pinned on the meta device in test_convnext.py / test_regnet.py; the code paths are their families')
SLOW_NETS = {n for n in ALL if n.endswith(("convnext_xlarge", "regnet_y_128gf"))}
# The 1000-layer nets get the same checks, only at batch 1 on the smallest input.
HUGE = {n for n in ALL if "1202" in n or "1001" in n}
# At init, 1000-layer nets WITHOUT identity skips have exploding gradients in train mode (BatchNorm's backward
# amplifies them layer after layer; Yang et al. 2019, "A Mean Field Theory of Batch Normalization"): they overflow
# to inf/NaN at the stem.  This is the phenomenon skips fix, not a bug — their residual versions must stay finite.
EXPLODING_AT_INIT = {"plain1202", "highway1202", "plain_preact_resnet1001"}  # measured at seed 0, batch 2, 32x32


def tiny_input(name: str, model: nn.Module, batch: int = 2) -> torch.Tensor:
    size = get_entry(name).input_size
    if len(size) == 3:  # C,H,W: 32x32 is enough for every stem (ImageNet nets end at 1x1) ...
        # ... except the plain ImageNet DenseNets, whose last BatchNorms would see 2 values per channel, and the
        # nets with unpadded stems (Xception 71, Inception-ResNet-v2 75: model.min_input_size).
        side = max(64 if "densenet" in name and size[1] > 32 else 32, getattr(model, "min_input_size", 1))
        size = (size[0], min(size[1], side), min(size[2], side))
    return torch.randn(batch, *size)


def build(name: str) -> nn.Module:
    return skiplab.create_model(name)


def test_registry_is_populated() -> None:
    assert len(ALL) >= 40, ALL
    for required in ["resnet18", "resnet50", "resnet152", "resnet20", "resnet1202", "plain20", "highway20",
                     "preact_resnet164", "preact_resnet1001", "densenet121", "densenet201", "densenet_bc_100_12",
                     "unet", "plain_unet", "mlp"]:
        assert required in ALL, f"{required} is not registered"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_NETS else n for n in ALL])
def test_registered_model(name: str) -> None:
    """Every registered model, built once (building the large nets is most of this file's time): the SkipNet
    interface; its skip blocks match the registry's skip kind; forward_head(forward_features(x)) == forward(x);
    outputs finite and a gradient reaching every parameter; and, for residual nets, zero_init_last making every
    identity-shortcut block the identity."""
    model = build(name)
    entry = get_entry(name)
    assert isinstance(model, SkipNet), f"{name} must subclass SkipNet"
    assert isinstance(model.stages, nn.ModuleList) and len(model.stages) > 0
    assert model.model_name == name and model.model_kwargs == {}

    # --- skip kinds: analysis addresses blocks through them
    blocks = skip_blocks(model)
    assert blocks, f"{name} has no SkipBlock: analysis cannot address its blocks"
    if entry.skip == "none":
        assert count_skips(model) == 0, f"plain twin {name} still has {count_skips(model)} skips"
    else:
        assert count_skips(model) > 0
        allowed = {entry.skip, *getattr(model, "extra_skip_kinds", ())}  # a U-Net on a ResNet has two kinds
        kinds = {b.skip for b in blocks if b.has_skip}
        assert entry.skip in kinds and kinds <= allowed, kinds

    # --- features then head, forward and backward.  Train mode: in eval mode at init BN is the identity and a
    # 1000-layer residual net's activations double per block until they overflow — expected, and not the point.
    model.train()
    x = tiny_input(name, model)
    if name not in HUGE:  # same code path; the huge nets cost 6 s per forward
        with torch.no_grad():
            torch.manual_seed(1)
            split = model.forward_head(model.forward_features(x))
            torch.manual_seed(1)
            torch.testing.assert_close(split, model(x))
    out = model(x)
    assert out.shape[0] == x.shape[0]
    assert torch.isfinite(out).all(), f"{name} produced non-finite outputs"
    out.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reached {missing[:5]}"
    nonfinite = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if name in EXPLODING_AT_INIT:
        assert nonfinite, f"{name}: expected the known gradient explosion of a 1000-layer net without skips"
    else:
        assert not nonfinite, f"{name}: non-finite gradients in {nonfinite[:5]}"

    # --- zero_init_last: with every branch zeroed, each residual block whose shortcut is the identity computes
    # the identity (a long skip's block adds its encoder bridge, not its input: left out)
    if entry.skip != "residual" or name in HUGE:
        return
    zero_init_last(model).eval()
    captured: dict[SkipBlock, torch.Tensor] = {}
    hooks = [b.register_forward_pre_hook(lambda m, args: captured.setdefault(m, args[0].detach()))
             for b in skip_blocks(model)
             if b.skip == "residual" and isinstance(getattr(b, "shortcut", None), nn.Identity)
             and not getattr(b, "long_skip", False)]
    with torch.no_grad():
        model(x)
        for h in hooks:
            h.remove()
        assert captured, f"{name}: no identity-shortcut residual block ran"
        for block, inp in captured.items():
            y = block(inp)
            y = y[0] if isinstance(y, tuple) else y
            torch.testing.assert_close(y, inp, msg=f"{name}: {type(block).__name__} is not the identity after "
                                                   "zero_init_last")


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(KeyError, match="resnet50"):
        skiplab.create_model("resnet05")


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "preact_resnet164", "densenet_bc_100_12", "plain_unet",
                                  "highway_mlp", "rnn_classifier"])
def test_reset_classifier_for_fine_tuning(name: str, tmp_path) -> None:
    """timm's get_classifier/reset_classifier: a fresh head of the new size; saved weights rebuild it."""
    from skiplab.weights import load_weights, save_weights

    model = build(name).eval()
    old = model.get_classifier()
    assert model.reset_classifier(7) is model and model.get_classifier() is not old
    with torch.no_grad():
        out = model(tiny_input(name, model))
    assert out.shape[1] == 7
    save_weights(model, tmp_path / "ft.safetensors")
    again = skiplab.create_model(name, **model.model_kwargs)  # the saved kwargs name the new size
    load_weights(again, tmp_path / "ft.safetensors")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        model.reset_classifier(0)
