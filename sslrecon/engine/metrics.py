"""Image-quality metrics with an explicit data range (PSNR, SSIM), and the data-range rule.

PSNR = 10 log10(R^2 / MSE). SSIM follows Wang et al. 2004: an 11x11 Gaussian window (sigma 1.5),
K1 = 0.01, K2 = 0.03, valid region only, averaged over the image.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def data_range(dtype: np.dtype, reference: np.ndarray) -> float:
    """The dtype's full range for integer data (255 for uint8); max - min of `reference` for float data."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.max) - float(info.min) if dtype.kind == "i" else float(info.max)
    return float(np.max(reference) - np.min(reference))


def psnr_from_mse(mse: float, data_range: float) -> float:
    if mse <= 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def psnr(reference: np.ndarray, estimate: np.ndarray, data_range: float) -> float:
    diff = np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)
    return psnr_from_mse(float(np.mean(diff**2)), data_range)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(reference: np.ndarray, estimate: np.ndarray, data_range: float) -> float:
    x = torch.as_tensor(np.asarray(reference, np.float64))[None, None]
    y = torch.as_tensor(np.asarray(estimate, np.float64))[None, None]
    if min(x.shape[-2:]) < 11:
        raise ValueError("SSIM needs images of at least 11x11 pixels")
    win = _gaussian_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mx**2
    syy = F.conv2d(y * y, win) - my**2
    sxy = F.conv2d(x * y, win) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


METRICS = {"psnr": psnr, "ssim": ssim}
