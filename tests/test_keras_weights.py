"""Keras Applications' networks against ours, with Keras itself (Keras 3 on its PyTorch backend, a test
dependency): every weight of a Keras ResNet50 / ResNet50V2 / DenseNet121 randomised, saved as Keras' HDF5, loaded
by skiplab.load_weights into resnet50_keras / resnet50v2 / densenet121, and the logits compared."""
from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is imported: its default backend is TensorFlow

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import skiplab  # noqa: E402
from skiplab.keras_weights import KERAS_APPLICATIONS, keras_preprocess, looks_like_keras, preprocessing_mode, \
    read_keras_h5  # noqa: E402
from skiplab.weights import load_weights  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' torch backend's numpy calls

PAIRS = [("ResNet50", "resnet50_keras"), ("ResNet50V2", "resnet50v2"), ("DenseNet121", "densenet121"),
         ("ConvNeXtTiny", "convnext_tiny"), ("MobileNetV2", "mobilenet_v2_keras"), ("Xception", "xception"),
         ("EfficientNetB0", "efficientnet_b0_keras"), ("MobileNetV3Large", "mobilenet_v3_large_keras"),
         ("MobileNetV3Small", "mobilenet_v3_small_keras"), ("EfficientNetV2B3", "efficientnet_v2_b3_keras"),
         ("EfficientNetV2S", "efficientnet_v2_s_keras"), ("InceptionResNetV2", "inception_resnet_v2")]
SIZE, CLASSES = 64, 10
# Xception >= 71 (its unpadded stem); 79 -> 39 -> 37 -> pools at 37, 19, 10 (even: TF pads 0/1), 5.
# Inception-ResNet-v2: 75, its smallest input
SIZES = {"Xception": 79, "InceptionResNetV2": 75}
INPUT_SCALE = {"EfficientNetB0": 255.0}  # Keras' EfficientNet divides its input by 255 itself
# Deep nets whose random residual branches, at full scale, grow the activations ~1e6-fold over 40 blocks, where
# float32 rounding (1e-5 relative per block, checked block by block) no longer gives equal logits: their branches'
# last BatchNorm scales are drawn smaller (still random, so a mis-mapped layer still shows)
DAMPED = ("EfficientNetV2S", "EfficientNetV2B3")


def keras_model(name: str, seed: int = 0, **options) -> keras.Model:
    """A Keras Applications net with every variable random: kernels (Glorot at creation), and biases, BN scales,
    offsets and moving statistics too — zeros and ones would hide a BatchNorm mapped to the wrong layer."""
    keras.utils.set_random_seed(seed)
    # ours takes normalised input (Keras' built-in scaling off)
    extra = {"include_preprocessing": False} if name.startswith(("ConvNeXt", "MobileNetV3", "EfficientNetV2")) else {}
    size = SIZES.get(name, SIZE)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=CLASSES,
                                              classifier_activation=None, **extra, **options)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for var in layer.weights:
            if var.path.endswith(("bias", "beta", "moving_mean")) or "layer_scale" in var.path:
                var.assign(rng.normal(0, 0.1, var.shape).astype("float32"))
            elif var.path.endswith("gamma") and name in DAMPED and "project_bn" in var.path:
                var.assign(rng.uniform(0.1, 0.3, var.shape).astype("float32"))
            elif var.path.endswith(("gamma", "moving_variance")):
                var.assign(rng.uniform(0.5, 1.5, var.shape).astype("float32"))
    return model


def save_both_layouts(model: keras.Model, tmp_path) -> tuple:
    """``model.save("x.h5")`` (weights nested under model_weights) and the same weights at the file's root — the
    layout of Keras Applications' downloadable weight files."""
    full = tmp_path / "model.h5"
    model.save(full)
    weights_only = tmp_path / "weights.h5"
    with h5py.File(full, "r") as src, h5py.File(weights_only, "w") as dst:
        for key, value in src["model_weights"].attrs.items():
            dst.attrs[key] = value
        for name in src["model_weights"]:
            src["model_weights"].copy(name, dst)
    return full, weights_only


@pytest.mark.parametrize("keras_name, ours", PAIRS)
def test_keras_applications_weights_give_keras_outputs(keras_name, ours, tmp_path):
    kmodel = keras_model(keras_name)
    size = SIZES.get(keras_name, SIZE)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    expected = kmodel(x.permute(0, 2, 3, 1).numpy() * INPUT_SCALE.get(keras_name, 1.0), training=False)
    expected = torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(expected)))
    net = skiplab.create_model(ours, num_classes=CLASSES)
    stats = sum(b.numel() for k, b in net.named_buffers() if k.endswith(("running_mean", "running_var")))
    normalisation = 7 if keras_name == "EfficientNetB0" else 0  # its input Normalization's mean/var/count
    assert kmodel.count_params() == sum(p.numel() for p in net.parameters()) + stats + normalisation
    for path in save_both_layouts(kmodel, tmp_path):
        net = skiplab.create_model(ours, num_classes=CLASSES).eval()
        load_weights(net, path)
        with torch.no_grad():
            got = net(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("keras_name, ours, alpha", [("MobileNetV3Small", "mobilenet_v3_small_keras", 0.75),
                                                     ("MobileNetV3Large", "mobilenet_v3_large_keras", 0.75),
                                                     ("MobileNetV2", "mobilenet_v2_keras", 0.35)])
def test_keras_mobilenet_width_multiplier(keras_name, ours, alpha, tmp_path):
    """Keras' alpha = our width (MobileNetV3: the stem stays 16 and each block expands its scaled input by the
    table's ratio)."""
    kmodel = keras_model(keras_name, seed=2, alpha=alpha)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    expected = torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(
        kmodel(x.permute(0, 2, 3, 1).numpy(), training=False))))
    net = skiplab.create_model(ours, num_classes=CLASSES, width=alpha).eval()
    stats = sum(b.numel() for k, b in net.named_buffers() if k.endswith(("running_mean", "running_var")))
    assert kmodel.count_params() == sum(p.numel() for p in net.parameters()) + stats
    _, path = save_both_layouts(kmodel, tmp_path)
    load_weights(net, path)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_read_keras_h5_keeps_keras_names_and_layouts(tmp_path):
    _, path = save_both_layouts(keras_model("ResNet50"), tmp_path)
    state = read_keras_h5(path)
    assert looks_like_keras(state)
    assert state["conv1_conv/kernel"].shape == (7, 7, 3, 64) and state["predictions/kernel"].shape == (2048, CLASSES)
    assert {"conv2_block1_0_bn/moving_variance", "conv5_block3_3_conv/bias"} <= set(state)
    # BN statistics + conv biases + everything else = Keras' own count of its weights
    assert sum(v.numel() for v in state.values()) == keras_model("ResNet50").count_params()


def test_keras_files_that_cannot_be_matched_are_refused_clearly(tmp_path):
    kmodel = keras_model("ResNet50")
    kmodel.save_weights(tmp_path / "x.weights.h5")  # Keras 3: layers named by class and position
    with pytest.raises(ValueError, match=r"Keras 3 '\.weights\.h5' file.*model\.save\('model\.h5'\)"):
        load_weights(skiplab.create_model("resnet50_keras", num_classes=CLASSES), tmp_path / "x.weights.h5")
    kmodel.save(tmp_path / "x.keras")
    with pytest.raises(ValueError, match="Keras 3 archive"):
        load_weights(skiplab.create_model("resnet50_keras", num_classes=CLASSES), tmp_path / "x.keras")
    full, _ = save_both_layouts(kmodel, tmp_path)
    with pytest.raises(ValueError, match=r"(?s)missing keys.*a Keras file: it loads into the Keras layouts.*"
                                         r"resnet50_keras"):
        load_weights(skiplab.create_model("resnet50", num_classes=CLASSES), full)  # torchvision's layout
    (tmp_path / "empty.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_weights(skiplab.create_model("resnet50_keras"), tmp_path / "empty.h5")


@pytest.mark.parametrize("ours, keras_module", [("resnet50_keras", "resnet"), ("resnet101v2", "resnet_v2"),
                                                ("densenet201", "densenet")])
def test_keras_preprocess_matches_keras_preprocess_input(ours, keras_module):
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 255
    expected = getattr(keras.applications, keras_module).preprocess_input(images.permute(0, 2, 3, 1).numpy().copy())
    got = keras_preprocess(images, preprocessing_mode(ours))
    torch.testing.assert_close(got.permute(0, 2, 3, 1), torch.as_tensor(np.ascontiguousarray(expected)), rtol=1e-5,
                               atol=1e-4)


def test_every_keras_counterpart_is_registered_and_named_after_a_keras_application():
    for ours, theirs in KERAS_APPLICATIONS.items():
        assert ours in skiplab.list_models() and hasattr(keras.applications, theirs)
    with pytest.raises(ValueError, match="'resnet50' has no Keras Applications counterpart; those that do: "
                                         "resnet50_keras \\(ResNet50\\)"):
        preprocessing_mode("resnet50")
    with pytest.raises(ValueError, match=r"images must be \(N, 3, H, W\) RGB; got shape \(3, 8, 8\)"):
        keras_preprocess(torch.zeros(3, 8, 8), "caffe")
    with pytest.raises(ValueError, match="mode must be 'caffe', 'tf', 'tf128' or 'torch'; got 'inception'"):
        keras_preprocess(torch.zeros(1, 3, 8, 8), "inception")


def test_convnext_with_keras_built_in_preprocessing_equals_ours_after_keras_preprocess(tmp_path):
    """Keras' ConvNeXt normalises raw [0, 255] RGB inside the model (a Normalization layer without weights);
    ours takes what keras_preprocess(x, preprocessing_mode("convnext_tiny")) gives."""
    keras.utils.set_random_seed(0)
    kmodel = keras.applications.ConvNeXtTiny(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                                             classifier_activation=None)
    kmodel.save(tmp_path / "cnx.h5")
    net = skiplab.create_model("convnext_tiny", num_classes=CLASSES, weights=str(tmp_path / "cnx.h5")).eval()
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 255
    expected = np.asarray(keras.ops.convert_to_numpy(kmodel(images.permute(0, 2, 3, 1).numpy(), training=False)))
    with torch.no_grad():
        got = net(keras_preprocess(images, preprocessing_mode("convnext_tiny")))
    torch.testing.assert_close(got, torch.as_tensor(expected), rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
