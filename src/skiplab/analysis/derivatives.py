"""Activation derivatives and the per-layer factor they put on a back-propagated gradient.

Back-propagating through ``h_l = W_l act(h_{l-1})`` multiplies the gradient by ``diag(act'(h_{l-1})) W_l^T``.
For the logistic sigmoid ``act' = s(1 - s) <= 1/4`` (equality at 0), the bound behind the vanishing-gradient
argument (Hochreiter 1991; Bengio, Simard & Frasconi 1994; Glorot & Bengio 2010).  With Xavier weights
``W_l^T`` keeps a random vector's norm on average, so a layer's factor is about the RMS of ``act'`` over its
inputs, which :func:`gaussian_derivative_rms` predicts from the inputs' mean and standard deviation.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DERIVATIVES = {
    "sigmoid": lambda z: (s := 1.0 / (1.0 + np.exp(-z))) * (1.0 - s),
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
    "relu": lambda z: (z > 0).astype(float),
}


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def derivative(act: str, z: np.ndarray) -> np.ndarray:
    """``act'(z)`` for "sigmoid", "tanh" or "relu"."""
    if act not in DERIVATIVES:
        raise ValueError(f"act must be one of {', '.join(map(repr, DERIVATIVES))}; got {act!r}")
    return DERIVATIVES[act](np.asarray(z, dtype=float))


def gaussian_derivative_rms(act: str, mean: float, std: float, points: int = 64) -> float:
    """``sqrt(E[act'(z)^2])`` for ``z ~ N(mean, std^2)``, by Gauss-Hermite quadrature (exact for std = 0)."""
    if not (math.isfinite(mean) and math.isfinite(std)) or std < 0:
        return float("nan")
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)  # weight exp(-z^2 / 2)
    values = derivative(act, mean + std * nodes) ** 2
    return float(math.sqrt(np.sum(weights * values) / math.sqrt(2.0 * math.pi)))


def backward_factors(output_grad: Sequence[float]) -> list[float]:
    """Per block, how much back-propagating through it multiplies the gradient norm: ``||dL/dh_{l-1}|| /
    ||dL/dh_l||`` for the units ``[stem, block1, ..., blockL, head]`` (returns L values; the head is left out,
    its shape differs)."""
    g = np.asarray(output_grad, dtype=float)
    if g.size < 3:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        return [float(v) for v in g[:-2] / g[1:-1]]
