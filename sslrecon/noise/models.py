"""Noise models in the data's own units (counts), with their transform under normalisation.

Every model gives the per-pixel `variance` of the measurement given the signal, draws samples, and
maps itself through the affine normalisation `x' = (x - shift) / scale` used in training
(`rescaled`): sigma -> sigma/scale, gain -> gain/scale, offset -> (offset - shift)/scale.

Poisson models follow `y = gain * Poisson((x - offset) / gain) + offset (+ N(0, sigma^2))`, so
`Var[y | x] = gain * (x - offset) + sigma^2`: the offset (dark level) makes offset-corrected or
negative-valued detector data work without rounding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseModel:
    name: ClassVar[str] = ""

    def variance(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel variance of the measurement given signal `x` (a plug-in estimate if `x` is noisy)."""
        raise NotImplementedError

    def variance_map(self, y: torch.Tensor) -> torch.Tensor:
        """Per-pixel noise variance for a batch of measurements `y` (B, C, H, W).

        For signal-dependent models the variance is evaluated at a 5x5 local mean of `y`: a plug-in
        for the unknown signal that barely depends on the pixel itself (used by the Gaussian-family
        losses as a heteroscedastic approximation)."""
        if not self.signal_dependent:
            return self.variance(y)
        local = F.avg_pool2d(F.pad(y, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
        return self.variance(local)

    def stein_weight(self, y: torch.Tensor) -> torch.Tensor:
        """Per-pixel weight of the divergence in SURE-type risk estimates, from each pixel's own value.

        For Gaussian noise, sigma^2. For (Poisson-)Gaussian noise, `gain * (y - offset) + sigma^2`
        evaluated at the measurement itself, without clamping: the first-order term of Hudson's
        identity behind PURE / PG-SURE (Luisier et al. 2011; Le Montagner et al. 2014), whose
        expectation matches the variance and which vanishes where no photon was counted. (A local
        mean in its place lets a network earn divergence credit at zero-count pixels that carry no
        noise: on low-count data the risk estimate then runs to minus infinity.)"""
        pg = self.as_pg()
        return pg.gain * (y - pg.offset) + pg.sigma**2

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def rescaled(self, shift: float, scale: float) -> "NoiseModel":
        """This model for data normalised as `(x - shift) / scale`."""
        raise NotImplementedError

    @property
    def signal_dependent(self) -> bool:
        return False

    def mean_sigma(self, y: torch.Tensor) -> float:
        """Root-mean-square noise level over `y`: the scale for Monte-Carlo probes and recorruptions."""
        return float(self.variance_map(y).mean().clamp_min(1e-20).sqrt())

    def as_pg(self) -> "PoissonGaussian":
        """The same variance law as a Poisson-Gaussian model (for stacking models of a mixed batch)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, **{k: float(v) for k, v in asdict(self).items()}}

    def spec(self) -> str:
        return f"{self.name}:" + ",".join(f"{f.name}={getattr(self, f.name):.6g}" for f in fields(self))


@dataclass(frozen=True)
class Gaussian(NoiseModel):
    """Additive white Gaussian noise of standard deviation `sigma`."""

    name: ClassVar[str] = "gaussian"
    sigma: float

    def variance(self, x):
        return torch.full_like(x, self.sigma**2)

    def sample(self, x, generator=None):
        return x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def rescaled(self, shift, scale):
        return replace(self, sigma=self.sigma / scale)

    def mean_sigma(self, y):
        return float(torch.as_tensor(self.sigma).float().pow(2).mean().sqrt())

    def as_pg(self):
        return PoissonGaussian(gain=0.0, sigma=self.sigma, offset=0.0)


@dataclass(frozen=True)
class Poisson(NoiseModel):
    """Scaled Poisson (shot) noise: `y = gain * Poisson((x - offset) / gain) + offset`."""

    name: ClassVar[str] = "poisson"
    gain: float
    offset: float = 0.0

    @property
    def signal_dependent(self):
        return True

    def variance(self, x):
        return self.gain * (x - self.offset).clamp_min(0)

    def sample(self, x, generator=None):
        rate = (x - self.offset).clamp_min(0) / self.gain
        return self.gain * torch.poisson(rate, generator=generator) + self.offset

    def rescaled(self, shift, scale):
        return replace(self, gain=self.gain / scale, offset=(self.offset - shift) / scale)

    def as_pg(self):
        return PoissonGaussian(gain=self.gain, sigma=0.0, offset=self.offset)


@dataclass(frozen=True)
class PoissonGaussian(NoiseModel):
    """Poisson-Gaussian noise: scaled Poisson with an offset plus Gaussian read noise `sigma`."""

    name: ClassVar[str] = "pg"
    gain: float
    sigma: float
    offset: float = 0.0

    @property
    def signal_dependent(self):
        return True

    def variance(self, x):
        return self.gain * (x - self.offset).clamp_min(0) + self.sigma**2

    def sample(self, x, generator=None):
        rate = (x - self.offset).clamp_min(0) / self.gain
        shot = self.gain * torch.poisson(rate, generator=generator) + self.offset
        return shot + self.sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def rescaled(self, shift, scale):
        return replace(self, gain=self.gain / scale, sigma=self.sigma / scale, offset=(self.offset - shift) / scale)

    def as_pg(self):
        return self


MODELS: dict[str, type[NoiseModel]] = {m.name: m for m in (Gaussian, Poisson, PoissonGaussian)}


def stack(models: list[NoiseModel], device: torch.device | str = "cpu") -> NoiseModel:
    """One model for a batch whose sample `i` has noise `models[i]`: parameters become (B, 1, 1, 1)
    tensors. A batch with a single model keeps that model."""
    if all(m == models[0] for m in models):
        return models[0]
    pgs = [m.as_pg() for m in models]

    def col(name):
        return torch.tensor([float(getattr(m, name)) for m in pgs], device=device).view(-1, 1, 1, 1)

    return PoissonGaussian(gain=col("gain"), sigma=col("sigma"), offset=col("offset"))


def from_dict(d: dict) -> NoiseModel:
    d = dict(d)
    return MODELS[d.pop("name")](**d)
