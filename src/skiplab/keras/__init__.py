"""Skip connections as Keras 3 layers, on every Keras backend (TensorFlow, JAX, PyTorch).

    from skiplab.keras import Residual, Highway
    y = Residual(keras.layers.Conv2D(8, 3, padding="same"))(x)        # y = x + conv(x)
    y = Residual(keras.layers.Bidirectional(keras.layers.LSTM(16, return_sequences=True)), projection=True)(x)

The layers use ``keras.ops`` only, are registered for serialisation under the package name ``skiplab``, and
reload with ``keras.models.load_model`` once this module has been imported.  Keras is an optional dependency:
``pip install 'skiplab[keras]'``.  ``import skiplab`` alone never imports Keras.
"""
from __future__ import annotations


def _import_keras():  # noqa: ANN202 (returns the keras module)
    try:
        import keras
    except ModuleNotFoundError as e:
        if e.name == "keras":
            raise ImportError(
                "skiplab.keras needs Keras 3, which is not installed: pip install 'skiplab[keras]' "
                "(plus a backend: torch, which skiplab already has, jax or tensorflow)"
            ) from e
        if e.name in ("tensorflow", "jax", "torch"):
            raise ImportError(
                f"Keras is configured for the {e.name!r} backend, which is not installed. Set KERAS_BACKEND "
                "(torch, jax or tensorflow) to an installed backend before importing Keras, e.g. "
                "KERAS_BACKEND=torch, or install the backend package"
            ) from e
        raise
    major = int(str(getattr(keras, "__version__", "0")).split(".")[0])
    if major < 3:
        raise ImportError(
            f"skiplab.keras needs Keras 3 (multi-backend, keras.ops); found Keras {keras.__version__}. "
            "Upgrade with: pip install 'skiplab[keras]'"
        )
    return keras


_import_keras()

from skiplab.keras.layers import MERGE_MODES, Highway, Residual  # noqa: E402

__all__ = ["Residual", "Highway", "MERGE_MODES"]
