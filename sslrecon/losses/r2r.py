"""Gaussian Recorrupted-to-Recorrupted (Pang et al., CVPR 2021).

Model: `y = x + n`, `n ~ N(0, sigma^2)`. With `z ~ N(0, sigma^2)` drawn afresh, the pair
`y1 = y + alpha z`, `y2 = y - z / alpha` has independent noises, so `E|f(y1) - y2|^2` equals
`E|f(y1) - x|^2` plus a constant: a Noise2Noise pair from one measurement. Given a signal-dependent
model, the per-pixel standard deviation at the measurement is used; for correlated Gaussian noise
`z` is drawn with the same covariance (`noise_like`), which keeps the two noises independent.

Cost per step: one network pass. Test-time rule: the average of `f(y + alpha z_k)` over
`test_samples` draws (the network was trained on inputs with that extra noise).
"""
from __future__ import annotations

import torch

from ..physics import DENOISING
from .base import Loss, LossOutput, is_count


def recorrupted_pair(y: torch.Tensor, z: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`(y + alpha z, y - z / alpha)`: for Gaussian noise and `z` drawn with its covariance, two measurements of the
    same image with independent noises, `1 + alpha^2` and `1 + 1 / alpha^2` times the original."""
    return y + alpha * z, y - z / alpha


class R2RGaussian(Loss):
    name = "r2r"
    models = ("gaussian", "poisson", "pg", "corr")

    def __init__(self, alpha: float = 0.5, test_samples: int = 5):
        super().__init__()
        if not is_count(test_samples):
            raise ValueError(f"r2r needs test_samples >= 1, not {test_samples!r}")
        self.alpha, self.test_samples = alpha, test_samples

    def options(self):
        return {"alpha": self.alpha, "test_samples": self.test_samples}

    def _z(self, y, physics, generator):
        return self.noise_of(physics).noise_like(y, generator)

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        y1, y2 = recorrupted_pair(y, self._z(y, physics, generator), self.alpha)
        value = ((model(y1) - y2) ** 2).mean()
        return LossOutput(value, {})

    def predict(self, model, y, physics=DENOISING, generator=None, samples: int | None = None):
        """The average over `samples` draws (default `test_samples`)."""
        k = samples or self.test_samples
        out = torch.zeros_like(y)
        for _ in range(k):
            out += model(y + self.alpha * self._z(y, physics, generator))
        return out / k
