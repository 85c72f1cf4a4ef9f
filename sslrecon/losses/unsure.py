"""SURE with the noise level unknown: `unsure` (Gaussian) and `pg-unsure` (Poisson-Gaussian).

UNSURE (Tachella, Davies & Jacques, ICLR 2025): when sigma is unknown, train `f` to minimise `|f(y) - y|^2` under the
constraint that its expected divergence is zero, through the Lagrangian `|f(y) - y|^2 + 2 eta div f(y)`, minimised over
the network and maximised over the multiplier `eta`. A zero-divergence `f` cannot copy its input's noise, so the fit
term is then the true error plus a constant, and at the saddle point `eta` estimates the noise variance (from above:
a denoiser's own divergence must be paid off). `pg-unsure` does the same for Poisson-Gaussian noise with gain and read
noise unknown: the first-order PG-SURE weight `gain * (y - offset) + sigma^2` splits the constraint in two,
`E sum (y_i - offset) d_i f_i = 0` and `E sum d_i f_i = 0`, with the multipliers `gain` and `sigma^2`.

The multipliers are buffers of the loss (saved in checkpoints, restored by `--resume`, moved with `.to(device)`),
initialised from the noise model given or estimated (`--noise`, `auto` by default) and updated only by training
steps, never by validation or `no_grad` calls. The ascent is multiplicative, `eta <- eta * exp(step * m)`, on a
momentum average `m` of the normalised constraint violations (divergences are dimensionless): it keeps the
multipliers positive, moves them by at most `step` in log-scale per step whatever the units, and cannot blow up on
one noisy batch. The learned model (`noise_model()`) is what validation and reconstruction use; the run reports it in
the data's units.

Cost per step: two network passes (the divergence probe), as SURE. Test-time rule: one pass on the measurement.
"""
from __future__ import annotations

import torch

from ..noise.models import Gaussian, NoiseModel, PoissonGaussian
from ..physics import DENOISING
from .base import Loss, LossOutput, rademacher


class _Learned(Loss):
    """Shared machinery: buffers initialised once, multiplicative momentum ascent in training steps only."""

    learns_noise = True
    models = None  # the noise model given only initialises the multipliers
    _names: tuple[str, ...] = ()

    def __init__(self, tau: float = 0.01, step: float = 0.02, momentum: float = 0.9):
        super().__init__()
        self.tau, self.step, self.momentum = tau, step, momentum
        for n in self._names:
            self.register_buffer(n, torch.tensor(0.0))
            self.register_buffer(f"{n}_velocity", torch.tensor(0.0))
        self.register_buffer("initialised", torch.tensor(False))

    def options(self):
        return {"tau": self.tau, "step": self.step, "momentum": self.momentum}

    def initialise(self, noise: NoiseModel | None, y: torch.Tensor) -> None:
        """Set the multipliers from `noise` (normalised units; None: from the batch `y` of measurements),
        unless they hold learned values already."""
        if bool(self.initialised):
            return
        self._start(noise, y)
        self.initialised.fill_(True)

    def _start(self, noise, y):
        raise NotImplementedError

    def _ascend(self, violations: dict[str, torch.Tensor]) -> None:
        if not (self.training and torch.is_grad_enabled()):
            return  # validation, evaluation and inference never move the multipliers
        with torch.no_grad():
            for n, v in violations.items():
                vel = getattr(self, f"{n}_velocity")
                vel.mul_(self.momentum).add_((1 - self.momentum) * v.detach().clamp(-1, 1))
                getattr(self, n).mul_(torch.exp(self.step * vel))

    def _probe(self, model, y, generator):
        """`(f(y), d)`: the output and a per-pixel Monte-Carlo estimate of `d_i f_i` (its mean is the divergence)."""
        eps = self.tau * float(self.noise_model().mean_sigma(y))
        b = rademacher(y.shape, y, generator)
        fy = model(y)
        return fy, b * (model(y + eps * b) - fy) / eps

    def noise_model(self) -> NoiseModel:
        raise NotImplementedError

    def risk(self, model, y, physics=DENOISING, generator=None):
        return super().risk(model, y, physics if physics.noise is not None else type(physics)(self.noise_model()),
                            generator)


class Unsure(_Learned):
    name = "unsure"
    _names = ("variance",)

    def _start(self, noise, y):
        var = noise.mean_sigma(y) ** 2 if noise is not None else 0.0
        self.variance.fill_(var if var > 0 else 0.1 * float(y.var()))

    def noise_model(self) -> Gaussian:
        return Gaussian(sigma=float(self.variance.sqrt()))

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        self.initialise(physics.noise, y)
        with torch.autocast(device_type=y.device.type, enabled=False):
            fy, d = self._probe(model, y, generator)
            fit = ((fy - y) ** 2).mean()
            div = d.mean()
            value = fit - self.variance + 2 * self.variance * div
        self._ascend({"variance": div})
        return LossOutput(value, {"fit": fit.item(), "div": div.item(), "sigma": float(self.variance.sqrt())})


class PgUnsure(_Learned):
    name = "pg-unsure"
    _names = ("gain", "variance")

    def __init__(self, tau: float = 0.01, step: float = 0.02, momentum: float = 0.9):
        super().__init__(tau, step, momentum)
        self.register_buffer("offset", torch.tensor(0.0))

    def _start(self, noise, y):
        try:
            pg = noise.as_pg() if noise is not None else PoissonGaussian(gain=0.0, sigma=0.0)
        except ValueError:  # correlated or gamma estimate: no Poisson-Gaussian form to start from
            pg = PoissonGaussian(gain=0.0, sigma=0.0)
        gain, var, offset = (float(torch.as_tensor(v).float().mean()) for v in (pg.gain, pg.sigma**2, pg.offset))
        if not gain > 0:  # no shot noise known: the dark level is at most the darkest value, shot noise starts small
            offset = float(y.min())
            gain = 0.05 * float(y.var()) / max(float((y - offset).mean()), 1e-12)
        self.gain.fill_(gain)
        self.variance.fill_(var if var > 0 else 0.05 * float(y.var()))
        self.offset.fill_(offset)

    def noise_model(self) -> PoissonGaussian:
        return PoissonGaussian(gain=float(self.gain), sigma=float(self.variance.sqrt()), offset=float(self.offset))

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        self.initialise(physics.noise, y)
        with torch.autocast(device_type=y.device.type, enabled=False):
            fy, d = self._probe(model, y, generator)
            u = y - self.offset
            fit = ((fy - y) ** 2).mean()
            weight = self.gain * u + self.variance
            value = fit - weight.mean() + 2 * (weight * d).mean()
            div, div_u = d.mean(), (u * d).mean() / u.abs().mean().clamp_min(1e-12)
        self._ascend({"gain": div_u, "variance": div})
        pg = self.noise_model()
        return LossOutput(value, {"fit": fit.item(), "div": div.item(), "gain": pg.gain, "sigma": pg.sigma})
