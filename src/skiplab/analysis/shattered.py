"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem: If resnets are the answer, then
what is the question?", ICML, arXiv:1702.08591).

A net with a scalar input and a scalar output is evaluated on a grid of inputs; the derivative ``dy/dx`` along
the grid is a 1-D series.  Shallow nets give a random walk ("brown noise": neighbouring gradients correlated,
power spectrum ~ 1/f^2); deep plain nets give white noise (uncorrelated, flat spectrum); resnets sit in between.
This module computes the series and the statistics that tell those apart, plus white/brown references.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from skiplab.analysis.hooks import calibrate_batchnorm


def input_gradients(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """``dy/dx`` at every point of ``x`` (shape ``(n, 1)``), for a model with one output per sample.

    BatchNorm layers are first calibrated on ``x`` itself (their statistics are those of the whole grid, as when
    the grid is the batch), then frozen, so each point's gradient is the derivative of one fixed function.
    """
    if x.dim() != 2 or x.shape[1] != 1:
        raise ValueError(f"x must have shape (n, 1) — a grid of scalar inputs; got {tuple(x.shape)}")
    calibrate_batchnorm(model, x)
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    if y.dim() != 2 or y.shape[1] != 1:
        raise ValueError(f"the model must have one output per sample; got output shape {tuple(y.shape)}")
    (grad,) = torch.autograd.grad(y.sum(), x)  # rows are independent in eval mode: sum -> per-point dy/dx
    return grad[:, 0].detach().double().cpu().numpy()


def autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation ``r_0..r_max_lag`` of the last axis (mean removed, normalised by the lag-0 sum;
    the usual biased estimator).  A constant series has no defined correlation: NaN."""
    g = np.asarray(series, dtype=float)
    n = g.shape[-1]
    if not 0 <= max_lag < n:
        raise ValueError(f"max_lag must be in [0, {n - 1}] for a series of length {n}; got {max_lag}")
    g = g - g.mean(axis=-1, keepdims=True)
    denom = np.sum(g * g, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([np.sum(g[..., : n - k] * g[..., k:], axis=-1) / denom for k in range(max_lag + 1)], axis=-1)


def lag1_autocorrelation(series: np.ndarray) -> np.ndarray | float:
    """Lag-1 autocorrelation: ~0 for white noise, ~1 for brown noise (a random walk)."""
    r = autocorrelation(series, 1)[..., 1]
    return float(r) if np.ndim(r) == 0 else r


def power_spectrum(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(omega, power)`` of the mean-removed series for frequencies ``f = 1..n//2``, with
    ``omega = 2 sin(pi f / n)`` — the discrete-time analogue of frequency, so a discrete random walk's spectrum
    ``1 / |1 - e^{-2 pi i f/n}|^2 = 1 / omega^2`` is an exact power law."""
    g = np.asarray(series, dtype=float)
    n = g.shape[-1]
    g = g - g.mean(axis=-1, keepdims=True)
    power = np.abs(np.fft.rfft(g, axis=-1)) ** 2
    f = np.arange(power.shape[-1])[1:]
    return 2.0 * np.sin(np.pi * f / n), power[..., 1:]


def spectral_slope(series: np.ndarray) -> np.ndarray | float:
    """Slope of log power against log frequency: ~0 for white noise, ~-2 for brown noise."""
    omega, power = power_spectrum(series)
    logw = np.log(omega)
    logp = np.log(np.maximum(power, np.finfo(float).tiny))
    flat = logp.reshape(-1, logp.shape[-1])
    slopes = np.polyfit(logw, flat.T, 1)[0].reshape(logp.shape[:-1])  # one least-squares fit per series
    return float(slopes) if slopes.ndim == 0 else slopes


def correlation_matrix(series: np.ndarray) -> np.ndarray:
    """Correlation across realisations (rows: seeds) between the gradient at grid point i and at j:
    an ``(n, n)`` matrix.  Needs at least two rows."""
    g = np.asarray(series, dtype=float)
    if g.ndim != 2 or g.shape[0] < 2:
        raise ValueError(f"series must be (realisations >= 2, points); got shape {g.shape}")
    g = g - g.mean(axis=0, keepdims=True)
    cov = g.T @ g / (g.shape[0] - 1)
    d = np.sqrt(np.clip(np.diag(cov), np.finfo(float).tiny, None))
    return cov / d[:, None] / d[None, :]


def white_noise(count: int, n: int, seed: int) -> np.ndarray:
    """``count`` series of ``n`` i.i.d. standard normal values (the white-noise reference)."""
    return np.random.default_rng(seed).standard_normal((count, n))


def brown_noise(count: int, n: int, seed: int) -> np.ndarray:
    """``count`` random walks of ``n`` steps: cumulative sums of white noise (the brown-noise reference)."""
    return np.cumsum(white_noise(count, n, seed), axis=-1)
