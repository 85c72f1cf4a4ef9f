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

from ..noise.models import Gaussian, NoiseModel
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
    #: True when the risk is the loss's own estimate (`predict_and_terms`) rather than SURE of `predict`: for
    #: test-time rules that are not differentiable in the measurement (recorruption by thinning).
    own_risk: ClassVar[bool] = False
    #: Constructor arguments the tool sets itself (not `--loss-option`s: left out of the options a bad one lists).
    internal_options: ClassVar[tuple[str, ...]] = ()
    #: Options that a checkpoint written before they existed was trained with, where today's default differs.
    saved_defaults: ClassVar[dict] = {}

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

    def check_noise(self, noise: NoiseModel) -> None:
        """Refuse (`ConfigError`, with the fix) a noise model that this loss's options cannot take, before training;
        `fit` asks it of each file's model, so the refusal names the file. Most losses take any model they
        `supports`."""

    def pace(self, factor: float) -> None:
        """The training loop's learning-rate factor for the coming step (its schedule, 1 at the peak; `train` calls
        this before every step). Losses that learn state beside the network (the multipliers of `unsure`) slow with
        it; most have none."""

    @property
    def learning(self) -> bool:
        """Whether training steps still move the loss's learned noise model (risk estimates are then not comparable
        between steps)."""
        return False

    def predict_and_terms(self, model, y, physics=DENOISING, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """For `own_risk` losses: the test-time prediction `g` and a per-pixel map `rest`, linear in the prediction,
        such that `mean(|g - y|^2 + rest)` is the risk estimate (SURE's form: averages of predictions keep it)."""
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


#: Below this mean count per pixel (photons, or electrons) `sure_mse` takes the photon removal as a finite difference
#: (`removal_divergence`) instead of the first-order Taylor term, and `pg-sure` adds its second-order term.
LOW_COUNTS = 100.0
#: Spacing (pixels) of the lattice on which `removal_divergence` removes photons. One network pass moves every
#: lattice pixel, so each removal also sees the others' moves; they cancel to first order, but a network can learn
#: to exploit what is left (curvature towards pixels one spacing away). Trained at 1 photon per pixel (Set12, gain 2,
#: read noise 3), the estimate of a network's error read 38 % low at spacing 3 after 300 steps, 44 % low at 4 after
#: 1200 steps, and within its standard error at 5 and 6 after 1200 (within two at 4-6 after 300).
REMOVAL_SPACING = 6
#: The risk estimate (`sure_mse`: validation, `validate`) removes photons on a lattice twice as far apart, in
#: `RISK_PASSES` passes (as many removals as one pass on training's lattice): a network trained on the removal learns
#: curvature towards the pixels about one training lattice away (any offset near it, not only its multiples), which a
#: risk estimate on that lattice counts as each pixel's own. A network trained at 1 photon per pixel on whole counts
#: read -0.005 on a lattice of 6, 0.0203 on one of 12 and 0.017 +- 0.003 on one of 24, against a true error of 0.0206.
RISK_SPACING, RISK_PASSES = 2 * REMOVAL_SPACING, 4


def low_counts(y: torch.Tensor, noise: NoiseModel, below: float = LOW_COUNTS) -> bool:
    """Whether `y` holds shot noise at fewer than `below` counts per pixel on average (`(y - offset) / gain`)."""
    if noise.name not in ("poisson", "pg"):
        return False
    pg = noise.as_pg()
    gain = torch.as_tensor(pg.gain, device=y.device)
    if not bool((gain > 0).any()):
        return False
    counts = (y - pg.offset) / torch.where(gain > 0, gain, torch.full_like(gain, float("inf")))
    return float(counts.mean()) < below


#: How far (in counts) a value may lie from the model's count lattice and still be a whole count (`whole_counts`):
#: room for float32 rounding in the training normalisation.
COUNT_ROUNDING = 1e-2


def whole_counts(y: torch.Tensor, noise: NoiseModel) -> bool:
    """Whether `y` holds whole counts of its white shot-noise model without read noise: `(y - offset) / gain` a whole
    number at every pixel (photon counting; `--noise auto` puts gain and offset on the data's lattice there,
    `estimate._whole_counts`). On such data a network sees any value off the lattice: a Taylor probe `y + eps b`
    shows it `b`, and it learns to make the divergence as negative as it likes (trained at about one count per
    pixel, `pg-sure`'s Taylor terms ended at 9.3 dB for a noisy 7.4 and gr2r-poisson's 24.1). The risk estimates take
    the photon removal there (`removal_divergence`), whose moves stay on the lattice."""
    if noise.name not in ("poisson", "pg"):
        return False
    pg = noise.as_pg()
    gain, sigma = (torch.as_tensor(v, device=y.device) for v in (pg.gain, pg.sigma))
    if not bool((gain > 0).all()) or bool((sigma > 0).any()):
        return False
    k = (y - pg.offset) / gain
    return bool(((k - k.round()).abs() <= COUNT_ROUNDING).all())


def removable(y: torch.Tensor, pg) -> torch.Tensor:
    """The photon signal `u` (`photon_signal`) from which `removal_divergence` removes a photon. Without read noise
    counts are whole, so a pixel holding less than half a photon holds none: under a model that fits there is no
    such pixel, and where the model does not fit (a dark level fitted above data clipped at their floor, FMD's
    8-bit frames) removing a photon from one would probe the network below anything the data hold, where nothing
    trains it. With read noise any value is possible and `u` stands."""
    u = pg.photon_signal(y)
    keep = (torch.as_tensor(pg.sigma, device=y.device) > 0) | (u >= torch.as_tensor(pg.gain, device=y.device) / 2)
    return torch.where(keep, u, torch.zeros_like(u))


#: Step of the read noise's Rademacher probe in `removal_divergence`, as a fraction of the read noise's level. Its
#: expectation is the derivative of the network averaged over that step, and Stein's identity integrates the
#: derivative against the read noise's Gaussian, so a step of a fraction of the read noise moves the estimate by a
#: share of the term of order `READ_STEP^2 / 6` (nothing for a denoiser without third derivatives, tested). A step of
#: 1 % of the noise level read the network's derivative inside one of its linear pieces, which jumps from pixel to
#: pixel: on 1 in 72 pixels that made the term's gradient the loss's noisiest part (at 1 photon per pixel, Set12,
#: gain 2, read noise 3: for a half-trained network the gradient's variance over probes was 4.1 times the squared
#: norm of the supervised gradient at 1 %, 0.51 at 0.4 times the read noise). `pg-sure` with the photon removal, 300
#: steps, seeds 0-2 (`benchmarks/denoise_pg.py`): 15.31 dB at 1 % (oracle 17.16; before `train.clearly_worse`),
#: 16.50 at 0.4; 0.36 gave 16.48, and 1.2 of the read noise 0.4 dB less than 0.36 (seed 0).
READ_STEP = 0.4


def removal_divergence(f: Predictor, y: torch.Tensor, fy: torch.Tensor, noise: NoiseModel,
                       spacing: int = REMOVAL_SPACING, generator=None, dims=None) -> torch.Tensor:
    """Monte-Carlo estimate of `mean_i u_i [f_i(y) - f_i(y - gain e_i)] + sigma^2 d_i f_i(y - gain e_i)` with
    `u = y - offset` (`removable`: without read noise, none below half a photon), per image over `dims`, else over
    the batch: the exact Poisson-Gaussian identity's term that first-order PG-SURE replaces by
    `(gain u_i + sigma^2) d_i f_i(y)`. Two passes (one without read noise): each image gets a lattice of
    `spacing` (random phase) whose pixels move by `gain` up or down at random (without read noise only those holding
    a photon), and a Rademacher probe of step `READ_STEP` times the read noise on the lattice pixels moved down; a
    lattice pixel moved down is
    one photon removed, and the others' moves cancel to first order in expectation. Unbiased up to what pixels
    `spacing` apart do to each other's output in second order; no Taylor expansion at the scale of a photon, which
    a network trained at a few photons per pixel learns to exploit (its curvature there is paid for by nothing)."""
    pg = noise.as_pg()
    k, n = spacing, y.shape[0]
    phase = torch.randint(0, k, (2, n) + (1,) * (y.ndim - 1), generator=generator, device=y.device)
    rows = torch.arange(y.shape[-2], device=y.device)[:, None]
    cols = torch.arange(y.shape[-1], device=y.device)[None, :]
    lattice = (((rows - phase[0]) % k == 0) & ((cols - phase[1]) % k == 0)).to(y.dtype)
    u, read = removable(y, pg), torch.as_tensor(pg.sigma, device=y.device) > 0
    # without read noise a pixel that holds no photon neither loses one nor gains one: a value below the data's
    # lowest would show the network which input is the moved one (and a move up alone would not cancel)
    s = rademacher(y.shape, y, generator) * lattice * (read | (u > 0))
    removed = (s < 0).to(y.dtype)
    f1 = f(y + pg.gain * s)
    terms = removed * u * (fy - f1)
    if bool(read.any()):  # (the read noise's term costs a pass)
        eps = READ_STEP * Gaussian(sigma=pg.sigma).mean_sigma(y)
        b = rademacher(y.shape, y, generator) * removed
        terms = terms + removed * pg.sigma**2 * b * (f(y + pg.gain * s + eps * b) - f1) / eps
    return 2 * k * k * (terms.mean() if dims is None else terms.mean(dims))


def mc_divergence(f: Predictor, y: torch.Tensor, fy: torch.Tensor, noise: NoiseModel, eps: float, generator=None,
                  dims=None, off_diagonal: bool = False) -> torch.Tensor:
    """`mean_i var_i d f_i / d y_i` (per image over `dims`, else over the batch) by one Rademacher probe `b`:
    `(S b) . (f(y + eps b) - f(y)) / eps`, with `S` the model's covariance (`cov_apply`; for white noise the
    per-pixel variance at the pixel's own value, `stein_weight`). `off_diagonal`: only `S`'s covariances between
    pixels, `sum_{i != j} S_ij d f_i / d y_j`."""
    b = rademacher(y.shape, y, generator)
    sb = noise.cov_apply(y, b)
    if off_diagonal:
        sb = sb - noise.stein_weight(y) * b
    terms = sb * (f(y + eps * b) - fy)
    return (terms.mean() if dims is None else terms.mean(dims)) / eps


def sure_mse(f: Predictor, y: torch.Tensor, noise: NoiseModel, generator=None, tau: float = 0.01,
             divergence: bool = True, removal: bool | None = None,
             correlation: NoiseModel | None = None) -> torch.Tensor:
    """Stein's unbiased risk estimate of `mean((f(y) - x)^2)` per image, shape (B,).

    `SURE = |f(y) - y|^2 - sum var_i + 2 sum var_i d f_i / d y_i`, with the divergence estimated by one
    Rademacher probe `b`: `b . (f(y + eps b) - f(y)) / eps`. For a signal-dependent model `var_i` is the
    model's `stein_weight`, its variance at the pixel's own value (first-order PURE / PG-SURE); for
    correlated noise the probe is multiplied by the covariance (`cov_apply`): `(S b) . J b`. For shot noise
    at low counts or on whole counts (`removal` None: `low_counts`, `whole_counts`; True forces it) the photon removal
    is a finite difference instead (`removal_divergence`, on a lattice twice as far apart as training's, `RISK_SPACING`,
    in `RISK_PASSES` passes): a network trained on the Taylor terms at low counts has learned their error, and one
    trained on whole counts sees a Taylor probe.
    `correlation` (a `Correlated` form of a white `noise`: `with_kernel`, `NoiseReport.risk_kernel`) adds the divergence
    over its covariances between pixels, `2 sum_{i != j} S_ij d f_i / d y_j`, by one more probe: the diagonal stays
    the white model's (with the photon removal where it applies), the rest is what correlated noise adds.
    `divergence=False` is for a J-invariant predictor (Noise2Self's), whose output at a pixel does not depend on that
    pixel: its own divergence is 0, but for correlated noise not its divergence over the covariances between pixels,
    which is kept (without it a blind-spot network that reads a pixel's noise from its neighbours' scored an error
    below zero on the EPU micrograph).
    """
    with torch.no_grad():
        fy = f(y)
        dims = tuple(range(1, y.ndim))
        mse = ((fy - y) ** 2).mean(dims) - noise.stein_weight(y).mean(dims)
        eps = probe_scale(noise, y, tau) if divergence or correlation is not None or not noise.white else None
        if not divergence and not noise.white:  # (a J-invariant predictor: the covariances between pixels only)
            mse = mse + 2 * mc_divergence(f, y, fy, noise, eps, generator=generator, dims=dims, off_diagonal=True)
        elif divergence:
            if removal or (removal is None and (low_counts(y, noise) or whole_counts(y, noise))):
                div = sum(removal_divergence(f, y, fy, noise, RISK_SPACING, generator, dims)
                          for _ in range(RISK_PASSES)) / RISK_PASSES
            else:
                div = mc_divergence(f, y, fy, noise, eps, generator=generator, dims=dims)
            mse = mse + 2 * div
        if correlation is not None:  # (a J-invariant predictor's own divergence is 0, not its cross terms)
            mse = mse + 2 * mc_divergence(f, y, fy, correlation, eps, generator=generator, dims=dims, off_diagonal=True)
    return mse
