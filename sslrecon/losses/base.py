"""The one loss interface, and Monte-Carlo divergence shared by the SURE-type estimators.

Every loss is called as `loss(model, y, physics=..., generator=...) -> LossOutput`, where `y` is a
batch (B, C, H, W) of normalised measurements and `physics.noise` their noise model in normalised
units (per sample where a batch mixes files, see `noise.models.stack`). Every loss also states its test-time rule, `predict(model, y, ...)`, and `risk(...)`: a
per-image estimate of the mean squared error of `predict` against the unknown clean image (for
validation without ground truth).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from ..noise.models import NoiseModel
from ..physics import DENOISING

Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LossOutput:
    """A scalar to minimise plus named terms (detached floats) for logging."""

    value: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


class Loss(nn.Module):
    """Base class: subclasses set `name`, `needs_noise`, implement `forward`, may override `predict`."""

    name: ClassVar[str] = ""
    needs_noise: ClassVar[bool] = True
    #: True when `predict`'s output at a pixel never reads that pixel (its risk needs no divergence).
    j_invariant: ClassVar[bool] = False
    #: Noise models (by name) the loss is correct for; None: any.
    models: ClassVar[tuple[str, ...] | None] = None
    #: True when the loss learns the noise model (`noise_models()`, per input file, normalised units) from the data.
    learns_noise: ClassVar[bool] = False
    #: True when the risk is the loss's own per-pixel estimate (`predict_and_risk`) rather than SURE of `predict`:
    #: for test-time rules that are not differentiable in the measurement (recorruption by thinning).
    own_risk: ClassVar[bool] = False

    @classmethod
    def supports(cls, noise: NoiseModel) -> bool:
        return cls.models is None or noise.name in cls.models

    @staticmethod
    def noise_of(physics) -> NoiseModel:
        if physics.noise is None:
            raise ValueError("this loss needs the measurements' noise model (physics.noise)")
        return physics.noise

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        raise NotImplementedError

    def predict(self, model, y, physics=DENOISING, generator=None) -> torch.Tensor:
        """Test-time rule: by default one pass on the full measurement."""
        return model(y)

    def options(self) -> dict:
        """Constructor options (plain data) to rebuild this loss from a checkpoint."""
        return {}

    def adapt(self, y: torch.Tensor, physics=DENOISING) -> None:
        """Settle the options that follow the data (an `auto` value) from a batch `y` of training measurements
        before training, so that `options()` records the value the run used. Most losses have none."""

    @property
    def learning(self) -> bool:
        """Whether training steps still move the loss's learned noise model (risk estimates are then not comparable
        between steps)."""
        return False

    def predict_and_risk(self, model, y, physics=DENOISING, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """For `own_risk` losses: the test-time prediction and a per-pixel map whose mean is the risk estimate."""
        raise NotImplementedError

    def risk(self, model, y, physics=DENOISING, generator=None) -> torch.Tensor:
        """Per-image estimate of the MSE of `predict` vs the clean image (normalised units), shape (B,)."""
        return sure_mse(lambda v: self.predict(model, v, physics, generator=_fork(generator)), y, self.noise_of(physics),
                        generator=generator, divergence=not self.j_invariant)


def is_count(value) -> bool:
    """A whole number of passes, at least 1 (a boolean is not one, though Python calls it an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _fork(generator: torch.Generator | None) -> torch.Generator | None:
    """A generator with a fixed copy of `generator`'s state, so repeated calls draw the same noise."""
    if generator is None:
        return None
    g = torch.Generator(device=generator.device)
    g.set_state(generator.get_state())
    return g


def rademacher(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    b = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * b - 1).to(like.dtype)


def probe_scale(noise: NoiseModel, y: torch.Tensor, tau: float) -> float:
    """Monte-Carlo probe step: a fraction `tau` of the noise level, so it works in any units."""
    return tau * noise.mean_sigma(y)


def sure_mse(f: Predictor, y: torch.Tensor, noise: NoiseModel, generator=None, tau: float = 0.01,
             divergence: bool = True) -> torch.Tensor:
    """Stein's unbiased risk estimate of `mean((f(y) - x)^2)` per image, shape (B,).

    `SURE = |f(y) - y|^2 - sum var_i + 2 sum var_i d f_i / d y_i`, with the divergence estimated by one
    Rademacher probe `b`: `b . (f(y + eps b) - f(y)) / eps`. For a signal-dependent model `var_i` is the
    model's `stein_weight`, its variance at the pixel's own value (first-order PURE / PG-SURE); for
    correlated noise the probe is multiplied by the covariance (`cov_apply`): `(S b) . J b`.
    """
    with torch.no_grad():
        fy = f(y)
        dims = tuple(range(1, y.ndim))
        mse = ((fy - y) ** 2).mean(dims) - noise.stein_weight(y).mean(dims)
        if divergence:
            b = rademacher(y.shape, y, generator)
            eps = probe_scale(noise, y, tau)
            div = (noise.cov_apply(y, b) * (f(y + eps * b) - fy)).mean(dims) / eps
            mse = mse + 2 * div
    return mse
