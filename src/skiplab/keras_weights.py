"""Keras weights in, skiplab state dicts out: the HDF5 files of Keras Applications (``resnet50_weights_tf_dim_
ordering_tf_kernels.h5``...) and anything saved in Keras' named HDF5 layout (tf.keras ``save_weights("x.h5")``,
``model.save("x.h5")`` in Keras 2 or 3).

The file is read with h5py (``pip install skiplab[keras]``): arrays and attributes only, nothing is executed or
unpickled.  :func:`read_keras_h5` gives ``{"<layer name>/<variable>": tensor}`` in Keras' own layouts; a model
whose ``remap_state_dict`` knows Keras' layer names (``resnet50_keras``..., ``resnet50v2``..., the DenseNets,
the ConvNeXts) turns that into its state dict with :func:`from_keras`, so ``skiplab.load_weights(model, "x.h5")``
just works.

Layouts: a Conv2D kernel is (kh, kw, in, out) -> (out, in, kh, kw); a Dense kernel (in, out) -> (out, in); a
BatchNormalization's gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var.  Keras
Applications' ResNet50/101/152 (v1) expect Caffe-style inputs (BGR, mean subtracted, not scaled) and the V2 nets
and DenseNets their own scaling; the weights are converted as they are, the input convention stays the user's.
skiplab's DenseNets keep torchvision's BatchNorm epsilon (1e-5, Keras 1.001e-5): logits agree within 1e-4.

Keras 3's ``.weights.h5`` files name layers by class and position (``conv2d_17``), not by name; they are refused
with how to save a named file instead.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# skiplab model -> the Keras Applications net whose weights it loads (its remap_state_dict reads Keras files)
KERAS_APPLICATIONS = {"resnet50_keras": "ResNet50", "resnet101_keras": "ResNet101", "resnet152_keras": "ResNet152",
                      "resnet50v2": "ResNet50V2", "resnet101v2": "ResNet101V2", "resnet152v2": "ResNet152V2",
                      "densenet121": "DenseNet121", "densenet169": "DenseNet169", "densenet201": "DenseNet201",
                      "convnext_tiny": "ConvNeXtTiny", "convnext_small": "ConvNeXtSmall",
                      "convnext_base": "ConvNeXtBase", "convnext_large": "ConvNeXtLarge",
                      "convnext_xlarge": "ConvNeXtXLarge",
                      "mobilenet_v2_keras": "MobileNetV2", "xception": "Xception",
                      "inception_resnet_v2": "InceptionResNetV2",
                      "mobilenet_v3_large_keras": "MobileNetV3Large", "mobilenet_v3_small_keras": "MobileNetV3Small",
                      **{f"efficientnet_b{i}_keras": f"EfficientNetB{i}" for i in range(8)},
                      **{f"efficientnet_v2_{v}_keras": f"EfficientNetV2{v.upper()}"
                         for v in ("b0", "b1", "b2", "b3", "s", "m", "l")}}
KERAS_MODELS = ", ".join(f"{ours} ({theirs})" for ours, theirs in KERAS_APPLICATIONS.items())
# Keras variable -> the PyTorch parameter or buffer name
# ("variable": an unnamed weight, e.g. ConvNeXt's LayerScale γ, saved as variable, variable_1, ...)
VARIABLES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var", "variable": "gamma", "depthwise_kernel": "weight",
             "pointwise_kernel": "weight"}  # the last two: SeparableConv2D's (and Keras 2's DepthwiseConv2D's)
_KEY = re.compile(r"^(?P<layer>.+)/(?P<var>kernel|depthwise_kernel|pointwise_kernel|bias|gamma|beta|moving_mean|"
                  r"moving_variance|variable)$")


def is_hdf5(head: bytes) -> bool:
    return head[:8] == HDF5_SIGNATURE


def _text(value: object) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_keras_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """``{"<layer>/<variable>": tensor}`` from a Keras HDF5 weights or model file, arrays as Keras stores them."""
    try:
        import h5py
    except ImportError:
        raise ImportError(f"reading the Keras file {path} needs h5py: pip install 'skiplab[keras]' (or h5py)") from None
    path = Path(path)
    out: dict[str, torch.Tensor] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f  # model.save("x.h5") nests the weights
        if "layer_names" not in root.attrs:
            if "layers" in root:
                raise ValueError(
                    f"{path} is a Keras 3 '.weights.h5' file: it names layers by class and position, not by name, "
                    "so they cannot be matched to a network's layers. In Keras, save a named file instead: "
                    "model.save('model.h5') (the HDF5 layout), then load that")
            raise ValueError(f"{path}: an HDF5 file without Keras' 'layer_names' attribute; expected Keras weights "
                             "(save_weights('x.h5') / model.save('x.h5') / Keras Applications' .h5 files)")
        for layer in map(_text, root.attrs["layer_names"]):
            group = root[layer]
            for weight in map(_text, group.attrs.get("weight_names", [])):
                var = weight.rsplit("/", 1)[-1].split(":", 1)[0]  # "conv1_conv/kernel:0" -> "kernel"
                var = re.sub(r"^variable_\d+$", "variable", var)  # Keras numbers unnamed weights model-wide
                key = f"{layer}/{var}"
                if key in out:
                    raise ValueError(f"{path}: layer {layer!r} has two variables named {var!r}")
                out[key] = torch.from_numpy(np.array(group[weight], dtype=np.float32))
    if not out:
        raise ValueError(f"{path}: a Keras file with no weights")
    return out


def looks_like_keras(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether every key is Keras' ``<layer>/<variable>`` (what :func:`read_keras_h5` returns)."""
    return bool(state) and all(_KEY.match(k) for k in state)


def unnamed_layers(state: Mapping[str, torch.Tensor], kind: str) -> list[str]:
    """The auto-named Keras layers of one ``kind`` ("conv2d" -> ``conv2d``, ``conv2d_1``, ``conv2d_2``, ...) in
    creation order.  Numbering may start anywhere (it counts every such layer made in that Keras session), so only
    the order is meaningful."""
    names = {k.split("/")[0] for k in state if re.fullmatch(rf"{kind}(_\d+)?/.*", k)}
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]) if n[-1].isdigit() else -1)


def from_keras(state: Mapping[str, torch.Tensor], module_for: Callable[[str, str], str | None],
               target: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keras ``<layer>/<variable>`` tensors -> a PyTorch state dict.  ``module_for(layer, variable)`` names the
    module a Keras layer's variable goes to (``("conv2_block1_1_conv", "kernel")`` -> ``"stages.0.0.branch.conv1"``;
    the variable tells a Sequential layer's convolution from its norm), or None for a layer the model does not
    know: such keys are kept as they are, so that loading reports them as unexpected.

    ``target``: the model's state dict, for depthwise convolutions — Keras stores their kernels as (kh, kw, C, 1),
    which the general rule turns into (1, C, kh, kw); where the model's weight is (C, 1, kh, kw) it is transposed —
    and for 1x1 convolutions that the model has as Linear layers (their kernels are flattened)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        module = module_for(m["layer"], m["var"]) if m else None
        if module is None:
            out[key] = value
            continue
        name = f"{module}.{VARIABLES[m['var']]}"
        if m["var"] in ("kernel", "depthwise_kernel", "pointwise_kernel") and value.dim() == 4:
            value = value.permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
            want = target[name].shape if target is not None and name in target else None
            if want is not None and value.shape != want and value.transpose(0, 1).shape == want:
                value = value.transpose(0, 1)  # depthwise: (1, C, kh, kw) -> (C, 1, kh, kw)
            elif want is not None and len(want) == 2 and value.shape[2:] == (1, 1):
                value = value.flatten(1)  # a 1x1 convolution on a pooled map (MobileNetV3's head) -> a Linear
        elif m["var"] == "kernel" and value.dim() == 2:
            value = value.t()  # Dense (in, out) -> Linear (out, in)
        out[name] = value.contiguous()
        if m["var"] == "moving_mean":  # Keras keeps no update counter; PyTorch's BatchNorm has one
            out.setdefault(f"{module}.num_batches_tracked", torch.zeros((), dtype=torch.long))
    return out


_DENSE_LAYER = re.compile(r"^conv(?P<stage>[2-5])_block(?P<layer>\d+)_(?P<part>[012])_(?P<kind>conv|bn)$")
_DENSE_PARTS = {("0", "bn"): "norm1", ("1", "conv"): "conv1", ("1", "bn"): "norm2", ("2", "conv"): "conv2"}
_TRANSITION = re.compile(r"^pool(?P<stage>[2-4])_(?P<kind>conv|bn)$")


def densenet_module(layer: str, var: str = "") -> str | None:
    """Keras Applications' DenseNet layer names (``conv1/conv`` or ``conv1_conv``, ``conv2_block1_0_bn``,
    ``pool2_conv``, ``bn``, ``predictions``) -> skiplab's DenseNet modules."""
    if layer in _HEAD:
        return _HEAD[layer]
    if layer in ("conv1/conv", "conv1/bn", "conv1_conv", "conv1_bn"):  # tf.keras 2 / Keras 3 names
        return "stem.conv" if layer.endswith("conv") else "stem.norm"
    if layer == "bn":
        return "head.norm"
    m = _DENSE_LAYER.match(layer)
    if m is not None and (m["part"], m["kind"]) in _DENSE_PARTS:
        return f"stages.{int(m['stage']) - 2}.block.denselayer{m['layer']}.branch.{_DENSE_PARTS[m['part'], m['kind']]}"
    m = _TRANSITION.match(layer)
    if m is not None:
        return f"stages.{int(m['stage']) - 2}.transition.{'conv' if m['kind'] == 'conv' else 'norm'}"
    return None


_RESNET_BLOCK = re.compile(r"^conv(?P<stage>[2-5])_block(?P<block>\d+)_(?P<part>\d|preact)_(?P<kind>conv|bn)$")
_HEAD = {"predictions": "head.fc", "fc1000": "head.fc", "probs": "head.fc"}


def resnet_module(layer: str, var: str = "", *, preact: Callable[[int, int], str] | None = None) -> str | None:
    """Keras Applications' ResNet layer names -> skiplab's ResNet modules (v1 and V2).  ``preact(stage, block)``
    gives where a V2 unit's ``preact_bn`` lives (shared with the projection, or first in the branch)."""
    if layer in _HEAD:
        return _HEAD[layer]
    if layer in ("conv1_conv", "conv1_bn"):
        return "stem.conv" if layer.endswith("conv") else "stem.bn"
    if layer == "post_bn":
        return "head.bn"
    m = _RESNET_BLOCK.match(layer)
    if m is None:
        return None
    stage, block = int(m["stage"]) - 2, int(m["block"]) - 1
    unit = f"stages.{stage}.{block}"
    if m["part"] == "preact":
        return f"{unit}.{preact(stage, block)}" if preact is not None and m["kind"] == "bn" else None
    if m["part"] == "0":
        return f"{unit}.shortcut.{m['kind']}"
    return f"{unit}.branch.{m['kind']}{m['part']}"


# ------------------------------------------------------------------------------------------------ inputs
# What Keras Applications feed these nets (keras.applications.<module>.preprocess_input)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def keras_preprocess(images: torch.Tensor, mode: str) -> torch.Tensor:
    """RGB images with values in [0, 255], shape (N, 3, H, W), as a Keras Applications net trained with ``mode``
    expects them (what ``keras.applications.<net>.preprocess_input`` does to NHWC arrays): ``"caffe"`` (ResNet50/
    101/152) RGB -> BGR and the ImageNet BGR means subtracted; ``"tf"`` (the V2 nets) scaled to [-1, 1];
    ``"tf128"`` (EfficientNetV2-S/M/L, which do it inside the model) ``x / 128 - 1``; ``"torch"`` (DenseNets)
    scaled to [0, 1] and normalised by the ImageNet mean and std."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB; got shape {tuple(images.shape)}")
    x = images.float()
    if mode == "caffe":
        return x.flip(1) - torch.tensor(_CAFFE_BGR_MEAN, device=x.device).view(1, 3, 1, 1)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "tf128":
        return x / 128.0 - 1.0
    if mode == "torch":
        mean = torch.tensor(_TORCH_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_TORCH_STD, device=x.device).view(1, 3, 1, 1)
        return (x / 255.0 - mean) / std
    raise ValueError(f"mode must be 'caffe', 'tf', 'tf128' or 'torch'; got {mode!r}")


def preprocessing_mode(model_name: str) -> str:
    """The Keras preprocessing mode of a model with Keras Applications weights (``resnet50_keras`` -> ``"caffe"``)."""
    if model_name not in KERAS_APPLICATIONS:
        raise ValueError(f"{model_name!r} has no Keras Applications counterpart; those that do: {KERAS_MODELS}")
    keras_name = KERAS_APPLICATIONS[model_name]
    if keras_name.startswith(("MobileNetV", "Xception", "InceptionResNet")):
        return "tf"  # MobileNetV3: Keras scales x / 127.5 - 1 inside the model (include_preprocessing)
    if keras_name.startswith("EfficientNetV2") and keras_name[-1] in "SML":
        return "tf128"  # built into Keras' model (include_preprocessing)
    if keras_name.startswith(("ConvNeXt", "EfficientNet")):
        return "torch"  # ImageNet mean/std: Keras builds that into these models (ConvNeXt, V2: include_preprocessing)
    return "tf" if keras_name.endswith("V2") else "torch" if keras_name.startswith("DenseNet") else "caffe"
