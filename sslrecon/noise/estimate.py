"""Estimating noise from the measurements alone.

`gaussian_sigma(frame)`: the finest-scale diagonal Haar wavelet coefficients of an image are almost
pure noise (each has the noise variance for white noise), and their median absolute deviation
ignores the few large coefficients that edges produce (Donoho & Johnstone 1994).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .models import Gaussian, NoiseModel, Poisson, PoissonGaussian

MAD_TO_SIGMA = 1.0 / 0.6744897501960817  # 1 / Phi^-1(3/4)


def haar_diagonal(frame: np.ndarray) -> np.ndarray:
    """Finest diagonal Haar detail coefficients, orthonormal (variance sigma^2 for white noise)."""
    f = np.asarray(frame, dtype=np.float64)
    h, w = (f.shape[0] // 2) * 2, (f.shape[1] // 2) * 2
    f = f[:h, :w]
    return (f[0::2, 0::2] - f[0::2, 1::2] - f[1::2, 0::2] + f[1::2, 1::2]) / 2.0


def gaussian_sigma(frame: np.ndarray) -> float:
    """Robust Gaussian noise standard deviation of one image, in its own units."""
    d = haar_diagonal(frame)
    return float(np.median(np.abs(d - np.median(d))) * MAD_TO_SIGMA)


def estimate_gaussian(frames: Iterable[np.ndarray], max_side: int = 1024) -> Gaussian:
    """One Gaussian sigma for a set of images: the median of per-image estimates on central crops."""
    sigmas = []
    for f in frames:
        h, w = f.shape
        r0, c0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
        sigmas.append(gaussian_sigma(f[r0 : r0 + max_side, c0 : c0 + max_side]))
    if not sigmas:
        raise ValueError("no frames to estimate noise from")
    return Gaussian(sigma=max(float(np.median(sigmas)), 1e-12))


#: Mean of z^2 over its lower 90 % (z ~ N(0, 1)): (0.9 - 2 t phi(t)) / 0.9 with t = Phi^-1(0.95).
#: Dividing a 90 %-trimmed mean of squared noise by it gives the variance; unlike a median it stays
#: right for integer data, whose squared coefficients are mostly zero at low counts.
CHI2_1_TRIMMED90 = 0.6230166


def _clip_values(frames: list[np.ndarray]) -> tuple[float, float]:
    """The values at which the data looks clipped: dtype limits for integers, else the observed extremes."""
    lo = min(float(np.min(f)) for f in frames)
    hi = max(float(np.max(f)) for f in frames)
    return lo, hi


def mean_variance_points(frames: list[np.ndarray], block: int = 4, max_side: int = 1024):
    """Local (mean, noise variance) samples: per `2*block`-pixel square, the mean of the image and the
    squared finest diagonal Haar coefficients (whose expectation is the local noise variance).
    Squares touching the extreme values (clipping) are left out. Returns (means, hh2) arrays where
    `hh2` has one row of `block^2` squared coefficients per square."""
    lo, hi = _clip_values(frames)
    means, hh2 = [], []
    for f in frames:
        h, w = f.shape
        r0, c0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
        g = np.asarray(f[r0 : r0 + max_side, c0 : c0 + max_side], dtype=np.float64)
        s = 2 * block
        H, W = g.shape[0] // s * s, g.shape[1] // s * s
        g = g[:H, :W]
        d = haar_diagonal(g).reshape(H // s, block, W // s, block).transpose(0, 2, 1, 3).reshape(-1, block * block)
        sq = g.reshape(H // s, s, W // s, s).transpose(0, 2, 1, 3).reshape(-1, s * s)
        keep = (sq.min(1) > lo) & (sq.max(1) < hi)
        means.append(sq.mean(1)[keep])
        hh2.append(d[keep] ** 2)
    return np.concatenate(means), np.concatenate(hh2)


def fit_mean_variance(frames: list[np.ndarray], bins: int = 24) -> dict:
    """Fit `Var = a * mean + b` robustly: squares are binned by mean (equal counts), each bin's noise
    variance is the 90 %-trimmed mean of its squared Haar coefficients (robust to edges), and a line is fitted to the bins by weighted least squares (weights count / var^2)."""
    means, hh2 = mean_variance_points(frames)
    if len(means) < 4 * bins:
        raise ValueError("too few unclipped regions to fit a mean-variance relation")
    order = np.argsort(means)
    groups = np.array_split(order, bins)
    mu = np.array([means[g].mean() for g in groups])
    var = np.array([_trimmed_var(hh2[g].ravel()) for g in groups])
    n = np.array([hh2[g].size for g in groups], dtype=np.float64)
    wts = n / np.maximum(var, 1e-12) ** 2
    A = np.stack([mu, np.ones_like(mu)], 1) * np.sqrt(wts)[:, None]
    a, b = np.linalg.lstsq(A, var * np.sqrt(wts), rcond=None)[0]
    pred = a * mu + b
    r2 = 1 - np.sum(wts * (var - pred) ** 2) / np.sum(wts * (var - np.average(var, weights=wts)) ** 2)
    return {"slope": float(a), "intercept": float(b), "r2": float(r2), "bin_mean": mu, "bin_var": var,
            "mean_lo": float(np.quantile(means, 0.1)), "mean_hi": float(np.quantile(means, 0.9))}


def _trimmed_var(sq: np.ndarray) -> float:
    """Noise variance from squared zero-mean Gaussian samples, ignoring the largest 10 %."""
    k = int(0.9 * sq.size)
    return float(np.partition(sq, k - 1)[:k].mean() / CHI2_1_TRIMMED90)


def estimate_auto(frames: Iterable[np.ndarray]) -> NoiseModel:
    """`--noise auto`: a Poisson-Gaussian model when the noise variance clearly grows with the signal
    (the fitted variance at the 90th intensity percentile is over 1.5x that at the 10th), else one
    Gaussian sigma (wavelet MAD)."""
    frames = list(frames)
    try:
        fit = fit_mean_variance(frames)
    except ValueError:
        return estimate_gaussian(frames)
    a, b = fit["slope"], fit["intercept"]
    v_lo, v_hi = a * fit["mean_lo"] + b, a * fit["mean_hi"] + b
    if a <= 0 or v_lo <= 0 or v_hi < 1.5 * v_lo:
        return estimate_gaussian(frames)
    if b > 0:
        return PoissonGaussian(gain=a, sigma=float(np.sqrt(b)), offset=0.0)
    return Poisson(gain=a, offset=-b / a)
