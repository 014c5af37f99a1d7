"""``Residual(layer)`` and ``Highway(layer)``: skip connections around any Keras 3 layer, written with ``keras.ops``.

    Residual:  y = merge(skip(x), scale * F(x))     merge: sum (He et al. 2015, arXiv:1512.03385), mul, ave,
                                                     max, concat or a callable; skip = x, or a learned projection
    Highway:   y = T * H(x) + (1 - T) * x,  T = sigmoid(Dense(x)), gate bias -2 (Srivastava et al. 2015,
               "Highway Networks", arXiv:1505.00387)

``F``/``H`` is called on one tensor: a Dense, a Conv, a Sequential, an ``LSTM``/``GRU`` with
``return_sequences=True``, a ``Bidirectional`` wrapper, or a ``MultiHeadAttention`` (called as self-attention,
``query = value = x``).  A layer returning a tuple or list (``return_state=True``, ``return_attention_scores``)
gets the skip on its first element; the rest passes through unchanged.  Masks reach the wrapped layer (``mask``,
or ``value_mask`` for attention) and pass on to the next layer unchanged: the skip keeps the time axis.

``plain=True`` is the plain twin: ``y = layer(x)``, the same wrapped layer without the skip (no projection,
scale or gate is created), so a model can switch its skips off with one flag.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

MERGE_MODES = ("sum", "mul", "ave", "max", "concat")
PACKAGE = "skiplab"

Shape = tuple[int | None, ...]


def _same_dim(a: int | None, b: int | None) -> bool:
    return a is None or b is None or a == b


def _first(result: Any) -> Any:
    return result[0] if isinstance(result, (list, tuple)) else result


def _replace_first(result: Any, first: Any) -> Any:
    if isinstance(result, (list, tuple)):
        return type(result)([first, *result[1:]])
    return first


def _serialize_merge_mode(merge_mode: str | Callable) -> Any:
    """A merge mode for ``get_config``: the string, or a registered serialisable function."""
    if isinstance(merge_mode, str):
        return merge_mode
    name = keras.saving.get_registered_name(merge_mode)
    if keras.saving.get_registered_object(name) is not merge_mode:
        raise ValueError(
            f"merge_mode={merge_mode!r} is a callable that Keras cannot save: decorate it with "
            "@keras.saving.register_keras_serializable(package='...') (a named function, not a lambda) so that "
            "get_config / model.save can name it and load_model can find it again"
        )
    return keras.saving.serialize_keras_object(merge_mode)


class _SkipWrapper(keras.layers.Layer):
    """Calls the wrapped layer (masks, training, tuple outputs, self-attention) and serialises it; subclasses
    build their skip weights in ``_build_skip`` and merge in ``_merge``."""

    def __init__(self, layer: keras.layers.Layer, *, plain: bool = False, **kwargs: Any) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"{type(self).__name__}: layer must be a keras.layers.Layer (a Keras 3 layer, not a torch module "
                f"or a tf.keras layer); got {type(layer).__module__}.{type(layer).__name__}"
            )
        if not isinstance(plain, bool):
            raise TypeError(f"{type(self).__name__}: plain must be True or False; got {plain!r}")
        super().__init__(**kwargs)
        self.layer = layer
        self.plain = plain
        params = inspect.signature(layer.call).parameters
        # Attention layers take (query, value, ...): called as self-attention, query = value = x.
        value = params.get("value")
        self._self_attention = value is not None and value.default is inspect.Parameter.empty
        self._layer_takes_mask = "mask" in params
        self._layer_takes_training = "training" in params
        self.supports_masking = True

    def _call_layer(self, inputs: Any, mask: Any = None, training: Any = None, **kwargs: Any) -> Any:
        if self._layer_takes_training and training is not None:
            kwargs["training"] = training
        if self._self_attention:
            if mask is not None:
                kwargs.setdefault("value_mask", mask)  # padded positions are never attended to
            return self.layer(inputs, inputs, **kwargs)
        if self._layer_takes_mask and mask is not None:
            kwargs["mask"] = mask
        return self.layer(inputs, **kwargs)

    def build(self, input_shape: Shape) -> None:
        if isinstance(input_shape, dict) or any(isinstance(d, (tuple, list, dict)) for d in input_shape):
            raise ValueError(
                f"{self._describe()}: the wrapped layer must be called on one tensor; got input shapes "
                f"{input_shape}"
            )
        input_shape = tuple(input_shape)
        # A symbolic call builds the wrapped layer (whatever its build signature) and gives its output shape.
        spec = self._call_layer(keras.KerasTensor(input_shape, dtype=self.compute_dtype))
        output_shape = tuple(_first(spec).shape)
        if not self.plain:
            self._build_skip(input_shape, output_shape)

    def _build_skip(self, input_shape: Shape, output_shape: Shape) -> None:
        raise NotImplementedError

    def _merge(self, x: Any, out: Any) -> Any:
        raise NotImplementedError

    def call(self, inputs: Any, mask: Any = None, training: Any = None, **kwargs: Any) -> Any:
        result = self._call_layer(inputs, mask=mask, training=training, **kwargs)
        if self.plain:
            return result
        return _replace_first(result, self._merge(inputs, _first(result)))  # the skip: merge(x, F(x))

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if self.plain and not self._self_attention:
            return self.layer.compute_mask(inputs, mask)
        return mask  # the skip keeps every time step of x, so its mask still holds

    def _describe(self) -> str:
        return f"{type(self).__name__}({self.layer.name}: {type(self.layer).__name__})"

    def _check_same_shape(self, input_shape: Shape, output_shape: Shape, *, allow_last: bool, hint: str) -> None:
        """Raise unless the shapes agree (every axis, or every axis but the last when ``allow_last``)."""
        axes = range(len(input_shape) - 1) if allow_last else range(len(input_shape))
        if len(input_shape) == len(output_shape) and all(_same_dim(input_shape[i], output_shape[i]) for i in axes):
            return
        raise ValueError(
            f"{self._describe()}: the wrapped layer maps input shape {input_shape} to output shape "
            f"{output_shape}; {hint}"
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(layer=keras.saving.serialize_keras_object(self.layer), plain=self.plain)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> _SkipWrapper:
        config = dict(config)
        # Built later, inside this wrapper's build (as when it was first wrapped), so its weights keep the paths
        # they had when saved ("residual/dense/kernel").
        layer_config = {k: v for k, v in config["layer"].items() if k != "build_config"}
        config["layer"] = keras.saving.deserialize_keras_object(layer_config, custom_objects=custom_objects)
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Residual(_SkipWrapper):
    """``y = merge(x, F(x))`` around any Keras layer ``F`` whose output shape equals its input shape.

    Args:
        layer: the branch ``F``, called on one tensor (see the module docstring for RNNs and attention).
        merge_mode: ``"sum"`` (``x + F(x)``, the residual), ``"mul"``, ``"ave"`` (``(x + F(x)) / 2``),
            ``"max"``, ``"concat"`` (``[x, F(x)]`` on the last axis, DenseNet-style: only the other axes must
            match), or a callable ``fn(skip, branch) -> tensor`` on two tensors of equal shape; to be saved, the
            callable must be registered with ``keras.saving.register_keras_serializable``.
        projection: where ``F`` changes the last axis (features / channels-last channels), ``True`` learns a
            bias-free ``Dense`` on the skip's last axis (a 1x1 convolution for images).  Unused where the
            shapes already agree.  Without it a shape change raises at build time.
        learnable_scale: ``y = merge(x, alpha * F(x))`` with a scalar ``alpha`` initialised to 0 — ReZero
            (Bachlechner et al. 2020, arXiv:2003.04887): with ``"sum"`` the block is the identity at init.
            ``alpha`` is a trainable weight of the layer (saved with the model).
        plain: the plain twin, ``y = F(x)``.
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        merge_mode: str | Callable = "sum",
        projection: bool = False,
        learnable_scale: bool = False,
        plain: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(merge_mode, dict):  # a serialised registered function (from_config)
            merge_mode = keras.saving.deserialize_keras_object(merge_mode)
        if not callable(merge_mode) and merge_mode not in MERGE_MODES:
            raise ValueError(
                f"Residual: merge_mode must be one of {', '.join(map(repr, MERGE_MODES))} or a callable "
                f"fn(skip, branch); got {merge_mode!r}"
            )
        for name, value in (("projection", projection), ("learnable_scale", learnable_scale)):
            if not isinstance(value, bool):
                raise TypeError(f"Residual: {name} must be True or False; got {value!r}")
        if learnable_scale and merge_mode in ("mul", "max"):
            raise ValueError(
                f"Residual: learnable_scale multiplies F(x) by a scale that starts at 0, which with "
                f"merge_mode={merge_mode!r} does not start the block as the identity; use merge_mode "
                "'sum', 'ave' or 'concat', or learnable_scale=False"
            )
        super().__init__(layer, plain=plain, **kwargs)
        self.merge_mode = merge_mode
        self.projection = projection
        self.learnable_scale = learnable_scale
        self.shortcut: keras.layers.Layer | None = None  # the projection, when built
        self.scale = None

    def _build_skip(self, input_shape: Shape, output_shape: Shape) -> None:
        concat = self.merge_mode == "concat"
        mismatch = not (
            len(input_shape) == len(output_shape) and all(map(_same_dim, input_shape, output_shape))
        )
        if concat:
            self._check_same_shape(input_shape, output_shape, allow_last=True,
                                   hint="merge_mode='concat' joins the last axis, so every other axis must match")
        elif mismatch:
            suggestion = (
                "a projection maps only the last axis (features / channels), so every other axis must match "
                "already; change the wrapped layer (e.g. padding='same', return_sequences=True)"
                if self.projection else
                "an identity skip needs equal shapes. Pass projection=True (a learned Dense on the skip's last "
                "axis) or merge_mode='concat'"
            )
            self._check_same_shape(input_shape, output_shape, allow_last=self.projection, hint=suggestion)
            if output_shape[-1] is None:
                raise ValueError(f"{self._describe()}: projection=True needs a known last axis in the output "
                                 f"shape {output_shape}")
            self.shortcut = keras.layers.Dense(output_shape[-1], use_bias=False, name="projection")
            self.shortcut.build(input_shape)
        if self.learnable_scale:
            self.scale = self.add_weight(name="scale", shape=(), initializer="zeros", trainable=True)

    def _merge(self, x: Any, out: Any) -> Any:
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.scale is not None:
            out = ops.multiply(ops.cast(self.scale, out.dtype), out)
        mode = self.merge_mode
        if mode == "sum":
            return ops.add(skip, out)
        if mode == "mul":
            return ops.multiply(skip, out)
        if mode == "ave":
            return ops.multiply(ops.add(skip, out), 0.5)
        if mode == "max":
            return ops.maximum(skip, out)
        if mode == "concat":
            return ops.concatenate([skip, out], axis=-1)
        return mode(skip, out)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(merge_mode=_serialize_merge_mode(self.merge_mode), projection=self.projection,
                      learnable_scale=self.learnable_scale)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Highway(_SkipWrapper):
    """``y = T * H(x) + (1 - T) * x`` with the transform gate ``T = sigmoid(Dense(x))`` on the last axis.

    The gate's bias starts at ``gate_bias_init`` (-2: Srivastava et al. 2015 suggest -1 to -3), so at init the
    layer mostly carries its input.  ``H``'s output shape must equal its input shape.  ``plain=True``: ``y = H(x)``.
    """

    def __init__(self, layer: keras.layers.Layer, gate_bias_init: float = -2.0, plain: bool = False,
                 **kwargs: Any) -> None:
        if isinstance(gate_bias_init, bool) or not isinstance(gate_bias_init, (int, float)):
            raise TypeError(f"Highway: gate_bias_init must be a number; got {gate_bias_init!r}")
        super().__init__(layer, plain=plain, **kwargs)
        self.gate_bias_init = float(gate_bias_init)
        self.gate: keras.layers.Layer | None = None

    def _build_skip(self, input_shape: Shape, output_shape: Shape) -> None:
        self._check_same_shape(input_shape, output_shape, allow_last=False,
                               hint="a highway gate mixes x and H(x) elementwise, so the shapes must be equal")
        if input_shape[-1] is None:
            raise ValueError(f"{self._describe()}: the gate needs a known last axis; got input shape {input_shape}")
        self.gate = keras.layers.Dense(
            input_shape[-1], activation="sigmoid", name="gate",
            bias_initializer=keras.initializers.Constant(self.gate_bias_init),
        )
        self.gate.build(input_shape)

    def _merge(self, x: Any, out: Any) -> Any:
        t = self.gate(x)
        return ops.add(ops.multiply(t, out), ops.multiply(ops.subtract(1.0, t), x))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(gate_bias_init=self.gate_bias_init)
        return config
