"""Losses for Poisson-Gaussian noise with a known model: `pg-sure` and `gr2r-poisson`.

Model: `y = offset + gain * Poisson((x - offset) / gain) + N(0, sigma^2)` (`--noise pg:...`, `poisson:...`, or
`auto`), in the data's own units and mapped through the training normalisation like every noise model.

`pg-sure`: Poisson-Gaussian unbiased risk estimate (Le Montagner, Angelini & Olivo-Marin 2014). With `u = y - offset`,
the exact identity `E[(x_i - offset) g(y)] = E[u_i g(y - gain e_i)] - sigma^2 E[d_i g(y - gain e_i)]` (Hudson's
for the Poisson part, Stein's for the Gaussian) gives the risk `|f(y) - y|^2 - sum(gain u + sigma^2) + 2 sum (gain u +
sigma^2) d_i f_i` to first order in `gain`, and the second-order term `- sum gain (gain u_i + 2 sigma^2) d_ii f_i`
takes the Taylor expansion of `f(y - gain e_i)` one step further. The first-order estimate is unbiased for a fixed
denoiser from about ten photons per pixel (tested), but a network trained on it at low counts learns to exploit its
error (curvature at the scale of one photon, paid for by nothing): on Set12 at 5 photons it ends 3 dB below the
oracle while its risk estimate reads ten times too low, and at 1 photon below the noisy input (6.0 dB, its estimate
negative). The second-order term (`second_order`, "auto": below `LOW_COUNTS`, 100 counts per pixel) takes it to
0.55 dB below the oracle at 5 photons, but at 1 photon it is still exploited. `finite` "auto" (the default: below
`FINITE_COUNTS`, 10 photons per pixel on average, and on whole counts) or `true` removes the photons for real:
`removal_divergence` moves a lattice of pixels 6 apart by one photon up or down at random in one extra pass and takes
the exact identity's terms at the pixels moved down, with a Rademacher probe on those alone for the read noise's term
at `y - gain e_i` (one more pass), of a step `READ_STEP` (0.4) times the read noise, which averages the derivative
over a network's linear pieces instead of reading one (at 1 % of the noise level that term's gradient was the
loss's noisiest part). Nothing is expanded at the scale of a photon, so there is nothing to exploit: trained at 1
photon (Set12, gain 2, read noise 3) its estimate reads 0.0284 +- 0.0035 against a true error of 0.0291 after 1200
steps (a lattice 4 apart scores 0.3 dB more at 300 steps but is exploited by 1200, `REMOVAL_SPACING`). On Set12
(`benchmarks/denoise_pg.py`, 300 steps, three seeds) it scores 16.50 / 22.46 dB at 1 / 5 photons where the Taylor
terms score 14.56 / 22.37 (oracle 17.16 / 22.62; at 1 photon `probes=2` 16.65, a lattice 5 apart 16.49; Gaussian
`sure` with the exact sigma on Gaussian noise of the same level falls 0.85 dB short of its oracle,
`--gaussian-control`; with four probes 16.66, and with 32 patches per step for every method still 0.67 dB short,
`--batch-size 32`), and on the real FMD frames (`--noise auto`) 36.22 against 36.26. Before the read-noise
probe's step it scored 15.31 at 1 photon, and on the FMD frames 35.20 against 36.05 at 1000 steps (with an earlier
release 28.83 against 34.99 at 2000 steps on an H200), so until then the default was `finite="counts"`: the removal
on whole counts only, the Taylor terms elsewhere (still an option). On whole counts (`whole_counts`: photon counting without read noise,
which `--noise auto` reads with the count lattice's gain and dark level) a network sees a Taylor probe off the
lattice and learns to read its own divergence from it, so there every setting but `false` removes photons
(`benchmarks/denoise_counting.py`, 300 steps: 22.36 dB at 1 photon against 16.92 with the Taylor terms, oracle
24.22; 31.26 / 31.25 at 10 photons); `false` never removes photons, `true` always;
`sure_mse` (validation and `validate`) takes the finite difference below `LOW_COUNTS`, where a network trained on
the Taylor terms has learned their error (at 1 photon its training loss read -0.013 and the first-order estimate
0.012 against a true 0.053; the finite difference 0.042, still low for so curved a network, but the nearest).
`finite=false` keeps the Taylor terms, with `second_order` ("auto": below `LOW_COUNTS`) adding the second-order one. Divergences are Monte-Carlo: a Rademacher
probe for the first derivative, and for the diagonal second derivative a zero-mean, unit-variance probe with third
moment 1 (values `phi`, `-1/phi` of the golden ratio), whose product with a central second difference has the
diagonal as its expectation. Probe steps are `tau * noise level` (`tau2` for the second difference), so the estimate
works in any units; an offset and negative values are handled exactly (nothing is rounded).
Cost per step: three network passes below 10 photons per pixel with read noise (the removal; two without read
noise), four from there to 100 (the second-order term), two above; `probes=K` (as `sure`'s) repeats the divergence's
probe or removal K times. Test-time rule: one pass on the measurement.

`gr2r-poisson`: generalised Recorrupted-to-Recorrupted (Monroy, Bacca & Tachella, CVPR 2025) by binomial thinning.
The counts `k = (y - offset) / gain` are split as `w ~ Binomial(k, alpha)`: `y1 = gain (k - w) / (1 - alpha)` and
`y2 = gain w / alpha` (plus the offset) are independent given the clean image and both have mean `x`, so
`E|f(y1) - y2|^2 = E|f(y1) - x|^2 + E|y2 - x|^2`: a Noise2Noise pair from one measurement. Counts that are not
integers (an estimated gain, a fractional offset) are split by unbiased random rounding, never by silent rounding; a
negative remainder below the offset is shared by both halves, so each keeps the measurement's mean. With read noise
(`pg`) the photons are not observed, only `u = y - offset = gain k + r` with `r ~ N(0, sigma^2)`. The default
`split="posterior"` draws `k` from its posterior given `u`, with the local mean count (5 x 5) as the Poisson prior's
mean (`photon_posterior`), and splits the drawn photons by thinning and the rest `r = u - gain k` by Gaussian
recorruption (`r + sqrt(alpha / (1 - alpha)) z` and `r - sqrt((1 - alpha) / alpha) z`): drawn with the clean count
as the prior, `(k, r)` would have the law of the photons and the read noise themselves, and both splits are exact.
At one photon with read noise 1.5 photons the target's mean given the input departs from the clean value by a mean
square of 0.004 at alpha 0.15 (tested), where `split="shifted"`, the shifted-Poisson approximation (Snyder et al.
1993: `k + sigma^2 / gain^2` counts thinned, matching the mean and variance but not the law), departs by 0.24 (0.10
at alpha 0.7), as large as the best denoiser's error there, and a network learns the departure as signal. So
`alpha` (the target's share of the counts) "auto" (`auto_alpha`) is 0.15, the network seeing most of the counts,
unless the data hold read noise that the model leaves out (a dark level in its place), and for the shifted split it
grows with the read noise's share, up to about 0.7 where it dominates; it is settled once per run from a batch of
training patches and recorded with the run's options. On Set12 (gain 2, read noise 3, 300 steps, three seeds;
`benchmarks/denoise_pg.py`) the posterior split scores 16.73 / 22.51 / 27.59 dB at 1 / 5 / 30 photons where the
shifted one scores 16.37 / 22.35 / 27.43 (oracle 17.16 / 22.62 / 27.75). Pixels whose posterior spans over
`POSTERIOR_WINDOW` counts (bright, with a read noise of many photons, where the shot noise is close to Gaussian, or
outliers) take the shifted split. Runs from before the posterior split keep the shifted one (`saved_defaults`).
Correlated noise (`corr:...,gain=...`, e.g. motion-corrected micrographs) cannot be thinned (its pixels are not
independent counts), so the split is the family's Gaussian member with the model's covariance at the measurement
(`split`), with `alpha` 0.15 for "auto" (the Gaussian split is exact); so is white Gaussian noise, which holds no
counts (what `--noise auto` reports where read noise hides the shot noise, so the loss still runs there), and so are
the files of a batch that `--noise auto` found Gaussian beside others it found signal-dependent (gain 0 in the
batch's model). `pg-sure`
takes correlated noise by the first-order estimate with the covariance (`sure`'s), since neither its second-order
term nor the photon removal applies there.
Cost per step: one network pass (and the posterior's draw, one elementwise sweep per candidate count). Test-time
rule: the average of `f(y1)` over `test_samples` splits ("auto": more as `alpha` grows, 5 at 0.2, 10 at 0.4, 35 at
0.7; `auto_test_samples`, also settled per run); its risk estimate is that of the average itself. With
`y = (1 - alpha) y1 + alpha y2` (exact up to the shifted split's random rounding of fractional counts) and `y2`
independent of `y1`, `E<y - x, f(y1)> = (1 - alpha) E<y1 - x, f(y1)>`, and
`E<y1 - x, f(y1)> = E<y1 - y2, f(y1) - y1> + V / (1 - alpha)` (`y2` stands in for `x`, and `V / (1 - alpha)` is the
input's noise variance), so `|g - y|^2 + V + 2 (1 - alpha) mean_k <y1 - y2, f(y1) - y1>` is unbiased for the error
of the average `g` of any number of splits: SURE's form, with the split in place of the divergence. (Before, the
mean of `|f(y1) - y2|^2 - V / alpha` estimated a single split's error, above the average's.) Being SURE's form, it
gives the risk of every blend `y + w (g - y)` as `sure`'s does (`engine.bundle.blend_risk`), so `reconstruct` moves
the rule towards the measurement where its network does not beat it (bright images: a network fed `1 - alpha` of
the counts cannot).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..noise.estimate import STENCIL_CUBES, STENCIL_SQUARES
from ..physics import DENOISING
from .base import REMOVAL_SPACING, Loss, LossOutput, is_count, low_counts, probe_scale, whole_counts
from .r2r import recorrupted_pair
from .sure import SureGaussian

PHI = (1 + math.sqrt(5)) / 2
P_PHI = 1 / (1 + PHI**2)  # probability of the value phi: mean 0, variance 1, third moment 1


def skewed_probe(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    """I.i.d. values `phi` (probability `1 / (1 + phi^2)`) or `-1 / phi`: zero mean, unit variance, third moment 1."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return torch.where(u < P_PHI, torch.full_like(u, PHI), torch.full_like(u, -1 / PHI))


#: Below this mean count per pixel `finite="auto"` trains on the finite-difference photon removal (see above: better
#: than the Taylor terms at 1 and 5 photons with the true model, 0.17 dB worse at 30).
FINITE_COUNTS = 10.0


def photon_removal(finite: bool | str, y: torch.Tensor, noise) -> bool:
    """Whether the photon removal replaces the Taylor terms, by the `finite` option of `pg-sure` and `pg-unsure`:
    always (`True`), never (`False`), on whole counts ("counts", `whole_counts`), or there and below `FINITE_COUNTS`
    ("auto", the default)."""
    if isinstance(finite, bool):
        return finite
    return whole_counts(y, noise) or (finite == "auto" and low_counts(y, noise, FINITE_COUNTS))


def wants_second_order(setting: bool | str, y: torch.Tensor, noise) -> bool:
    """Whether to add the second-order term: `True`/`False`, or for "auto" whether the batch's mean count
    `(y - offset) / gain` is below `LOW_COUNTS` (where one photon moves a network's output enough for it to exploit
    the first-order estimate; `low_counts`: never for noise that is not white counts, Gaussian or correlated)."""
    return bool(setting) if setting != "auto" else low_counts(y, noise)


class PgSure(SureGaussian):
    name = "pg-sure"
    # white Gaussian is the case gain = 0 (an estimate may find no shot noise); correlated noise (`corr:...,gain=...`)
    # takes the first-order form with its covariance (`sure`'s): its pixels are not counts, so `low_counts` never
    # calls for a photon-scale term there
    models = ("gaussian", "poisson", "pg", "corr")
    saved_defaults = {"finite": False}  # (runs from before the option trained on the Taylor terms at every count)

    def __init__(self, tau: float = 0.01, finite: bool | str = "auto", spacing: int = REMOVAL_SPACING,
                 second_order: bool | str = "auto", tau2: float = 0.2, probes: int = 1):
        super().__init__(tau=tau, probes=probes)
        if finite not in (True, False, "auto", "counts"):
            raise ValueError(f"finite is true, false, auto or counts, not {finite!r}")
        if second_order not in (True, False, "auto"):
            raise ValueError(f"second_order is true, false or auto, not {second_order!r}")
        if not (is_count(spacing) and spacing >= 2):
            raise ValueError(f"spacing is a whole number of pixels, at least 2, not {spacing!r}")
        if second_order is True and finite is True:
            raise ValueError("second_order=true (Taylor terms) and finite=true (a finite difference everywhere) are "
                             "two ways to remove a photon: give one of them")
        self.finite, self.spacing, self.second_order, self.tau2 = finite, spacing, second_order, tau2

    def options(self):
        return {**super().options(), "finite": self.finite, "spacing": self.spacing, "second_order": self.second_order,
                "tau2": self.tau2}

    def removes_photons(self, y, noise) -> bool:
        return photon_removal(self.finite, y, noise)

    def adapt(self, y, physics=DENOISING):
        self.check_noise(self.noise_of(physics))

    def check_noise(self, noise):
        """Refuse options that remove single photons where the noise is not white counts."""
        key = "finite" if self.finite is True else "second_order" if self.second_order is True else None
        if key and not noise.white:
            raise ConfigError(f"pg-sure's {key}=true removes single photons, and correlated noise has no counts to remove",
                              fix=f"leave {key} at auto (the default) for correlated noise")

    def extra_terms(self, model, y, noise, removal, generator=None):
        """The second-order term where `second_order` wants it, unless the divergence removed photons (the finite
        difference replaces the expansion that the term extends)."""
        if removal or not wants_second_order(self.second_order, y, noise):
            return {}
        return {"second_order": second_order_term(model, y, noise.as_pg(), probe_scale(noise, y, self.tau2), generator)}


def second_order_term(f, y: torch.Tensor, pg, eps: float, generator=None, dims=None) -> torch.Tensor:
    """`-mean(gain (gain u + 2 sigma^2) d_ii f_i)` with `u = y - offset` (`photon_signal`), by one skewed probe and a
    central second difference of step `eps`; per image when `dims` is given, else over the batch."""
    d = skewed_probe(y.shape, y, generator)
    curv = d * (f(y + eps * d) - 2 * f(y) + f(y - eps * d)) / eps**2
    weight = pg.gain * (pg.gain * pg.photon_signal(y) + 2 * pg.sigma**2)
    return -(weight * curv).mean() if dims is None else -(weight * curv).mean(dims)


#: `alpha="auto"`: `ALPHA_LOW + ALPHA_SLOPE * share`, with `share` the part of the noise variance that is not shot noise.
ALPHA_LOW, ALPHA_SLOPE = 0.15, 0.8


def read_share(y: torch.Tensor, pg, posterior: bool) -> float:
    """The share of the noise variance of `y` that is not shot noise: the larger of the model's (read noise
    `sigma^2` against `gain * mean count + sigma^2`) and the data's own, from the third cumulant. Shot noise has
    `kappa3 = gain * kappa2` and Gaussian noise none, so `1 - kappa3 / (gain * kappa2)` of the residual
    `y_i - mean(4 neighbours)` (pooled over the batch; cumulants of independent pixels add) is the read noise's
    share even where the model hides read noise in a dark level: the variance alone cannot tell an offset from
    read noise, and where `--noise auto` cannot use the third cumulant's dark level either (texture, correlated
    or floor-clipped data) it gives a Poisson model with a dark level, a share of 0 (Set12 at 30 photons, gain 2,
    read noise 3, offset 100: `poisson:gain=2.02,offset=95.2`; before the dark level was used, at 1 photon
    `poisson:gain=1.55,offset=93.7`, where the cumulants give 0.6, true 9 / 13 = 0.69). Texture inflates
    `kappa3` more than `kappa2` (measured on Set12 at 30 photons), which lowers the data's share: it errs towards
    the model's. With `posterior` (the split that draws each pixel's photons from their posterior, which takes the
    model's read noise as it is) only the data's share beyond the model's: the read noise the model leaves out."""
    y = y.double()
    dims = tuple(range(1, y.ndim))
    gain = torch.as_tensor(pg.gain, dtype=y.dtype, device=y.device)
    # in the data's units, so that a batch holding files of white Gaussian noise (gain 0 in the batch's model: all
    # of their variance is read noise) is pooled with the rest
    read = float((torch.as_tensor(pg.sigma, dtype=y.dtype, device=y.device) ** 2).expand_as(y).mean())
    # the model's shot-noise variance, from each image's mean count (a pixel's clamped at 0 would count its read noise)
    counted = float((gain * (y - pg.offset).mean(dims, keepdim=True).clamp_min(0)).mean())
    model = read / max(counted + read, 1e-300)
    if min(y.shape[-2:]) < 3:
        return 0.0 if posterior else model
    r = y[..., 1:-1, 1:-1] - (y[..., :-2, 1:-1] + y[..., 2:, 1:-1] + y[..., 1:-1, :-2] + y[..., 1:-1, 2:]) / 4
    r = r - r.mean(dims, keepdim=True)
    k2, k3 = (r**2).mean(dims) / STENCIL_SQUARES, (r**3).mean(dims) / STENCIL_CUBES
    g = gain.flatten().expand(len(y)) if gain.numel() == 1 else gain.flatten()
    shot = float((g * k2).sum())
    data = 1 - float(k3.sum()) / shot if shot > 0 else 0.0  # (noise-free or Gaussian data say nothing)
    if posterior:
        return min(max(data - model, 0.0), 1.0)
    return min(max(model, data, 0.0), 1.0)


def auto_alpha(y: torch.Tensor, pg, posterior: bool = True) -> float:
    """The thinning fraction for measurements `y` with Poisson-Gaussian noise `pg`: `0.15 + 0.8 share`, with
    `share` the part of the noise variance that the split does not take exactly (`read_share`). Thinning is exact for
    shot noise, and there `alpha` hardly matters (19.5-19.8 dB at 0.15-0.63, Set12 at one photon), so the lowest
    value, which leaves the network most of the counts, is best. The shifted-Poisson split (`split="shifted"`) treats
    read noise as extra counts, which are not Poisson, so its halves are dependent: `E[y2 | y1]` departs from the
    clean image by a function of `y1` that a network learns as if it were signal. The departure comes from the counts
    the input holds and shrinks as fewer are left in it, so more read noise called for a larger `alpha` (Set12 with
    gain 2 and read noise 3, 300 steps: at 1 photon per pixel, share 0.69, 12.6 / 13.9 / 15.2 / 15.8 dB for alpha
    0.15 / 0.3 / 0.5 / 0.63; at 5 photons, 0.31, 21.9 / 22.1 / 21.7 for 0.15 / 0.37 / 0.7; at 30 photons, 0.07,
    27.6 / 27.7 / 27.2 for 0.15 / 0.2 / 0.5). The posterior split (the default) takes the model's read noise
    exactly, so only read noise the model leaves out (a dark level in its place) raises `alpha`: at 1 photon, while
    it was developed, it scored 16.81 / 16.73 / 16.66 dB at alpha 0.15 / 0.3 / 0.5 (seed 0; three seeds 16.69 at
    0.15 and 16.55 at 0.3, where the shifted split at its alpha 0.70 scored 16.30)."""
    return ALPHA_LOW + ALPHA_SLOPE * read_share(y, pg, posterior)


#: `test_samples="auto"`: `SAMPLES_PER_ODDS * alpha / (1 - alpha)` splits, at least `SAMPLES_MIN`, at most `SAMPLES_MAX`
SAMPLES_PER_ODDS, SAMPLES_MIN, SAMPLES_MAX = 15.0, 5, 64


def auto_test_samples(alpha: float) -> int:
    """Splits averaged at test time for thinning fraction `alpha`. The network sees `1 - alpha` of the counts, so
    one split's output varies more from split to split as `alpha` grows, and the average's Monte-Carlo error
    (`b / K` beside the rule's own error `a`) with it. Measured on Set12 (gain 2, read noise 3, 300 steps) with
    K = 5 / 10 / 20 / 40: at 1 photon (alpha 0.70) 15.92 / 16.58 / 16.96 / 17.17 dB, `b / a` about 2; at 5 photons
    (0.40) 22.09 / 22.25 / 22.33 / 22.38, `b / a` 0.39; at 30 (0.21) 27.46 / 27.53 / 27.56 / 27.58, `b / a` 0.16:
    `b / a` is about `0.7 alpha / (1 - alpha)`, and `15 alpha / (1 - alpha)` splits hold the Monte-Carlo
    part to about 5 % of the error (35-36 at 1 photon, 10 at 5, 5 at 30)."""
    return int(min(SAMPLES_MAX, max(SAMPLES_MIN, math.ceil(SAMPLES_PER_ODDS * alpha / (1 - alpha)))))


#: Side of the local mean of counts that is each pixel's prior for its photon count in the posterior split.
PRIOR_BOX = 5
#: Most candidate counts per pixel in the posterior split; a pixel whose posterior is wider (bright, with a read
#: noise of many photons, or an outlier far from its neighbours) takes the shifted-Poisson split, which is close to
#: exact where many counts make the shot noise nearly Gaussian.
POSTERIOR_WINDOW = 64
#: The prior's least mean count (a dark neighbourhood's local mean may be 0 or below).
PRIOR_FLOOR = 1e-3
#: From this prior mean count on, the posterior's window is that of its Gaussian approximation (7 sd each side).
GAUSSIAN_PRIOR = 10.0


def photon_posterior(u: torch.Tensor, gain, sigma, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(k, drawn)`: a photon count per pixel drawn from its posterior given `u = y - offset`, `P(k | u)` proportional
    to `Poisson(k; lam) N(u - gain k; 0, sigma^2)`, with `lam` the local mean count (`PRIOR_BOX` square, at least
    `PRIOR_FLOOR`), and where it was drawn (read noise, and a posterior within `POSTERIOR_WINDOW` counts). Drawn
    with the clean count as the prior, `(k, u - gain k)` would have the law of the photons and the read noise
    themselves, so their exact splits (binomial thinning, Gaussian recorruption) would give independent halves; the
    local mean stands in for the clean count. One candidate count at a time by the Gumbel-max trick: memory of a
    few images, whatever the window."""
    gain = torch.as_tensor(gain, dtype=u.dtype, device=u.device)
    sigma = torch.as_tensor(sigma, dtype=u.dtype, device=u.device)
    read = (sigma > 0) & (gain > 0)
    gain, sigma = torch.where(read, gain, torch.ones_like(gain)), torch.where(read, sigma, torch.ones_like(sigma))
    c = u / gain
    flat = c.reshape(-1, 1, *c.shape[-2:])
    p = PRIOR_BOX // 2
    lam = F.avg_pool2d(F.pad(flat, (p, p, p, p), mode="replicate"), PRIOR_BOX, stride=1).reshape(c.shape)
    lam = lam.clamp_min(PRIOR_FLOOR)
    # the posterior is log-concave: its mode lies between the prior's and the likelihood's, and it is no wider than
    # the narrower of the two; from `GAUSSIAN_PRIOR` counts the prior is close to Gaussian, and so is the posterior
    # (mean `m`, sd `v`), which narrows the window where the read noise is small beside the shot noise, but not for
    # a value far out in the prior's tail (an outlier), which a Poisson prior holds far less tightly than a Gaussian
    s2 = (sigma / gain) ** 2
    spread = 6 * torch.minimum(s2.sqrt(), lam.sqrt() + 1)
    lo, hi = torch.minimum(c, lam) - spread - 1, torch.maximum(c, lam) + spread + 1
    m, v = lam * (s2 + c) / (lam + s2), (lam * s2 / (lam + s2)).sqrt()
    near = (lam >= GAUSSIAN_PRIOR) & ((c - lam).abs() <= 4 * (lam + s2).sqrt())
    lo = torch.where(near, torch.maximum(lo, m - 7 * v - 2), lo).floor().clamp_min(0)
    hi = torch.where(near, torch.minimum(hi, m + 7 * v + 2), hi).ceil()
    drawn = read & (hi - lo < POSTERIOR_WINDOW)
    k = lo.clone()
    if not bool(drawn.any()):
        return k, drawn
    # the prior's log-density relative to the window's first count, `j log(lam) - log((lo + j)! / lo!)`, stays exact
    # in single precision however many counts a pixel holds
    best, prior = torch.full_like(u, -math.inf), torch.zeros_like(u)
    log_lam, scale = lam.log(), 2 * sigma**2
    for j in range(int((hi - lo)[drawn].max()) + 1):
        cand = lo + j
        if j:
            prior = prior + log_lam - cand.log()
        gumbel = -torch.log(-torch.log(torch.rand(u.shape, generator=generator, device=u.device, dtype=u.dtype)
                                       .clamp(1e-12, 1 - 1e-7)))
        score = prior - (u - gain * cand) ** 2 / scale + gumbel
        better = (score > best) & (cand <= hi)
        best, k = torch.where(better, score, best), torch.where(better, cand, k)
    return k, drawn


def thinnable(noise) -> bool:
    """Whether `gr2r-poisson` splits `noise` by binomial thinning: white signal-dependent (count) noise. Gaussian
    and correlated noise take the family's Gaussian member instead."""
    return noise.white and noise.signal_dependent


#: How `gr2r-poisson` splits read noise (`GR2RPoisson.split`).
SPLITS = ("posterior", "shifted")


class GR2RPoisson(Loss):
    name = "gr2r-poisson"
    models = ("gaussian", "poisson", "pg", "corr")  # Gaussian and correlated noise: the family's Gaussian member
    own_risk = True
    saved_defaults = {"split": "shifted"}  # (runs from before the posterior split)

    def __init__(self, alpha: float | str = "auto", test_samples: int | str = "auto", split: str = "posterior"):
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"gr2r-poisson's split is {' or '.join(SPLITS)}, not {split!r}")
        if alpha != "auto" and not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f"gr2r-poisson needs 0 < alpha < 1 or alpha=auto, not {alpha!r}")
        if test_samples != "auto" and not is_count(test_samples):
            raise ValueError(f"gr2r-poisson needs test_samples >= 1 or test_samples=auto, not {test_samples!r}")
        self.alpha, self.test_samples, self.split_by = alpha, test_samples, split

    def options(self):
        return {"alpha": self.alpha, "test_samples": self.test_samples, "split": self.split_by}

    def adapt(self, y, physics=DENOISING):
        if self.alpha == "auto":
            self.alpha = self._alpha(y, self.noise_of(physics))
        if self.test_samples == "auto":
            self.test_samples = auto_test_samples(self.alpha)

    def _alpha(self, y, noise) -> float:
        """The settled alpha, or where `adapt` did not run (the loss used on its own) the one for `y`: `auto_alpha`,
        and for Gaussian or correlated noise, whose Gaussian split is exact, `ALPHA_LOW`."""
        if self.alpha != "auto":
            return self.alpha
        return auto_alpha(y, noise.as_pg(), self.split_by == "posterior") if thinnable(noise) else ALPHA_LOW

    def split(self, y, physics, generator=None, alpha: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(y1, y2)`: the network's input (a fraction `1 - alpha` of the counts, rescaled) and its target. With read
        noise, `split="posterior"` (the default) draws each pixel's photons `k` from their posterior
        (`photon_posterior`) and splits `k` by thinning and the rest, `u - gain k`, by Gaussian recorruption
        (`+ sqrt(alpha / (1 - alpha)) z` and `- sqrt((1 - alpha) / alpha) z`, `z ~ N(0, sigma^2)`); `split="shifted"`
        and the pixels outside the posterior's window thin `u / gain + sigma^2 / gain^2` shifted-Poisson counts.
        Either way `(1 - alpha) y1 + alpha y2 = y`. For correlated noise (`corr:...`, Gaussian with the model's
        covariance at the measurement) and white Gaussian noise (no counts to thin) the Gaussian member of the family:
        `y1 = y + sqrt(alpha / (1 - alpha)) z`, `y2 = y - sqrt((1 - alpha) / alpha) z` with `z` drawn with that
        covariance (`noise_like`), whose noises are independent for Gaussian noise, of variances `S / (1 - alpha)` and
        `S / alpha` as a split's halves (Recorrupted-to-Recorrupted)."""
        noise = self.noise_of(physics)
        alpha = self._alpha(y, noise) if alpha is None else alpha
        if not thinnable(noise):  # Recorrupted-to-Recorrupted's pair, scaled to a split's share
            return self._gaussian_split(y, noise, alpha, generator)
        pg = noise.as_pg()
        gain = torch.as_tensor(pg.gain, dtype=y.dtype, device=y.device)
        counted = gain > 0  # a batch's files of white Gaussian noise (gain 0) hold no counts: the Gaussian split
        gain = torch.where(counted, gain, torch.ones_like(gain))
        sigma = torch.as_tensor(pg.sigma, dtype=y.dtype, device=y.device)
        u = y - pg.offset
        shift = sigma**2 / gain  # shifted Poisson: sigma^2 / gain^2 extra counts carry the read noise
        counts = (u + shift) / gain
        whole = counts.clamp_min(0)
        rest = counts - whole  # the part below zero (read noise under the dark level), shared by both halves
        floor = whole.floor()
        k = floor + (torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype) < whole - floor).to(y.dtype)
        base, drawn = pg.offset - shift + gain * rest, None
        if self.split_by == "posterior" and bool((sigma > 0).any()):
            photons, drawn = photon_posterior(u, gain, sigma, generator)
            k = torch.where(drawn, photons, k)
            base = torch.where(drawn, pg.offset + u - gain * photons, base)  # the read noise's part, split by z
        w = torch.binomial(k, torch.full_like(k, alpha), generator=generator)
        y1, y2 = base + gain * (k - w) / (1 - alpha), base + gain * w / alpha
        if drawn is not None:
            z = torch.where(drawn, sigma, 0.0) * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            a = math.sqrt(alpha / (1 - alpha))
            y1, y2 = y1 + a * z, y2 - z / a
        if bool(counted.all()):
            return y1, y2
        g1, g2 = self._gaussian_split(y, noise, alpha, generator)
        return torch.where(counted, y1, g1), torch.where(counted, y2, g2)

    @staticmethod
    def _gaussian_split(y, noise, alpha: float, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        return recorrupted_pair(y, noise.noise_like(y, generator), math.sqrt(alpha / (1 - alpha)))

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        y1, y2 = self.split(y, physics, generator)
        value = ((model(y1) - y2) ** 2).mean()
        return LossOutput(value, {})

    def predict_and_terms(self, model, y, physics=DENOISING, generator=None,
                          samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The test-time rule `g`, the average of `f(y1)` over `samples` splits (default: the settled
        `test_samples`), and the per-pixel map `rest` such that `mean(|g - y|^2 + rest)` estimates the MSE of `g`:
        `rest = V + 2 (1 - alpha) mean over splits of (y1 - y2) (f(y1) - y1)`, with `V` the noise variance at the
        measurement (`stein_weight`). `rest` is linear in the outputs, so an average of rules (the symmetries)
        averages it and adds the step of the average (see the module docstring)."""
        noise = self.noise_of(physics)
        alpha = self._alpha(y, noise)
        k = samples or (auto_test_samples(alpha) if self.test_samples == "auto" else self.test_samples)
        pred, cross = torch.zeros_like(y), torch.zeros_like(y)
        for _ in range(k):
            y1, y2 = self.split(y, physics, generator, alpha)
            fy1 = model(y1)
            pred += fy1
            cross += (y1 - y2) * (fy1 - y1)
        return pred / k, noise.stein_weight(y) + 2 * (1 - alpha) * cross / k

    def predict(self, model, y, physics=DENOISING, generator=None, samples: int | None = None):
        # the risk terms cost a few elementwise ops
        return self.predict_and_terms(model, y, physics, generator, samples)[0]

    def risk(self, model, y, physics=DENOISING, generator=None):
        """The risk estimate of the average of `SAMPLES_MIN` splits (training-time validation; the prediction may
        average more)."""
        pred, rest = self.predict_and_terms(model, y, physics, generator, SAMPLES_MIN)
        return ((pred - y) ** 2 + rest).mean(tuple(range(1, y.ndim)))
