"""Estimating noise from the measurements alone, with the evidence for the model chosen.

Three estimators, all in the data's own units and equivariant under an affine change of units:

- `gaussian_sigma(frame)`: white Gaussian sigma of one image by principal components of its
  weakly textured patches (Liu, Tanaka & Okutomi 2013; Chen, Zhu & Heng 2015). Patches whose
  gradient energy is below what noise alone reaches 90 % of the time are kept (iterating with the
  current sigma); the noise variance is the mean of the trailing patch-covariance eigenvalues, taken
  from where their mean first falls to their median (Chen's test), with 5x5 and 7x7 patches (the
  smaller estimate is kept: texture only inflates them). Keeping only low-gradient
  patches shrinks the noise too; the factor by which it does is measured once on simulated white
  noise and divided out, so pure noise gives an unbiased estimate. Patches near a clipping level
  (an 8-bit floor or ceiling), flat there and with their noise cut short, are left out.
- `mean_variance(frames)`: a local mean-variance fit `Var = slope * mean + intercept` in the spirit
  of Foi et al. (2008). A first fit uses the finest Haar level: the diagonal coefficients HH carry
  the noise (E[HH^2] is the local noise variance for independent noise), LH/HL say how textured a
  place is, the 8x8 local mean how bright; in each brightness bin only places whose LH/HL energy is
  what noise alone gives are kept. Pixel-scale texture as strong as the noise still inflates HH
  (on natural images at 1000 photons the gain ran 2x high), so for white noise each bin's variance
  is then measured again from d x d patches of that brightness, in the directions of patch space
  that hold noise alone (the trailing principal components of flat patches pooled over every
  brightness, each scaled by its predicted noise level; Liu, Tanaka & Okutomi 2014 use principal
  components per intensity): a patch is kept when the ring of pixels around it is flat for noise of
  its predicted variance. The ring does not overlap the patch, so the choice does not bias the
  patch's noise and no shrink calibration is needed. A patch's bin (and its predicted variance) is
  chosen by the mean of that ring too, its own mean only giving the bin's brightness: binned on their
  own noisy means, the bins' brightness spread wider than their variance follows (regression
  dilution), and the gain ran 9-12 % low at 0.2-3 photons with read noise 3 (22 % on Set12 crops at 1
  photon). These bins are spaced evenly in the logarithm of the predicted variance (merged to at
  least `MIN_BIN_SITES` patches), so the dark end, which carries the read noise, is resolved even
  where few pixels are dark. Clipping (an 8-bit floor, saturation) is detected, patches touching it
  are left out, and only bins at least two noise standard deviations from a clipping level are fitted. The line is then
  refined on groups of each bin's patches (by their rings' mean, `_refined_line`): a wide dark bin, taken at its
  average brightness, loses the spread that carries most of the information on the intercept. The fit is scored on a
  held-out half of the image area (a checkerboard of blocks): R^2 and the variance error. The
  intercept's standard error is reported: read noise is an extrapolation when the darkest data
  have a variance many times its own.
- `correlation(frames, variance_of, clip)`: the noise autocorrelation at lags up to 2 from flat
  8x8 blocks (flat by the gradient energy of the ring around them, so fine texture nearby rules a
  block out), each normalised by its predicted noise level. Where that level follows the signal, a
  correlation that rises from the darkest third of the blocks (by brightness) to the brightest is
  texture's, whose share of a flat place's variance grows with the signal, and the darkest third's is
  taken (FMD BPAE_G: the gain ran 38 % high from the whole correlation's correction). Correlated
  noise makes HH under-read the marginal variance by `1 - rho_h - rho_v + (rho_d + rho_a) / 2`, and
  the patches' noise-only directions `b` (the highest frequencies, which correlation weakens most) by the mean of `b' C b`
  (C the patch correlation the autocorrelation gives); the fit divides both out, and scales the
  rings' flatness threshold by the noise's lag-1 gradient factor. There the HH fit, which counts
  every flat place over a wider brightness span, decides whether the variance follows the signal,
  and the patches' fit gives the line (HH's texture and its own-mean binning put the gain 19 % high
  on Set12 crops at lag-1 0.5 and 24 % low on a smooth micrograph-like scene; the patches' 0.5 %
  and 13 % low). Where that refit follows the signal, the flat blocks' variances must spread no further
  than stationary noise's (`Correlation.block_spread`): texture's vary from place to place. A weak correlation
  (some tercile at most 0.3) must fall off fast from lag 1 to lag 2, as a compact kernel's does
  (`Correlation.far_reaching`): texture's reaches further.

Pixel-scale texture that is as strong as the noise cannot always be told from it in one image: on
natural images at 1000 photons the fitted gain runs up to 8 % high (bins texture lifts over 3 standard errors above
the line are left out of it, `TEXTURE_BIN_Z`) and the read noise (a small
share of the darkest variance there) up to 2x, and the gain up to 40 % where the image's own grain
passes the correlated-noise test and the Haar path is used (benchmarks/noise_estimation.py).

`analyze(frames)` runs them all and chooses the model; `estimate_auto(frames)` returns the model.
Offset and read noise are not separately identifiable from a mean-variance relation (both move its
intercept): the offset is taken as 0 unless given (`auto:offset=V`), or as the smallest offset that
explains a negative intercept, but never above the darkest data (`darkest_data`; away from a floor). The third
cumulant separates them where the counts are low (shot noise is skewed, read noise is not): `dark_level` finds
where it puts the dark level, for white signal-dependent noise (it assumes independent pixels), and `auto` takes
that as the offset only where its brightness bins agree (texture bends them), it is precise, no floor clips the data,
it lies above the line's own choice (by over five standard errors where that is 0, so offset-free data keep offset 0)
and not above the darkest data (the mean of Poisson-Gaussian data is the offset plus the photons' signal, never less;
`DarkLevel.below_data`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Callable, Iterable

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from .models import (
    Correlated,
    Gaussian,
    NoiseModel,
    PerFrame,
    Poisson,
    PoissonGaussian,
    kernel_from_autocorrelation,
    with_kernel,
)

MAX_SIDE = 1024        # central crop used per frame
PATCHES = (5, 7)       # patch sides for the PCA sigma estimate
MIN_PCA_SIDE = 4 * max(PATCHES)  # smaller images get the wavelet MAD instead
KEEP_QUANTILE = 0.9    # weak-texture thresholds: this quantile of each `_texture` statistic of pure noise
STRICT_TEXTURE_PIXELS = 128 * 128  # images this large select flat patches on all three `_texture` statistics
MAX_PATCHES = 200_000  # patches in one covariance
#: noise standard deviations a patch's mean keeps from a clipping level, the first that leaves enough patches (noise
#: cut at 2.5 / 2 / 1.5 sd loses 1.2 / 4 / 11 % of its variance there, less in the patches beyond)
CLIP_MARGINS = (2.5, 2.0, 1.5)
#: `gaussian_sigma` on clipped data also reads the places that sit on a clipping level (`_censored_sigma`): the
#: `CENSORED_SIDE` square patches the frame of `CENSORED_RING` pixels round which has at least `CENSORED_SHARE` of its
#: pixels on the level (a flat place there, or texture's edge beside it), at most `MAX_CENSORED_PATCHES` of them, at
#: least `MIN_CENSORED_PATCHES` kept as flat
CENSORED_SIDE, CENSORED_RING, CENSORED_SHARE = 5, 2, 0.35
MAX_CENSORED_PATCHES, MIN_CENSORED_PATCHES = 5_000, 250
#: the same for the mean-variance fit's bins (and their groups), the first that leaves three bins (`mean_variance`)
CLIP_FIT_MARGINS = (2.0, 1.0, 0.0)
BINS = 24              # brightness bins in the mean-variance fit
SMOOTH_FRACTION = 0.1  # smoothest fraction of each bin kept
CLIP_MIN_FRACTION = 1e-3  # share of pixels at an extreme value that signals clipping
SPARSE_FLOOR_FRACTION = 1e-4  # the least share, and the spike over the next value, of a floor too sparse for that
SPARSE_FLOOR_RATIO = 1.5      # (`_sparse_floor`, `Clipping.sparse_low`)
CLIP_DEPTH = 4            # how many of the most extreme values a pile-up may end on
CORR_THRESHOLD = 0.1   # |rho| at lag 1 above which noise is called correlated
#: for signal-dependent noise, the lag-1 correlation at every brightness above which the model keeps it
#: (Poisson-Gaussian level, the kernel's correlation); below it the white model stands. The EPU micrograph
#: (0.55) is above; the FMD frames (0.17-0.33, mostly texture: their residuals against the 50-frame average have
#: lag-1 0.05-0.09 in flat places), where the white-model losses measured best (gr2r-poisson 35.95 dB, pg-sure
#: 35.99 at 300 steps), are below
CORR_PG_THRESHOLD = 0.3
SLOPE_RATIO = 1.5      # variance growth over the brightness range that signals signal dependence,
MIN_GROWTH, SLOPE_Z = 1.1, 8.0  # or a smaller growth with a slope this many standard errors from zero,
#: or a growth of `SLOPE_RATIO` over the data's whole brightness range (not only the span where flat places were
#: found) with a slope this many standard errors from zero. A textured image finds flat places over a narrow span of
#: its brightness: BSD68 test005 at 10-1000 photons (gain 0.5, read noise 1) fits 367-485 of its 205-499, where the
#: variance grows 1.28 times (2.10 over the whole range) with a slope 4.7 standard errors from zero, and was read as
#: Gaussian in 5 of 5 draws. Over all 68 BSD68 images, each alone at four Poisson-Gaussian settings of 1-1000
#: photons, 11 such misreads of 272 are now signal-dependent (gain within 1-15 %, one +80 %) and no other estimate
#: moved; white Gaussian noise at 5-50/255 on all of BSD68 and Set12, float and 8-bit, is read as before (640
#: images, the same 25 called not Gaussian)
EXTEND_Z = 4.0
#: below this held-out R^2 a signal-dependent fit's report warns that its line may be off: on the 68 BSD68 images
#: alone at the four `--bsd68-pg` settings, 13 fits fell below it, 10 of them with the gain over 30 % off and one
#: within 10 % (all fits: 25 over 30 %); the real data fit above it (FMD frames 0.84-0.99, the EPU micrograph 0.61)
HELDOUT_R2 = 0.5


def central_crop(frame: np.ndarray, side: int = MAX_SIDE) -> np.ndarray:
    """The central `side` x `side` part of a frame, in its own dtype (all the estimators look at)."""
    h, w = np.shape(frame)
    r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.array(frame[r0 : r0 + side, c0 : c0 + side])


#: How far over all but the brightest of its eight neighbours a pixel must lie, in robust standard deviations of a
#: pixel against its neighbours' median, to be a hot pixel (`hot_pixels`). The spread is the whole frame's (its
#: central `MAX_SIDE` crop's), so the mostly dark FMD frames' own photons reach 43 of it in bright places, BSD68
#: texture at 5/255 16 (at 10 the FMD gains fell 3-24 %); hot pixels nearer the data are left to the patch fit
#: (`SITE_OUTLIER`).
HOT_SD = 100.0
HOT_MAX = 0.01  # the largest share of a frame's pixels taken for hot


def _hot_spread(g: np.ndarray) -> float:
    """The robust standard deviation of a pixel against its eight neighbours' median, over the pixels whose
    neighbours are not all equal (inside a fill it is 0: a masked half read 0)."""
    p = np.pad(g, 1, mode="reflect")
    h, w = g.shape
    nb = np.stack([p[r:r + h, c:c + w] for r in range(3) for c in range(3) if (r, c) != (1, 1)])
    nb.sort(axis=0)
    r = (g.astype(np.float64) - 0.5 * (nb[3].astype(np.float64) + nb[4]))[nb[7] != nb[0]]
    return 1.4826 * float(np.median(np.abs(r - np.median(r)))) if r.size else 0.0


#: Rows of a frame looked at together by `hot_pixels` (memory: a band, not the frame, in float64)
HOT_BAND = 256
_NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def hot_pixels(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hot pixels of `frame` (a defective detector pixel, a cosmic ray or X-ray hit: a pixel over all but one of
    its eight neighbours, so pairs too, by over `HOT_SD` robust standard deviations of pixels against their
    neighbours' median, `_hot_spread` of the central `MAX_SIDE` crop; noise never lies that far over seven of its
    neighbours) as `(rows, cols, values)`: each one's fourth neighbour value in order (one the data hold: whole
    counts stay whole; the frame's edges reflected). None where the spread is 0 (sparse counts, where most pixels
    equal their neighbours' median) or where over `HOT_MAX` of the pixels would be hot (so many are the data's own).
    Read in bands of `HOT_BAND` rows, so a 4096 x 4096 frame costs a band's memory."""
    g = np.asarray(frame)
    none = (np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, g.dtype))
    if g.ndim != 2 or min(g.shape) < 3:
        return none
    spread = _hot_spread(central_crop(g, MAX_SIDE))
    if not spread > 0:
        return none
    h, w = g.shape
    rows, cols = [], []
    for r0 in range(0, h, HOT_BAND):
        r1 = min(h, r0 + HOT_BAND)
        lo, hi = max(r0 - 1, 0), min(r1 + 1, h)
        p = np.pad(np.asarray(g[lo:hi], np.float64), ((int(r0 == 0), int(r1 == h)), (1, 1)), mode="reflect")
        mid = p[1:-1, 1:-1]
        over = sum((mid - p[1 + dr:p.shape[0] - 1 + dr, 1 + dc:w + 1 + dc] > HOT_SD * spread).astype(np.int8)
                   for dr, dc in _NEIGHBOURS)
        r, c = np.nonzero(over >= 7)  # over all but one
        rows.append(r + r0)
        cols.append(c)
    r, c = np.concatenate(rows), np.concatenate(cols)
    if not r.size or r.size > HOT_MAX * g.size:
        return none
    nb = np.stack([g[_reflect(r + dr, h), _reflect(c + dc, w)] for dr, dc in _NEIGHBOURS])
    nb.sort(axis=0)
    return r, c, nb[3]


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Indices one step outside `0..n-1` reflected back inside, as `np.pad(mode="reflect")` does."""
    return np.where(i < 0, -i, np.where(i >= n, 2 * (n - 1) - i, i))


def repair_hot(frame: np.ndarray) -> tuple[np.ndarray, int]:
    """`frame` with its `hot_pixels` set to their values, and how many. A hot pixel in a thousand put a smooth
    scene's white noise at `pg:gain=2.4` (sigma 15x the truth) and a Poisson-Gaussian image's gain at 15000x: the
    patches and bins holding one have a huge variance. `analyze` and `per_frame` estimate from the repaired frames;
    training and reconstruction see them too (`data.HotRepaired`)."""
    found = hot_pixels(frame)
    if not found[0].size:
        return np.asarray(frame), 0
    return with_values(frame, found), int(found[0].size)


def with_values(frame: np.ndarray, found: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """A copy of `frame` with `found = (rows, cols, values)` (`hot_pixels`) set."""
    r, c, v = found
    out = np.array(frame, copy=True)
    out[r, c] = v
    return out


def _crop(frame: np.ndarray, side: int = MAX_SIDE) -> np.ndarray:
    return central_crop(frame, side).astype(np.float64)


def _box_sum(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sums over every h x w window ('valid' positions)."""
    c = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def _box_mean_same(a: np.ndarray, k: int) -> np.ndarray:
    """k x k moving average with reflected borders, same shape as `a`."""
    p = k // 2
    return _box_sum(np.pad(a, ((p, k - 1 - p), (p, k - 1 - p)), mode="reflect"), k, k) / (k * k)


def haar(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Finest orthonormal Haar level: (LL, LH, HL, HH); each has variance sigma^2 for white noise."""
    f = np.asarray(frame, dtype=np.float64)
    f = f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2]
    a, b, c, d = f[0::2, 0::2], f[0::2, 1::2], f[1::2, 0::2], f[1::2, 1::2]
    return (a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2


# --- Gaussian sigma -------------------------------------------------------------------------------

def _texture(img: np.ndarray, d: int, statistics: int = 3) -> np.ndarray:
    """The first `statistics` of three statistics of every d x d patch (statistics x patches, by top-left corner)
    that texture raises above what noise gives: the energy of its horizontal and vertical differences; the
    largest eigenvalue of their structure tensor (texture with a direction: edges, lines, stripes); and that
    eigenvalue on the 2 x 2 box-averaged image, where noise's differences lose half their variance and smooth
    texture's keep theirs."""
    energy = _box_sum(np.diff(img, axis=1) ** 2, d, d - 1) + _box_sum(np.diff(img, axis=0) ** 2, d - 1, d)
    out = [energy.ravel()]
    for k in (1, 2)[:statistics - 1]:
        im = img if k == 1 else _box_sum(img, 2, 2) / 4
        gx, gy = np.diff(im, axis=1)[:-1], np.diff(im, axis=0)[:, :-1]
        sxx, syy, sxy = (_box_sum(g, d - k, d - k) for g in (gx * gx, gy * gy, gx * gy))
        half = (sxx + syy) / 2
        top = half + np.sqrt(np.maximum(half**2 - sxx * syy + sxy**2, 0.0))
        out.append(top[:energy.shape[0], :energy.shape[1]].ravel())
    return np.stack(out)


def _tail_start(lam: np.ndarray) -> int:
    """Chen's test on eigenvalues in descending order: the first index from which the remaining ones'
    mean is at most their median (the noise-only tail)."""
    for i in range(len(lam)):
        if lam[i:].mean() <= np.median(lam[i:]):
            return i
    return len(lam) - 1


def _trailing_mean(cov: np.ndarray) -> float:
    """Mean of the smallest eigenvalues, from the first index where their mean is at most their median."""
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1]
    return float(lam[_tail_start(lam):].mean())


def _at_most(idx: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(idx, limit, replace=False) if len(idx) > limit else idx


def _pca_variance(p: np.ndarray) -> float:
    """Noise variance of patches `p` (one per row): the trailing mean of their covariance's eigenvalues (0 for none:
    every patch on a clipping level, in noise-free data)."""
    if not len(p):
        return 0.0
    p = p - p.mean(0)
    return _trailing_mean(p.T @ p / len(p))


def _patch_variance(patches: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> float:
    return _pca_variance(patches[_at_most(idx, MAX_PATCHES, rng)])


@cache
def _white_noise_calibration(d: int, q: float, statistics: int) -> tuple[np.ndarray, float]:
    """(thresholds of the first `statistics` of `_texture`, variance shrink factor) for unit white noise:
    simulated once."""
    n = np.random.default_rng(1234).standard_normal((768, 768))
    stats = _texture(n, d, statistics)
    thr = np.quantile(stats, q, axis=1)[:, None]
    shrink = _patch_variance(sliding_window_view(n, (d, d)).reshape(-1, d * d), np.flatnonzero((stats < thr).all(0)),
                             np.random.default_rng(0))
    return thr, shrink


def _pca_sigma(at: Callable[..., tuple[float, np.ndarray | None]], clipped: bool) -> float:
    """The level of one patch size (`_patch_levels`): its fixed point where nothing is `clipped`, else the largest of
    those with enough patches over `CLIP_MARGINS` (clipping only lowers the level; a narrower margin lets more of it
    in, and as the level falls so does a margin measured in it, so a wide one can settle low where few patches are
    left)."""
    if not clipped:
        var = at(0.0)[0]
    else:
        found = [at(m) for m in CLIP_MARGINS]
        var = max((v for v, keep in found if keep is not None), default=found[-1][0])
    return float(np.sqrt(max(var, 0.0)))


def _patch_levels(img: np.ndarray, d: int, iterations: int, statistics: int, clip: Clipping,
                  tiles: tuple[int | None, int | None]) -> Callable[..., tuple[float, np.ndarray | None]]:
    """`at(margin, least=0.0)`: the fixed point `(variance, kept patches or None)` of the d x d patches that noise of
    the current variance makes flat and whose means lie `margin` noise sd from every clipping level, that sd
    measured in the current variance or `least`, the larger. The patches and their statistics are set up once."""
    patches = sliding_window_view(img, (d, d)).reshape(-1, d * d)
    stats = _texture(img, d, statistics)
    thr, shrink = _white_noise_calibration(d, KEEP_QUANTILE, statistics)
    rng = np.random.default_rng(0)
    means = _box_sum(img, d, d).ravel() / (d * d)
    filled = _box_sum(clip.filled(img).astype(np.float64), d, d).ravel() > 0  # (a fill holds no noise)
    if tiles != (None, None):  # (a patch across a `_spread` mosaic's seam is left out as a fill's is)
        filled |= ~_within_tiles(img.shape, d, tiles)
    start = _patch_variance(patches, np.flatnonzero(_clear_of(clip, means, 0.0)(1.0) & ~filled), rng)
    # the calibration's patches were many; a small image's few spread their smallest eigenvalues lower
    def measure(keep):
        n = min(len(keep), MAX_PATCHES)
        return _patch_variance(patches, keep, rng) / shrink * _sample_shrink(MAX_PATCHES, d * d) / _sample_shrink(n, d * d)

    def at(margin: float, least: float = 0.0) -> tuple[float, np.ndarray | None]:
        far = _clear_of(clip, means, margin)
        return _fixed_point(start, lambda v: np.flatnonzero((stats < thr * v).all(0) & far(max(v, least)) & ~filled),
                            measure, 10 * d * d, iterations)
    return at


def _clear_of(clip: Clipping | None, means: np.ndarray, margin: float) -> Callable[[float | np.ndarray], np.ndarray]:
    """For a noise variance `v` (one, or one per place): which places (by their local `means`) lie over `margin` noise
    standard deviations from every clipping level (0: those whose means are not on a level), where noise is not cut
    short. Everything where nothing is clipped."""
    if clip is None or not clip.detected:
        return lambda v: np.ones(means.shape, bool)
    lo = -np.inf if clip.low is None else clip.low
    hi = np.inf if clip.high is None else clip.high

    def far(v: float | np.ndarray) -> np.ndarray:
        m = margin * np.sqrt(v)
        return (means > lo + m) & (means < hi - m)
    return far


def _fixed_point(var: float, select, measure, min_count: int, iterations: int) -> tuple[float, np.ndarray | None]:
    """Iterate `var = measure(select(var))` (keep what noise of variance `var` makes flat, re-measure) to
    a relative change of 1e-3. Returns the variance and the last selection, None where a selection held
    fewer than `min_count` items (the variance is then the last one measured)."""
    keep = None
    for _ in range(iterations):
        keep = select(max(var, 1e-300))
        if len(keep) < min_count:
            return var, None
        new = measure(keep)
        done = abs(new - var) <= 1e-3 * abs(var)
        var = new
        if done:
            break
    return var, keep


def gaussian_sigma(frame: np.ndarray, iterations: int = 10, statistics: int | None = None,
                   clip: Clipping | None = None, censored: bool = True, readings: list | None = None) -> float:
    """Robust white-Gaussian noise standard deviation of one image, in its own units: the smaller of
    the estimates from 5x5 and 7x7 patches (texture only ever inflates them, and where one patch
    size finds no texture-free directions the other often does). Each keeps the patches that noise of the
    current level would make as flat (`_texture`), takes the trailing eigenvalues of their covariance
    (Chen et al. 2015) and corrects them for that selection and for the patches' number, as simulated on
    white noise; the level is iterated to its fixed point (Liu et al. 2013). Where the data are clipped (`clip`,
    else `detect_clipping` of the frame: an 8-bit floor or ceiling, a saturated detector) only patches whose mean lies
    `CLIP_MARGINS` noise standard deviations from every clipping level count: a clipped level is flat and noise near
    it is cut short (Set12 with sigma 50/255 saved as 8 bits read 31 % low without this); and with `censored`, the
    places on a clipping level say what they hold by a censored-normal fit (`_censored_sigma`), the smaller level
    kept, unless noise of the censored level leaves no flat patch clear of the levels (`_clear_at`), where it is
    taken (white noise only: a correlated model's reading of unit noise is the patches' alone). `readings` gets the
    patches' level, the censored fit's (None where it did not run) and the level taken appended."""
    if clip is None:
        clip = detect_clipping([frame])
    img, tiles = _spread(frame)
    if min(img.shape) < MIN_PCA_SIDE:  # too small for patch statistics: wavelet MAD (Donoho)
        hh = haar(img)[3]
        on = clip.mask(img)[: 2 * hh.shape[0], : 2 * hh.shape[1]].reshape(hh.shape[0], 2, hh.shape[1], 2).any((1, 3))
        hh = hh[~on] if not on.all() else hh.ravel()  # not the 2 x 2 blocks touching a clipping level
        return float(np.median(np.abs(hh - np.median(hh))) / 0.6744897501960817)
    statistics = statistics or _statistics(img)
    fits = [_patch_levels(img, d, iterations, statistics, clip, tiles) for d in PATCHES]
    sigma = min(_pca_sigma(at, clip.detected) for at in fits)
    cut = _censored_sigma(img, clip, tiles, sigma) if censored and clip.detected else None
    level = sigma if cut is None else min(sigma, cut)
    if cut is not None and cut > sigma and not _clear_at(fits, cut):
        level = cut  # every flat patch the patches' level found lies where the censored level's noise is cut short
    if readings is not None:
        readings.append((sigma, cut, level))
    return level


def _clear_at(fits: list[Callable[..., tuple[float, np.ndarray | None]]], sigma: float) -> bool:
    """Whether noise of level `sigma` leaves enough flat patches clear of the clipping levels, by the narrowest of
    `CLIP_MARGINS` measured in `sigma` at the least, for the patches' level to stand on. Where it leaves none, a
    lower patch level is no evidence against `sigma`: it comes from patches within `sigma`'s reach of a level, whose
    noise is cut short (BSD68 test028 as 8 bits at 50/255, 97 % of its clean image within one noise sd of 0 or 255:
    patches -34 %, the censored fit +0.0 %)."""
    return any(at(CLIP_MARGINS[-1], sigma**2)[1] is not None for at in fits)


# --- Gaussian sigma where the data sit on a clipping level ------------------------------------------

@dataclass
class _Cut:
    """Patches at a clipping level, each by what a censored-normal fit needs of it: how many of its pixels sit on the
    level (`n_cut`) and how many off it (`n_off`), and the sum and sum of squares of the latter's distances below the
    point where the noise is cut (`s1`, `s2`)."""

    n_cut: torch.Tensor
    n_off: torch.Tensor
    s1: torch.Tensor
    s2: torch.Tensor

    @classmethod
    def of(cls, z: torch.Tensor, cut: torch.Tensor) -> "_Cut":
        off = torch.where(cut, 0.0, z)
        return cls(cut.sum(1), (~cut).sum(1), off.sum(1), (off**2).sum(1))

    def __len__(self) -> int:
        return len(self.n_cut)

    def __getitem__(self, i) -> "_Cut":
        return _Cut(self.n_cut[i], self.n_off[i], self.s1[i], self.s2[i])


def _enough_off_level(n: np.ndarray | torch.Tensor, d2: int):
    """Which patches of `d2` pixels, `n` of them on a clipping level, the censored fit can take: at least three off
    it."""
    return n <= d2 - 3


def _censored_patches(img: np.ndarray, clip: Clipping, d: int, tiles: tuple[int | None, int | None]) -> _Cut:
    """The d x d patches whose frame of `CENSORED_RING` pixels has `CENSORED_SHARE` of its pixels on a clipping level
    and which `_enough_off_level` takes, the frame not touching a fill or a mosaic's seam, with each pixel's distance
    below the level where the noise is cut (0 for a pixel on it). The frame, not the patch, says where the data sit on
    the level, so that the choice leaves the patch's own noise as it is: chosen by its own pixels, a patch on a
    background one noise sd above an 8-bit floor, where a sixth of the pixels are cut, was one whose noise happened to
    reach the floor often, and the fit read 22-27 % high. On a lattice of whole numbers (`count_lattice`: 8-bit data,
    or 12-bit data scaled by 16) a value rounds onto the level from half a step short of it, so the noise is cut
    there."""
    lattice = count_lattice(img)
    half = lattice[0] / 2 if lattice else 0.0
    m = CENSORED_RING
    D = d + 2 * m
    if min(img.shape) < D:
        return _Cut.of(torch.zeros((0, d * d), dtype=torch.float64), torch.zeros((0, d * d), dtype=torch.bool))
    clear = ~sliding_window_view(clip.filled(img), (D, D)).any((-2, -1)).ravel()
    if tiles != (None, None):
        clear &= _within_tiles(img.shape, D, tiles)
    zs = [np.zeros((0, d * d))]
    for level, sign in ((clip.low, -1.0), (clip.high, 1.0)):
        if level is not None:
            z = sign * (img - level) + half
            on = (z >= half).astype(np.float64)
            n = _box_sum(on, d, d)[m:m + img.shape[0] - D + 1, m:m + img.shape[1] - D + 1]  # (the frames' centres)
            ring = _box_sum(on, D, D) - n
            keep = np.flatnonzero(clear & (ring >= math.ceil(CENSORED_SHARE * (D * D - d * d))).ravel()
                                  & _enough_off_level(n, d * d).ravel())
            rows, cols = np.divmod(keep, img.shape[1] - D + 1)
            zs.append(sliding_window_view(z, (d, d))[rows + m, cols + m].reshape(-1, d * d))
    z = torch.from_numpy(np.concatenate(zs))
    return _Cut.of(z, z >= half)


def _tobit_means(p: _Cut, sigma: float, start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each patch's most likely level `c` (its noise cut at 0: a pixel on the level says only that `c + noise >= 0`)
    for noise of standard deviation `sigma`, by Newton's method on the concave censored-normal (Tobit) likelihood
    from `start` (else the mean of the pixels off the level), and the patch's log-likelihood there."""
    c = p.s1 / p.n_off if start is None else start
    for _ in range(50):
        t = c / sigma
        # phi(t) / Phi(t), 0 below e^-80 (far above the cut), where subnormal numbers would slow it a hundredfold
        mills = torch.exp((-0.5 * t**2 - torch.special.log_ndtr(t)).clamp_min(-80.0)) / math.sqrt(2 * math.pi)
        grad = (p.s1 - p.n_off * c) / sigma**2 + p.n_cut * mills / sigma
        curv = -(p.n_off + p.n_cut * mills * (t + mills)) / sigma**2
        step = (grad / curv).clamp(-2 * sigma, 2 * sigma)
        c = c - step
        if float(step.abs().max()) < 1e-6 * sigma:
            break
    return c, -0.5 * _misfit(p, c, sigma) - p.n_off * math.log(sigma) + p.n_cut * torch.special.log_ndtr(c / sigma)


def _misfit(p: _Cut, c: torch.Tensor, sigma: float) -> torch.Tensor:
    """The squared distance of each patch's pixels off the level from its level `c`, in units of `sigma^2` (texture
    raises it above what flat noise gives)."""
    return (p.s2 - 2 * c * p.s1 + p.n_off * c**2) / sigma**2


def _tobit_sigma(p: _Cut, lo: float, hi: float) -> float:
    """The noise standard deviation in `[lo, hi]` most likely for the patches together, each at its own most likely
    level (golden-section search on the logarithm)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = math.log(lo), math.log(hi)
    c = None

    def f(x):
        nonlocal c
        c, ll = _tobit_means(p, math.exp(x), c)  # (from the last levels: the next sigma is close)
        return float(ll.sum())
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = f(x1), f(x2)
    while b - a > 1e-3:
        if f1 > f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = f(x2)
    return math.exp((a + b) / 2)


def _flat_censored(c: torch.Tensor, sigma: float, d2: int, generator: torch.Generator) -> _Cut:
    """Simulated flat patches of `d2` pixels at levels `c` with white noise `sigma`, cut at 0 as the data's are, kept
    as `_censored_patches` keeps patches (by their own pixels, `_enough_off_level`: its frame's share on the level
    leaves their noise as it is)."""
    z = c[:, None] + sigma * torch.randn(len(c), d2, generator=generator, dtype=torch.float64)
    cut = z >= 0
    ok = _enough_off_level(cut.sum(1), d2)
    return _Cut.of(z[ok], cut[ok])


def _flat_enough(p: _Cut, sigma: float, flat: _Cut, flat_sigma: float) -> torch.Tensor:
    """Which patches `p` lie no further from their levels (`_misfit`) than `KEEP_QUANTILE` of the `flat` ones with as
    many pixels on the level; none where fewer than 20 flat ones say."""
    r = _misfit(p, _tobit_means(p, sigma)[0], sigma)
    r_flat = _misfit(flat, _tobit_means(flat, flat_sigma)[0], flat_sigma)
    keep = torch.zeros(len(p), dtype=torch.bool)
    for k in torch.unique(p.n_cut):
        ref = r_flat[flat.n_cut == k]
        if len(ref) >= 20:
            at = p.n_cut == k
            keep[at] = r[at] <= torch.quantile(ref, KEEP_QUANTILE)
    return keep


def _censored_sigma(img: np.ndarray, clip: Clipping, tiles: tuple[int | None, int | None], start: float,
                    iterations: int = 6) -> float | None:
    """White-noise standard deviation from the places that sit on a clipping level (an 8-bit sky at 255, a background
    at an 8-bit floor), which the patch estimate leaves out (a margin from the level), so that on an image with few
    flat places elsewhere it read texture: each `_censored_patches` patch is a flat level under censored-normal noise
    (Tobit), the noise's level the most likely for them together, searched from the patch estimate `start` (the level
    where the data are not cut, or texture's above it). Patches whose pixels off the level lie further from their
    level than `KEEP_QUANTILE` of simulated flat ones (with as many pixels on it) are texture and left out; the
    bias of that choice and of each patch's own fitted level is measured on simulated flat patches at the kept levels
    and divided out, and the level iterated to its fixed point. None where fewer than `MIN_CENSORED_PATCHES` are kept.
    BSD68 test001 (a saturated sky) with 5 / 15 grey levels of noise as 8 bits: +1.7 / +1.8 % against the patch
    estimate's +45 / +13 %; on pure noise cut at a level, flat or a ramp across it, 8-bit or float, -1 to +3 % at
    2-20 grey levels (the 8-bit steps half a standard deviation at 2)."""
    d2 = CENSORED_SIDE**2
    p = _censored_patches(img, clip, CENSORED_SIDE, tiles)
    if len(p) < MIN_CENSORED_PATCHES or not start > 0:
        return None
    p = p[np.sort(_at_most(np.arange(len(p)), MAX_CENSORED_PATCHES, np.random.default_rng(0)))]
    gen = torch.Generator().manual_seed(0)
    sigma = _tobit_sigma(p, start / 16, 2 * start)
    for _ in range(iterations):
        flat = _flat_censored(_tobit_means(p, sigma)[0], sigma, d2, gen)
        keep = _flat_enough(p, sigma, flat, sigma)
        if int(keep.sum()) < MIN_CENSORED_PATCHES:
            return None
        raw = _tobit_sigma(p[keep], sigma / 2, sigma * 2)
        # the same choice and fit on flat patches at the kept levels: the ratio they read is the bias
        sim = _flat_censored(_tobit_means(p[keep], raw)[0], raw, d2, gen)
        sim = sim[_flat_enough(sim, raw, flat, sigma)]
        if len(sim) < MIN_CENSORED_PATCHES:
            return None
        new = raw * raw / _tobit_sigma(sim, raw / 2, raw * 2)
        done = abs(new - sigma) <= 1e-3 * sigma
        sigma = new
        if done:
            break
    return sigma


#: `gaussian_sigma` looks at frames up to this side whole; a larger one (per axis) through `SPREAD_TILES` tiles of
#: `SPREAD_SIDE / SPREAD_TILES` pixels spread evenly over it, its borders included (`_spread`)
SPREAD_SIDE, SPREAD_TILES = 768, 4


def _spread(frame: np.ndarray) -> tuple[np.ndarray, tuple[int | None, int | None]]:
    """`(mosaic, tiles)`: the frame (float64) where it fits in `SPREAD_SIDE`, else, along each longer axis,
    `SPREAD_TILES` tiles spread evenly from one border to the other, side by side; `tiles` gives each axis's tile side
    (None where the axis is whole), so that no patch is taken across a seam. A central crop of an MR slice (1024 x
    1024) held the head alone, textured everywhere: its few flat patches were those where the noise happened to be
    low, and white noise of 1-7 % of its range read -7.5 to +1.9 % (-0.7 to +2.0 % with the flat background
    round the head, three draws at each of three levels)."""
    f = np.asarray(frame)
    parts, tiles = [], []
    for axis, n in enumerate(f.shape[-2:]):
        if n <= SPREAD_SIDE:
            parts.append([np.arange(n)])
            tiles.append(None)
            continue
        t = SPREAD_SIDE // SPREAD_TILES
        starts = np.round(np.linspace(0, n - t, SPREAD_TILES)).astype(int)
        parts.append([np.arange(a, a + t) for a in starts])
        tiles.append(t)
    rows, cols = np.concatenate(parts[0]), np.concatenate(parts[1])
    return f[np.ix_(rows, cols)].astype(np.float64), (tiles[0], tiles[1])


def _within_tiles(shape: tuple[int, int], d: int, tiles: tuple[int | None, int | None]) -> np.ndarray:
    """Which d x d patches of a `_spread` mosaic of `shape` (by top-left corner, flattened) lie within one tile."""
    ok = [np.ones(n - d + 1, bool) if t is None else (np.arange(n - d + 1) % t) <= t - d
          for n, t in zip(shape, tiles)]
    return (ok[0][:, None] & ok[1][None, :]).ravel()


def _statistics(img: np.ndarray) -> int:
    """How many `_texture` statistics select flat patches: all three on larger images; on small ones their stricter
    selection leaves too few patches (64 x 64 smooth scene: -5.4 % against -1.9 % with the difference energy alone)."""
    return 3 if img.size >= STRICT_TEXTURE_PIXELS else 1


CORRELATED_FRAMES = 4  # frames (evenly spread) whose `gaussian_sigma` gives a correlated model's level,
CORRELATED_SIDE = 512  # each from its central crop this large (as the unit-noise simulation)


@cache
def _correlated_reading(kernel: tuple[tuple[float, ...], ...], statistics: int) -> float:
    """`gaussian_sigma` of unit-variance noise with this correlation kernel (simulated once per kernel)."""
    unit = Correlated(sigma=1.0, kernel=kernel)
    side = CORRELATED_SIDE
    n = unit.sample(torch.zeros(1, 1, side, side, dtype=torch.float64), generator=torch.Generator().manual_seed(7))
    return gaussian_sigma(n[0, 0].numpy(), statistics=statistics)


def correlated_sigma(frames: list[np.ndarray], kernel: tuple[tuple[float, ...], ...],
                     clip: Clipping | None = None) -> float:
    """Marginal sigma of stationary correlated Gaussian noise with this kernel, from the principal components
    of weakly textured patches: `gaussian_sigma` (median over up to `CORRELATED_FRAMES` frames; `clip`: the frames'
    clipping levels, else each frame's own) divided by its reading on unit-variance noise of the same correlation.
    The trailing eigenvalues hold the noise's highest frequencies, which correlation weakens, so the reading depends
    on the kernel's fine shape."""
    pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), CORRELATED_FRAMES)).round().astype(int))
    readings = []
    for i in pick:
        img = _crop(frames[i], CORRELATED_SIDE)
        if min(img.shape) < MIN_PCA_SIDE:
            continue
        k = _statistics(img)
        readings.append(gaussian_sigma(img, statistics=k, clip=clip, censored=False) / _correlated_reading(kernel, k))
    return float(np.median(readings)) if readings else float("inf")


PER_FRAME_SPREAD = 1.1  # a stack gets one sigma per frame when its frames' estimates differ by more than this factor
PER_FRAME_MAX = 256     # frames measured in a longer stack (evenly spread; the others interpolated)
PER_FRAME_SIDE = 512    # central crop measured per frame
#: relative standard deviation of `gaussian_sigma` on one frame, times the frame's side (measured on white
#: noise over a smooth scene: 0.047 at 32 px, 0.027 at 64, 0.012 at 128, 0.007 at 192)
SIGMA_PRECISION = 1.5


def per_frame(model: NoiseModel, frame_at: Callable[[int], np.ndarray], n: int,
              clip: Clipping | None = None) -> NoiseModel | PerFrame:
    """The noise of a stack of `n` frames (`frame_at(i)` reads frame i) whose white Gaussian level may
    change from frame to frame (tilt series, exposure series, bleaching): `gaussian_sigma` of every
    frame (at most `PER_FRAME_MAX`, evenly spread, the rest interpolated), and one model per frame
    when the largest is more than `PER_FRAME_SPREAD` times the smallest and their spread is over
    three times what estimating from frames of that size gives alone (small particle images give
    noisy estimates of one level); else `model` itself (also for any other kind of noise, whose
    per-file model stands). `clip`: the stack's clipping levels (its report's), else each frame's own."""
    if n < 2 or type(model) is not Gaussian:
        return model
    idx = np.unique(np.linspace(0, n - 1, min(n, PER_FRAME_MAX)).round().astype(int))
    crops = (repair_hot(central_crop(frame_at(int(i)), PER_FRAME_SIDE))[0] for i in idx)
    sig, sides = np.array([(gaussian_sigma(c, clip=clip), min(c.shape)) for c in crops]).T
    if not sig.min() > 0 or sig.max() <= PER_FRAME_SPREAD * sig.min() or \
            np.std(np.log(sig)) <= 3 * SIGMA_PRECISION / sides.min():
        return model
    return PerFrame(tuple(Gaussian(sigma=float(v)) for v in np.interp(np.arange(n), idx, sig)))


#: The Gaussian level given where none was found (a noise model's level must be positive).
NO_NOISE = 1e-12


def estimate_gaussian(frames: Iterable[np.ndarray], clip: Clipping | None = None,
                      readings: list | None = None) -> Gaussian:
    """One Gaussian sigma for a set of images: the median of per-image estimates (`clip`: the set's clipping levels,
    else each image's own; `readings`: `gaussian_sigma`'s)."""
    sigmas = [gaussian_sigma(f, clip=clip, readings=readings) for f in frames]
    if not sigmas:
        raise ValueError("no frames to estimate noise from")
    return Gaussian(sigma=max(float(np.median(sigmas)), NO_NOISE))


# --- clipping -------------------------------------------------------------------------------------

@dataclass
class Clipping:
    """Where the data saturates (None: not clipped), and the share of pixels sitting there."""

    low: float | None
    high: float | None
    fraction_low: float
    fraction_high: float
    #: the lowest value where it spikes as a floor does but too weakly to count as clipping (`_sparse_floor`): too few
    #: pixels to clip the fit's bins, enough to cut the darkest patches' noise
    sparse_low: float | None = None
    #: the values filling whole regions exactly (`_fills`: padding, a mask), and their share of the pixels: no noise
    #: there, so everything touching them is left out as a clipped level is (`mask`), without a margin (the data beside
    #: them are not cut short)
    fill: tuple[float, ...] = ()
    fraction_fill: float = 0.0

    @property
    def detected(self) -> bool:
        return self.low is not None or self.high is not None

    def mask(self, g: np.ndarray) -> np.ndarray:
        """Where `g` sits at a clipping level or holds a fill value."""
        at = np.zeros(g.shape, bool)
        if self.low is not None:
            at |= g <= self.low
        if self.high is not None:
            at |= g >= self.high
        return at | self.filled(g)

    def filled(self, g: np.ndarray) -> np.ndarray:
        """Where `g` holds a fill value."""
        return np.isin(g, self.fill)

    def to_dict(self) -> dict:
        return {"detected": self.detected, "low": self.low, "high": self.high,
                "fraction_low": self.fraction_low, "fraction_high": self.fraction_high, "sparse_low": self.sparse_low,
                "fill": list(self.fill), "fraction_fill": self.fraction_fill}


def _pile_up(values: np.ndarray, counts: np.ndarray, n: int) -> int | None:
    """Index of the last value of a pile-up among the `CLIP_DEPTH` most extreme values: one holding at least 0.1 %
    of the pixels and at least twice as many as the next value inwards, a drop at least twice the drop beyond it.
    The last condition tells a floor from the edge of a count distribution: a Poisson histogram (or a mixture of
    them, since k! P(k) is then log-convex) falls off towards zero by the ratio (k + 1) / lam, more steeply at each
    value outwards, so zeros of photon-counting data below a few photons per pixel are no floor; a clipped level
    gathers the whole tail beyond it into one value, a spike against the histogram's run inwards."""
    ratio = counts[:-1] / counts[1:]
    for i in range(min(CLIP_DEPTH, len(ratio))):
        beyond = ratio[i + 1] if i + 1 < len(ratio) else 0.0
        if counts[i] >= CLIP_MIN_FRACTION * n and ratio[i] >= 2 * max(1.0, beyond):
            return i
    return None


def histogram(crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `crops` (sorted) and how many pixels hold each."""
    return np.unique(np.concatenate([c.ravel() for c in crops]), return_counts=True)


#: Integer types whose limits mark a ceiling (or a signed floor) in data of whole numbers stored as floats.
STORAGE_TYPES = (np.uint8, np.int8, np.uint16, np.int16)


def storage_type(crops: list[np.ndarray], values: np.ndarray) -> np.dtype | None:
    """The crops' common dtype (None where they differ), or for floats that hold whole numbers only (`values`, their
    distinct values, ascending) the first of `STORAGE_TYPES` that holds them all: integer data converted to float (an
    8-bit frame saved as float32 by an image editor) keep the limit they were clipped at, so the same frame reads the
    same model in either container (FMD BPAE_G as float32 lost its 255 ceiling, and its gain read 3.60 where the
    uint8 file reads 4.35; 4.05 against its 50-frame average)."""
    kinds = {c.dtype for c in crops}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    if np.issubdtype(kind, np.floating) and len(values) and np.isfinite(values[[0, -1]]).all() \
            and bool((values == np.round(values)).all()):
        for t in STORAGE_TYPES:
            info = np.iinfo(t)
            if info.min <= values[0] and values[-1] <= info.max:
                return np.dtype(t)
    return kind


def detect_clipping(frames: list[np.ndarray], hist: tuple[np.ndarray, np.ndarray] | None = None) -> Clipping:
    """A level is clipped where pixels pile up among the four lowest (highest) values (`_pile_up`: an 8-bit floor
    or a saturated detector, not the zeros of photon counts), or, for integer data (`storage_type`: also whole numbers
    stored as floats), where any share of pixels (1e-5) sits on the type's limit (255 for uint8; not an unsigned
    type's 0, where photon counts start). Looks at the central crops the estimators use (`hist`: their `histogram`,
    where the caller has it). Frames pooled from several files are also looked at one by one, and the highest floor
    and lowest ceiling any frame shows alone hold for all (`_levels_of_each`)."""
    crops = [central_crop(f) for f in frames]
    values, counts = hist if hist is not None else histogram(crops)
    n = int(counts.sum())
    (lo, f_lo), (hi, f_hi) = _levels(crops, values, counts, n)
    if len(crops) > 1:  # frames pooled from several files: each one's own levels too
        lo, hi = _levels_of_each(crops, n, lo, hi, _median(values, counts))
        f_lo = float(counts[values == lo].sum()) / n if lo is not None else f_lo
        f_hi = float(counts[values == hi].sum()) / n if hi is not None else f_hi
    fills = [(v, share) for v, share in _fills(crops, values, counts) if v not in (lo, hi)]
    return Clipping(low=lo, high=hi, fraction_low=f_lo, fraction_high=f_hi,
                    sparse_low=float(values[0]) if lo is None and _sparse_floor(counts, n) else None,
                    fill=tuple(v for v, _ in fills), fraction_fill=float(sum(share for _, share in fills)))


def _levels_of_each(crops: list[np.ndarray], n: int, lo: float | None, hi: float | None, median: float) -> tuple:
    """The floor `lo` and ceiling `hi` of the crops' pooled histogram, raised (lowered) to the highest floor (lowest
    ceiling) any crop shows alone, held to the pool's thresholds (`n`, its pixel count: a floor of 0.1 % of the pool,
    not of one frame) and, as every level, on its side of the pool's `median` (a frame in other units clips none of
    the others: an 8-bit frame's floor at 4 beside its copy scaled to 0-1). Frames clipped at different levels spread
    their pile-ups over several values, none of which stands out in the pool: four FMD frames floored at 3 or 4
    pooled showed no floor, the fit took the floor's narrowed noise for the data's darkest variance, and the pooled
    gain read 2.55 where each frame's read 4.0-5.1 (3.6-4.9 since `_uncensored_floor`)."""
    for c in crops:
        (c_lo, _), (c_hi, _) = _levels([c], *histogram([c]), n)
        if c_lo is not None and c_lo <= median and (lo is None or c_lo > lo):
            lo = c_lo
        if c_hi is not None and c_hi >= median and (hi is None or c_hi < hi):
            hi = c_hi
    return lo, hi


def _median(values: np.ndarray, counts: np.ndarray) -> float:
    """The median of a histogram (`values` ascending, `counts` of each)."""
    return values[np.searchsorted(np.cumsum(counts), counts.sum() / 2)]


def _levels(crops: list[np.ndarray], values: np.ndarray, counts: np.ndarray, n: int) -> list[tuple]:
    """`[(floor, share), (ceiling, share)]` of the crops' histogram (`values`, `counts`; a level None where not
    clipped, its share then the extreme value's), with `n` pixels the scale of the least share that counts."""
    kind = storage_type(crops, values)
    ends = []
    k = CLIP_DEPTH + 2
    median = _median(values, counts)
    for vals, cnts, inside in ((values[:k], counts[:k], np.less_equal), (values[::-1][:k], counts[::-1][:k],
                                                                       np.greater_equal)):
        i = _pile_up(vals, cnts, n)
        # a level clips the tail of the data, never lies beyond their median: at 0.02-0.05 photons per pixel (a counting
        # camera's frame) the few pixels on 1 or 2, with the values beyond all but empty, passed for a floor there, and
        # leaving out every patch touching it left none
        i = i if i is not None and inside(vals[i], median) else None
        if i is None and kind is not None and np.issubdtype(kind, np.integer) and cnts[0] >= 1e-5 * n:
            info = np.iinfo(kind)  # an unsigned type's 0 is where counts start: a floor there must pile up
            i = 0 if vals[0] == info.max or (vals[0] == info.min and info.min < 0) else None
        ends.append((float(vals[i]), float(cnts[i]) / n) if i is not None else (None, float(cnts[0]) / n))
    return ends


#: Least share of the pixels a fill value (`_fills`) holds; the least share of them whose four neighbours hold it too,
#: and the most of the other pixels that may touch it; how many of the most frequent values are tried.
FILL_FRACTION = 0.01
FILL_INTERIOR = 0.5
FILL_BORDER = 0.25
FILL_CANDIDATES = 3


def _fills(crops: list[np.ndarray], values: np.ndarray, counts: np.ndarray) -> list[tuple[float, float]]:
    """`(value, share)` of each value that fills whole regions exactly, as zero padding round an aligned or rotated
    image, a masked background or a mean-filled border do (two paddings, one inside the other, too): of the
    `FILL_CANDIDATES` most frequent values, those that hold at least `FILL_FRACTION` of the pixels, at least
    `FILL_INTERIOR` of them inside its regions (their four neighbours hold it too), while at most `FILL_BORDER` of
    the other pixels touch it (they lie beyond a border, not scattered through it). The flattest patches are such
    regions', so they read the noise as 0. Sparse counts' zeros (nearly every count touches them) and the repeats of
    noise on a lattice (few have four equal neighbours) are no fill."""
    n = int(counts.sum())
    top = np.argsort(counts, kind="stable")[::-1][:FILL_CANDIDATES]
    return [f for f in (_fill(crops, values[i], counts[i] / n) for i in top if counts[i] >= FILL_FRACTION * n)
            if f is not None]


def _fill(crops: list[np.ndarray], v, share: float) -> tuple[float, float] | None:
    """`(v, share)` where `v` passes `_fills`' spatial tests, else None."""
    inside = on = touching = others = 0
    for c in crops:
        at = np.asarray(c) == v
        p = np.pad(at, 1, mode="edge")
        around = np.stack([p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        inside += int((at & around.all(0)).sum())
        on += int(at.sum())
        touching += int((~at & around.any(0)).sum())
        others += int((~at).sum())
    if not others or inside < FILL_INTERIOR * on or touching > FILL_BORDER * others:
        return None
    return float(v), float(share)


def _sparse_floor(counts: np.ndarray, n: int) -> bool:
    """Whether the lowest value (`counts` of the distinct values, ascending) holds at least `SPARSE_FLOOR_FRACTION` of
    the `n` pixels and `SPARSE_FLOOR_RATIO` times the next value's count while the counts rise beyond: a spike that
    the edge of a histogram does not make by itself (it rises inwards from its lowest value, or for counts below a
    photon falls all the way), too weak for `_pile_up` (a smooth scene at 2-100 photons as 8 bits: 0.07 % of the
    pixels on 0, 1.6-2.2 times as many as on 1, then rising). It only keeps the fit's line from its patch groups, so a
    false one (counts of a dark background beside brighter objects can fall and then rise) costs little."""
    return len(counts) >= 3 and counts[0] >= SPARSE_FLOOR_FRACTION * n and \
        counts[0] >= SPARSE_FLOOR_RATIO * counts[1] and counts[1] <= counts[2]


# --- mean-variance --------------------------------------------------------------------------------

@dataclass
class _Places:
    """Per finest-Haar position: local mean, texture, squared HH, touches-clipping, half (0/1)."""

    mean: np.ndarray
    texture: np.ndarray
    hh2: np.ndarray
    clipped: np.ndarray
    half: np.ndarray


def _places(frames: list[np.ndarray], clip: Clipping, block: int = 16) -> _Places:
    parts = []
    for f in frames:
        g = _crop(f)
        ll, lh, hl, hh = haar(g)
        mean = _box_mean_same(ll / 2, 4)  # 8 x 8 pixel local mean
        texture = _box_mean_same(lh**2 + hl**2, TEXTURE_BOX)
        a = clip.mask(g)[: ll.shape[0] * 2, : ll.shape[1] * 2]
        # the 2x2 block itself touches a clipping level (bins near one are dropped later)
        clipped = a[0::2, 0::2] | a[0::2, 1::2] | a[1::2, 0::2] | a[1::2, 1::2]
        r, c = np.indices(ll.shape)
        half = ((r // block + c // block) % 2).astype(np.int8)
        parts.append((mean, texture, hh**2, clipped, half))
    return _Places(*(np.concatenate([p[i].ravel() for p in parts]) for i in range(5)))


@dataclass
class MeanVarianceFit:
    slope: float
    intercept: float
    cov: np.ndarray           # 2 x 2 covariance of (slope, intercept)
    r2: float                 # weighted R^2 of the line on the bins it was fitted to (used, not texture)
    r2_heldout: float         # R^2 of the same line on bins from the held-out half
    bin_mean: np.ndarray
    bin_var: np.ndarray       # marginal noise variance per bin (HH corrected for correlation)
    bin_count: np.ndarray
    bin_used: np.ndarray      # False for bins too near a clipping level
    bin_texture: np.ndarray   # True for used bins the line left out as lifted by texture (`_wls`)
    heldout_mean: np.ndarray
    heldout_var: np.ndarray
    mean_lo: float            # 10th / 90th percentile of the local means fitted
    mean_hi: float
    data_lo: float            # 10th / 90th percentile of every unclipped local mean: the data's brightness range
    data_hi: float

    @property
    def slope_se(self) -> float:
        return float(np.sqrt(max(self.cov[0, 0], 0.0)))

    @property
    def intercept_se(self) -> float:
        return float(np.sqrt(max(self.cov[1, 1], 0.0)))

    def predict(self, mean):
        return self.slope * np.asarray(mean) + self.intercept

    def predict_se(self, mean: float) -> float:
        """Standard error of the fitted variance at brightness `mean`."""
        g = np.array([mean, 1.0])
        return float(np.sqrt(max(g @ self.cov @ g, 0.0)))

    @property
    def darkest_variance(self) -> float:
        """The fitted variance at the darkest bin fitted."""
        return float(self.predict(np.nanmin(self.bin_mean[self.bin_used])))

    def to_dict(self) -> dict:
        return {"slope": self.slope, "slope_se": self.slope_se, "intercept": self.intercept,
                "intercept_se": self.intercept_se, "r2": self.r2,
                "r2_heldout": self.r2_heldout,
                "bins": [{"mean": float(m), "variance": float(v), "count": int(n), "used": bool(u), "texture": bool(t)}
                         for m, v, n, u, t in zip(self.bin_mean, self.bin_var, self.bin_count, self.bin_used,
                                                  self.bin_texture)]}


# --- per-brightness principal components (white noise) -------------------------------------------

RING = 2               # width of the frame around a patch whose flatness selects it
RING_QUANTILE = 0.5    # keep patches whose frame is flatter than noise alone makes it half of the time
SITE_STRIDE = 2        # patch positions on every other row and column
MAX_BIN_PATCHES = 20_000
MIN_BIN_SITES = 2000   # patch positions in a brightness bin, at the least
SITE_BLOCK = 32        # checkerboard blocks (pixels) that split the area into a fitted and a held-out half


@dataclass
class _Sites:
    """d x d patch positions of all frames: frame index, top-left corner, the patch mean, the mean and the
    gradient energy of the ring around it, whether it touches a clipping level, and its half (0/1)."""

    d: int
    images: list[np.ndarray]
    frame: np.ndarray
    row: np.ndarray
    col: np.ndarray
    mean: np.ndarray
    ring_mean: np.ndarray
    ring: np.ndarray
    clipped: np.ndarray
    half: np.ndarray
    basis: np.ndarray | None = None  # d*d x k: the directions in which patches hold noise alone
    acf: np.ndarray | None = None  # the noise's normalised autocorrelation (None: white)
    basis_factor: float = 1.0  # the noise variance in `basis` relative to the marginal one (`set_basis`)

    @property
    def ring_factor(self) -> float:
        """Expected ring gradient energy of the noise relative to white noise of the same variance."""
        return 1.0 if self.acf is None else max(1 - (self.acf[LAGS, LAGS + 1] + self.acf[LAGS + 1, LAGS]) / 2, 0.05)

    def set_basis(self, basis: np.ndarray | None) -> None:
        """Take the noise-only directions, and the share of the marginal noise variance they hold: 1 for white noise,
        else the mean of `b' C b` over the basis vectors, C the d x d patch correlation the acf gives."""
        self.basis, self.basis_factor = basis, 1.0
        if self.acf is not None and basis is not None:
            c = _patch_correlation(self.acf, self.d)
            self.basis_factor = max(float(np.einsum("ik,ij,jk->", basis, c, basis)) / basis.shape[1], 0.02)

    def patches(self, idx: np.ndarray) -> np.ndarray:
        return np.concatenate([sliding_window_view(self.images[k], (self.d, self.d))[self.row[i], self.col[i]]
                               .reshape(-1, self.d * self.d) for k in np.unique(self.frame[idx])
                               for i in [idx[self.frame[idx] == k]]])


def _patch_correlation(acf: np.ndarray, d: int) -> np.ndarray:
    """The correlation matrix of noise of normalised autocorrelation `acf` (lags up to `LAGS`) over a d x d patch."""
    r, c = np.divmod(np.arange(d * d), d)
    dr, dc = r[:, None] - r[None, :], c[:, None] - c[None, :]
    inside = (abs(dr) <= LAGS) & (abs(dc) <= LAGS)
    return np.where(inside, acf[np.clip(dr + LAGS, 0, 2 * LAGS), np.clip(dc + LAGS, 0, 2 * LAGS)], 0.0)


def _ring_energy(img: np.ndarray, d: int, m: int = RING) -> np.ndarray:
    """Gradient energy of the m-wide frame around every d x d patch that has one (differences touching
    the patch left out), indexed by the patch's top-left corner minus (m, m)."""
    D = d + 2 * m
    dx, dy = np.diff(img, axis=1) ** 2, np.diff(img, axis=0) ** 2
    nr, nc = img.shape[0] - D + 1, img.shape[1] - D + 1
    outer = _box_sum(dx, D, D - 1)[:nr, :nc] + _box_sum(dy, D - 1, D)[:nr, :nc]
    inner = _box_sum(dx, d, d + 1)[m : m + nr, m - 1 : m - 1 + nc] + _box_sum(dy, d + 1, d)[m - 1 : m - 1 + nr, m : m + nc]
    return outer - inner


@cache
def _ring_threshold(d: int) -> float:
    """RING_QUANTILE of the ring energy of unit white noise (simulated once)."""
    n = np.random.default_rng(1234).standard_normal((512, 512))
    return float(np.quantile(_ring_energy(n, d), RING_QUANTILE))


def _sites(images: list[np.ndarray], clip: Clipping, d: int) -> _Sites | None:
    parts, any_clear = [], False
    for k, g in enumerate(images):
        if min(g.shape) < d + 2 * RING + 8:
            continue
        ring = _ring_energy(g, d)[::SITE_STRIDE, ::SITE_STRIDE]
        r, c = np.indices(ring.shape)
        r, c = r * SITE_STRIDE + RING, c * SITE_STRIDE + RING
        inner = _box_sum(g, d, d)[r, c]
        D = d + 2 * RING
        ring_mean = (_box_sum(g, D, D)[r - RING, c - RING] - inner) / (D * D - d * d)
        clipped = _box_sum(clip.mask(g).astype(np.float64), d, d)[r, c] > 0
        half = (r // SITE_BLOCK + c // SITE_BLOCK) % 2
        parts.append((np.full(r.size, k, np.int32), r.ravel().astype(np.int32), c.ravel().astype(np.int32),
                      inner.ravel() / (d * d), ring_mean.ravel(), ring.ravel(), clipped.ravel(),
                      half.ravel().astype(np.int8)))
        any_clear = any_clear or not clipped.all()
    if not any_clear:  # (no site, or every one touching a clipping level)
        return None
    return _Sites(d, images, *(np.concatenate([p[i] for p in parts]) for i in range(8)))


def _site_variance(s: _Sites, idx: np.ndarray, rng: np.random.Generator, energies: list | None = None) -> float:
    """Noise variance of the patches at sites `idx`: their mean square in the noise-only directions
    `s.basis` (unbiased, with the precision of all those directions' samples), or where there is no
    basis the trailing eigenvalues of their own covariance, corrected for their spread. `energies`, a list, receives
    the `_site_energies` averaged (None without a basis)."""
    idx = _at_most(idx, MAX_BIN_PATCHES, rng)
    measured = _site_energies(s, idx) if s.basis is not None else None
    if energies is not None:
        energies[:] = [measured]
    if measured is not None:
        return float(measured[1].mean())
    return _pca_variance(s.patches(idx)) / _sample_shrink(len(idx), s.d * s.d)


#: A site whose noise-only energy exceeds this many times its bin's median holds an outlier, not noise
#: (`_site_energies`): with k noise-only directions noise reaches it with the chance that chi-square with k degrees
#: of freedom exceeds 12k (k = 4: 1e-8). Hot pixels at one in a thousand, 10 / 20 / 30 noise sd high at the mean
#: brightness, put a Poisson-Gaussian gain -2..+4 / -8..+22 / -15..+44 % off untrimmed, +6..+8 / +3..+7 / +1 % at
#: 12 (the dark bins, where the same excess is more sd, lose more of them than the bright ones); at 5 the low counts'
#: own skewed tails were cut (0.05-0.6 photons: the line's gain 6 % low).
SITE_OUTLIER = 12.0
#: Only where the energies' bulk has chi-square's shape, their quartiles within these shares of their median (four
#: degrees of freedom: 0.57 and 1.60, ten: 0.72 and 1.34): at 0.05-0.6 photons per pixel most patches hold no count
#: or one, the energies are skewed, and trimming cut up to half a bin's sites and put the line's gain 24 % low.
SITE_BULK = (0.4, 1.8)


def _site_energies(s: _Sites, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(idx, energy)`: the sites `idx` (reordered by frame, as `patches` reads them) and each one's noise variance
    from its patch alone, its mean square in the noise-only directions (about the sites' mean patch), corrected so
    that their average is unbiased; without the sites over `SITE_OUTLIER` times their median (where `SITE_BULK`
    says the energies look like noise's). The ring that selects a site does not see inside its patch, so a hot pixel
    there passed (one in a thousand, 60 noise sd high, put a Poisson-Gaussian image's gain at 2.1x; now within 1 %,
    as the Haar bins' line)."""
    idx = idx[np.argsort(s.frame[idx], kind="stable")]
    p = s.patches(idx)
    z = (p - p.mean(0)) @ s.basis
    e = (z**2).sum(1) * (len(p) / ((len(p) - 1) * z.shape[1] * s.basis_factor))
    q1, med, q3 = np.quantile(e, [0.25, 0.5, 0.75]) if len(e) else (0.0, 0.0, 0.0)
    if not (q1 >= SITE_BULK[0] * med and q3 <= SITE_BULK[1] * med):  # not chi-square's shape: few counts per
        return idx, e  # pixel, their energies skewed
    keep = e <= SITE_OUTLIER * med
    return idx[keep], e[keep]


def _noise_basis(s: _Sites, ok: np.ndarray, start, rng: np.random.Generator) -> np.ndarray | None:
    """The directions of d x d patch space that hold noise alone: the trailing eigenvectors (Chen's
    test, `_tail_start`) of the covariance of flat patches from every brightness, each patch
    divided by its predicted noise level `sqrt(start(ring mean))` so that all brightnesses weigh alike.
    Texture and edges live in the leading (smooth) directions of natural scenes, the same at every
    brightness, so one basis serves every bin and a bin's variance needs no eigenvalues of its own
    (whose spread over a few hundred patches made bins scatter by 5-15 %)."""
    shape = start(s.ring_mean)
    i = np.flatnonzero(ok & (s.ring < _ring_threshold(s.d) * s.ring_factor * shape))
    if len(i) < 20 * s.d * s.d:
        return None
    i = np.sort(_at_most(i, MAX_PATCHES // 4, rng))
    p = s.patches(i) / np.sqrt(shape[i])[:, None]
    p = p - p.mean(0)
    lam, vec = np.linalg.eigh(p.T @ p / len(p))
    lam, vec = lam[::-1], vec[:, ::-1]  # descending, as `_tail_start` takes them
    return vec[:, _tail_start(lam):]


#: Mean `_trailing_mean` of the sample covariance of n = 2^7 ... 2^17 independent unit Gaussian vectors
#: of 25 and 49 entries (simulated, standard error 0.001; `_simulated_shrink` recomputes any entry):
#: with few samples the smallest eigenvalues spread below the true variance (Marchenko-Pastur).
SAMPLE_SHRINK = {
    25: (0.7084, 0.8468, 0.9207, 0.9546, 0.9747, 0.9831, 0.9893, 0.9937, 0.9960, 0.9975, 0.9981),
    49: (0.4283, 0.6889, 0.8395, 0.9197, 0.9591, 0.9784, 0.9897, 0.9930, 0.9950, 0.9971, 0.9989),
}


def _sample_shrink(n: int, dim: int) -> float:
    """`SAMPLE_SHRINK` interpolated in log2(n) (17 % for 500 7x7 patches, 2 % for 4000)."""
    table = SAMPLE_SHRINK.get(dim)
    if table is None:
        return _simulated_shrink(round(2 ** (round(4 * np.log2(n)) / 4)), dim)
    return float(np.interp(np.log2(n), np.arange(7, 7 + len(table)), table))


@cache
def _simulated_shrink(n: int, dim: int, reps: int | None = None) -> float:
    rng = np.random.default_rng(n)
    return float(np.mean([_pca_variance(rng.standard_normal((n, dim))) for _ in range(reps or max(8, 2_000_000 // n))]))


def _pca_binned(sites: list[_Sites], sel: list[np.ndarray], edges: np.ndarray, start, kept: list | None = None):
    """Per brightness bin: mean, noise variance and count of the patches used. For each patch size the
    variance starts from the model `start(ring mean)` and is iterated: patches whose surrounding ring is flat
    for noise of the current variance (scaled to each patch's brightness, its ring's mean, by `start`) are kept and
    their variance (`_site_variance`) gives the next one. Sites are binned by their ring's mean and the bin's
    brightness is the mean of its patches' means. The ring does not overlap the patch, so for
    independent noise selecting or binning on it does not bias the patch's noise; texture inside the patch lies
    mostly outside the noise-only directions. Scaling the threshold per patch keeps the selection from drifting
    to the darker (quieter) patches of a bin. The smaller of the patch sizes' estimates is kept
    (texture only inflates them). `kept`, a list, receives each bin's `(sites, site indices, energies)`, the
    `_site_energies` its variance was measured from (None where empty or without a noise basis)."""
    nb = len(edges) - 1
    mu, var, cnt = np.full(nb, np.nan), np.full(nb, np.nan), np.zeros(nb, int)
    found = [None] * nb
    rng = np.random.default_rng(0)
    for s, ok in zip(sites, sel):
        which = np.searchsorted(edges, s.ring_mean, side="right") - 1
        shape = start(s.ring_mean)  # each site's predicted variance
        for b in range(nb):
            i = np.flatnonzero(ok & (which == b))
            if len(i) < 10 * s.d * s.d:
                continue
            level = float(shape[i].mean())
            v, j, energies = _bin_variance(s, i, level, shape[i] / level, rng)
            if j is not None and v > 0 and (np.isnan(var[b]) or v < var[b]):
                mu[b], var[b], cnt[b] = s.mean[j].mean(), v, len(j)
                found[b] = (s, *energies) if energies is not None else None
    if kept is not None:
        kept[:] = found
    return mu, var, cnt


def _bin_variance(s: _Sites, i: np.ndarray, start: float, scale: np.ndarray, rng: np.random.Generator):
    """The fixed point of ring selection and measurement over the sites `i` of one bin (a site is flat
    when its ring energy is below the threshold for noise of variance `v * scale`), the sites kept, and the
    `_site_energies` of the last measurement, of those sites (None where there are none, or no noise basis)."""
    thr = _ring_threshold(s.d) * s.ring_factor * scale
    last = [None]
    v, j = _fixed_point(start, lambda v: i[s.ring[i] < thr * v], lambda j: _site_variance(s, j, rng, last),
                        10 * s.d * s.d, 8)
    return v, j, last[0] if j is not None else None


#: 99th percentile of chi^2_32 / 32: the texture statistic (mean of 32 squared detail coefficients
#: over a 4 x 4 neighbourhood) of pure white noise, relative to its expectation, stays below it.
TEXTURE_LIMIT = 1.7
TEXTURE_BOX = 4


def _binned(pl: _Places, sel: np.ndarray, edges: np.ndarray, hh_factor: float, texture_factor: float):
    """Per brightness bin: mean, marginal noise variance and count of the places used.

    A bin starts from the smoothest 10 % of its places (a robust first variance), then keeps only
    places whose detail energy LH^2 + HL^2 is what noise of that variance alone would give (below
    the 99th percentile): texture is rejected place by place, and as the LH/HL noise is independent
    of HH the mean of HH^2 over the places kept stays unbiased, for any noise distribution."""
    which = np.clip(np.searchsorted(edges, pl.mean[sel], side="right") - 1, 0, len(edges) - 2)
    idx = np.flatnonzero(sel)
    mu, var, cnt = np.full(len(edges) - 1, np.nan), np.full(len(edges) - 1, np.nan), np.zeros(len(edges) - 1, int)
    for b in range(len(edges) - 1):
        i = idx[which == b]
        if len(i) < 64:
            continue
        t = pl.texture[i]
        k = max(16, int(SMOOTH_FRACTION * len(i)))
        v = _trimmed_var(pl.hh2[i[np.argpartition(t, k - 1)[:k]]])
        j = i
        for _ in range(4):
            j = i[t < TEXTURE_LIMIT * 2 * texture_factor * v]
            if len(j) < 16:
                break
            v = float(pl.hh2[j].mean())
        if len(j) < 16 or v <= 0:
            continue
        mu[b], var[b], cnt[b] = pl.mean[j].mean(), v / hh_factor, len(j)
    return mu, var, cnt


#: Mean of z^2 over its lower 90 % (z ~ N(0, 1)): (0.9 - 2 t phi(t)) / 0.9 with t = Phi^-1(0.95).
CHI2_1_TRIMMED90 = 0.6230166


def _trimmed_var(sq: np.ndarray) -> float:
    """Noise variance from squared zero-mean samples, ignoring the largest 10 % (residual edges).
    Unlike a median it stays right for low-count integer data, whose squares are mostly zero."""
    k = int(0.9 * sq.size)
    return float(np.partition(sq, k - 1)[:k].mean() / CHI2_1_TRIMMED90)


#: standard errors (each bin's `var * sqrt(2 / cnt)`, scaled by the bins' robust scatter where that is larger) above
#: the line beyond which a bin is taken for texture's and left out of it: texture only inflates a bin, and on natural
#: images it does so at the brightness of one image's textured region (Set12 at 1-1000 photons: one bin 1.56x the
#: true variance, the gain 12.6 % high; without such bins 8.4 %)
TEXTURE_BIN_Z = 3.0


def _wls(mu, var, cnt) -> tuple[float, float, np.ndarray]:
    """Weighted least-squares line `(slope, intercept, kept)` through the bins, then again without the bins lying
    more than `TEXTURE_BIN_Z` standard errors above it (up to three rounds, at least three bins kept; five bins or more
    to start); `kept` marks the bins the line was fitted to."""
    a, b = _wls_line(mu, var, cnt)
    keep = np.ones(len(mu), bool)
    for _ in range(3 if len(mu) > 4 else 0):
        pred = np.maximum(a * mu + b, 1e-300)
        z = (var - pred) / (pred * np.sqrt(2 / np.maximum(cnt, 1)))
        z = z / max(1.0, 1.4826 * float(np.median(np.abs(z[keep] - np.median(z[keep])))))
        new = keep & (z < TEXTURE_BIN_Z)
        if new.sum() < 3 or (new == keep).all():
            break
        keep = new
        a, b = _wls_line(mu[keep], var[keep], cnt[keep])
    return a, b, keep


def _wls_line(mu, var, cnt):
    w = cnt / np.maximum(var, 1e-300) ** 2
    A = np.stack([mu, np.ones_like(mu)], 1) * np.sqrt(w)[:, None]
    a, b = np.linalg.lstsq(A, var * np.sqrt(w), rcond=None)[0]
    return float(a), float(b)


def _fit_covariance(mu, var, cnt) -> np.ndarray:
    """Covariance of the WLS slope and intercept, taking each bin's variance as a mean of `cnt`
    squared Gaussian coefficients (its variance `2 var^2 / cnt`), inflated by the bins' scatter about
    the line where that exceeds it (texture and selection vary from bin to bin)."""
    w = cnt / (2 * np.maximum(var, 1e-300) ** 2)
    A = np.stack([mu, np.ones_like(mu)], 1)
    cov = np.linalg.pinv(A.T @ (A * w[:, None]))
    a, b = cov @ (A.T @ (w * var))
    if len(mu) > 2:
        cov = cov * max(1.0, float(np.sum(w * (var - a * mu - b) ** 2)) / (len(mu) - 2))
    return cov


#: groups each line bin's kept patches are split into, by their rings' mean, for the final line (`_refined_line`)
SUB_BINS = 32


def _sub_bins(kept: list, bins: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray | None:
    """Rows `(mean, variance, count, bin mean, bin variance)`: the kept patches of each of the bins `bins` split into
    `SUB_BINS` groups by their rings' mean, each group's mean patch mean and mean `_site_energies`, with the mean and
    variance of the bin it lies in. The ring does not overlap the patch, so grouping on it, as binning on it, leaves
    each group's mean and variance unbiased (grouped on their own noisy means the shot noise's skew tilts them: the
    gain ran 14 % low at 0.2-3 photons). The energies are those the bin's variance was measured from
    (`_pca_binned`'s `kept`). None where a bin has no noise-only directions."""
    rows = []
    for b in bins:
        if kept[b] is None:
            return None
        s, j, e = kept[b]
        group = np.argsort(np.argsort(s.ring_mean[j], kind="stable"), kind="stable") * SUB_BINS // len(j)
        n = np.bincount(group, minlength=SUB_BINS)
        rows.append(np.stack([np.bincount(group, s.mean[j], SUB_BINS) / n, np.bincount(group, e, SUB_BINS) / n, n,
                              np.full(SUB_BINS, mu[b]), np.full(SUB_BINS, var[b])], 1))
    return np.concatenate(rows)


def _refined_line(rows: np.ndarray, a: float, b: float) -> tuple[float, float, np.ndarray]:
    """`(slope, intercept, covariance)` of the line through the sub-bins `rows` (`_sub_bins`), by iteratively reweighted
    least squares from the bins' line `a, b`. A bin's variance comes from the average brightness of its patches, so
    where a wide dark bin spans most of the leverage on the intercept its spread of brightness is lost; its groups keep
    it (a smooth scene at 1-1000 and 10-1000 photons, twelve draws: the read noise's rms error 14.8 -> 3.9 % and
    15.4 -> 12.5 %, against Cramer-Rao bounds of 3.6 and 6 %). Each group is weighted by its count over the square of
    its predicted variance, scaled to its bin's measured variance as the bins' own fit (`_wls`) weights them, so that
    a bin texture lifts weighs less; the covariance is that of the weighted fit, inflated by the groups' scatter about
    the line where that exceeds it (`_fit_covariance`)."""
    m, v, n, bin_m, bin_v = rows.T
    A = np.stack([m, np.ones_like(m)], 1)
    floor = 1e-3 * float(np.median(bin_v))

    def weights(a, b):  # (the inverse of each group's expected variance, up to a factor 2)
        return n / np.maximum((a * m + b) * bin_v / np.maximum(a * bin_m + b, floor), floor) ** 2

    for _ in range(10):
        w = np.sqrt(weights(a, b))
        new_a, new_b = np.linalg.lstsq(A * w[:, None], v * w, rcond=None)[0]
        done = abs(new_a - a) <= 1e-6 * abs(a) and abs(new_b - b) <= 1e-6 * (abs(b) + abs(a) * float(np.median(m)))
        a, b = float(new_a), float(new_b)
        if done:
            break
    w = weights(a, b) / 2
    cov = np.linalg.pinv(A.T @ (A * w[:, None]))
    return a, b, cov * max(1.0, float(np.sum(w * (v - a * m - b) ** 2)) / (len(m) - 2))


def _r2(mu, var, cnt, a, b) -> float:
    w = cnt / np.maximum(var, 1e-300) ** 2
    ss_res = np.sum(w * (var - (a * mu + b)) ** 2)
    ss_tot = np.sum(w * (var - np.average(var, weights=w)) ** 2)
    return float(1 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def mean_variance(frames: list[np.ndarray], clip: Clipping | None = None, acf: np.ndarray | None = None,
                  _places_cache: _Places | None = None, patches: bool = True) -> MeanVarianceFit:
    """Fit `Var = slope * mean + intercept` (see the module docstring). The bins' variances come from principal
    components of patches (`_pca_binned`, robust to texture), started from the Haar fit (alone with `patches`
    False); with `acf` (correlated noise) both are corrected for the correlation."""
    clip = clip if clip is not None else detect_clipping(frames)
    pl = _places_cache if _places_cache is not None else _places(frames, clip)
    factors = subband_factors(acf) if acf is not None else (1.0, 1.0)
    ok = ~pl.clipped
    if ok.sum() < 64 * BINS:
        raise ValueError("too few unclipped places to fit a mean-variance relation")
    edges = _edges(pl.mean[ok], BINS)

    def haar_bins(half=None):
        return _binned(pl, ok if half is None else ok & (pl.half == half), edges, *factors)

    bins, bin_sites = haar_bins, []
    mu, var, cnt = bins()
    used = cnt > 0
    if used.sum() < 3:
        raise ValueError("too few smooth places to fit a mean-variance relation")
    if patches:  # per-brightness principal components, started from the Haar fit
        a0, b0, _ = _wls(mu[used], var[used], cnt[used])
        images = [_crop(f) for f in frames]
        sites = [s for s in (_sites(images, clip, d) for d in PATCHES) if s is not None]
        if sites:
            n_ok = int((~sites[0].clipped).sum())
            floor = 1e-3 * abs(b0) + 1e-300

            def start(m):
                return np.maximum(a0 * m + b0, floor)

            p_edges = _variance_edges(sites[0].ring_mean[~sites[0].clipped], start, min(BINS, n_ok // 4000),
                                      MIN_BIN_SITES)

            for s in sites:
                s.acf = acf
                s.set_basis(_noise_basis(s, ~s.clipped, start, np.random.default_rng(0)))
            if acf is not None:  # the correlated reading needs every patch size's basis
                sites = [s for s in sites if s.basis is not None]

            def pca_bins(half=None, kept=None):
                sel = [~s.clipped if half is None else ~s.clipped & (s.half == half) for s in sites]
                return _pca_binned(sites, sel, p_edges, start, kept)

            if len(p_edges) > 3:
                p_mu, p_var, p_cnt = pca_bins(kept=bin_sites)
                if (p_cnt > 0).sum() >= 3:
                    bins, (mu, var, cnt), used = pca_bins, (p_mu, p_var, p_cnt), p_cnt > 0
    a, b, kept = _wls(mu[used], var[used], cnt[used])
    margin = 0.0
    if clip.detected:  # drop bins within 2 (else 1) noise sd of a clipping level, then refit
        # the sd is the line's or the bin's own where that is less: the line's alone, raised by texture or a hidden
        # dark bin, pushed the darkest bins out and so raised itself (Set12 at 1-60 photons as 8-bit: read noise 79 %
        # high in one draw; the FMD frames clipped at their floor: gain 3-8 % below the independent reference)
        predicted = np.maximum(np.fmin(a * mu + b, var), 1e-300)
        for margin in CLIP_FIT_MARGINS:
            keep = used & _clear_of(clip, mu, margin)(predicted)
            if keep.sum() >= 3:
                break
        if keep.sum() < 3:
            raise ValueError("too little of the data lies away from the clipping levels to fit noise")
        candidates, used = used, keep
        a, b, kept = _wls(mu[used], var[used], cnt[used])
        if clip.low is not None:
            taken = _uncensored_floor(mu, var, cnt, candidates, used, clip.low, (a, b))
            if taken is not used:
                used = taken
                a, b, kept = _wls(mu[used], var[used], cnt[used])
    # fit on one half of the area (its bins that hold patches), score on the other (likewise: a 512 x 512 frame clipped
    # at its floor kept 3 of 4 patch bins, the brightest empty in one half), then fit the model on all of it
    mu0, var0, cnt0 = bins(0)
    mu1, var1, cnt1 = bins(1)
    u0, u = used & (cnt0 > 0), used & (cnt1 > 0)
    r2_held = _r2(mu1[u], var1[u], cnt1[u], *_wls(mu0[u0], var0[u0], cnt0[u0])[:2]) \
        if u0.sum() >= 2 and u.sum() >= 2 and u0.sum() + u.sum() >= 5 else float("nan")
    texture = np.zeros_like(used)
    texture[np.flatnonzero(used)[~kept]] = True
    line = used & ~texture  # the bins the line went through: its errors and R^2 are theirs
    cov = _fit_covariance(mu[line], var[line], cnt[line])
    # the bins' patch groups refine the line, but not above a floor: the patches touching it are left out, a selection
    # on their own noise (the darkest ones' low excursions) that a wide bin averages away and its darkest groups, which
    # carry the leverage, take in full (smooth scene at 1-60 photons as 8-bit: read noise rms 4.4 -> 5.7 %, max 8.4 ->
    # 14 %, over ten draws); a floor too sparse to count as clipping cuts the darkest patches' noise all the same (at
    # 2-100 photons as 8 bits the zeros hold 0.07 % of the pixels: the darkest groups read 8 % low, read noise rms
    # 4.8 -> 7.7 %); groups near saturation keep the bins' margin from it
    floor = clip.low is not None or clip.sparse_low is not None
    rows = _sub_bins(bin_sites, np.flatnonzero(line), mu, var) if bins is not haar_bins and not floor else None
    if rows is not None:
        m, v = rows[:, 0], rows[:, 1]
        rows = rows[_clear_of(clip, m, margin)(np.maximum(np.fmin(a * m + b, v), 1e-300))]
        if len(rows) >= 3:
            a, b, cov = _refined_line(rows, a, b)
    fitted = pl.mean[ok]
    fitted = fitted[(fitted >= mu[used].min()) & (fitted <= mu[used].max())]
    # (sparse counts: the places' means lie on a lattice of 1/64, which can step over the bins' whole span)
    lo_hi = np.quantile(fitted, [0.1, 0.9]) if len(fitted) else (mu[used].min(), mu[used].max())
    data_lo_hi = np.quantile(pl.mean[ok], [0.1, 0.9])
    return MeanVarianceFit(slope=a, intercept=b, cov=cov,
                           r2=_r2(mu[line], var[line], cnt[line], a, b), r2_heldout=r2_held,
                           bin_mean=mu, bin_var=var, bin_count=cnt, bin_used=used, bin_texture=texture,
                           heldout_mean=mu1[u],
                           heldout_var=var1[u], mean_lo=float(lo_hi[0]), mean_hi=float(lo_hi[1]),
                           data_lo=float(data_lo_hi[0]), data_hi=float(data_lo_hi[1]))


#: how far (as a share of their variance) the dark bins may sit above what noise on a line, cut at a floor, leaves
#: them, or below it, and still be taken to follow it; and how far the bright bins may sit from a line through them and
#: the dark ones (`_uncensored_floor`: real variance curves bend, and the FMD frames' rises faster than a line)
FLOOR_EXCESS, FLOOR_DEFICIT, FLOOR_BEND = 0.1, 0.25, 0.2
_erf = np.frompyfunc(math.erf, 1, 1)


def _censored_moments(mu: np.ndarray, sd: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of `max(Y, floor)` for `Y ~ N(mu, sd^2)`."""
    t = np.clip((mu - floor) / np.maximum(sd, 1e-300), -40.0, 40.0)  # (beyond, nothing / everything is cut)
    cdf = 0.5 * (1 + _erf(t / math.sqrt(2)).astype(np.float64))
    pdf = np.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    first = t * cdf + pdf  # E[(Y - floor)+] / sd
    return np.where(t >= 40.0, mu, floor + sd * first), sd**2 * ((t**2 + 1) * cdf + t * pdf - first**2)


def _clipped_variance(means: np.ndarray, floor: float, a: float, b: float) -> np.ndarray:
    """The variance that noise of variance `a * mu + b` (at least 0) leaves bins whose means, cut at `floor`, are
    `means`: each bin's true mean solved by bisection (the cut mean rises with it), then its cut variance."""
    def cut(mu):
        return _censored_moments(mu, np.sqrt(np.maximum(a * mu + b, 0.0)), floor)

    # from far enough below the floor that the line's noise there is all cut, up to the cut mean itself
    lo = np.full(means.shape, floor - 50 * math.sqrt(max(a * floor + b, 0.0) + abs(a) * (means.max() - floor) + 1e-12))
    hi = np.maximum(means, floor)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = cut(mid)[0] < means
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return cut((lo + hi) / 2)[1]


def _uncensored_floor(mu, var, cnt, candidates: np.ndarray, used: np.ndarray, floor: float,
                      line: tuple[float, float]) -> np.ndarray:
    """The bins to fit (`used` itself where unchanged) after the margin round a clipping floor left out the darker
    `candidates` from the `line` (slope, intercept) through the `used` ones, where the floor is not what it seems: the
    dark level of shot noise with little read noise (a PMT, an offset-subtracted camera) piles the pixels that
    caught no photon on the lowest values as clipping does, but cuts no noise. Noise on the line, cut at the floor,
    leaves each dark bin a variance that follows from its mean (a censored normal, `_clipped_variance`). Where the
    dark bins as a group hold that, up to `FLOOR_EXCESS` more or `FLOOR_DEFICIT` less, the floor is clipping and they
    stay out (less: texture lifts the bright bins of natural images, and the line's dark end with them: BSD68
    test009 with Gaussian noise of 25/255 as 8 bits, 10 % less). Where they do not, the line's dark end is wrong;
    and if one line through all the bins gives the dark ones (uncut) their variance within `FLOOR_EXCESS` and the
    bright ones theirs within `FLOOR_BEND`, the floor cuts nothing and they are all fitted. FMD BPAE_B: the line
    through its bins over 20 grey levels gave the dark level 5.7, so the 55 % of its pixels below 6 no variance
    (their noise against the 50-frame average: 3-10); its 256 x 256 corner, whose bright bins alone gave a line
    through a read noise of 6.2 (three times its dark bins' variance), now reads as the whole frame does."""
    dark = candidates & ~used & (mu < mu[used].min())
    if not dark.any():
        return used

    def off(group, predicted) -> float:
        return float(np.sum(cnt[group] * (var[group] - predicted))) / float(np.sum(cnt[group] * var[group]))

    if -FLOOR_DEFICIT <= off(dark, _clipped_variance(mu[dark], floor, *line)) <= FLOOR_EXCESS:
        return used
    both = used | dark
    a, b, _ = _wls(mu[both], var[both], cnt[both])
    fits = abs(off(dark, a * mu[dark] + b)) <= FLOOR_EXCESS and abs(off(used, a * mu[used] + b)) <= FLOOR_BEND
    return both if fits else used


def _variance_edges(means: np.ndarray, start, n: int, min_count: int) -> np.ndarray:
    """Brightness bins evenly spaced in the logarithm of the predicted variance `start(mean)`, merged
    upwards until each holds `min_count` means: a signal-dependent variance spans a wide range, and
    bins of equal shares would leave its dark end (which carries the read noise) inside one bin
    whose variance changes several-fold."""
    m = np.sort(means)
    t = np.log(start(m))
    if not np.all(np.diff(t) >= 0) or t[-1] - t[0] < np.log(1.5):  # not increasing: equal shares
        return _edges(means, n)
    cuts = np.searchsorted(t, np.linspace(t[0], t[-1], n + 1)[1:-1], side="left")
    edges, last = [m[0]], 0
    for c in cuts:
        if c - last >= min_count and len(m) - c >= min_count:
            edges.append(m[c])
            last = c
    edges.append(np.nextafter(m[-1], np.inf))
    return np.array(edges)


def _edges(means: np.ndarray, n: int) -> np.ndarray:
    """`n` brightness bins holding equal shares of `means`."""
    edges = np.quantile(means, np.linspace(0, 1, n + 1))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


# --- correlation ----------------------------------------------------------------------------------

LAGS = 2


def _plane_residual_operator(block: int) -> np.ndarray:
    """I - H for the least-squares fit of a plane to a block (n x n, n = block^2)."""
    r, c = np.indices((block, block))
    X = np.stack([np.ones(block * block), r.ravel() - (block - 1) / 2, c.ravel() - (block - 1) / 2], 1)
    return np.eye(block * block) - X @ np.linalg.pinv(X)


def _lag_pairs(block: int, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.indices((block, block))
    ok = (r + dy >= 0) & (r + dy < block) & (c + dx >= 0) & (c + dx < block)
    return (r * block + c)[ok], ((r + dy) * block + c + dx)[ok]


def _observed(cov: np.ndarray, R: np.ndarray, block: int) -> np.ndarray:
    """Normalised lag products of plane residuals `R x` for noise of covariance `cov`."""
    E = R @ cov @ R.T
    k = 2 * LAGS + 1
    out = np.empty((k, k))
    for dy in range(-LAGS, LAGS + 1):
        for dx in range(-LAGS, LAGS + 1):
            i, j = _lag_pairs(block, dy, dx)
            out[dy + LAGS, dx + LAGS] = E[i, j].mean()
    return out / out[LAGS, LAGS]


def _covariance(acf: np.ndarray, block: int) -> np.ndarray:
    cov = np.zeros((block * block, block * block))
    for dy in range(-LAGS, LAGS + 1):
        for dx in range(-LAGS, LAGS + 1):
            i, j = _lag_pairs(block, dy, dx)
            cov[i, j] = acf[dy + LAGS, dx + LAGS]
    return cov


@dataclass
class Correlation:
    """Noise autocorrelation from flat blocks: over all of them (`acf`) and, to tell correlated noise
    from texture, the lag-1 correlation within each brightness tercile (`lag1_terciles`), in the
    quieter half of the blocks against what stationary noise of this correlation gives (`quiet_z`) and,
    where the noise follows the signal, its rise from the darkest tercile to the brightest (`rise_z`, the larger
    of the two directions'), and how far apart the terciles lie (`spread_z`, `uneven`)."""

    acf: np.ndarray
    lag1_terciles: list[float]
    blocks: int
    quiet_z: float | None = None
    rise_z: float | None = None
    spread_z: float | None = None
    excess_z: float | None = None
    block_spread_ratio: float | None = None
    #: the standard error of `reach` (block bootstrap, `_reach_se`; reported, so that a call near `LONG_REACH` shows
    #: as uncertain); set only for a weak candidate (every tercile over `CORR_THRESHOLD`, some at most
    #: `CORR_PG_THRESHOLD`), the correlation `far_reaching` decides
    reach_se: float | None = None
    #: the interquartile range of the log of stationary noise's block variances (noise of correlation `acf`,
    #: simulated for `quiet_z` and the plane removed alike; for `block_spread`)
    stationary_spread: float | None = None
    #: per flat block: the mean square of its plane residual, its own mean and its frame (for `block_spread`)
    block_var: np.ndarray | None = field(default=None, repr=False)
    block_mean: np.ndarray | None = field(default=None, repr=False)
    block_frame: np.ndarray | None = field(default=None, repr=False)

    @property
    def lag1(self) -> float:
        return float(max(abs(self.acf[LAGS, LAGS + 1]), abs(self.acf[LAGS + 1, LAGS])))

    def kernel(self) -> tuple[tuple[float, ...], ...]:
        """A kernel whose white-noise correlation is `acf` (for a `Correlated` model)."""
        return tuple(map(tuple, kernel_from_autocorrelation(self.acf).tolist()))

    @property
    def measured(self) -> bool:
        """Whether there are blocks enough (`MIN_CORR_BLOCKS` a tercile) to tell correlated noise from texture."""
        return self.blocks >= 3 * MIN_CORR_BLOCKS

    @property
    def significant(self) -> bool:
        """Correlated noise is correlated at every brightness, while fine texture raises the
        correlation only where the signal-to-noise ratio is high: every tercile must exceed the
        threshold, clearly (`marginal`), each with enough blocks."""
        return (self.measured and len(self.lag1_terciles) == 3
                and min(self.lag1_terciles) > CORR_THRESHOLD and not self.marginal and not self.texture
                and not self.uneven and not self.nonstationary and not self.far_reaching)

    @property
    def nonstationary(self) -> bool:
        """Whether the flat blocks' variances, each against the fitted noise variance at its brightness, spread
        further than `STATIONARY_SPREAD` times stationary noise of this correlation lets them (`block_spread`)."""
        return self.block_spread_ratio is not None and self.block_spread_ratio > STATIONARY_SPREAD

    def block_spread(self, variance_of: Callable[[np.ndarray], np.ndarray]) -> float | None:
        """The interquartile range of the log of the flat blocks' residual variances divided by the noise variance
        `variance_of` predicts at each block's own mean (each frame about its median: files differ in level), over
        `stationary_spread`. Noise gives 1 (a little more where shot noise at a few photons adds kurtosis); texture in
        the flat places spreads them. None where fewer than `MIN_CORR_BLOCKS` blocks have a positive predicted
        variance, or where the correlation was no candidate (nothing simulated)."""
        var = variance_of(self.block_mean)
        ok = var > 0
        if self.stationary_spread is None or ok.sum() < MIN_CORR_BLOCKS:
            return None
        x = np.log(np.maximum(self.block_var[ok], 1e-300) / var[ok])
        frame = self.block_frame[ok]
        for f in np.unique(frame):
            x[frame == f] -= np.median(x[frame == f])
        return _iqr(x) / self.stationary_spread

    @property
    def reach(self) -> float:
        """The lag-2 correlation over the lag-1 one, each the mean of the two axes' (0 where lag 1 has none)."""
        return _reach(self.acf)

    @property
    def far_reaching(self) -> bool:
        """Whether a weak correlation (some tercile at most `CORR_PG_THRESHOLD`) reaches as far as texture's
        (`LONG_REACH`)."""
        return (len(self.lag1_terciles) > 0 and min(self.lag1_terciles) <= CORR_PG_THRESHOLD
                and self.reach >= LONG_REACH)

    @property
    def reach_uncertain(self) -> bool:
        """Whether `far_reaching` is decided within a standard error of `reach` (`reach_se`) from `LONG_REACH`: FMD
        BPAE_G's darkest third reads 0.33 +- 0.18 as its uint8 file and 0.39 +- 0.12 as uint16 x 256, where the 255
        ceiling is no type limit and the blocks by its six saturated pixels stay in; the call went to correlated
        noise (gain 4.35) and to texture (3.60; 4.05 against its 50-frame average). A margin of one standard error
        on the call itself kept both correlated but took an 8-bit BSD68 image at 5/255 from Gaussian +8.8 % back
        to correlated +67 %, so the uncertainty is reported, not acted on."""
        return self.reach_se is not None and abs(self.reach - LONG_REACH) < self.reach_se

    @property
    def marginal(self) -> bool:
        """Whether some tercile's lag-1 correlation lies within `EXCESS_Z` standard errors of `CORR_THRESHOLD`: at
        that distance a draw of white noise over texture crosses it by chance."""
        return self.excess_z is not None and self.excess_z <= EXCESS_Z

    @property
    def uneven(self) -> bool:
        """Whether the terciles' lag-1 correlations lie further apart than stationary noise lets them (`SPREAD_LIMIT`
        and `SPREAD_Z` standard errors): texture's can, since its share of a flat place's variance depends on the
        scene there. Not where the correlation `rises` with brightness (the darkest tercile is taken there)."""
        return (self.spread_z is not None and not self.rises and self.spread_z > SPREAD_Z
                and max(self.lag1_terciles) - min(self.lag1_terciles) > SPREAD_LIMIT)

    @property
    def texture(self) -> bool:
        """Whether the correlation fades in the quietest blocks, as texture left in flat places does."""
        return self.quiet_z is not None and self.quiet_z < -QUIET_Z

    @property
    def rises(self) -> bool:
        """Whether the correlation rises with the brightness of noise that follows the signal, as texture's does
        there (`acf` is then the darkest tercile's)."""
        return self.rise_z is not None and self.rise_z > RISE_Z


MIN_CORR_BLOCKS = 30  # per brightness tercile (a 256 x 256 image gives 90 flat blocks)
QUIET_Z = 3.0          # standard errors by which the quieter blocks' correlation may fall short of stationary noise's
QUIET_SIMULATED = 4000  # blocks of simulated noise for the stationary expectation
QUIET_BOOTSTRAP = 200
#: standard errors by which, for noise whose level follows the signal, the brightest tercile's lag-1 correlation (in
#: either direction) may exceed the darkest's before the correlation is taken from the darkest alone: stationary
#: correlated noise gives the same at every brightness, while texture left in flat places adds a share of a place's
#: variance that grows with the signal there (FMD BPAE_G: vertical 0.06 -> 0.22 before unbiasing, 4.6 standard
#: errors, horizontal flat; its residual against the 50-frame average has lag-1 0.15 / 0.11)
RISE_Z = 3.0
#: terciles whose lag-1 correlations lie more than `SPREAD_LIMIT` apart, and `SPREAD_Z` bootstrap standard errors, are
#: texture's (`Correlation.uneven`). Stationary correlated noise, synthetic on Set12 at 5 and 15/255 (lag-1 0.38) and
#: the EPU micrographs, spread its terciles by at most 0.16 (at up to 4.9 standard errors: the bootstrap does not
#: see the scenes' texture); eight bright 128x128 BSD68 crops with white noise (3000 photons per pixel, one draw
#: in five) by 0.41 (0.80 / 0.43 / 0.84, 5.2 standard errors), where their texture was taken for correlated noise
#: with 8.7 times the true gain.
SPREAD_LIMIT, SPREAD_Z = 0.25, 3.0
#: standard errors (block bootstrap) by which every tercile's lag-1 correlation must exceed `CORR_THRESHOLD`: texture
#: left in natural scenes' flat places reads 0.08-0.17 per tercile under white noise, and now and then all three cross
#: 0.1 by a little (clipped 8-bit Set12 at 1-60 and 5-200 photons: about one draw in five, the least by 0.04-1.1
#: standard errors), where the correlation's correction read the gain 15-24 % high. FMD BPAE_G, whose noise is
#: correlated (its residual against the 50-frame average: lag-1 0.15 / 0.11), clears it by 1.7; the synthetic
#: correlated noise of lag-1 0.38 by 7 or more.
EXCESS_Z = 1.5
#: how many times stationary noise's spread the flat blocks' log variances may show (`Correlation.block_spread`) where
#: the correlated refit finds the noise following the signal. Texture correlated 0.4-0.7 at every brightness passes
#: the tests above on some natural images at 5/255, and that refit read it as signal-dependent correlated noise with
#: the level at mid-grey 1.4-4 times the truth: those read 2.2-4.0 where it was 3.3-4 times (BSD68 test031, test056
#: and test067, white or correlated noise; 2.1-4.2 over six draws each), 1.6-1.9 where it was 1.4-2 times.
#: Signal-dependent correlated noise read at most 1.39 (the twelve 256 x 256 Set12 crops alone at 1, 5 and 30
#: photons, lag-1 0.25-0.55: 108 fits; pooled 1.08-1.15), FMD BPAE_G 1.19, the five FMD frames pooled 1.28 and the
#: raw EPU micrograph 1.02.
STATIONARY_SPREAD = 1.7
#: the lag-2 correlation's share of the lag-1 one (`Correlation.reach`) from which a weak correlation (some tercile
#: at most `CORR_PG_THRESHOLD`) is texture's (`Correlation.far_reaching`): a detector's or a resampling's kernel is
#: compact, and weak noise correlation falls off fast (a plus-shaped kernel of lag-1 0.25 under Poisson-Gaussian
#: noise on 34 BSD68 images alone at three photon ranges, every weak reading: 0.01-0.22), while what plane-removed
#: texture leaves in flat blocks falls off slowly (on 68 BSD68 images alone with white Poisson-Gaussian noise at four
#: settings, 13 of the 16 taken for correlated noise read 0.41-0.69, and the refit on that correlation put their gain
#: 15-69 % high where the white fit read it within 6 % in 11 of them)
LONG_REACH = 0.35


def _quiet_shortfall(prod: np.ndarray, frame: np.ndarray) -> float:
    """Lag-1 normalised product of the quieter half of the blocks (by variance, within each frame: frames may
    differ in level and correlation, as the files of a folder do) minus that of all blocks. Texture that survives
    in flat places adds both variance and correlation to a block, so the quieter half is less correlated than the
    whole; stationary noise shows a small shortfall of its own (a block's variance and lag products vary
    together), which `_quiet_z` takes from simulation."""
    v = prod[:, LAGS, LAGS]
    l1 = (prod[:, LAGS, LAGS + 1] + prod[:, LAGS + 1, LAGS]) / 2
    quiet = np.concatenate([i[np.argsort(v[i], kind="stable")[: len(i) // 2]]
                            for i in (np.flatnonzero(frame == f) for f in np.unique(frame))])
    return float(l1[quiet].mean() / v[quiet].mean() - l1.mean() / v.mean())


def _quiet_z(prod: np.ndarray, frame: np.ndarray, stationary: np.ndarray, block: int) -> float:
    """The quieter blocks' shortfall in standard errors (block bootstrap) from its value for stationary noise of the
    candidate correlation (`stationary`: `_simulated_residuals`, plane removed as for the data): on natural images
    with white noise, lag-1 0.2-0.5 in the flattest blocks gives -3 to -9; correlated noise mostly -2.5 to +2.5 (Set12,
    BSD68, the EPU micrographs), but down to -6 at 5/255 on the most textured images, where texture adds to the
    noise's correlation."""
    rng = np.random.default_rng(0)
    draws = (rng.integers(0, len(prod), len(prod)) for _ in range(QUIET_BOOTSTRAP))
    boot = [_quiet_shortfall(prod[i], frame[i]) for i in draws]
    expected = _quiet_shortfall(_lag_products(stationary, block), np.zeros(len(stationary), int))
    return (_quiet_shortfall(prod, frame) - expected) / max(float(np.std(boot)), 1e-12)


def _iqr(x: np.ndarray) -> float:
    return float(np.subtract(*np.quantile(x, [0.75, 0.25])))


def _simulated_residuals(acf: np.ndarray, R: np.ndarray, block: int) -> np.ndarray:
    """Plane residuals (`R`) of `QUIET_SIMULATED` blocks of stationary unit Gaussian noise of correlation `acf`."""
    stationary = Correlated(sigma=1.0, kernel=kernel_from_autocorrelation(acf))
    noise = stationary.noise_like(torch.zeros(QUIET_SIMULATED, block, block, dtype=torch.float64),
                                  torch.Generator().manual_seed(0)).numpy()
    return (noise.reshape(len(noise), -1) @ R.T).reshape(-1, block, block)


def _lag1_bootstrap(prod: np.ndarray, parts: list[np.ndarray]) -> list[list[tuple[float, np.ndarray]]]:
    """For each direction (horizontal, vertical), each part's lag-1 normalised product and its block-bootstrap
    replicates (the same resampled blocks in both directions)."""
    v = prod[:, LAGS, LAGS]
    rng = np.random.default_rng(0)
    draws = [p[rng.integers(0, len(p), (QUIET_BOOTSTRAP, len(p)))] for p in parts]
    return [[(float(l1[p].mean() / v[p].mean()), l1[d].mean(-1) / v[d].mean(-1)) for p, d in zip(parts, draws)]
            for l1 in (prod[:, LAGS, LAGS + 1], prod[:, LAGS + 1, LAGS])]


def _rise_z(prod: np.ndarray, dark: np.ndarray, bright: np.ndarray) -> float:
    """How many bootstrap standard errors the lag-1 normalised product of the `bright` blocks exceeds that of the
    `dark` ones, in the direction where it does most (the plane removal biases both alike, so their difference
    needs no unbiasing)."""
    return float(max((b - d) / max(float(np.std(bb - db)), 1e-12)
                     for (d, db), (b, bb) in _lag1_bootstrap(prod, [dark, bright])))


def _spread_z(boot: list[list[tuple[float, np.ndarray]]]) -> float:
    """How many bootstrap standard errors apart the most and the least correlated brightness terciles' lag-1
    normalised products lie, in the direction where they differ most (`boot`: the terciles' `_lag1_bootstrap`)."""
    z = []
    for direction in boot:
        vals = [x for x, _ in direction]
        (hi, hb), (lo, lb) = direction[int(np.argmax(vals))], direction[int(np.argmin(vals))]
        z.append((hi - lo) / max(float(np.hypot(np.std(hb), np.std(lb))), 1e-12))
    return float(max(z))


def _excess_z(prod: np.ndarray, parts: list[np.ndarray], boot: list[list[tuple[float, np.ndarray]]],
              by_part: list[np.ndarray], R: np.ndarray, block: int) -> float:
    """The smallest, over brightness terciles, of the standard errors (block bootstrap) by which the tercile's lag-1
    correlation (`by_part`, unbiased) exceeds `CORR_THRESHOLD`, in the direction where it does most. The bootstrap
    (`boot`: the terciles' `_lag1_bootstrap`) resamples the raw normalised products; the unbiasing's slope at the
    tercile's own value carries their spread over."""
    z = []
    for k, (part, acf) in enumerate(zip(parts, by_part)):
        obs = prod[part].mean(0)
        obs = obs / obs[LAGS, LAGS]
        best = -np.inf
        for direction, (dy, dx) in zip(boot, ((0, 1), (1, 0))):
            step = np.zeros_like(obs)
            step[LAGS + dy, LAGS + dx] = step[LAGS - dy, LAGS - dx] = 1e-3
            slope = abs(_unbias(obs + step, R, block)[LAGS + dy, LAGS + dx] - acf[LAGS + dy, LAGS + dx]) / 1e-3
            se = max(slope * float(np.std(direction[k][1])), 1e-12)
            best = max(best, (abs(acf[LAGS + dy, LAGS + dx]) - CORR_THRESHOLD) / se)
        z.append(best)
    return float(min(z))


def _lag_products(r: np.ndarray, block: int) -> np.ndarray:
    """Mean product at every lag up to LAGS, per block: (n, 2*LAGS+1, 2*LAGS+1)."""
    k = 2 * LAGS + 1
    out = np.empty((len(r), k, k))
    for dy in range(-LAGS, LAGS + 1):
        for dx in range(-LAGS, LAGS + 1):
            a = r[:, max(0, dy) : block + min(0, dy), max(0, dx) : block + min(0, dx)]
            b = r[:, max(0, -dy) : block + min(0, -dy), max(0, -dx) : block + min(0, -dx)]
            out[:, dy + LAGS, dx + LAGS] = (a * b).mean((1, 2))
    return out


def _unbias(obs: np.ndarray, R: np.ndarray, block: int) -> np.ndarray:
    """The autocorrelation whose plane residuals give the averaged products `obs`."""
    obs = obs / obs[LAGS, LAGS]
    acf = np.zeros_like(obs)
    acf[LAGS, LAGS] = 1.0
    for _ in range(20):
        step = obs - _observed(_covariance(acf, block), R, block)
        acf = acf + step
        acf[LAGS, LAGS] = 1.0
        if np.abs(step).max() < 1e-4:
            break
    return np.clip(acf, -1.0, 1.0)


def _reach(acf: np.ndarray) -> float:
    """`Correlation.reach` of an autocorrelation."""
    l1 = (acf[LAGS, LAGS + 1] + acf[LAGS + 1, LAGS]) / 2
    l2 = (acf[LAGS, LAGS + 2] + acf[LAGS + 2, LAGS]) / 2
    return float(l2 / l1) if l1 > 0 else 0.0


def _reach_se(prod: np.ndarray, R: np.ndarray, block: int) -> float:
    """The standard error of the reach of the blocks' (`prod`: their lag products) unbiased autocorrelation, by the
    block bootstrap of their normalised products carried through the unbiasing by its slope there (as `_excess_z`
    does; a bootstrap through the unbiasing itself costs 10 ms a draw, and read within 0.02 of this on FMD BPAE_G, the
    FMD frames pooled and 16 BSD68 images)."""
    obs = prod.mean(0)
    obs = obs / obs[LAGS, LAGS]
    lags = ((LAGS, LAGS + 1), (LAGS + 1, LAGS), (LAGS, LAGS + 2), (LAGS + 2, LAGS))
    base = _reach(_unbias(obs, R, block))
    slopes = []
    for i, j in lags:
        step = np.zeros_like(obs)
        step[i, j] = step[2 * LAGS - i, 2 * LAGS - j] = 1e-3  # (the products are symmetric)
        slopes.append((_reach(_unbias(obs + step, R, block)) - base) / 1e-3)
    rng = np.random.default_rng(0)
    means = np.stack([prod[rng.integers(0, len(prod), len(prod))].mean(0) for _ in range(QUIET_BOOTSTRAP)])
    means = means / means[:, LAGS, LAGS, None, None]
    return float(np.std(sum(a * means[:, i, j] for a, (i, j) in zip(slopes, lags))))


def correlation(frames: list[np.ndarray], variance_of, clip: Clipping, block: int = 8,
                follows_signal: bool = False) -> Correlation:
    """Noise autocorrelation (2*LAGS+1 square, centre 1) from the flattest 8x8 blocks.

    Blocks are ranked by the gradient energy of the 2-pixel ring around them relative to the noise
    predicted at their neighbours' mean brightness (fine texture around a block usually continues
    into it; the ring does not touch the block's own noise, so the choice does not bias it); a
    least-squares plane is removed from each (smooth shading), residuals are divided by the
    predicted noise sd (`variance_of(mean)`) and products at each lag averaged. Removing the plane
    biases those averages in a way that depends only on the true correlation, which is recovered
    by a few fixed-point steps through the exact bias. `follows_signal`: `variance_of` grows with the
    signal, so a correlation that rises with brightness is texture's (`rise_z`)."""
    R = _plane_residual_operator(block)
    products, levels, squares, own = [], [], [], []
    for f in frames:
        g = _crop(f)
        H, W = g.shape[0] // block * block, g.shape[1] // block * block
        grid = g[:H, :W].reshape(H // block, block, W // block, block).transpose(0, 2, 1, 3)
        gm = grid.mean((2, 3))
        if min(gm.shape) < 3:
            continue
        nb = np.stack([gm[1 + dy : gm.shape[0] - 1 + dy, 1 + dx : gm.shape[1] - 1 + dx]
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
        means = nb.mean(0).ravel()
        ring = _ring_energy(g, block, RING)  # fine texture around each block, which its own noise does not touch
        rough = ring[block - RING : block * (gm.shape[0] - 1) - RING : block,
                     block - RING : block * (gm.shape[1] - 1) - RING : block].ravel()
        blocks = grid[1:-1, 1:-1].reshape(-1, block, block)
        var = variance_of(means)
        ok = (var > 0) & ~clip.mask(blocks).any((1, 2))
        blocks, rough, means, var = blocks[ok], rough[ok], means[ok], var[ok]
        if len(blocks) < 8:
            continue
        keep = np.argsort(rough / var)[: max(8, len(blocks) // 10)]
        raw = blocks[keep].reshape(len(keep), -1) @ R.T
        r = (raw / np.sqrt(var[keep])[:, None]).reshape(-1, block, block)
        products.append(_lag_products(r, block))
        levels.append(means[keep])
        squares.append((raw**2).mean(1))
        own.append(blocks[keep].mean((1, 2)))
    k = 2 * LAGS + 1
    if not products:
        acf = np.zeros((k, k))
        acf[LAGS, LAGS] = 1.0
        return Correlation(acf, [], 0)
    prod, lev = np.concatenate(products), np.concatenate(levels)
    frame = np.concatenate([np.full(len(p), k) for k, p in enumerate(products)])
    acf = _unbias(prod.mean(0), R, block)
    terciles, quiet, rise, spread, excess, stationary_spread, reach_se = [], None, None, None, None, None, None
    if len(prod) >= 3 * MIN_CORR_BLOCKS:
        parts = np.array_split(np.argsort(lev, kind="stable"), 3)
        by_part = [_unbias(prod[part].mean(0), R, block) for part in parts]
        terciles = [float(max(abs(t[LAGS, LAGS + 1]), abs(t[LAGS + 1, LAGS]))) for t in by_part]
        if min(terciles) > CORR_THRESHOLD:  # a candidate: is it texture?
            rise = _rise_z(prod, parts[0], parts[-1]) if follows_signal else None
            dark = rise is not None and rise > RISE_Z
            if dark:  # the brighter blocks' texture: the darkest third's correlation
                acf = by_part[0]
            if min(terciles) <= CORR_PG_THRESHOLD:  # (the weak correlations `far_reaching` judges)
                reach_se = _reach_se(prod[parts[0]] if dark else prod, R, block)
            stationary = _simulated_residuals(acf, R, block)  # (for the quiet-blocks and the block-spread tests)
            quiet = _quiet_z(prod, frame, stationary, block)
            stationary_spread = _iqr(np.log((stationary**2).mean((1, 2))))
            boot = _lag1_bootstrap(prod, parts)  # (one resampling for both tests)
            spread = _spread_z(boot)
            excess = _excess_z(prod, parts, boot, by_part, R, block)
    return Correlation(acf, terciles, len(prod), quiet, rise, spread, excess, reach_se=reach_se,
                       stationary_spread=stationary_spread, block_var=np.concatenate(squares),
                       block_mean=np.concatenate(own), block_frame=frame)


def subband_factors(acf: np.ndarray) -> tuple[float, float]:
    """For noise of normalised autocorrelation `acf`: E[HH^2] / marginal variance, and
    E[LH^2 + HL^2] / (2 E[HH^2]) (both 1 for white noise)."""
    c = LAGS
    rho_h, rho_v = acf[c, c + 1], acf[c + 1, c]
    diag = (acf[c + 1, c + 1] + acf[c + 1, c - 1]) / 2
    hh = max(1 - rho_h - rho_v + diag, 0.05)
    return float(hh), float((1 - diag) / hh)


# --- the dark level from the third cumulant -------------------------------------------------------

#: Sums of the cubes and of the squares of the weights of the residual `y_i - mean(4 neighbours)`.
STENCIL_CUBES, STENCIL_SQUARES = 1 - 4 / 64, 1 + 4 / 16
SKEW_BINS = 8
SKEW_GROUPS = 20          # delete-a-group jackknife over 32-pixel blocks
SKEW_CONSISTENT = 3.0     # chi^2 per degree of freedom of the bins' kappa3 about their line, at most
SKEW_PRECISION = 0.25     # the level is used where its error moves the read variance by at most this share
SKEW_OFFSET_Z = 5.0       # and, where the line alone would take offset 0, where it is this many standard errors above 0


def _cross(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """The interior of `a` and its up, down, left and right neighbours, aligned with it."""
    return a[1:-1, 1:-1], a[:-2, 1:-1], a[2:, 1:-1], a[1:-1, :-2], a[1:-1, 2:]


@dataclass
class DarkLevel:
    """Where the third cumulant puts the zero of the shot noise (data units), its standard error, and the
    chi^2 per degree of freedom of the brightness bins' kappa3 about their line (texture bends it)."""

    offset: float
    se: float
    chi2: float
    bins: int
    darkest: float = np.inf  # the darkest data away from clipping: the darkest local means, corrected for their noise

    @property
    def below_data(self) -> bool:
        """Whether the level lies below the darkest data, within two standard errors: Poisson-Gaussian data have
        mean `offset + gain * photons`, never less than the offset."""
        return self.offset <= self.darkest + 2 * self.se

    @property
    def consistent(self) -> bool:
        return self.chi2 <= SKEW_CONSISTENT

    def to_dict(self) -> dict:
        return {"offset": self.offset, "se": self.se, "chi2_per_dof": self.chi2, "bins": self.bins,
                "consistent": self.consistent, "darkest_data": self.darkest, "below_data": self.below_data}


def _local_means(g: np.ndarray, clip: Clipping) -> tuple[np.ndarray, np.ndarray]:
    """The 7 x 7 local means of `g` and whether each pixel's cross of neighbours touches a clipping level, both
    without the one-pixel border that `_cross` drops."""
    return _box_mean_same(g, 7)[1:-1, 1:-1], np.logical_or.reduce(_cross(clip.mask(g)))


def darkest_data(frames: list[np.ndarray], clip: Clipping, fit: MeanVarianceFit) -> float:
    """The darkest data away from clipping, where no dark level of Poisson-Gaussian noise can lie above (their mean is
    `offset + gain * photons`): the 0.1th percentile of the 7 x 7 local means of pixels whose cross of neighbours
    touches no clipping level, raised by the 3.09 sd by which their own noise (white: the fitted variance / 49) puts
    it below the mean of the darkest flat region."""
    local = []
    for f in frames:
        g = _crop(f).astype(np.float64)
        if min(g.shape) < 16:
            continue
        mu, touched = _local_means(g, clip)
        local.append(mu[~touched])
    if not local or not sum(len(m) for m in local):
        return np.inf
    q = float(np.quantile(np.concatenate(local), 0.001))
    return float(q + 3.09 * np.sqrt(max(float(fit.predict(q)), 0.0)) / 7)


def dark_level(frames: list[np.ndarray], clip: Clipping, fit: MeanVarianceFit, darkest: float) -> DarkLevel | None:
    """The dark level of Poisson-Gaussian noise from the third cumulant of the residual `r = y_i - mean(4
    neighbours)` (`kappa3(r) = 0.9375 kappa3(y)` for independent pixels): shot noise has `kappa3 = gain^2 (mean -
    offset)` and Gaussian read noise none. The mean-variance line alone cannot tell an offset from read noise
    (both move its intercept); the third cumulant can, where the counts
    are low enough for the shot noise to be skewed. The level is where the weighted line of the bins' kappa3
    against their brightness reaches zero, so an error in the gain does not move it. Residuals touching a
    clipping level are left out, and brightness outside the bins the line was fitted on. None where the fit
    has no positive slope or too few places. `darkest` (`darkest_data`) is what `DarkLevel.below_data` holds it to."""
    used = fit.bin_used & np.isfinite(fit.bin_mean)
    if fit.slope <= 0 or used.sum() < 2:
        return None
    lo, hi = float(np.min(fit.bin_mean[used])), float(np.max(fit.bin_mean[used]))
    rs, mus, blocks, occupied, first = [], [], [], 0, 0
    for f in frames:
        g = _crop(f).astype(np.float64)
        if min(g.shape) < 16:
            continue
        centre, *around = _cross(g)
        r = centre - sum(around) / 4
        mu, touched = _local_means(g, clip)
        keep = ~touched & (mu >= lo) & (mu <= hi)
        rows, cols = np.nonzero(keep)
        rs.append(r[keep])
        mus.append(mu[keep])
        across = -(-r.shape[1] // SITE_BLOCK)
        ids = rows // SITE_BLOCK * across + cols // SITE_BLOCK
        blocks.append(first + ids)  # 32-pixel blocks numbered across all frames
        first += across * -(-r.shape[0] // SITE_BLOCK)
        occupied += len(np.unique(ids))
    if not rs or sum(len(r) for r in rs) < 1000 * SKEW_BINS:
        return None
    r, mu = np.concatenate(rs), np.concatenate(mus)
    which = np.clip(np.searchsorted(_edges(mu, SKEW_BINS), mu, side="right") - 1, 0, SKEW_BINS - 1)
    groups = min(SKEW_GROUPS, occupied)
    group = np.random.default_rng(0).permutation(groups)[np.concatenate(blocks) % groups]
    cell = group * SKEW_BINS + which
    size = groups * SKEW_BINS
    sums = np.stack([np.bincount(cell, weights=w, minlength=size).reshape(groups, SKEW_BINS)
                     for w in (np.ones_like(r), r, r**2, r**3, mu)])  # (5, groups, bins)

    def cumulants(s):
        """Per bin: the mean brightness, kappa3 of the noise, and the weight of that estimate (its inverse
        variance, to a factor)."""
        n = np.maximum(s[0], 1)
        m1, m2, m3 = s[1] / n, s[2] / n, s[3] / n
        k2 = (m2 - m1**2) / STENCIL_SQUARES
        k3 = (m3 - 3 * m1 * m2 + 2 * m1**3) / STENCIL_CUBES
        return s[4] / n, k3, s[0] / np.maximum(k2, 1e-300) ** 3

    def line(s):
        """The weighted line kappa3 = c1 * mean + c0 through the bins; its zero is the dark level."""
        m, k3, w = cumulants(s)
        A = np.stack([m, np.ones_like(m)], 1) * np.sqrt(w)[:, None]
        return np.linalg.lstsq(A, k3 * np.sqrt(w), rcond=None)[0]

    def zero(s) -> float:
        c1, c0 = line(s)
        return -c0 / c1 if c1 > 0 else np.nan  # (no rise with brightness: no shot noise seen)

    total = sums.sum(1)
    if (total[0] < 1000).any() or groups < SKEW_GROUPS // 2:
        return None
    level = zero(total)
    jack = np.array([zero(total - sums[:, g]) for g in range(groups)])
    if not np.isfinite(level) or not np.isfinite(jack).all():
        return None
    se = float(np.sqrt((groups - 1) / groups * np.sum((jack - jack.mean()) ** 2)))
    k3_jack = np.array([cumulants(total - sums[:, g])[1] for g in range(groups)])
    k3_se = np.sqrt((groups - 1) / groups * np.sum((k3_jack - k3_jack.mean(0)) ** 2, 0))
    m, k3, _ = cumulants(total)
    c1, c0 = line(total)
    chi2 = float(np.sum(((k3 - c1 * m - c0) / np.maximum(k3_se, 1e-300)) ** 2) / (SKEW_BINS - 2))
    return DarkLevel(offset=float(level), se=se, chi2=chi2, bins=SKEW_BINS, darkest=float(darkest))


# --- model choice ---------------------------------------------------------------------------------

@dataclass
class NoiseReport:
    """The model `auto` chooses and the evidence for it (all in data units)."""

    model: NoiseModel
    kind: str                                   # gaussian | signal-dependent | correlated
    clipping: Clipping
    fit: MeanVarianceFit | None
    correlation: Correlation
    notes: list[str] = field(default_factory=list)
    dark: DarkLevel | None = None               # the third cumulant's dark level (signal-dependent noise)
    counts: SparseCounts | None = None          # where the model was read from counts too sparse for a line

    @property
    def r2(self) -> float | None:
        """R^2 of the mean-variance line on the held-out half (meaningful when the variance varies)."""
        return self.fit.r2_heldout if self.fit is not None else None

    @property
    def risk_kernel(self) -> tuple[tuple[float, ...], ...] | None:
        """For a white signal-dependent model whose noise still correlates significantly (below
        `CORR_PG_THRESHOLD` training keeps the white model, which measured best), the correlation's kernel: a risk
        estimate must count it (`sure_mse`'s `correlation`, `with_kernel`). None otherwise."""
        if self.kind != "signal-dependent" or isinstance(self.model, Correlated) or not self.correlation.significant:
            return None
        return self.correlation.kernel()

    @property
    def heldout_error(self) -> float | None:
        """Median relative error of the chosen model's variance against the local noise variance
        measured on the held-out half, bin by bin."""
        if self.fit is None or len(self.fit.heldout_mean) == 0:
            return None
        import torch

        pred = self.model.variance(torch.as_tensor(self.fit.heldout_mean, dtype=torch.float64)).numpy()
        return float(np.median(np.abs(self.fit.heldout_var / np.maximum(pred, 1e-300) - 1)))

    def to_dict(self) -> dict:
        c = LAGS
        acf = self.correlation.acf
        params = {}
        if self.kind == "signal-dependent":  # gain, read noise and offset, whichever form was chosen
            params = {k: float(getattr(self.model, k, 0.0)) for k in ("gain", "sigma", "offset")}
        return {
            "model": self.model.to_dict(), "spec": self.model.spec(), "kind": self.kind, **params,
            "r2_heldout": self.r2, "heldout_variance_error": self.heldout_error, "clipping": self.clipping.to_dict(),
            "mean_variance": self.fit.to_dict() if self.fit is not None else None,
            "correlation": {"lag_h": float(acf[c, c + 1]), "lag_v": float(acf[c + 1, c]),
                            "lag_diag": float(acf[c + 1, c + 1]), "lag_anti": float(acf[c + 1, c - 1]),
                            "lag1_by_brightness_tercile": self.correlation.lag1_terciles,
                            "blocks": self.correlation.blocks, "significant": self.correlation.significant,
                            "quiet_blocks_z": self.correlation.quiet_z,
                            "brightness_rise_z": self.correlation.rise_z,
                            "terciles_spread_z": self.correlation.spread_z,
                            "least_excess_z": self.correlation.excess_z,
                            "block_spread_ratio": self.correlation.block_spread_ratio,
                            "lag2_reach": self.correlation.reach, "lag2_reach_se": self.correlation.reach_se,
                            "autocorrelation": acf.round(4).tolist()},
            "dark_level_third_cumulant": self.dark.to_dict() if self.dark is not None else None,
            "sparse_counts": self.counts.to_dict() if self.counts is not None else None,
            "notes": list(self.notes),
        }


#: Least side (pixels) of a frame whose noise `analyze` measures: its local means and correlation blocks are 8 x 8
#: (a 1-pixel-wide frame failed inside numpy's padding, and a 3 x 3 one read a sigma of 1e-12).
MIN_SIDE = 8


def analyze(frames: Iterable[np.ndarray], offset: float | None = None, evidence: bool = True) -> NoiseReport:
    """Fit every candidate and choose: signal-dependent when the fitted variance grows by more than
    1.5x over the brightness range (10th to 90th percentile), or by more than 1.1x with a slope
    eight standard errors from zero (kept correlated, `Correlated` with a gain, when the lag-1 noise
    correlation exceeds `CORR_PG_THRESHOLD` at every brightness), else correlated Gaussian when the
    lag-1 noise correlation exceeds 0.1 at every brightness, else white Gaussian. `offset` (data units),
    when known, separates read noise from the dark level; else the third cumulant's dark level does where it
    can (`_dark_offset`). `evidence=False` leaves out what only the report shows and the model does not use (that
    dark level when `offset` is given)."""
    frames = [central_crop(f) for f in frames]  # read once (frames may be memory-mapped), in their own dtype
    given = offset
    if not frames:
        raise ValueError("no frames to estimate noise from")
    small = min(frames, key=lambda f: min(f.shape[-2:]))
    if min(small.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"a frame of {small.shape[-2]}x{small.shape[-1]} pixels is too small to measure its noise "
                         f"(at least {MIN_SIDE}x{MIN_SIDE}: one block of the local statistics)")
    if not all(np.isfinite(f).all() for f in frames):
        raise ValueError("the frames hold NaN or infinite values: no noise can be measured there")
    frames, hot = zip(*(repair_hot(f) for f in frames))
    frames, hot = list(frames), sum(hot)
    hist = histogram(frames)
    if len(hist[0]) < 2:
        raise ValueError(f"every pixel holds the same value ({hist[0][0]:g}): there is no noise to measure")
    lattice = count_lattice(hist[0])
    clip = detect_clipping(frames, hist)
    notes = []
    if hot:
        notes.append(f"{hot} hot pixel(s) ({100 * hot / sum(f.size for f in frames):.3g} %: far above all but one of "
                     "their eight neighbours) read as a neighbour's value for the estimate")
    if clip.detected:
        ends = [f"{v:g} ({100 * p:.1f} % of pixels)" for v, p in ((clip.low, clip.fraction_low),
                                                                  (clip.high, clip.fraction_high)) if v is not None]
        notes.append("clipped at " + " and ".join(ends) + ": fitted only away from the clipping levels")
    if clip.fill:
        notes.append(f"regions filled with exactly {', '.join(f'{v:g}' for v in clip.fill)} ({100 * clip.fraction_fill:.1f} "
                     "% of pixels: padding or a mask) hold no noise: left out")

    def flat(m):  # no fit to scale by: one noise level everywhere
        return np.ones_like(m)

    pl = _places(frames, clip)
    try:
        fit, failure = mean_variance(frames, clip, None, pl), None
    except ValueError as e:  # strongly correlated noise can defeat the white-noise texture test
        fit, failure = None, e
    corr = correlation(frames, fit.predict if fit is not None else flat, clip,
                       follows_signal=fit is not None and _follows_signal(fit))
    decide = None
    if corr.significant:  # refit with the correlation: the patch fit measures the levels, while the HH fit, which
        # counts every flat place, decides whether they follow the signal (on the raw EPU micrograph the patches' slope
        # was 6 standard errors from 0, HH's 12; HH's slope ran 24 % low on synthetic data like it, the patches' 13 %)
        white, white_failure = fit, failure
        try:
            decide = mean_variance(frames, clip, corr.acf, pl, patches=False)
            fit, failure = mean_variance(frames, clip, corr.acf, pl), None
        except ValueError as e:
            failure = failure or e
        if decide is not None and _follows_signal(decide):
            level = fit if fit is not None and fit.slope > 0 else decide  # (as the signal-dependent model takes it)
            corr.block_spread_ratio = corr.block_spread(level.predict)
            if corr.nonstationary:  # texture: back to the white fit
                fit, failure, decide = white, white_failure, None
    if fit is None:
        notes.append(f"no mean-variance fit: {failure}")
    if corr.rises:
        lo, hi = corr.lag1_terciles[0], corr.lag1_terciles[-1]
        notes.append(f"lag-1 correlation rising with brightness, from {lo:.2f} to {hi:.2f} ({corr.rise_z:.1f} standard "
                     "errors), as texture's does where the noise follows the signal: the darkest third's taken")
    by_tercile = "lag-1 correlation " + " / ".join(f"{t:.2f}" for t in corr.lag1_terciles) + \
        " from the darkest third to the brightest"
    if not corr.measured:
        notes.append(f"spatial correlation not measured: {corr.blocks} flat block(s) away from any clipping level, "
                     f"where telling correlated noise from texture takes {3 * MIN_CORR_BLOCKS}: the noise is taken "
                     "as white")
    elif corr.significant:
        notes.append(f"noise is spatially correlated (lag-1 correlation {corr.lag1:.2f} at every brightness)")
    elif corr.texture:
        notes.append(f"lag-1 correlation {corr.lag1:.2f}, but {-corr.quiet_z:.1f} standard errors lower in the quieter "
                     "half of the flat blocks than stationary noise would be: taken as texture")
    elif corr.uneven:
        notes.append(f"{by_tercile} ({corr.spread_z:.1f} standard errors apart), where stationary noise gives the same "
                     "at every brightness: taken as texture")
    elif corr.nonstationary:
        notes.append(f"{by_tercile}, but the flat blocks' variances spread {corr.block_spread_ratio:.1f} times as far "
                     "as stationary noise's: taken as texture")
    elif corr.marginal:
        notes.append(f"{by_tercile}, but not every one clearly over {CORR_THRESHOLD:g} (the least by "
                     f"{corr.excess_z:.1f} standard errors): taken as texture")
    elif corr.far_reaching:
        notes.append(f"{by_tercile}, but reaching {corr.reach:.2f} of it at lag 2, as far as texture's, where a weak "
                     "noise correlation falls off fast: taken as texture")
    elif corr.lag1 > CORR_THRESHOLD:
        notes.append(f"lag-1 correlation {corr.lag1:.2f} overall but not at every brightness: taken as texture")
    if corr.reach_uncertain:
        notes.append(f"the lag-2 reach {corr.reach:.2f} +- {corr.reach_se:.2f} lies within a standard error of "
                     f"{LONG_REACH:g}, where texture's begins: whether the weak correlation is the noise's or texture's "
                     "is uncertain, and the gain with it (pool more files of the detector, or give --noise)")
    if fit is not None:
        test = decide if decide is not None else fit
        if _follows_signal(test):
            fit = fit if fit.slope > 0 else test
            # the stencil's cumulant factors hold for independent pixels: not where neighbours correlate at all (FMD's
            # lag-1 0.2-0.36 put BPAE_R's level at 11.6 +- 1.5 where its clean reference gives 5.1)
            usable = offset is None and clip.low is None  # (`_dark_offset` refuses floor-clipped data)
            darkest = darkest_data(frames, clip, fit)
            dark = dark_level(frames, clip, fit, darkest) if (evidence or usable) and abs(corr.lag1) <= CORR_THRESHOLD \
                else None
            if offset is None and (offset := _dark_offset(dark, fit, clip)) is not None:
                notes.append(f"offset {offset:.5g} from the third cumulant of the noise (shot noise is skewed, read "
                             f"noise is not; dark level {dark.offset:.5g} +- {dark.se:.2g}); --noise auto:offset=V "
                             "overrides it")
            elif offset is None and dark is not None and not dark.below_data:
                notes.append(f"the third cumulant's dark level {dark.offset:.5g} +- {dark.se:.2g} lies above the "
                             f"darkest data ({dark.darkest:.5g}), where no offset can lie: not taken")
            # (a floor skews the data's dark end: FMD BPAE_R, clipped at 3, has its darkest unclipped data at 4.1,
            # below the dark level of 5.1 its clean reference gives, and a gain read through there lay 17 % low)
            model = _signal_dependent(fit, offset, notes, darkest if clip.low is None else np.inf)
            _note_read_noise_precision(model, fit, notes)
            if fit.r2_heldout < HELDOUT_R2:
                notes.append(f"the line predicts the held-out half of the data poorly (R^2 {fit.r2_heldout:.2f}): "
                             "texture in the flat places or too narrow a span of brightness, so the gain may be tens "
                             "of per cent off (files of the same detector pooled, or a known --noise, help)")
            elif not np.isfinite(fit.r2_heldout):  # (3 of the 68 BSD68 images alone at 1-100 photons, two of them
                # with the gain 23 and 26 % off; a 256 x 256 crop of FMD BPAE_B, half its pixels on its floor)
                notes.append("the held-out half of the data has too few flat places away from any clipping level to "
                             "check the line on, so the gain may be tens of per cent off (files of the same detector "
                             "pooled, or a known --noise, help)")
            if not corr.significant:
                counted = _whole_counts(model, lattice, notes, given)
                if counted is model and (counts := sparse_counts(frames, hist, lattice, given)) is not None:
                    return _counted(counts, clip, fit, corr, notes)  # (at 0.005-0.05 photons on 256 x 256 the line's
                    # gain can lie 12 % off)
                model = counted
            if corr.significant and min(corr.lag1_terciles) > CORR_PG_THRESHOLD:  # the level follows the signal,
                # the correlation is the kernel's: white Poisson-Gaussian SURE would let a network copy it
                model = with_kernel(model, corr.kernel())
            return NoiseReport(model, "signal-dependent", clip, fit, corr, notes, dark)
        if corr.significant:
            used = fit.bin_used
            level = float(np.sqrt(max(np.average(fit.bin_var[used], weights=fit.bin_count[used]), 1e-300)))
            # texture only inflates both levels: the smaller (marginal sigma, Set12 and the first 12 BSD68 images at
            # 5 / 15 / 25 / 50 grey levels, lag-1 0.38: mean error 17 / 8 / 4 / 4 % and 28 / 17 / 11 / 5 %, where the
            # sub-band level alone gave 27 / 12 / 6 / 4 % and 48 / 22 / 15 / 6 %)
            level = min(level, correlated_sigma(frames, corr.kernel(), clip))
            model = Correlated(sigma=level, kernel=corr.kernel())
            return NoiseReport(model, "correlated", clip, fit, corr, notes)
    readings = []
    g = estimate_gaussian(frames, clip, readings)
    # no line, or a level under half a step of data on a lattice (all-dark flat patches): maybe sparse counts
    if (fit is None or lattice is not None and g.sigma < lattice[0] / 2) and \
            (counts := sparse_counts(frames, hist, lattice, given)) is not None:
        return _counted(counts, clip, fit, corr, notes)
    if g.sigma <= NO_NOISE:
        raise ValueError("no noise found: the places away from the clipping levels and filled regions hold none "
                         "(noise-free data, such as a clean mask)")
    for higher, why in ((False, "the flattest places away from it read {:.4g}, texture's, as the held-out check's do"),
                        (True, "noise of that level leaves no flat place clear of the clipping levels, and the flat "
                               "places near them read {:.4g}, cut short")):
        if cut := [p for p, c, taken in readings if c is not None and taken == c and (c > p if higher else c < p)]:
            notes.append(f"noise level read where the data sit on a clipping level (a censored-normal fit of the places "
                         f"there), in {len(cut)} of {len(readings)} frame(s): " + why.format(np.median(cut)))
    return NoiseReport(g, "gaussian", clip, fit, corr, notes)


def _counted(counts: SparseCounts, clip: Clipping, fit: MeanVarianceFit | None, corr: Correlation,
             notes: list[str]) -> NoiseReport:
    """The report for sparse counts: their dark level is where counts start, not a floor (the pile-up test cannot tell
    at 0.001 photons per pixel, where all but a few pixels in a thousand hold none)."""
    if clip.low == counts.model.offset:
        clip = Clipping(None, clip.high, 0.0, clip.fraction_high)
        notes = [t for t in notes if not t.startswith("clipped at ")]
    return NoiseReport(counts.model, "signal-dependent", clip, fit, corr, notes + [counts.note], counts=counts)


def _growth(fit: MeanVarianceFit, lo: float, hi: float) -> float:
    """How many times the fitted variance grows from brightness `lo` to `hi` (infinite where it starts at 0)."""
    v_lo, v_hi = fit.predict(lo), fit.predict(hi)
    return v_hi / v_lo if v_hi > 0 and v_lo > 0 else (np.inf if v_hi > 0 else 0.0)


def _follows_signal(fit: MeanVarianceFit) -> bool:
    """Whether the fitted variance grows with the signal: by `SLOPE_RATIO` over the brightness range fitted, or by
    `MIN_GROWTH` with a slope `SLOPE_Z` standard errors from zero, or by `SLOPE_RATIO` over the data's whole range
    with a slope `EXTEND_Z` standard errors from zero."""
    z = fit.slope / fit.slope_se if fit.slope_se > 0 else np.inf
    growth = _growth(fit, fit.mean_lo, fit.mean_hi)
    return fit.slope > 0 and (growth >= SLOPE_RATIO or (growth >= MIN_GROWTH and z >= SLOPE_Z)
                              or (_growth(fit, fit.data_lo, fit.data_hi) >= SLOPE_RATIO and z >= EXTEND_Z))


def _signal_dependent(fit: MeanVarianceFit, offset: float | None, notes: list[str], darkest: float) -> NoiseModel:
    """The line's gain `a` and intercept `b = sigma^2 - a * offset` as a model, choosing the offset. Where a given (or
    found) offset leaves no read noise (`b + a * offset <= 0`), the gain is refitted through the line's bins with none
    (`_gain_through`): the line's own slope with the intercept dropped would predict variances off the data (BSD68
    test031 alone at 5-1500 photons with offset 1000: the line's slope read 14 times the gain, its intercept well
    below `-a * offset`, a model whose variance at the data's mean was 21 times the line's). A negative intercept
    puts the dark level at `-b / a`, but never above the `darkest` data (`darkest_data`), where none can lie: a line
    that does is steepened by texture whose variance grows faster than the signal's (BSD68 test036 alone at 10-1000
    photons: flat places over 274-307 only, the line's dark level 261 where the darkest data lie at 128, its
    slope 38 times the gain); its gain is refitted through the darkest data's level with no read noise. A positive
    intercept leaves the offset unknown and takes 0, unless the darkest data lie below it (offset-corrected data whose
    dark level was over-subtracted): then the offset is theirs, the most it can be (Set12 crops at 1-300 photons,
    gain 2, read noise 3, offset -50: read noise 10.4 with offset 0). (Not where a floor clips the data: `analyze`
    passes an infinite `darkest` there.)"""
    a, b = fit.slope, fit.intercept
    if offset is None and b <= 0 and -b / a > darkest:
        notes.append(f"the line's dark level {-b / a:.5g} lies above the darkest data ({darkest:.5g}), where no offset "
                     "can lie: texture steepens the line; the offset taken at the darkest data")
        offset = darkest
    elif offset is None and b > 0 and darkest < 0:
        notes.append(f"offset and read noise are not separable from the mean-variance relation, and the darkest data "
                     f"({darkest:.5g}) lie below 0: offset taken there, the most it can be (give --noise auto:offset=V "
                     "if the dark level is known)")
        offset = darkest
    if offset is not None:
        s2 = b + a * offset
        if s2 <= 0:
            g = _gain_through(fit, offset)
            notes.append(f"with offset {offset:g} the fit leaves no read noise: gain {g:.4g} fitted with none "
                         f"(the line's slope {a:.4g})")
            return Poisson(gain=g, offset=offset)
        return PoissonGaussian(gain=a, sigma=float(np.sqrt(s2)), offset=offset)
    if b > 0:
        notes.append("offset and read noise are not separable from the mean-variance relation: offset assumed 0 "
                     "(give --noise auto:offset=V if the dark level is known)")
        return PoissonGaussian(gain=a, sigma=float(np.sqrt(b)), offset=0.0)
    notes.append(f"negative intercept: read noise taken as 0 and the dark level as {-b / a:g}")
    return Poisson(gain=a, offset=-b / a)


def _gain_through(fit: MeanVarianceFit, offset: float) -> float:
    """The gain of `var = gain * (mean - offset)` fitted by weighted least squares (`_wls_line`'s weights) through the
    bins the line went through that lie above the offset; the line's slope where none does."""
    line = fit.bin_used & ~fit.bin_texture
    x, v, n = fit.bin_mean[line] - offset, fit.bin_var[line], fit.bin_count[line]
    above = x > 0
    if not above.any():
        return fit.slope
    w = n[above] / np.maximum(v[above], 1e-300) ** 2
    return float((w * v[above] * x[above]).sum() / (w * x[above] ** 2).sum())


def _note_read_noise_precision(model: NoiseModel, fit: MeanVarianceFit, notes: list[str]) -> None:
    """Say so when the intercept, hence the read noise, is poorly determined: where the darkest data
    fitted have a variance many times the read noise's, the intercept is a long extrapolation."""
    pg = model.as_pg()
    s2 = float(pg.sigma) ** 2
    if s2 > 0 and fit.intercept_se > 0.2 * s2:
        dark = fit.darkest_variance
        notes.append(f"read noise poorly determined: sigma^2 = {s2:.4g} +- {fit.intercept_se:.2g} "
                     f"(the darkest data fitted have a noise variance of {dark:.4g}: a dark frame or --offset helps)")


#: How far the fitted gain may lie from the step of data on a lattice of whole numbers for `_whole_counts` to take
#: them as counts: the photon-counting rows of `benchmarks/noise_estimation.py` fit it within 2.7 %.
COUNT_GAIN_TOLERANCE = 0.1


def count_lattice(values: np.ndarray) -> tuple[float, float] | None:
    """`(step, base)` where all `values` (any shape, e.g. the distinct values of a `histogram`) are whole numbers on
    `base + step * k`, else None (values that are not whole numbers, or a single value)."""
    v = np.unique(values)
    if not (np.all(np.isfinite(v)) and np.all(np.abs(v) < 2.0**52) and np.all(v == np.round(v))):
        return None
    step = int(np.gcd.reduce(v.astype(np.int64) - int(v[0])))
    return (float(step), float(int(v[0]) % step)) if step else None


def _whole_counts(model: NoiseModel, lattice: tuple[float, float] | None, notes: list[str],
                  given: float | None) -> NoiseModel:
    """A counting detector's model where the data say so: all values on a `lattice` of whole numbers (`count_lattice`),
    the fitted gain within `COUNT_GAIN_TOLERANCE` of its step and the read noise under half a step (rounding).
    Then the gain is the step, there is no read noise and the dark level lies on the lattice, so that a photon
    removed or added is a value the data can hold: the risk estimates' photon removal is exact there (a fitted gain
    of 0.986 moved each probed pixel off the lattice, which showed a network the moved input, and it learned to
    exploit that). Otherwise (or where an offset `given` by the user lies off the lattice) the model stands."""
    pg = model.as_pg()
    if lattice is None or not float(pg.gain) > 0:
        return model
    step, base = lattice
    gain, sigma, offset = float(pg.gain), float(pg.sigma), float(pg.offset)
    if abs(gain / step - 1) > COUNT_GAIN_TOLERANCE or sigma >= step / 2:
        return model
    dark = base + step * round((offset - base) / step)
    if given is not None and given != dark:
        return model
    notes.append(f"whole counts: every value lies on a lattice of step {step:g} and the fitted gain ({gain:.4g}, "
                 f"read noise {sigma:.2g}) is that of counting: gain taken as {step:g} and the offset as {dark:g} (was "
                 f"{offset:.4g}), no read noise")
    return Poisson(gain=step, offset=dark)


#: Share of pixels on the lowest value from which `sparse_counts` reads the data as sparse counts (Poisson counts
#: of mean below ln 2 ~ 0.69 put more than half the pixels on 0), and the side of its blocks.
SPARSE_SHARE = 0.5
SPARSE_BLOCK = 8
#: Relative standard error of the dispersion index above which `sparse_counts` holds too few counts to decide.
SPARSE_PRECISION = 0.03


@dataclass
class SparseCounts:
    """Counts too sparse for a mean-variance fit, read by their dispersion index (`sparse_counts`)."""

    model: NoiseModel
    dispersion: float   # within-block variance over mean above the dark level, data units (the gain, for Poisson)
    se: float
    dark_share: float   # of the pixels, on the dark level
    note: str

    def to_dict(self) -> dict:
        return {"dispersion_index": self.dispersion, "se": self.se, "dark_share": self.dark_share}


def sparse_counts(frames: list[np.ndarray], hist: tuple[np.ndarray, np.ndarray], lattice: tuple[float, float] | None,
                  given: float | None = None) -> SparseCounts | None:
    """Poisson counts too sparse for the mean-variance fit (a counting camera's frame at 0.001-0.1 electrons per
    pixel: most places hold no count at all, so flat patches are all-dark, their variance 0, and the bins span too
    little brightness to draw a line through). Read where all values (`hist`: the frames' `histogram`) lie on a
    `lattice` of whole numbers (`count_lattice`) and more than `SPARSE_SHARE` of the pixels sit on its lowest value, the dark level (or the
    `given` offset): there the dispersion index (the variance within `SPARSE_BLOCK`-square blocks over their mean
    above the dark level, pooled; the blocks take out the signal's slow changes, and a variance, unlike a
    neighbour difference, is not lowered by a detector's charge sharing) is the gain for Poisson counts, whatever
    their mean. Taken as counting, `poisson:gain=step,offset=dark`, when it lies within `COUNT_GAIN_TOLERANCE` of the
    lattice's step and its standard error is under `SPARSE_PRECISION`; else None."""
    values, n = hist
    if lattice is None or n[0] <= SPARSE_SHARE * n.sum():
        return None
    step, dark = lattice[0], float(values[0]) if given is None else float(given)
    b = SPARSE_BLOCK
    var, mean = [], []
    for f in frames:
        h, w = (np.array(np.shape(f)) // b) * b
        blocks = np.asarray(f[:h, :w], np.float64).reshape(h // b, b, w // b, b).transpose(0, 2, 1, 3)
        blocks = blocks.reshape(-1, b * b)
        var.append(blocks.var(axis=1, ddof=1))
        mean.append(blocks.mean(axis=1) - dark)
    var, mean = np.concatenate(var), np.concatenate(mean)
    if len(mean) < 2 or not mean.sum() > 0:
        return None
    d = float(var.sum() / mean.sum())
    se = float(np.std(var - d * mean) * np.sqrt(len(mean)) / mean.sum())
    if se > SPARSE_PRECISION * step or abs(d / step - 1) > COUNT_GAIN_TOLERANCE:
        return None
    share = float(n[0] / n.sum())
    note = (f"sparse counts: {100 * share:.1f} % of pixels on the dark level {dark:g}, every value on a lattice of "
            f"step {step:g}, and the dispersion index (variance over mean above the dark level, within {b}x{b} "
            f"blocks) {d:.4g} +- {se:.2g}, that of counting: gain taken as {step:g}, no read noise")
    return SparseCounts(Poisson(gain=step, offset=dark), d, se, share, note)


def _dark_offset(dark: DarkLevel | None, fit: MeanVarianceFit, clip: Clipping) -> float | None:
    """The offset `auto` takes from the third cumulant's dark level, or None. Only where its brightness bins
    agree, it is precise (its error moves the read variance it implies by at most `SKEW_PRECISION` of the darkest
    variance) and no floor clips the data (which skews its dark end). With a negative intercept the line alone
    puts the offset where it leaves no read noise, the least it can be: a level above that is taken, one below
    is not (the line's choice stands).
    With a positive intercept the line alone takes offset 0: the level is taken only when it is over
    `SKEW_OFFSET_Z` standard errors above 0, so offset-free data keep 0 (at three, one of five offset-free
    draws of a smooth scene at 1-100 photons, gain 0.5, read noise 1, took a level of 2.2 +- 0.65: read noise +44 %).
    Never a level above the darkest data (`DarkLevel.below_data`): at 5-200 photons, gain 1.5, read noise 2 and no
    offset, one draw of sixteen put it at 23.2 +- 4.2 (5.5 standard errors) where the darkest data average 11, and
    took it, read noise 6.2."""
    if dark is None or not dark.consistent or not dark.below_data or clip.low is not None:
        return None
    if fit.slope * dark.se > SKEW_PRECISION * fit.darkest_variance:
        return None
    if fit.intercept <= 0:
        return dark.offset if dark.offset > -fit.intercept / fit.slope else None
    return dark.offset if dark.offset > SKEW_OFFSET_Z * dark.se else None


def estimate_auto(frames: Iterable[np.ndarray], offset: float | None = None) -> NoiseModel:
    """`--noise auto`: the model `analyze` chooses."""
    return analyze(frames, offset, evidence=False).model


#: Relative disagreement, beyond three standard errors, that files' gains and dark variances may show and still count
#: as one detector's noise: texture reads single natural images' gain up to 35 % off (Set12 crops at 30 photons:
#: 1.85 to 2.69 for a gain of 2, standard errors 0.05-0.14), where two sessions or gain settings usually differ by
#: factors. Measured on the twelve 256 x 256 Set12 crops at 1, 5 and 30 photons (gain 2, read noise 3, two draws):
#: one detector passes at all three; half the files at gain 3 or 4, an offset 40 higher or a read noise of 8 fail
#: (at 15 %, gain 2 vs 3 passed at 1 and 5 photons, where single crops' slopes have standard errors near 10 %).
SESSION_TOLERANCE = 0.1


def _share_value(v: np.ndarray, se: np.ndarray) -> bool:
    """Whether the intervals `v +- (3 se + SESSION_TOLERANCE |v|)` have a point in common."""
    half = 3 * se + SESSION_TOLERANCE * np.abs(v)
    return bool((v - half).max() <= (v + half).min())


def one_session(files: list[NoiseReport], pooled: NoiseReport) -> bool:
    """Whether files whose noise is signal-dependent share one detector's model, so that the pooled fit (more
    data, less texture) serves each of them better than its own: the pooled fit is signal-dependent, and the files'
    mean-variance fits agree in their slopes (gains) and in their fitted variances at the pooled fit's dark end (10th
    percentile brightness: read noise and offset), each sharing a value within `_share_value`'s intervals, and the
    pooled model gives each file's fitted variance at the middle of its brightness within the same margin
    (`serves`). (At 1 photon per pixel single 256 x 256 Set12 crops read the gain 7-28 % low while the twelve pooled
    read it within 1 %.) Where most files find their noise signal-dependent, each must have a fit that agrees. Where
    most do not, their texture hides the shot noise and the pool is the only evidence of the noise's form, so only
    the files with evidence of their own must agree: a fit whose slope is not below zero by over 3 standard errors (a variance that
    falls with brightness is texture's, which noise cannot do). Eight 128 x 128 BSD68 crops at 3000 photons read
    Gaussian noise alone (four without a fit, one with a slope of -5.8 +- 1.1) and the pool gain 1.10 for a true 1:
    each crop's own model started `pg-unsure`, which learned a gain of 33 and ended 13 dB below the noisy input; the
    pooled one 1.4, and the input's 42.40 dB. (At 300 photons, where seven of eight crops find their noise
    signal-dependent, taking the pool over the eighth's missing fit cost 0.1-0.9 dB: the pool's dark level read 37
    for a true 0.)"""
    if pooled.kind != "signal-dependent" or pooled.fit is None or len(files) < 2:
        return False
    if 2 * sum(f.kind == "signal-dependent" for f in files) >= len(files):
        if any(f.fit is None for f in files):
            return False
        fits = [f.fit for f in files]
    else:
        fits = [f.fit for f in files if f.fit is not None and f.fit.slope + 3 * f.fit.slope_se >= 0]
    if len(fits) < 2:
        return True
    m = pooled.fit.mean_lo
    return _share_value(np.array([f.slope for f in fits]), np.array([f.slope_se for f in fits])) and \
        _share_value(np.array([float(f.predict(m)) for f in fits]), np.array([f.predict_se(m) for f in fits])) and \
        all(serves(pooled.model, f) for f in fits)


def serves(model: NoiseModel, fit: MeanVarianceFit) -> bool:
    """Whether `model` (the pooled one, or a run's for a file it was not trained on) gives a file's fitted variance
    at the middle of its brightness (between `mean_lo` and `mean_hi`: the line's mean over them) within
    `3 se + SESSION_TOLERANCE` of it, as a file of one detector's does whose own fit texture moves. Correlated noise
    is not checked (true): a single file's fit reads it far less well than a pool does (six Set12 crops at 30 photons
    with plus-kernel noise: each alone 12-25 % high in four of them, the pool within 2 %). Files may agree with each
    other while the pool, a mixture of their unlike detectors, fits some of them nowhere: four FMD frames at gains
    3.6-4.9 pooled to gain 3.89, 25 % below the mouse frame's variance there (20 standard errors). (At the ends instead, a pool whose
    read noise is off at one file's darkest tenth, 72 % there, split eight raw-micrograph-scale crops that trained
    better on it: 0.2-0.4 dB for the SURE family.)"""
    if not model.white:
        return True
    q = (fit.mean_lo + fit.mean_hi) / 2
    v = float(fit.predict(q))
    return abs(float(model.variance(torch.tensor(q, dtype=torch.float64))) - v) <= \
        3 * fit.predict_se(q) + SESSION_TOLERANCE * abs(v)
