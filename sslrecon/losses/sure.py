"""Gaussian SURE with a Monte-Carlo divergence.

Model: `y = x + n`, `n ~ N(0, sigma^2 I)` (sigma known or estimated). For any weakly differentiable
`f`, `E|f(y) - y|^2 - N sigma^2 + 2 sigma^2 E div f(y) = E|f(y) - x|^2` (Stein 1981), so minimising
the estimate trains `f` as if the clean images were known. The divergence is estimated with one
Rademacher probe `b` and a finite difference of step `tau * sigma` (Ramani, Blu & Unser 2008), so
the probe follows the noise level in any units. Given a (Poisson-)Gaussian model, the variance
`gain * (y_i - offset) + sigma^2` at each pixel's own value weights the divergence: the
first-order Poisson-Gaussian SURE (Le Montagner et al. 2014), exact in expectation for the
constant term and free of credit at zero-count pixels. For stationary correlated Gaussian noise of
covariance `S` the divergence becomes `tr(S J)`, estimated as `(S b) . J b` (generalised SURE). On whole
counts (photon counting, no read noise) the divergence is the exact photon removal of `pg-sure`'s `finite`
(`whole_counts`): a network sees a probe off the count lattice and learns to exploit it.
Not for Gamma noise (use n2s).

`probes=K` averages K divergence estimates per step (each its own probe or photon removal): the estimate's
variance falls K-fold, at one more pass per probe. The divergence of a denoiser that averages widely is small beside
that noise; on textured Set12 (`pg-sure`, 300 steps) two probes gained 0.04 / 0.13 dB at 5 / 30 photons.

Cost per step: `1 + probes` network passes (and their backward): two by default. All run in float32 even under
autocast, because a finite difference at `tau * sigma` is below half-precision resolution.
Test-time rule: one pass on the measurement.
"""
from __future__ import annotations

import torch

from ..physics import DENOISING
from .base import (REMOVAL_SPACING, Loss, LossOutput, is_count, mc_divergence, probe_scale, removal_divergence,
                   whole_counts)


class SureGaussian(Loss):
    name = "sure"
    models = ("gaussian", "poisson", "pg", "corr")
    spacing = REMOVAL_SPACING  # of the photon removal's lattice (`pg-sure` sets its own)

    def __init__(self, tau: float = 0.01, probes: int = 1):
        super().__init__()
        if not (is_count(probes) and probes >= 1):
            raise ValueError(f"probes is a whole number, at least 1, not {probes!r}")
        self.tau, self.probes = tau, probes

    def options(self):
        return {"tau": self.tau, "probes": self.probes}

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        with torch.autocast(device_type=y.device.type, enabled=False):
            noise = self.noise_of(physics)
            removal = self.removes_photons(y, noise)
            fy = model(y)
            fit = ((fy - y) ** 2).mean()
            div = self.divergence(model, y, fy, noise, removal, generator)
            value = fit - noise.stein_weight(y).mean() + 2 * div
            terms = {"fit": fit.item(), "div": div.item()}
            for name, extra in self.extra_terms(model, y, noise, removal, generator).items():
                value, terms[name] = value + extra, extra.item()
        return LossOutput(value, terms)

    def extra_terms(self, model, y, noise, removal: bool, generator=None) -> dict[str, torch.Tensor]:
        """Terms a variant adds to the estimate (`pg-sure`'s second-order term), given whether the divergence removed
        photons (`removes_photons`, decided once per step)."""
        return {}

    def removes_photons(self, y, noise) -> bool:
        """Whether the divergence term removes photons by a finite difference (`removal_divergence`) rather than
        probing (`mc_divergence`): on whole counts (`whole_counts`), whose lattice a probe would leave."""
        return whole_counts(y, noise)

    def divergence(self, model, y, fy, noise, removal: bool, generator=None) -> torch.Tensor:
        """The weighted divergence term of the batch, the mean of `probes` estimates: `mc_divergence` with probe step
        `tau * noise level`, or where `removal` the photon removal on a lattice `spacing` apart (whose read-noise
        probe takes its own step, `READ_STEP`)."""
        if removal:
            return sum(removal_divergence(model, y, fy, noise, self.spacing, generator)
                       for _ in range(self.probes)) / self.probes
        eps = probe_scale(noise, y, self.tau)
        return sum(mc_divergence(model, y, fy, noise, eps, generator) for _ in range(self.probes)) / self.probes
