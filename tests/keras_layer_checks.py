"""skiplab.keras checks on ONE Keras backend, the one named by $KERAS_BACKEND.

Keras picks its backend once, at import, so tests/test_keras_layers.py runs this file in a fresh process per
backend (torch, jax, tensorflow).  Not collected by a plain `pytest` run (no test_ prefix).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

BACKEND = os.environ.get("KERAS_BACKEND", "")
assert BACKEND in ("torch", "jax", "tensorflow"), f"set KERAS_BACKEND to torch, jax or tensorflow; got {BACKEND!r}"

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from skiplab.keras import Highway, Residual  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 5, 4)).astype("float32")  # (batch, time, features)
# RNNs below are unrolled where the length is fixed: the same layers, several times cheaper on JAX's eager path


def np_(t) -> np.ndarray:  # noqa: ANN001
    return np.asarray(ops.convert_to_numpy(t))


def dense(units: int, seed: int) -> layers.Dense:
    return layers.Dense(units, kernel_initializer=keras.initializers.RandomNormal(seed=seed),
                        bias_initializer=keras.initializers.RandomNormal(seed=seed + 1))


def dense_np(layer: layers.Dense, x: np.ndarray) -> np.ndarray:
    kernel, bias = layer.get_weights()
    return x @ kernel + bias


def close(a, b, atol: float = 1e-5) -> None:  # noqa: ANN001
    np.testing.assert_allclose(np_(a) if not isinstance(a, np.ndarray) else a,
                               np_(b) if not isinstance(b, np.ndarray) else b, rtol=1e-5, atol=atol)


@keras.saving.register_keras_serializable(package="skiplab_tests")
def skip_minus_branch(skip, branch):  # noqa: ANN001, ANN201
    return ops.subtract(skip, branch)


def test_backend_is_the_requested_one() -> None:
    assert keras.backend.backend() == BACKEND


@pytest.mark.parametrize("mode, expected", [
    ("sum", lambda x, f: x + f),
    ("mul", lambda x, f: x * f),
    ("ave", lambda x, f: (x + f) / 2),
    ("max", np.maximum),
    ("concat", lambda x, f: np.concatenate([x, f], axis=-1)),
    (skip_minus_branch, lambda x, f: x - f),
])
def test_merge_modes_match_a_hand_computation(mode, expected) -> None:  # noqa: ANN001
    branch = dense(4, seed=1)
    out = Residual(branch, merge_mode=mode)(X)
    close(out, expected(X, dense_np(branch, X)))


def test_conv2d_residual_is_x_plus_conv() -> None:
    x = RNG.standard_normal((2, 6, 6, 3)).astype("float32")  # channels last
    conv = layers.Conv2D(3, 3, padding="same")
    out = Residual(conv)(x)
    close(out, x + np_(conv(x)))


def test_shape_mismatch_raises_naming_layer_shapes_and_projection() -> None:
    inp = keras.Input((5, 4))
    with pytest.raises(ValueError) as err:
        Residual(layers.Dense(6, name="widen"))(inp)
    msg = str(err.value)
    for part in ("Residual(widen: Dense)", "(None, 5, 4)", "(None, 5, 6)", "projection=True"):
        assert part in msg, (part, msg)
    # a projection maps only the last axis: a strided conv cannot be fixed by it
    with pytest.raises(ValueError, match="only the last axis"):
        Residual(layers.Conv2D(3, 3, strides=2, padding="same"), projection=True)(np.zeros((1, 6, 6, 3), "float32"))
    with pytest.raises(ValueError, match="every other axis must match"):
        Residual(layers.Conv2D(3, 3), merge_mode="concat")(np.zeros((1, 6, 6, 3), "float32"))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="merge_mode must be one of 'sum', 'mul', 'ave', 'max', 'concat'"):
        Residual(layers.Dense(4), merge_mode="add")
    with pytest.raises(TypeError, match="layer must be a keras.layers.Layer"):
        Residual(lambda x: x)
    with pytest.raises(ValueError, match="learnable_scale .* merge_mode='mul'"):
        Residual(layers.Dense(4), merge_mode="mul", learnable_scale=True)
    with pytest.raises(TypeError, match="projection must be True or False"):
        Residual(layers.Dense(4), projection="yes")


def test_projection_is_a_learned_dense_on_the_last_axis() -> None:
    branch = dense(6, seed=2)
    res = Residual(branch, projection=True)
    out = res(X)
    (proj_kernel,) = res.shortcut.get_weights()
    assert proj_kernel.shape == (4, 6)
    close(out, X @ proj_kernel + dense_np(branch, X))
    assert any(w.path.endswith("projection/kernel") for w in res.trainable_weights)
    same = Residual(layers.Dense(4), projection=True)
    same(X)
    assert same.shortcut is None  # shapes agree: identity skip, no projection weights


def test_learnable_scale_is_a_tracked_saved_weight(tmp_path) -> None:  # noqa: ANN001
    inp = keras.Input((5, 4))
    res = Residual(dense(4, seed=3), learnable_scale=True, name="rz")
    model = keras.Model(inp, res(inp))
    scales = [w for w in model.trainable_weights if w.path == "rz/scale"]
    assert len(scales) == 1
    close(model(X), X)  # ReZero: the identity at init, whatever the branch
    # compiled training (jit on JAX, a graph on TensorFlow), through a projection and a highway gate too
    train = keras.Sequential([model, Residual(layers.Dense(6), projection=True), Highway(layers.Dense(6))])
    train.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = train.fit(X, np.ones((2, 5, 6), "float32"), epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert float(np_(res.scale)) != 0.0  # the gradient reaches the scale
    res.scale.assign(0.37)
    model.save(tmp_path / "rz.keras")
    loaded = keras.models.load_model(tmp_path / "rz.keras")
    assert float(np_(loaded.get_layer("rz").scale)) == pytest.approx(0.37)
    close(loaded(X), model(X), atol=0)


def test_lstm_and_gru_sequences_and_state_pass_through() -> None:
    lstm = layers.LSTM(4, return_sequences=True, unroll=True)
    close(Residual(lstm)(X), X + np_(lstm(X)))
    gru = layers.GRU(4, return_sequences=True, unroll=True, return_state=True)
    res = Residual(gru)
    seq, state = res(X)
    ref_seq, ref_state = gru(X)
    close(seq, X + np_(ref_seq))
    close(state, ref_state)  # the state is not touched by the skip


def test_bidirectional_sum_and_concat_with_projection() -> None:
    bi_sum = layers.Bidirectional(layers.LSTM(4, return_sequences=True, unroll=True), merge_mode="sum")
    close(Residual(bi_sum)(X), X + np_(bi_sum(X)))
    bi_cat = layers.Bidirectional(layers.LSTM(3, return_sequences=True, unroll=True))  # 2 x 3 = 6 features
    with pytest.raises(ValueError, match="projection=True"):
        Residual(bi_cat)(keras.Input((5, 4)))
    res = Residual(layers.Bidirectional(layers.LSTM(3, return_sequences=True, unroll=True)), projection=True)
    out = res(X)
    (proj_kernel,) = res.shortcut.get_weights()
    close(out, X @ proj_kernel + np_(res.layer(X)))


def test_multi_head_self_attention() -> None:
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=2)
    res = Residual(mha)
    out = res(X)
    close(out, X + np_(mha(X, X)))
    out, scores = Residual(mha)(X, return_attention_scores=True)  # tuple output: skip on the first element
    assert tuple(scores.shape) == (2, 2, 5, 5)


@pytest.mark.parametrize("branch", ["bilstm", "mha"])
def test_masks_reach_the_layer_and_pass_on(branch: str) -> None:
    """Tokens padded with zeros: with the mask honoured inside the branch (backward LSTM, attention keys) and
    passed on to the pooling, the padded sequence gives exactly the unpadded sequence's output."""
    keras.utils.set_random_seed(0)
    make = {
        "bilstm": lambda: layers.Bidirectional(layers.LSTM(4, return_sequences=True), merge_mode="sum"),
        "mha": lambda: layers.MultiHeadAttention(num_heads=2, key_dim=2),
    }[branch]
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(10, 4, mask_zero=True)(inp)
    h = Residual(make())(h)
    out = layers.GlobalAveragePooling1D()(h)  # averages over unmasked steps only
    model = keras.Model(inp, out)
    short = np.array([[5, 3, 7]], "int32")
    padded = np.array([[5, 3, 7, 0, 0]], "int32")
    close(model(padded), model(short))
    assert not np.allclose(np_(model(np.array([[5, 3, 7, 1, 1]], "int32"))), np_(model(short)))


def test_highway_gate_bias_and_formula() -> None:
    branch = dense(4, seed=4)
    hw = Highway(branch)
    out = hw(X)
    kernel, bias = hw.gate.get_weights()
    np.testing.assert_array_equal(bias, np.full(4, -2.0, "float32"))  # Srivastava et al.: carry at init
    t = 1 / (1 + np.exp(-(X @ kernel + bias)))
    close(out, t * dense_np(branch, X) + (1 - t) * X)
    hw1 = Highway(layers.Dense(4), gate_bias_init=-1.0)
    hw1(X)
    np.testing.assert_array_equal(hw1.gate.get_weights()[1], np.full(4, -1.0, "float32"))
    with pytest.raises(ValueError, match=r"Highway\(.*Dense\).*\(2, 5, 4\).*\(2, 5, 6\)"):
        Highway(layers.Dense(6))(X)


def test_plain_twin_is_the_layer_alone() -> None:
    branch = dense(4, seed=5)
    res = Residual(branch, learnable_scale=True, projection=True, plain=True)
    close(res(X), dense_np(branch, X))
    assert res.scale is None and res.shortcut is None
    assert len(res.weights) == 2  # only the Dense's kernel and bias
    hw = Highway(branch, plain=True)
    close(hw(X), dense_np(branch, X))
    assert hw.gate is None


def _zoo() -> keras.Model:
    keras.utils.set_random_seed(1)
    inp = keras.Input((5, 4))
    h = Residual(layers.Dense(4), learnable_scale=True)(inp)
    h = Residual(layers.Dense(4), merge_mode=skip_minus_branch)(h)
    h = Residual(layers.Dense(4), merge_mode="concat")(h)  # 8 features
    h = Highway(layers.Dense(8))(h)
    h = Residual(layers.Bidirectional(layers.LSTM(3, return_sequences=True, unroll=True)), projection=True)(h)
    h = Residual(layers.MultiHeadAttention(num_heads=2, key_dim=3))(h)
    h = Residual(layers.Dense(6), plain=True)(h)
    return keras.Model(inp, h)


@pytest.fixture(scope="module")
def zoo() -> keras.Model:
    return _zoo()


def test_save_and_load_model_round_trip(zoo, tmp_path) -> None:  # noqa: ANN001
    for w in zoo.weights:  # non-default values everywhere (the ReZero scale too)
        w.assign(w + 0.05)
    expected = np_(zoo(X))
    zoo.save(tmp_path / "zoo.keras")
    loaded = keras.models.load_model(tmp_path / "zoo.keras")
    np.testing.assert_array_equal(np_(loaded(X)), expected)
    assert [tuple(w.shape) for w in loaded.weights] == [tuple(w.shape) for w in zoo.weights]
    assert loaded.get_layer(zoo.layers[1].name).scale.path.endswith("scale")


def _without_build_config(config: dict) -> dict:
    """A wrapper's config as from_config gets it back: the wrapped layer is built later, in the wrapper."""
    return {**config, "layer": {k: v for k, v in config["layer"].items() if k != "build_config"}}


def test_get_config_from_config_round_trip(zoo) -> None:  # noqa: ANN001
    for layer in zoo.layers[1:]:
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == _without_build_config(config)
        assert "build_config" in config["layer"]  # (the comparison above did strip something)
    clone = keras.Model.from_config(zoo.get_config())
    clone.set_weights(zoo.get_weights())
    np.testing.assert_array_equal(np_(clone(X)), np_(zoo(X)))


def test_unregistered_callable_merge_cannot_be_saved() -> None:
    res = Residual(layers.Dense(4), merge_mode=lambda a, b: ops.add(a, b))
    close(res(X), X + np_(res.layer(X)))  # usable
    with pytest.raises(ValueError, match="register_keras_serializable"):
        res.get_config()
