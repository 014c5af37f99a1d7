"""Inference export: BatchNorm folding, channels_last, optional torch.compile, and ONNX.

Folding (Ioffe & Szegedy 2015 give BN's inference form ``y = s * x + t`` with ``s = gamma / sqrt(var + eps)``,
``t = beta - mean * s``): in eval mode BN is an affine map per channel, so it merges exactly into a neighbouring
linear layer.

* conv -> BN (every post-activation net: stems, branches, projection shortcuts; the convs of pre-activation
  units that a BN directly follows): ``W' = W * s[out]``, ``b' = (b - mean) * s + beta``.  Exact.
* BN -> conv (a BN whose output only a convolution reads): exact only when the convolution has no zero padding
  (zero-padding the BN output is not zero-padding its input: at the border the fold would miss ``W * t``),
  so only unpadded convolutions (1x1) with ``groups=1`` take it: ``W' = W * s[in]``, ``b' = b + sum W * t``.
* Left in place: BNs after an addition or a concatenation (full pre-activation units' first BN, the
  pre-activation head, ``bn_after_add``), a BN followed by an activation before the next conv, a BN in front of a
  padded conv — none of these is an affine map next to a single linear layer.

Adjacency is read from ``nn.Sequential`` containers (skiplab builds stems, branches and shortcuts as named
Sequentials): a layer followed by another in the same Sequential is its only reader.  A folded BN is replaced by
``nn.Identity`` so module names and the model's interface (``stem``/``stages``/``head``) stay as they were.

ONNX export uses the TorchScript-based exporter (``dynamo=False``), which needs neither onnx nor onnxscript;
running the export (:class:`OnnxModel`, parity checks) needs ``onnxruntime`` (``pip install 'skiplab[onnx]'``).
On these CPUs onnxruntime is the fastest way to serve a model.  resnet50 at 224x224 vs the eager float32 model
(``skiplab bench infer --model resnet50``), batch-1 latency / batch-32 throughput: one thread (CPU clock, loaded
machine) folded+channels_last 1.11x / 1.53x, compiled 1.20x / 1.90x, onnxruntime 1.65x / 2.75x; two threads
(wall clock) 1.94x / 1.48x, 2.07x / 1.95x, 2.77x / 2.79x; outputs within 8e-5 of eager.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
DEFAULT_OPSET = 18


@dataclass
class FoldedPair:
    """One fold: ``norm`` merged into ``layer``; ``direction`` "after" (layer -> BN) or "before" (BN -> layer)."""

    layer: str
    norm: str
    direction: str


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` with ``bn(x) == s * x + t`` per channel in eval mode (float64 for the fold's arithmetic)."""
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)
    return s, beta - mean * s


def _foldable_norm(m: nn.Module) -> bool:
    return isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None


def _linear_like(m: nn.Module) -> bool:
    return (isinstance(m, _CONV) and not isinstance(m, nn.modules.conv._ConvTransposeNd)) or isinstance(m, nn.Linear)


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _set_bias(layer: nn.Module, bias: torch.Tensor) -> None:
    b = bias.to(layer.weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(b, requires_grad=layer.weight.requires_grad)
    else:
        layer.bias.data.copy_(b)


@torch.no_grad()
def _fold_after(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    s, t = _bn_affine(bn)  # per output channel of `layer`
    w = layer.weight.double()
    shape = (-1,) + (1,) * (w.dim() - 1)
    layer.weight.data.copy_((w * s.view(shape)).to(layer.weight.dtype))
    b = layer.bias.double() if layer.bias is not None else torch.zeros_like(s)
    _set_bias(layer, b * s + t)


def _can_fold_before(layer: nn.Module, bn: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return layer.in_features == bn.num_features and isinstance(bn, nn.BatchNorm1d)
    if not isinstance(layer, _CONV) or layer.groups != 1 or layer.in_channels != bn.num_features:
        return False
    if isinstance(layer.padding, str):  # "valid": no padding; "same" pads unless the kernel is 1
        return layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)
    return all(p == 0 for p in layer.padding)


@torch.no_grad()
def _fold_before(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    s, t = _bn_affine(bn)  # per input channel of `layer`
    w = layer.weight.double()  # out, in, *kernel
    shape = (1, -1) + (1,) * (w.dim() - 2)
    b = layer.bias.double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    b = b + (w * t.view(shape)).flatten(1).sum(1)
    layer.weight.data.copy_((w * s.view(shape)).to(layer.weight.dtype))
    _set_bias(layer, b)


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` (or ``model`` itself with ``inplace``) with every foldable BatchNorm merged
    into its neighbouring convolution/linear layer and replaced by ``nn.Identity`` (see the module docstring for
    what folds).  Outputs equal the eval-mode original up to float rounding.  The folds made are listed in
    ``model.folded_norms`` (a list of :class:`FoldedPair`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    folded: list[FoldedPair] = []
    for seq_name, seq in list(out.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        i = 0
        while i < len(names) - 1:
            a, b = seq._modules[names[i]], seq._modules[names[i + 1]]
            prefix = f"{seq_name}." if seq_name else ""
            if _linear_like(a) and _foldable_norm(b) and b.num_features == _out_channels(a):
                _fold_after(a, b)
                seq._modules[names[i + 1]] = nn.Identity()
                folded.append(FoldedPair(prefix + names[i], prefix + names[i + 1], "after"))
                i += 2
                continue
            if _foldable_norm(a) and _linear_like(b) and _can_fold_before(b, a):
                _fold_before(b, a)
                seq._modules[names[i]] = nn.Identity()
                folded.append(FoldedPair(prefix + names[i + 1], prefix + names[i], "before"))
            i += 1
    out.folded_norms = folded
    return out


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, _BN) for m in model.modules())


def _inputs_to(module: nn.Module, args: tuple, *, dtype: torch.dtype) -> tuple:
    """Forward pre-hook: floating-point tensor arguments cast to ``dtype``."""
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _output_to_float32(module: nn.Module, args: tuple, output: Any) -> Any:
    """Forward hook: a floating-point tensor output returned as float32."""
    return output.float() if isinstance(output, torch.Tensor) and output.is_floating_point() else output


def optimize_for_inference(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True,
                           compile: bool = False, freeze: bool = True, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, no parameter gradients, BatchNorm folded, 4-D weights in
    channels_last (NHWC: oneDNN's native layout on CPU, tensor-core friendly on GPU), and with ``compile`` a
    ``torch.compile``d module (inductor; ``freeze`` lets it treat the weights as constants, which on CPU
    pre-packs convolution weights for oneDNN; shapes are static, so each new batch size compiles once).  Call the
    result under ``torch.inference_mode()``; inputs may be NCHW or channels_last (the first convolution
    converts).

    ``dtype=torch.bfloat16``: the copy's parameters and buffers are cast once to bf16 (BatchNorm is folded in
    float32 first) and it computes in bf16: hooks cast the input to bf16 and the output back to float32, so the
    caller's tensors stay float32.  Cheaper than autocast at small batches (no per-call weight casts).  Only where
    bf16 is native (:func:`skiplab.speed.native_bf16`; a CUDA GPU with bf16): elsewhere it is emulated and slow.
    bf16 keeps 8 significand bits, so logits differ from float32 by ~1e-2 relative — compare argmax agreement,
    not max differences (``skiplab bench infer`` reports both)."""
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16; got {dtype!r}")
    out = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    out.requires_grad_(False)
    if dtype is not None and dtype != torch.float32:
        from functools import partial

        out = out.to(dtype)
        out.register_forward_pre_hook(partial(_inputs_to, dtype=dtype))
        out.register_forward_hook(_output_to_float32)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    if compile:
        return torch.compile(out, dynamic=False, options={"freezing": freeze})
    return out


# ------------------------------------------------------------------------------------------------------- ONNX
def _example_input(model: nn.Module, input_size: tuple[int, ...] | None, batch_size: int) -> torch.Tensor:
    size = input_size or getattr(model, "default_input_size", None)
    if size is None:
        raise ValueError(f"input_size is needed: {type(model).__name__} has no default_input_size "
                         "(pass e.g. input_size=(3, 224, 224))")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    device = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else "cpu"
    return torch.randn(batch_size, *size, device=device)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, input_size: tuple[int, ...] | None = None,
                batch_size: int = 1, opset: int = DEFAULT_OPSET, fold_bn: bool = True,
                dynamic_batch: bool = True) -> Path:
    """Write ``model`` (BN folded unless ``fold_bn=False``) to ``path`` as ONNX (``opset``), input ``"input"``
    of shape ``(batch, *input_size)`` (default: the model's ``default_input_size``), output ``"logits"``; the
    batch dim is dynamic unless ``dynamic_batch=False``.  Returns the path."""
    if not isinstance(opset, int) or not 11 <= opset <= 20:
        raise ValueError(f"opset must be an integer in 11..20 (the TorchScript exporter's range); got {opset!r}")
    m = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    m = m.to(memory_format=torch.contiguous_format)
    x = _example_input(m, input_size, batch_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # the input checks (shape, dtype) are Python branches the tracer records as constants: expected
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamic_axes=axes, do_constant_folding=True)
    return path


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxModel:
    """An exported model run by onnxruntime's CPU provider, called like a module: ``OnnxModel(path)(x)``
    takes and returns torch tensors.  ``threads``: onnxruntime's intra-op threads (default: its own choice).
    Raises ImportError with the install hint when onnxruntime is absent."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("onnxruntime is not installed: pip install 'skiplab[onnx]'") from e
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {"input": x.detach().cpu().contiguous().numpy()})
        return torch.from_numpy(out)


def run_onnx(path: str | os.PathLike, x: torch.Tensor, *, threads: int | None = None) -> torch.Tensor:
    """Run an exported model with onnxruntime (CPU) on ``x`` once (see :class:`OnnxModel` to run it often)."""
    return OnnxModel(path, threads=threads)(x)


def onnx_max_abs_diff(model: nn.Module, path: str | os.PathLike, x: torch.Tensor, **kwargs: Any) -> float:
    """``max |model(x) - onnxruntime(path)(x)|`` with ``model`` in eval mode (the unfolded original is the
    reference the export must match)."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        want = model(x).float().cpu()
    model.train(was_training)
    return float((run_onnx(path, x, **kwargs) - want).abs().max())
