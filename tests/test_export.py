"""skiplab.export: BatchNorm folding (what folds, what must not, outputs unchanged), channels_last, compile and
ONNX export with onnxruntime parity."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from skiplab import create_model
from skiplab.models.preact import PreActResNet
from skiplab.export import OnnxModel, count_batchnorms, export_onnx, fold_batchnorm, onnx_max_abs_diff, \
    onnxruntime_available, optimize_for_inference


def _randomise_norms(model: nn.Module, size: tuple[int, ...] | None = None) -> nn.Module:
    """Non-trivial BN affine parameters and statistics, so a wrong fold cannot pass by accident.  With ``size``
    the statistics are calibrated (cumulative averages over a few train-mode batches, as after training), which
    keeps a deep net's activations at a realistic scale; without, they are random."""
    g = torch.Generator().manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        if size is not None:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            model.train()
            for _ in range(3):
                model(torch.randn(4, *size, generator=g))
            for m in norms:
                m.momentum = 0.1
    return model.eval()


def _close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-4) -> None:
    """Equal within ``tol`` relative to the output scale (random weights can make logits large)."""
    torch.testing.assert_close(got, want, rtol=0, atol=tol * max(1.0, want.abs().max().item()))


def _build(name: str, **kwargs) -> nn.Module:
    """A registered model, or "preact29": the pre-activation net at a test-sized depth (the registry's are
    164 and 1001)."""
    if name == "preact29":
        return PreActResNet(kwargs.pop("depth", 29), **kwargs)
    return create_model(name, **kwargs)


# (model, kwargs, input size, BatchNorms left after folding: those after an add/concat or before a ReLU)
CASES = [
    ("resnet20", dict(width=0.5), (3, 16, 16), 0),
    ("resnet50", dict(width=0.125, num_classes=7), (3, 64, 64), 0),
    ("resnet18", dict(width=0.125, shortcut="C"), (3, 32, 32), 0),
    ("resnet50d", dict(width=0.125), (3, 67, 67), 0),  # deep stem; the pooled shortcut's conv -> BN folds too
    ("resnet50_keras", dict(width=0.125), (3, 64, 64), 0),  # biased convs: the bias goes into the fold
    ("plain20", dict(width=0.5), (3, 16, 16), 0),
    ("highway20", dict(width=0.5), (3, 16, 16), 0),
    # full pre-activation (depth 29: 9 bottleneck units): conv -> BN folds inside the branch (2 per unit); each
    # unit's first BN reads the previous sum and the head BN the last sum: 9 + 1 left
    ("preact29", dict(width=0.25), (3, 16, 16), 9 + 1),
    ("preact29", dict(width=0.25, ordering="original"), (3, 16, 16), 0),
    ("preact29", dict(width=0.25, ordering="bn_after_add"), (3, 16, 16), 9),
    ("preact29", dict(width=0.25, ordering="relu_preact"), (3, 16, 16), 0),
    ("preact29", dict(width=0.25, unit="basic", depth=20), (3, 16, 16), 9 + 1),
    ("densenet_bc_100_12", dict(depth=40, growth_rate=4), (3, 16, 16), None),
]


@pytest.mark.parametrize("name,kwargs,size,left", CASES, ids=[f"{c[0]}-{'-'.join(map(str, c[1].values()))}"
                                                              for c in CASES])
def test_fold_keeps_outputs(name: str, kwargs: dict, size: tuple, left: int | None) -> None:
    model = _randomise_norms(_build(name, **kwargs))
    x = torch.randn(3, *size)
    with torch.no_grad():
        want = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    _close(got, want)
    assert count_batchnorms(model) > count_batchnorms(folded)  # the original is untouched, the copy folded
    assert count_batchnorms(folded) == count_batchnorms(model) - len(folded.folded_norms)
    if left is not None:
        assert count_batchnorms(folded) == left
    assert not folded.training


def test_fold_before_an_unpadded_conv_but_not_a_padded_one() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        bn1=nn.BatchNorm2d(4), conv1=nn.Conv2d(4, 6, 1),                  # BN -> 1x1 conv: exact, folds
        act1=nn.ReLU(),
        bn2=nn.BatchNorm2d(6), conv2=nn.Conv2d(6, 5, 3, padding=1),       # BN -> padded 3x3: inexact, stays
        bn3=nn.BatchNorm2d(5),                                             # conv -> BN: folds
        act3=nn.ReLU(), bn4=nn.BatchNorm2d(5), act4=nn.ReLU(), conv4=nn.Conv2d(5, 5, 1),  # ReLU between: stays
        flat=nn.Flatten(), bn5=nn.BatchNorm1d(5 * 7 * 7), fc=nn.Linear(5 * 7 * 7, 3),  # BN1d -> Linear folds
    ))
    _randomise_norms(net)
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        want = net(x)
        folded = fold_batchnorm(net)
        got = folded(x)
    _close(got, want, 1e-5)
    pairs = {(p.layer, p.norm, p.direction) for p in folded.folded_norms}
    assert pairs == {("conv1", "bn1", "before"), ("conv2", "bn3", "after"), ("fc", "bn5", "before")}
    assert isinstance(folded.bn2, nn.BatchNorm2d) and isinstance(folded.bn4, nn.BatchNorm2d)


def test_fold_skips_norms_without_running_stats_and_validates() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    assert fold_batchnorm(net).folded_norms == []
    with pytest.raises(TypeError, match="nn.Module"):
        fold_batchnorm("resnet20")  # type: ignore[arg-type]


def test_optimize_for_inference_channels_last() -> None:
    model = _randomise_norms(create_model("resnet50", width=0.125, num_classes=4), (3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    fast = optimize_for_inference(model, channels_last=True)
    assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    assert model.stem.conv.weight.is_contiguous()  # the original is untouched


def test_optimize_for_inference_bf16_copy() -> None:
    """dtype=bf16: weights cast once (BN folded in float32 first), float32 in and out, logits within bf16's
    precision of the float32 model's and the same argmax on clearly separated outputs."""
    model = _randomise_norms(create_model("resnet20", width=0.25), (3, 16, 16))
    x = torch.randn(8, 3, 16, 16)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = model(x), fast(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    scale = want.abs().max()
    assert (got - want).abs().max() <= 3e-2 * scale  # bf16 keeps 8 significand bits
    assert not torch.equal(got, want)  # it did compute in bf16
    with pytest.raises(ValueError, match="dtype must be"):
        optimize_for_inference(model, dtype=torch.int8)


@pytest.mark.slow
def test_optimize_for_inference_compiled() -> None:
    model = _randomise_norms(create_model("resnet20", width=0.25), (3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    fast = optimize_for_inference(model, compile=True)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


ONNX_SKIP = "onnxruntime is not installed: the ONNX parity tests need the extra, pip install 'skiplab[onnx]'"


@pytest.mark.skipif(not onnxruntime_available(), reason=ONNX_SKIP)
@pytest.mark.parametrize("name,kwargs,size", [
    ("resnet20", dict(width=0.5), (3, 32, 32)),
    ("resnet50", dict(width=0.25, num_classes=10), (3, 64, 64)),
    ("preact29", dict(width=0.25), (3, 16, 16)),
])
def test_onnx_parity_with_onnxruntime(tmp_path, name: str, kwargs: dict, size: tuple) -> None:
    model = _randomise_norms(_build(name, **kwargs), size)  # calibrated: logits at a trained net's scale
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=size)
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"] or name.startswith("preact")
    for batch in (1, 5):  # the batch dim is dynamic
        assert onnx_max_abs_diff(model, path, torch.randn(batch, *size)) < 1e-4
    x = torch.randn(2, *size)
    with torch.inference_mode():
        _close(OnnxModel(path, threads=1)(x), model(x))


def test_export_onnx_errors(tmp_path) -> None:
    model = create_model("resnet20", width=0.25)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=7)
    with pytest.raises(ValueError, match="batch_size"):
        export_onnx(model, tmp_path / "m.onnx", batch_size=0)
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(nn.Sequential(nn.Linear(2, 2)), tmp_path / "m.onnx")
