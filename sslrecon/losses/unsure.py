"""SURE with the noise level unknown: `unsure` (one level) and `pg-unsure` (gain and read noise).

UNSURE (Tachella, Davies & Jacques, ICLR 2025): when sigma is unknown, train `f` to minimise `|f(y) - y|^2` under the
constraint that its expected divergence is zero, through the Lagrangian `|f(y) - y|^2 + 2 eta div f(y)`, minimised over
the network and maximised over the multiplier `eta`. A zero-divergence `f` cannot copy its input's noise, so the fit
term is then the true error plus a constant, and at the saddle point `eta` estimates the noise variance (from above:
a denoiser's own divergence must be paid off). `pg-unsure` does the same for Poisson-Gaussian noise with gain and read
noise unknown: the first-order PG-SURE weight `gain * (y - offset) + sigma^2` splits the constraint in two,
`E sum (y_i - offset) d_i f_i = 0` and `E sum d_i f_i = 0`, with the multipliers `gain` and `sigma^2`. Below
`FINITE_COUNTS` (10 photons per pixel of its current model) the network's own term is `pg-sure`'s photon removal
with the multipliers' model (`finite`, "auto"; `false` keeps the Taylor terms there), which nothing can exploit,
while the probe still measures the constraints (four passes with read noise, as before); from there to 100 counts
its value carries `pg-sure`'s second-order term (`second_order`, "auto"). Runs from before the removal keep the
Taylor terms (`saved_defaults`).

`unsure` learns one level and keeps the start model's shape: for a Gaussian start (`--noise gaussian:...`, or an
estimate that finds no shot noise) the plain UNSURE above; for a signal-dependent start (what `--noise auto` finds on
detector data) the variance `eta * s_i`, with `s = (gain u + sigma^2) / mean` the start's first-order PG-SURE weight
over its mean, so the constraint is `E sum s_i d_i f_i = 0` and `eta` starts at the start model's mean variance.
With one constant variance a network earned divergence credit where the signal is dark and the true variance small
(an output that falls as the input rises there, paid for by almost nothing): on the real FMD frames (300 steps) it
ended at 23.04 dB for a noisy 29.64 (fish 16.24), with the shape at 34.48 (`pg-unsure` 35.67).

The constraint has a price: the constrained network is not the best denoiser for the noise it finds (the peers'
UNSURE ends 1.1 dB below their SURE on BSD68), and the multiplier overestimates the noise by about the constrained
network's own error: for a linear zero-divergence filter `I - W = eta C^-1` (C the data covariance), so
`eta = n / tr(C^-1) = E|y - f(y)|^2 / n = sigma^2 + MSE(f) / n`, and no self-supervised identity removes that term
without a prior on the signal (on Set12, 300 steps: sigma +15 % at 25/255 and +34 % at 10/255, from estimates
within 1 % of the truth). Since that term is the network's error, the ascent waits for a good network: for the
first `hold_steps` training steps ("auto": `HOLD_FRACTION`, half of the run's steps, settled by `fit` and recorded;
0 for a loss used outside a run) the multipliers stay at their start (the model given or estimated) and the
Lagrangian is SURE with it; then they are learned to the end, the ascent's step scaled by the network's learning-rate
schedule (`pace`, which `train` calls every step): at the end of a cosine schedule the network barely moves, and a
full-size ascent kept climbing against a constraint only the network can meet (FMD frames, 300 steps: gains 2.6x,
1.7x and 1.3x their estimates, 32.97 dB; paced, within 5 % of them and 35.69 dB, `pg-sure --noise auto` 35.76). The price is a slower correction of a
wrong start (Set12, 5 photons, 300 steps, given gain 4 or 1 for the true 2: 3.64 / 1.10 paced, 2.88 / 1.49 at
full step). A run longer than `room_steps` (`ROOM_STEPS`, 300) scales the ascent's step by `room_steps / steps`, so
its multipliers get the room of a 300-step run and no more: with full-size steps, 2000-step runs on the FMD frames
wandered far from the estimates and by chance (two runs of the same code, 1 or 2 CPU threads: learned variance
0.64-1.26x and 1.62-2.86x the reference of the 50-frame averages, 33.69 / 32.36 dB); with the room of 300 steps,
0.94-1.18x (the estimates' own 0.90-1.01x) and 34.80 dB, `pg-sure --noise auto` 35.60 (`room_steps=0` lifts the
limit). On
Set12 (300 steps, `benchmarks/denoise_pg.py`, three seeds) `pg-unsure` scores 16.44 / 22.38 / 27.34 dB at 1 / 5 /
30 photons, `pg-sure` with the true model 16.50 / 22.46 / 27.39 (learned gain 2.01 / 2.08 / 2.15 for the true 2;
with the Taylor terms at 1 photon, before the removal, 14.50 against 14.57; in an early release, learning from the
first step, before the pace, ended at gains 2.46 / 2.33 / 2.10). A start without read noise
(a Poisson estimate) puts the read-noise multiplier at `READ_START` of the shot noise at the mean (a multiplicative
ascent cannot leave 0; 5 % of the image's variance, as before, started it at 6.7 for a true 3 at 30 photons:
25.61 dB, 26.57 with this start alone) and raises the dark level by as much, so that every level's starting
variance is the estimate's: only the line's intercept and slope are identified by a mean-variance fit, not how its
intercept splits into read noise and dark level. Read noise added on top of the estimate's line had the held
network trained for too much noise (FMD frames, `hold_steps=300`: 35.51 dB, 36.19 with a start of almost no read
noise, `pg-sure --noise auto` 36.17; the full run 35.43, 35.92 with the line kept). `unsure` on the Set12 crops
with white noise of 10 / 25 grey levels: 31.89 / 27.02 dB (learned sigma 10.7 / 26.0), `sure --noise auto` 31.98 /
26.95, learning from the first step 27.34 / 24.63 (`denoise_pg.py --unsure`). `learn_steps=N` stops the ascent
after N ascent steps, after which the Lagrangian is SURE with the learned noise.

On whole counts (a counting detector's, `whole_counts` of the start model) there is nothing to learn: the gain is the
count step and there is no read noise, and a probe off the count lattice shows a network its own divergence. Both
losses hold that model there (`counts`) and train on `sure`'s PG-SURE with it, which removes photons
(`_counted`). At one count per pixel (BSD68 crops, 300 steps, noisy 7.63 dB) learning there took `unsure` to 12.81
dB (its gain fallen to 0.89 for a true 1; 5.42 with one constant variance), holding it to 19.52, as `pg-unsure`.

Correlated noise (detector charge sharing, resampled or motion-corrected micrographs) needs the constraint to cover
the neighbours: with a pixel-wise one a network predicts each pixel's noise from its neighbours' and the multipliers
fall far below the noise (EPU micrograph, lag-1 correlation 0.5: 0.10 times the estimated variance). Where the
noise model that starts a file is correlated (`corr:...`, as `--noise auto` finds there), its kernel `K` is kept and
the constraint becomes the generalised one, `tr(J Sigma) = 0` with `Sigma = K diag(gain u + sigma^2) K^T`, linear in
the multipliers as the split needs; only the level is learned, not the correlation (same EPU run: 0.99 times).

The multipliers are buffers of the loss (saved in checkpoints, restored by `--resume`, moved with `.to(device)`),
one set per input file (`groups`; `physics.sources` says which file each sample of a batch comes from), since gain
and read noise differ between sessions and detectors. They start from the noise model given or estimated for each
file (`--noise`, `auto` by default) and only training steps update them, never validation or `no_grad` calls. The ascent is multiplicative, `eta <- eta * exp(step * m)`, on a
momentum average `m` of the normalised constraint violations (divergences are dimensionless): it keeps the
multipliers positive, moves them by at most `step` in log-scale per step whatever the units, and cannot blow up on
one noisy batch. The learned models (`noise_models()`, one per file) are what validation and reconstruction use; the
run reports them in the data's units.

Cost per step: two network passes (the divergence probe), as SURE; four for `pg-unsure` below 100 counts per pixel
(three below 10 without read noise).
Test-time rule: one pass on the measurement.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..noise.models import (Correlated, Gaussian, NoiseModel, PoissonGaussian, correlate, kernel_from_autocorrelation,
                            stack_kernels)
from ..physics import DENOISING, Denoising
from .base import Loss, LossOutput, probe_scale, rademacher, removal_divergence, whole_counts
from .pg import photon_removal, second_order_term, wants_second_order
from .sure import SureGaussian


#: The share of a run's training steps for which the multipliers stay at their start (`hold_steps="auto"`).
HOLD_FRACTION = 0.5
#: `pg-unsure` started from a model without read noise: the read-noise multiplier's start, as a share of the shot
#: noise's variance at the data's mean (a multiplicative ascent cannot leave 0), moved out of the shot noise.
READ_START = 0.05
#: `room_steps`' default: a longer run scales its ascent's step down so that the multipliers move no further than in a
#: run of this many steps (`plan`).
ROOM_STEPS = 300


def _whole(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


class _Learned(Loss):
    """Shared machinery: per-file buffers initialised once, multiplicative momentum ascent in training steps only."""

    learns_noise = True
    models = None  # the noise model given only initialises the multipliers
    internal_options = ("groups",)  # one set of multipliers per input file: `fit` passes the number of files
    saved_defaults = {"hold_steps": 0}  # (runs from before the hold learned from their first step)
    _names: tuple[str, ...] = ()
    #: buffers a loss holds per group beside its multipliers, with the value a run saved before them implies
    _held: dict[str, float] = {}

    def __init__(self, tau: float = 0.01, step: float = 0.02, momentum: float = 0.9, groups: int = 1,
                 learn_steps: int | None = None, hold_steps: int | str = "auto", room_steps: int = ROOM_STEPS):
        super().__init__()
        if not (hold_steps == "auto" or _whole(hold_steps)):
            raise ValueError(f"hold_steps is a whole number of training steps or auto, not {hold_steps!r}")
        if not _whole(room_steps):
            raise ValueError(f"room_steps is a whole number of training steps (0: no limit), not {room_steps!r}")
        self.tau, self.step, self.momentum, self.groups, self.learn_steps = tau, step, momentum, groups, learn_steps
        self.hold_steps, self.room_steps = hold_steps, room_steps
        self._room = 1.0  # the share of `step` a run of planned length takes (`plan`); 1 for a loss used outside one
        for n in self._names:
            self.register_buffer(n, torch.zeros(groups))
            self.register_buffer(f"{n}_velocity", torch.zeros(groups))
        for n, fill in self._held.items():
            self.register_buffer(n, torch.full((groups,), fill))
        self.register_buffer("kernel", torch.ones(groups, 1, 1, 1))  # each group's noise correlation (1 x 1: white)
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("ascents", torch.tensor(0))
        self.register_buffer("held", torch.tensor(0))  # training steps taken with the multipliers held at their start
        self.register_buffer("counts", torch.zeros(groups, dtype=torch.bool))  # groups of whole counts: nothing learned
        self._pace = 1.0  # the training schedule's learning-rate factor for this step (`pace`)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "held", torch.tensor(0))  # a run from before the hold
        state_dict.setdefault(prefix + "counts", torch.zeros(self.groups, dtype=torch.bool))  # or before counts
        for n, fill in self._held.items():  # or before those buffers
            state_dict.setdefault(prefix + n, torch.full((self.groups,), fill))
        saved = state_dict.get(prefix + "kernel")
        if saved is None:  # a run from before correlated constraints: white noise
            state_dict[prefix + "kernel"] = torch.ones(self.groups, 1, 1, 1)
        elif saved.shape != self.kernel.shape:  # the buffer takes the saved kernels' side
            self.kernel = torch.ones(saved.shape, device=self.kernel.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def options(self):
        return {"tau": self.tau, "step": self.step, "momentum": self.momentum, "groups": self.groups,
                "learn_steps": self.learn_steps, "hold_steps": self.hold_steps, "room_steps": self.room_steps}

    def plan(self, steps: int) -> None:
        """Fit the run's length, `steps` training steps (`fit` and `finetune` call this): settle `hold_steps="auto"`
        (`HOLD_FRACTION` of them; `options()` records the number), and scale the ascent's step by `room_steps / steps`
        where the run is longer than `room_steps`, so that its multipliers get the room of a `room_steps`-step run."""
        if self.hold_steps == "auto":
            self.hold_steps = int(HOLD_FRACTION * steps)
        self._room = min(1.0, self.room_steps / steps) if self.room_steps else 1.0

    def pace(self, factor: float) -> None:
        """The ascent's step follows the network's learning rate: where the network can no longer move (the end of a
        cosine schedule) a full-size ascent would keep climbing against a constraint only the network can meet."""
        self._pace = float(factor) * self._room

    def initialise(self, noise: NoiseModel | list[NoiseModel] | None, y: torch.Tensor,
                   sources: list[int] | None = None, names: list[str] | None = None) -> None:
        """Set the multipliers from `noise` (normalised units; one model, or one per group; None: from the batch `y`
        of measurements, whose samples come from the groups `sources`), unless they hold learned values already.
        `names`: the groups' files, for a refusal to name. A group whose start model holds its data as whole counts
        (`whole_counts`: a counting detector's, whose gain is the count step, without read noise) keeps that model
        (`counts`); one run cannot take such files beside others."""
        if bool(self.initialised):
            return
        noises = noise if isinstance(noise, list) else [noise] * self.groups
        src = torch.as_tensor(sources if sources is not None else [0] * len(y))
        for k, nk in enumerate(noises):
            own = y[src == k]
            own = own if len(own) else y
            self.counts[k] = nk is not None and whole_counts(own, nk)
            self._start(k, nk, own)
        if bool(self.counts.any()) and not bool(self.counts.all()):
            counted, other = int(self.counts.nonzero()[0]), int((~self.counts).nonzero()[0])
            raise ConfigError(f"{self.name}: not whole counts, where {names[counted] if names else f'file {counted}'} "
                              "holds them (a counting detector's, whose noise has nothing to learn)",
                              path=names[other] if names else None, fix="fit the two kinds of file in separate runs")
        self.kernel = stack_kernels([n.kernel if isinstance(n, Correlated) else ((1.0,),) for n in noises],
                                    self.kernel.device)
        self.initialised.fill_(True)

    @property
    def correlated(self) -> bool:
        return self.kernel.shape[-1] > 1

    def _group_kernel(self, k: int) -> tuple | None:
        """Group `k`'s kernel without its zero border, as nested tuples; None where its noise is white."""
        kern = self.kernel[k, 0].detach().cpu().double().numpy()
        h = kern.shape[0] // 2
        nz = np.argwhere(kern != 0)
        r = int(np.abs(nz - h).max()) if len(nz) else 0
        return None if r == 0 else tuple(map(tuple, kern[h - r:h + r + 1, h - r:h + r + 1].tolist()))

    def _pooled_kernel(self) -> tuple | None:
        """One kernel for all groups: the one whose autocorrelation is the mean of theirs (None if all are white)."""
        if not self.correlated:
            return None
        if bool((self.kernel == self.kernel[:1]).all()):
            return self._group_kernel(0)
        groups = Correlated(sigma=torch.ones(self.groups, 1, 1, 1), kernel=self.kernel.detach().cpu())
        return tuple(map(tuple, kernel_from_autocorrelation(groups.covariance(self.kernel.shape[-1]).mean(0)).tolist()))

    def _covariance_probes(self, idx: torch.Tensor, b: torch.Tensor, u: torch.Tensor | None = None):
        """`(K K^T b, K diag(u) K^T b)` with each sample's group kernel `K` (`b` and `u * b` for white noise; the
        second is None without `u`). The constraints' covariances: `tr(J K diag(gain u + sigma^2) K^T)` is linear in
        gain and sigma^2, as the split needs (`S K K^T S` of `Correlated`, with `S^2 = gain u + sigma^2`, is the same
        where the level is constant over a kernel's width)."""
        if not self.correlated:
            return b, None if u is None else u * b
        kern = self.kernel[idx]
        r = kern.shape[-1] // 2
        a = correlate(b, kern, adjoint=True)
        ub = None if u is None else correlate(F.pad(u, (r, r, r, r), mode="replicate") * a, kern)
        return correlate(a, kern), ub

    def _start(self, k: int, noise: NoiseModel | None, y: torch.Tensor) -> None:
        raise NotImplementedError

    @property
    def learning(self) -> bool:
        return not bool(self.counts.all()) and (self.learn_steps is None or int(self.ascents) < self.learn_steps)

    def _counted(self, model, y, physics, generator) -> LossOutput:
        """Whole counts (`counts`): the gain is the count step, there is no read noise and a Taylor probe off the
        lattice would show the network its own divergence (at one count per pixel pg-unsure's learned gain fell to
        0.59 for a true 1, 10.9 dB for gr2r-poisson's 24.1; unsure's to 0.89, 12.81 dB for a noisy 7.63): `sure`'s
        PG-SURE with the held model, which removes photons there."""
        held = Denoising(self.batch_model(physics.sources, len(y)), sources=physics.sources)
        out = SureGaussian(tau=self.tau)(model, y, held, generator=generator)
        pooled = self.pooled_model()
        return LossOutput(out.value, {**out.terms, "gain": pooled.gain, "sigma": pooled.sigma})

    def _index(self, sources, n: int) -> torch.Tensor:
        like = self.initialised.device
        return torch.zeros(n, dtype=torch.long, device=like) if sources is None else \
            torch.as_tensor(sources, dtype=torch.long, device=like)

    def _per_sample(self, name: str, idx: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)[idx].view(-1, 1, 1, 1)

    def _ascend(self, idx: torch.Tensor, violations: dict[str, torch.Tensor]) -> None:
        """One ascent step per group present in the batch, on the mean violation of its samples."""
        if not (self.training and torch.is_grad_enabled()):
            return  # validation, evaluation and inference never move the multipliers
        if not self.learning:
            return  # frozen: the rest of training is SURE with the learned noise
        if int(self.held) < (0 if self.hold_steps == "auto" else self.hold_steps):
            self.held += 1  # the network first learns under the starting model, so the ascent starts from a good one
            return
        self.ascents += 1
        with torch.no_grad():
            count = torch.zeros(self.groups, device=idx.device).index_add_(0, idx, torch.ones(len(idx), device=idx.device))
            present = count > 0
            for n, v in violations.items():
                mean = torch.zeros(self.groups, device=idx.device).index_add_(0, idx, v.detach().float()) / count.clamp_min(1)
                vel, param = getattr(self, f"{n}_velocity"), getattr(self, n)
                vel[present] = self.momentum * vel[present] + (1 - self.momentum) * mean[present].clamp(-1, 1)
                param[present] = param[present] * torch.exp(self.step * self._pace * vel[present])

    def _probe(self, model, y, noise: NoiseModel, generator, graph: bool = True):
        """`(f(y), b, J b)`: the output, a Rademacher probe and a finite-difference estimate of the Jacobian times it
        (`mean(P b * J b)` estimates `tr(J P) / n`); without `graph` the probe's pass keeps no autograd graph (`J b`
        then only measures, the value does not use it)."""
        eps = probe_scale(noise, y, self.tau)
        b = rademacher(y.shape, y, generator)
        fy = model(y)
        with torch.set_grad_enabled(graph and torch.is_grad_enabled()):
            moved = model(y + eps * b)
        return fy, b, (moved - fy) / eps

    def batch_model(self, sources=None, n: int = 1) -> NoiseModel:
        """The learned model of each sample of a batch from the groups `sources` (None: `n` samples of group 0)."""
        raise NotImplementedError

    def noise_models(self) -> list[NoiseModel]:
        """The learned model of each group (normalised units)."""
        return [self.batch_model([k]) for k in range(self.groups)]

    def pooled_model(self) -> NoiseModel:
        """One model for all groups: the mean of their parameters (variances averaged)."""
        raise NotImplementedError

    def physics(self, sources) -> Denoising:
        """The physics of a batch under the learned noise (what training's validation uses)."""
        return Denoising(self.batch_model(sources), sources=sources)

    def risk(self, model, y, physics=DENOISING, generator=None):
        if physics.noise is None:
            physics = Denoising(self.batch_model(physics.sources, len(y)), sources=physics.sources)
        return super().risk(model, y, physics, generator)


class Unsure(_Learned):
    name = "unsure"
    _names = ("variance",)
    _held = {"shape_gain": 0.0, "shape_read": 1.0, "shape_offset": 0.0}  # each group's noise shape (`_shape`); a run
    # from before the shape was white Gaussian

    def _start(self, k, noise, y):
        """The level `variance` starts at the start model's mean variance over `y`; the shape (`gain u + sigma^2`
        over that mean, `u = y - offset`) is the start model's and stays: constant for a Gaussian start."""
        level = _pg_level(noise) if noise is not None else None
        if level is not None and float(level.gain) > 0:
            mean = 1.0 if self.counts[k] else float(level.stein_weight(y).mean())  # (counts: held exactly)
            if mean > 0:
                self.variance[k] = mean
                self.shape_gain[k], self.shape_read[k] = float(level.gain) / mean, float(level.sigma) ** 2 / mean
                self.shape_offset[k] = float(level.offset)
                return
        var = noise.mean_sigma(y) ** 2 if noise is not None else 0.0
        self.variance[k] = var if var > 0 else 0.1 * float(y.var())

    def _model(self, var, gain, read, offset, kern) -> NoiseModel:
        """The model of level `var` and shape `(gain, read, offset)`, correlated by `kern` (None: white)."""
        sigma, shot = (var * read) ** 0.5, bool(torch.as_tensor(gain).gt(0).any())
        if kern is not None:
            return Correlated(sigma=sigma, kernel=kern, gain=var * gain, offset=offset) if shot else \
                Correlated(sigma=sigma, kernel=kern)
        return PoissonGaussian(gain=var * gain, sigma=sigma, offset=offset) if shot else Gaussian(sigma=sigma)

    def _levels(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each sample's `(variance, shape_gain, shape_read, shape_offset)`: its level and its noise shape,
        `shape_gain u + shape_read`, which times the level is its model."""
        return tuple(self._per_sample(k, idx) for k in ("variance", "shape_gain", "shape_read", "shape_offset"))

    def _batch(self, idx: torch.Tensor, var, gain, read, off) -> NoiseModel:
        if len(idx) == 1:
            return self._model(*(float(v) for v in (var, gain, read, off)), self._group_kernel(int(idx)))
        return self._model(var, gain, read, off, self.kernel[idx] if self.correlated else None)

    def batch_model(self, sources=None, n=1) -> NoiseModel:
        idx = self._index(sources, n)
        return self._batch(idx, *self._levels(idx))

    def pooled_model(self) -> NoiseModel:
        var = self.variance
        return self._model(1.0, float((var * self.shape_gain).mean()), float((var * self.shape_read).mean()),
                           float(self.shape_offset.mean()), self._pooled_kernel())

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        self.initialise(physics.noise, y, physics.sources)
        if bool(self.counts.all()):
            return self._counted(model, y, physics, generator)
        idx = self._index(physics.sources, len(y))
        dims = tuple(range(1, y.ndim))
        with torch.autocast(device_type=y.device.type, enabled=False):
            var, gain, read, off = self._levels(idx)
            shape = PoissonGaussian(gain=gain, sigma=read.sqrt(), offset=off).stein_weight(y)  # 1: a Gaussian start
            fy, b, jb = self._probe(model, y, self._batch(idx, var, gain, read, off), generator)
            fit = ((fy - y) ** 2).mean()
            div = (self._covariance_probes(idx, b, shape)[1] * jb).mean(dims)
            value = fit - (var * shape).mean() + 2 * (var.flatten() * div).mean()
        self._ascend(idx, {"variance": div})
        return LossOutput(value, {"fit": fit.item(), "div": div.mean().item(),
                                  "sigma": float(self.variance.mean().sqrt())})


def _pg_level(noise: NoiseModel) -> PoissonGaussian | None:
    """The Poisson-Gaussian level (gain, read noise, offset) of a start model, correlated ones included; None for
    a model without one (gamma)."""
    if isinstance(noise, Correlated):
        return PoissonGaussian(gain=noise.gain, sigma=noise.sigma, offset=noise.offset)
    try:
        return noise.as_pg()
    except ValueError:
        return None


class PgUnsure(_Learned):
    name = "pg-unsure"
    _names = ("gain", "variance")

    saved_defaults = {**_Learned.saved_defaults, "finite": False}  # (runs from before the photon removal)

    def __init__(self, tau: float = 0.01, step: float = 0.02, momentum: float = 0.9, groups: int = 1,
                 learn_steps: int | None = None, second_order: bool | str = "auto", tau2: float = 0.2,
                 hold_steps: int | str = "auto", room_steps: int = ROOM_STEPS, finite: bool | str = "auto"):
        super().__init__(tau, step, momentum, groups, learn_steps, hold_steps, room_steps)
        if finite not in (False, "auto"):
            raise ValueError(f"pg-unsure's finite is auto or false, not {finite!r}")
        self.second_order, self.tau2, self.finite = second_order, tau2, finite
        self.register_buffer("offset", torch.zeros(groups))

    def options(self):
        return {**super().options(), "second_order": self.second_order, "tau2": self.tau2, "finite": self.finite}

    def _start(self, k, noise, y):
        try:
            pg = noise.as_pg() if noise is not None else PoissonGaussian(gain=0.0, sigma=0.0)
        except ValueError:  # correlated or gamma estimate: no Poisson-Gaussian form; start from its level
            level = getattr(noise, "gain", 0.0)  # a correlated model whose level follows the signal has one
            pg = PoissonGaussian(gain=noise.gain, sigma=noise.sigma, offset=noise.offset) if level else \
                PoissonGaussian(gain=0.0, sigma=float(noise.mean_sigma(y)))
        gain, var, offset = (float(torch.as_tensor(v).float().mean()) for v in (pg.gain, pg.sigma**2, pg.offset))
        if self.counts[k]:  # a counting detector's: the gain is the count step and there is no read noise
            self.gain[k], self.offset[k], self.variance[k] = gain, offset, 0.0
            return
        if not gain > 0:  # no shot noise known: the dark level is at most the darkest value, shot noise starts small,
            offset = float(y.min())  # its share of the variance at the mean taken from the read noise where that allows
            gain = 0.05 * float(y.var()) / max(float((y - offset).mean()), 1e-12)
            shot = gain * float((y - offset).mean())
            var = var - shot if var > 2 * shot else var
        elif not var > 0:  # no read noise known (a Poisson estimate): the multiplier needs a start above 0, a small
            var = READ_START * gain * float((y - offset).mean())  # share of the noise at the mean (not of the image),
            offset += var / gain  # taken from the shot noise by raising the dark level: the estimate's variance line
        self.gain[k], self.offset[k] = gain, offset
        self.variance[k] = var if var > 0 else 0.05 * float(y.var())

    def _level(self, idx: torch.Tensor) -> PoissonGaussian:
        """The learned level (gain, read noise, offset) of each sample, without the correlation."""
        gain, var, off = (self._per_sample(k, idx) for k in ("gain", "variance", "offset"))
        if len(idx) == 1:
            return PoissonGaussian(gain=float(gain), sigma=float(var.sqrt()), offset=float(off))
        return PoissonGaussian(gain=gain, sigma=var.sqrt(), offset=off)

    def batch_model(self, sources=None, n=1) -> PoissonGaussian | Correlated:
        idx = self._index(sources, n)
        pg = self._level(idx)
        kern = self._group_kernel(int(idx)) if len(idx) == 1 else self.kernel[idx] if self.correlated else None
        return pg if kern is None else Correlated(sigma=pg.sigma, kernel=kern, gain=pg.gain, offset=pg.offset)

    def pooled_model(self) -> PoissonGaussian | Correlated:
        pg = PoissonGaussian(gain=float(self.gain.mean()), sigma=float(self.variance.mean().sqrt()),
                             offset=float(self.offset.mean()))
        kern = self._pooled_kernel()
        return pg if kern is None else Correlated(sigma=pg.sigma, kernel=kern, gain=pg.gain, offset=pg.offset)

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        self.initialise(physics.noise, y, physics.sources)
        if bool(self.counts.all()):
            return self._counted(model, y, physics, generator)
        idx = self._index(physics.sources, len(y))
        dims = tuple(range(1, y.ndim))
        with torch.autocast(device_type=y.device.type, enabled=False):
            gain, var, off = (self._per_sample(k, idx) for k in ("gain", "variance", "offset"))
            pg = self._level(idx)
            removal = not self.correlated and photon_removal(self.finite, y, pg)
            # with the removal the probe only measures the constraints: no graph for its pass
            fy, b, jb = self._probe(model, y, pg, generator, graph=not removal)
            u = y - off
            fit = ((fy - y) ** 2).mean()
            pb, pub = self._covariance_probes(idx, b, u)
            if removal:  # the network's term removes photons, as pg-sure's
                weighted = removal_divergence(model, y, fy, pg, generator=generator)
            else:
                weighted = ((gain * pub + var * pb) * jb).mean()
            value = fit - (gain * u + var).mean() + 2 * weighted
            div, div_u = (pb * jb).mean(dims), (pub * jb).mean(dims) / u.abs().mean(dims).clamp_min(1e-12)
            terms = {}
            if not removal and wants_second_order(self.second_order, y, pg):
                second = second_order_term(model, y, pg, probe_scale(pg, y, self.tau2), generator)
                value, terms = value + second, {"second_order": second.item()}
        self._ascend(idx, {"gain": div_u, "variance": div})
        pooled = self.pooled_model()
        return LossOutput(value, {"fit": fit.item(), "div": div.mean().item(), "gain": pooled.gain,
                                  "sigma": pooled.sigma, **terms})
