"""Noise models in the data's own units (counts), with their transform under normalisation.

Every model gives the per-pixel `variance` of the measurement given the signal, draws samples, and
maps itself through the affine normalisation `x' = (x - shift) / scale` used in training
(`rescaled`): sigma -> sigma/scale, gain -> gain/scale, offset -> (offset - shift)/scale.

Poisson models follow `y = gain * Poisson((x - offset) / gain) + offset (+ N(0, sigma^2))`, so
`Var[y | x] = gain * (x - offset) + sigma^2`: the offset (dark level) makes offset-corrected or
negative-valued detector data work without rounding. `Gamma` is multiplicative speckle (SAR,
ultrasound, coherent imaging); `Correlated` is stationary Gaussian noise that is not white (detector
cross-talk, interpolated or resampled data), the only model whose covariance is not diagonal.
`PerFrame` holds one model per frame of a stack (the per-image sigma of a tilt or exposure series);
it describes a file, and each batch or frame takes its frame's model (`frame_model`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseModel:
    name: ClassVar[str] = ""
    white: ClassVar[bool] = True  # independent pixels: the covariance is diagonal (see `cov_apply`)

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
        evaluated at the measurement itself (`photon_signal`), not at a local mean: the first-order term of Hudson's
        identity behind PURE / PG-SURE (Luisier et al. 2011; Le Montagner et al. 2014), whose
        expectation matches the variance and which vanishes where no photon was counted. (A local
        mean in its place lets a network earn divergence credit at zero-count pixels that carry no
        noise: on low-count data the risk estimate then runs to minus infinity.)"""
        pg = self.as_pg()
        return pg.gain * pg.photon_signal(y) + pg.sigma**2

    def photon_signal(self, y: torch.Tensor) -> torch.Tensor:
        """`y - offset`, the signal shot noise scales with (the `u` of Hudson's identity, in data units). Without
        read noise a value below the dark level cannot come from the model (a clipped floor under a fitted offset,
        as on the 8-bit FMD frames): it counts as no photon, never as a negative number of them, in every term of
        the Poisson-Gaussian risk estimates (`stein_weight`, the finite-difference photon removal, the
        second-order term). A negative count there would reward a network for rising steeply with the signal at
        those pixels: on FMD BPAE_B (55 % of the pixels below the fitted dark level) the finite difference put a
        fixed network's PSNR 4.3 dB above its true value (41.37 against 37.12), and 0.8 dB above with them counted
        as no photon and `removable`'s half-photon rule."""
        pg = self.as_pg()
        u = y - pg.offset
        return torch.where(torch.as_tensor(pg.sigma, device=y.device) > 0, u, u.clamp_min(0))

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def noise_like(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A zero-mean noise draw with this model's covariance at the measurement `y` (the signal-dependent
        variance from `variance_map`): the recorruption of Recorrupted-to-Recorrupted-type losses."""
        return self.variance_map(y).sqrt() * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)

    def cov_apply(self, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The noise covariance at the measurement `y` times `v` (same shape as `y`), so that SURE-type risks
        have one formula for white and correlated noise. White models: the diagonal `stein_weight(y) * v`."""
        return self.stein_weight(y) * v

    def rescaled(self, shift: float, scale: float) -> NoiseModel:
        """This model for data normalised as `(x - shift) / scale`."""
        raise NotImplementedError

    #: Whether the variance depends on the signal (Poisson, Poisson-Gaussian, gamma).
    signal_dependent: ClassVar[bool] = False

    def mean_sigma(self, y: torch.Tensor) -> float:
        """Root-mean-square noise level over `y`: the scale for Monte-Carlo probes and recorruptions."""
        return float(self.variance_map(y).mean().clamp_min(1e-20).sqrt())

    def as_pg(self) -> PoissonGaussian:
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
        return torch.zeros_like(x) + self.sigma**2  # sigma may be a (B, 1, 1, 1) tensor (see `stack`)

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

    signal_dependent: ClassVar[bool] = True

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

    signal_dependent: ClassVar[bool] = True

    def variance(self, x):
        return self.gain * (x - self.offset).clamp_min(0) + self.sigma**2

    def sample(self, x, generator=None):
        # a stacked mixed batch holds gain = 0 for its Gaussian samples: no shot noise there
        gain = torch.as_tensor(self.gain, dtype=x.dtype, device=x.device)
        safe = torch.where(gain > 0, gain, torch.ones_like(gain))
        counts = torch.poisson((x - self.offset).clamp_min(0) / safe, generator=generator)
        shot = torch.where(gain > 0, safe * counts + self.offset, x)
        return shot + self.sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def rescaled(self, shift, scale):
        return replace(self, gain=self.gain / scale, sigma=self.sigma / scale, offset=(self.offset - shift) / scale)

    def as_pg(self):
        return self


@dataclass(frozen=True)
class Gamma(NoiseModel):
    """Multiplicative speckle: `y = offset + (x - offset) * G` with `G ~ Gamma(looks, 1 / looks)` (mean 1,
    variance 1 / looks), so `Var[y | x] = (x - offset)^2 / looks`. Signal below the offset gives `y = offset`."""

    name: ClassVar[str] = "gamma"
    looks: float
    offset: float = 0.0

    signal_dependent: ClassVar[bool] = True

    def variance(self, x):
        return (x - self.offset).clamp_min(0) ** 2 / self.looks

    def sample(self, x, generator=None):
        looks = torch.zeros_like(x) + self.looks
        g = torch._standard_gamma(looks, generator=generator) / looks  # torch.distributions ignores generators
        return self.offset + (x - self.offset).clamp_min(0) * g

    def rescaled(self, shift, scale):
        return replace(self, offset=(self.offset - shift) / scale)

    def stein_weight(self, y):
        """`(y - offset)^2 / (looks + 1)`: an unbiased estimate of the pixel's variance from its own value
        (`E[(y - offset)^2] = (x - offset)^2 (1 + 1 / looks)`), the trace term of a risk estimate for
        J-invariant predictors. No SURE divergence is valid with it (`cov_apply` refuses)."""
        return (y - self.offset) ** 2 / (self.looks + 1)

    def cov_apply(self, y, v):
        raise ValueError("gamma noise has no covariance operator for SURE-type losses")

    def as_pg(self):
        raise ValueError("gamma noise has no Poisson-Gaussian form")


@dataclass(frozen=True)
class Correlated(NoiseModel):
    """Stationary correlated Gaussian noise `n = sigma * (k * w)`, `w` white N(0, 1), with the kernel `k`
    normalised to unit sum of squares so that `sigma` is the per-pixel standard deviation.

    With `gain` (and `offset`) the level follows the signal as Poisson-Gaussian noise does while the
    correlation stays that of `k` (detector counts blurred by charge sharing, interpolation or
    motion correction): `n = s(x) * (k * w)` with `s^2 = gain * (x - offset) + sigma^2`, covariance
    `S K K^T S` (`S = diag(s)`), a Gaussian approximation to the shot noise. Risk estimates take `s`
    at the measurement (`stein_weight`, clamped at 0), the first-order PG-SURE plug-in.

    Noise is drawn as the 'valid' correlation of white noise larger than the image by `k - 1` on each axis,
    so its covariance is exactly `sigma^2 K K^T` (`cov_apply`): the same everywhere, borders included, and
    with no wrap-around between opposite edges. `kernel` is a tuple of tuples (hashable, comparable); a model
    built by `stack` holds a (B, 1, k, k) tensor and a (B, 1, 1, 1) `sigma` instead."""

    name: ClassVar[str] = "corr"
    white: ClassVar[bool] = False
    sigma: float
    kernel: tuple[tuple[float, ...], ...]
    gain: float = 0.0
    offset: float = 0.0

    def __post_init__(self):
        # decided once: the property is read in every variance, probe and covariance call (a tensor test
        # there would synchronise the GPU each time)
        object.__setattr__(self, "_signal_dependent", bool(torch.as_tensor(self.gain).ne(0).any()))
        if isinstance(self.kernel, torch.Tensor):  # stacked: already normalised by `stack`
            return
        k = np.asarray(self.kernel, dtype=float)
        if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
            raise ValueError(f"a correlated-noise kernel must be square with an odd side, not of shape {k.shape}")
        ss = float((k**2).sum())
        if not (math.isfinite(ss) and ss > 0):
            raise ValueError("a correlated-noise kernel must be finite and not all zero")
        if abs(ss - 1) > 1e-12:  # leave a normalised kernel bit-for-bit alone, so to_dict/from_dict round-trips
            k = k / math.sqrt(ss)
        object.__setattr__(self, "kernel", tuple(tuple(float(v) for v in row) for row in k))

    @property
    def side(self) -> int:
        return self.kernel.shape[-1] if isinstance(self.kernel, torch.Tensor) else len(self.kernel)

    @property
    def signal_dependent(self) -> bool:  # type: ignore[override]
        return self._signal_dependent

    def _filter(self, v: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        return correlate(v, self.kernel, adjoint)

    def variance(self, x):
        if not self.signal_dependent:
            return torch.zeros_like(x) + self.sigma**2
        return self.gain * (x - self.offset).clamp_min(0) + self.sigma**2

    def _unit(self, y, generator):
        """`k * w` for white `w` larger than `y` by `k - 1` on each axis: unit-variance correlated noise."""
        s = self.side - 1
        w = torch.randn((*y.shape[:-2], y.shape[-2] + s, y.shape[-1] + s), generator=generator, device=y.device,
                        dtype=y.dtype)
        return self._filter(w)

    def noise_like(self, y, generator=None):
        if not self.signal_dependent:
            return self.sigma * self._unit(y, generator)
        return self.variance_map(y).sqrt() * self._unit(y, generator)

    def sample(self, x, generator=None):
        if not self.signal_dependent:
            return x + self.noise_like(x, generator)
        return x + self.variance(x).sqrt() * self._unit(x, generator)

    def cov_apply(self, y, v):
        if not self.signal_dependent:
            return self.sigma**2 * self._filter(self._filter(v, adjoint=True))
        s = self.stein_weight(y).sqrt()
        return s * self._filter(self._filter(s * v, adjoint=True))

    def stein_weight(self, y):
        """The diagonal of the covariance at the measurement: sigma^2, or `gain * (y - offset) + sigma^2`
        clamped at 0: the trace term of SURE (its divergence uses `cov_apply`)."""
        if not self.signal_dependent:
            return self.variance(y)
        return (self.gain * (y - self.offset) + self.sigma**2).clamp_min(0)

    def correlation(self, size: int) -> np.ndarray:
        """The correlation `k ⋆ k` between pixels on a `size` x `size` grid of lags (odd side, zero lag at the centre
        `c`, where it is 1): entry `[c + dy, c + dx]` correlates `n(i, j)` with `n(i + dy, j + dx)`; defined for a
        signal-dependent model too, whose level varies but whose correlation does not. (B, size, size) when stacked."""
        if size < 1 or size % 2 == 0:
            raise ValueError(f"the grid of lags must be odd and positive, not {size}")
        stacked = isinstance(self.kernel, torch.Tensor)
        k = self.kernel.detach().cpu().double().numpy()[:, 0] if stacked else np.asarray(self.kernel)[None]
        n = max(2 * self.side - 1, size)  # odd, and long enough that the circular autocorrelation is the linear one
        acf = np.fft.fftshift(np.fft.ifft2(np.abs(np.fft.fft2(k, s=(n, n))) ** 2).real, axes=(-2, -1))
        c, h = n // 2, size // 2
        acf = acf[..., c - h:c + h + 1, c - h:c + h + 1]
        return acf if stacked else acf[0]

    def covariance(self, size: int) -> np.ndarray:
        """Autocovariance `sigma^2 (k ⋆ k)` on a `size` x `size` grid of lags (`correlation`'s): entry
        `[c + dy, c + dx]` is `E[n(i, j) n(i + dy, j + dx)]`. (B, size, size) for a stacked model."""
        if self.signal_dependent:
            raise ValueError("a signal-dependent correlated model has no stationary covariance")
        var = torch.as_tensor(self.sigma, dtype=torch.float64).cpu().numpy().reshape(-1, 1, 1) ** 2
        cov = var * self.correlation(size).reshape(-1, size, size)
        return cov if isinstance(self.kernel, torch.Tensor) else cov[0]

    def rescaled(self, shift, scale):
        return replace(self, sigma=self.sigma / scale, gain=self.gain / scale, offset=(self.offset - shift) / scale)

    def as_pg(self):
        raise ValueError("correlated noise has no Poisson-Gaussian form (its pixels are not independent)")

    def _level(self) -> dict:
        """gain and offset where they matter (a stationary model's dict and spec stay as they were)."""
        return {"gain": float(self.gain), "offset": float(self.offset)} if self.signal_dependent else {}

    def to_dict(self):
        return {"name": self.name, "sigma": float(self.sigma), "kernel": [list(row) for row in self.kernel],
                **self._level()}

    def spec(self):
        extra = "".join(f",{k}={v:.6g}" for k, v in self._level().items())
        return f"{self.name}:sigma={self.sigma:.6g}{extra},kernel=<{self.side}x{self.side}>"


def correlate(v: torch.Tensor, kernel, adjoint: bool = False) -> torch.Tensor:
    """`K v`: each image of `v` (..., H, W) correlated with its kernel, 'valid' (each side shrinks by k - 1); or the
    adjoint `K^T v` (each side grows by k - 1). `kernel` is one k x k kernel (nested tuples, array or tensor) for
    every image, or a (B, 1, k, k) tensor, one per sample of a (B, C, H, W) batch; channels share their sample's."""
    k = torch.as_tensor(kernel, dtype=v.dtype, device=v.device)
    side = k.shape[-1]
    k = k.reshape(-1, 1, side, side)
    op = F.conv_transpose2d if adjoint else F.conv2d
    if k.shape[0] == 1:  # every image alike: a plain convolution over a batch of single-channel images
        out = op(v.reshape(-1, 1, *v.shape[-2:]), k)
        return out.reshape(*v.shape[:-2], *out.shape[-2:])
    if v.ndim != 4 or v.shape[0] != k.shape[0]:
        raise ValueError(f"a stack of {k.shape[0]} correlated-noise models cannot apply to shape {tuple(v.shape)}")
    # one kernel per sample: samples become the groups of a grouped convolution, channels its batch (grouped
    # convolutions with one group per image are very slow on the CPU)
    return op(v.transpose(0, 1), k, groups=k.shape[0]).transpose(0, 1)


def with_kernel(model: NoiseModel, kernel: tuple[tuple[float, ...], ...]) -> Correlated:
    """A Poisson(-Gaussian) `model`'s noise correlated by `kernel` (unit sum of squares): the same variance at each
    pixel, `gain * (y - offset) + sigma^2`, and the kernel's correlation between neighbours."""
    pg = model.as_pg()
    return Correlated(sigma=float(pg.sigma), kernel=kernel, gain=float(pg.gain), offset=float(pg.offset))


def kernel_from_autocorrelation(acf: np.ndarray) -> np.ndarray:
    """A symmetric (zero-phase) kernel whose autocorrelation is `acf`, a centred, odd-sided 2-D autocorrelation
    or autocovariance (e.g. estimated from noise), cropped to the side of `acf`, with unit sum of squares.

    The kernel is the inverse transform of the square root of the power spectrum: any kernel with this
    autocorrelation draws noise of the same law, and the zero-phase one is centred. Negative spectral values
    (from a noisy estimate) are clamped to zero."""
    acf = np.asarray(acf, dtype=float)
    if acf.ndim != 2 or acf.shape[0] != acf.shape[1] or acf.shape[0] % 2 == 0:
        raise ValueError(f"the autocorrelation must be square with an odd side, not of shape {acf.shape}")
    m = acf.shape[0]
    n = 4 * m + 1  # fine spectral sampling: little aliasing of the (longer) zero-phase kernel
    power = np.fft.fft2(np.fft.ifftshift(np.pad(acf, (n - m) // 2))).real
    return _unit_centre(np.fft.fftshift(np.fft.ifft2(np.sqrt(power.clip(0))).real), m)


def kernel_from_psd(psd: np.ndarray, max_side: int = 15, energy: float = 0.999) -> np.ndarray:
    """The symmetric (zero-phase) kernel whose |FFT|^2 is the 2-D power spectrum `psd`, cropped to the smallest odd
    square around its centre (side at most `max_side`) holding at least `energy` of its sum of squares, with unit
    sum of squares.

    `psd` is non-negative, of any shape, with the zero frequency at the centre, index (H // 2, W // 2), as
    `np.fft.fftshift(abs(np.fft.fft2(noise)) ** 2)` gives; only its shape matters, not its scale. The kernel is
    `fftshift(real(ifft2(ifftshift(sqrt(psd)))))`, zero lag at (H // 2, W // 2); on an even axis the first sample,
    the lag of half the period (its own mirror image), is dropped so that the zero lag is in the middle."""
    psd = np.asarray(psd, dtype=float)
    if psd.ndim != 2 or not (np.isfinite(psd).all() and (psd >= 0).all()):
        raise ValueError(f"the power spectrum must be a 2-D array of non-negative finite values (shape {psd.shape})")
    k = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(np.sqrt(psd))).real)
    k = k[1 - k.shape[0] % 2:, 1 - k.shape[1] % 2:]
    iy, ix = np.indices(k.shape)
    ring = np.maximum(abs(iy - k.shape[0] // 2), abs(ix - k.shape[1] // 2))  # half-side of the smallest square
    held = np.cumsum(np.bincount(ring.ravel(), (k**2).ravel()))
    h = min(int(np.searchsorted(held, energy * held[-1])), (max_side - 1) // 2)
    return _unit_centre(k, 2 * h + 1)


def _unit_centre(k: np.ndarray, side: int) -> np.ndarray:
    """The centred `side` x `side` part (odd side) of a kernel with odd sides, zero-padded where the kernel is
    smaller, scaled to unit sum of squares."""
    h = side // 2
    k = np.pad(k, h)
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    k = k[cy - h:cy + h + 1, cx - h:cx + h + 1]
    ss = (k**2).sum()
    if not ss > 0:
        raise ValueError("the spectrum has no positive power")
    return k / np.sqrt(ss)


MODELS: dict[str, type[NoiseModel]] = {m.name: m for m in (Gaussian, Poisson, PoissonGaussian, Gamma, Correlated)}


def stack(models: list[NoiseModel], device: torch.device | str = "cpu") -> NoiseModel:
    """One model for a batch whose sample `i` has noise `models[i]`. A batch with a single model keeps that
    model; models of one class stay that class, with (B, 1, 1, 1) tensor parameters (correlated kernels: a
    (B, 1, k, k) tensor, zero-padded to the largest side); a mix of white classes becomes Poisson-Gaussian,
    and white models beside correlated ones become correlated with a 1 x 1 kernel."""
    if all(m == models[0] for m in models):
        return models[0]

    def col(ms, name):
        return torch.tensor([float(getattr(m, name)) for m in ms], device=device).view(-1, 1, 1, 1)

    if any(isinstance(m, Correlated) for m in models) and not all(isinstance(m, Correlated) for m in models):
        models = [m if isinstance(m, Correlated) else _as_correlated(m) for m in models]
    cls = type(models[0])
    if all(type(m) is cls for m in models):
        if cls is Correlated:
            level = {k: col(models, k) for k in ("gain", "offset") if any(getattr(m, k) for m in models)}
            return Correlated(sigma=col(models, "sigma"), kernel=stack_kernels([m.kernel for m in models], device),
                              **level)
        return cls(**{f.name: col(models, f.name) for f in fields(cls)})
    try:
        pgs = [m.as_pg() for m in models]
    except ValueError as e:
        kinds = " and ".join(sorted({m.name for m in models}))
        raise ValueError(f"cannot batch {kinds} noise together: {e}; give every input the same noise model") from None
    return PoissonGaussian(gain=col(pgs, "gain"), sigma=col(pgs, "sigma"), offset=col(pgs, "offset"))


def stack_kernels(kernels: list, device: torch.device | str = "cpu") -> torch.Tensor:
    """Odd square kernels as one (B, 1, k, k) float32 tensor, each zero-padded to the largest side."""
    ks = [np.asarray(k, dtype=float) for k in kernels]
    side = max(len(k) for k in ks)
    return torch.tensor(np.stack([np.pad(k, (side - len(k)) // 2) for k in ks])[:, None], dtype=torch.float32,
                        device=device)


@dataclass(frozen=True)
class PerFrame:
    """One noise model per frame of a stack: the noise of a tilt series, an exposure series or a
    time-lapse changes from frame to frame (`frames[i]` is frame i's model, in the same units). It is
    a file's model, not a batch's: training and reconstruction take `frame(i)` for each frame."""

    name: ClassVar[str] = "per-frame"
    frames: tuple[NoiseModel, ...]

    def frame(self, i: int) -> NoiseModel:
        return self.frames[i]

    def rescaled(self, shift: float, scale: float) -> "PerFrame":
        return PerFrame(tuple(m.rescaled(shift, scale) for m in self.frames))

    def representative(self) -> NoiseModel:
        """One model standing for all frames (a loss that learns the noise per file starts from it):
        the first frame's model with the root-mean-square sigma."""
        return replace(self.frames[0], sigma=math.sqrt(float(np.mean([m.sigma**2 for m in self.frames]))))

    def to_dict(self) -> dict:
        return {"name": self.name, "frames": [m.to_dict() for m in self.frames]}

    def spec(self) -> str:
        sig = [m.sigma for m in self.frames]
        return f"{self.frames[0].name} per frame: sigma {min(sig):.6g} to {max(sig):.6g} over {len(sig)} frames"


def frame_model(model: NoiseModel | PerFrame, i: int) -> NoiseModel:
    """Frame `i`'s noise model under a file's model (the model itself unless it is per frame)."""
    return model.frame(i) if isinstance(model, PerFrame) else model


def file_model(model: NoiseModel | PerFrame) -> NoiseModel:
    """One model for a whole file (a per-frame model's representative)."""
    return model.representative() if isinstance(model, PerFrame) else model


def _as_correlated(model: NoiseModel) -> Correlated:
    """A white model as correlated noise with a 1 x 1 kernel (to share a batch with correlated models)."""
    try:
        pg = model.as_pg()
    except ValueError as e:
        raise ValueError(f"cannot batch {model.name} and corr noise together: {e}; give every input the same "
                         "noise model") from None
    return Correlated(sigma=pg.sigma, kernel=((1.0,),), gain=pg.gain, offset=pg.offset)


def from_dict(d: dict) -> NoiseModel | PerFrame:
    d = dict(d)
    if d["name"] == PerFrame.name:
        return PerFrame(tuple(from_dict(m) for m in d["frames"]))
    return MODELS[d.pop("name")](**d)
