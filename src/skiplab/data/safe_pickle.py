"""Reading the official CIFAR python batches without trusting pickle.

The batches are pickles written by Python 2 (a dict of a numpy uint8 array, lists of ints and of strings).  Plain
``pickle.load`` runs whatever callable a file names, so a tampered file could execute code.  This unpickler
resolves only the handful of globals numpy needs to rebuild an array; any other global (``os.system``,
``builtins.eval``, ...) is refused before anything runs.
"""
from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the array reconstruction helpers to numpy._core
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 writes ``bytes`` in protocol-2 pickles as ``_codecs.encode(text, 'latin1')``: allow exactly that."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin1 bytes")
    return text.encode("latin1")


# (module, name) -> the object it resolves to.  The objects are taken from our own imports, never looked up by the
# names in the file, so an allowed name cannot be redirected.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for data-only pickles: builtin containers and scalars plus numpy arrays; nothing callable."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only numpy arrays and builtin containers are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in a data pickle")


def safe_loads(data: bytes) -> Any:
    """Unpickle data written by Python 2 or 3 (``latin1`` decodes Python 2 strings and numpy's raw buffers)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
