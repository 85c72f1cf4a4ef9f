"""Noise estimation on synthetic data of known parameters, and on the real FMD and EPU data."""
import numpy as np
import pytest

from sslrecon.noise import Correlated, Gaussian, Poisson, PoissonGaussian
from sslrecon.noise.estimate import (CORR_THRESHOLD, EXCESS_Z, LAGS, Clipping, _pile_up, analyze, count_lattice,
                                     detect_clipping, gaussian_sigma)

from .conftest import EPU, FMD, PARTICLES, SHARED, needs_shared, smooth_image


def ramp_scene(n=384, lo=1.0, hi=1000.0, linear=False):
    """Photon rates spanning lo..hi log-linearly (or linearly, as a scene's grey levels map onto photons:
    then few pixels are dark), with broad blobs (no fine texture)."""
    r, c = np.mgrid[0:n, 0:n] / n
    u = 0.8 * c + 0.2 * np.exp(-((r - 0.5) ** 2 + (c - 0.3) ** 2) / 0.02)
    u = (u - u.min()) / (u.max() - u.min())
    return lo + u * (hi - lo) if linear else 10 ** (np.log10(lo) + u * (np.log10(hi) - np.log10(lo)))


def blob_scene(n, seed):
    """A [0, 1] scene of a ramp and broad blobs (`benchmarks/noise_estimation.py`'s smooth scene): few pixels near 0."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:n, 0:n] / n
    x = 0.5 * c + 0.2 * r
    for _ in range(8):
        cy, cx, w, a = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2), rng.uniform(-0.5, 0.5)
        x += a * np.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * w**2))
    return (x - x.min()) / (x.max() - x.min())


def test_line_refined_on_each_bins_patch_groups_reads_the_dark_end():
    """Photons spread over 1-1000 by a smooth scene with few dark pixels: the read noise's information lies in the
    darkest few per cent of the pixels, inside one wide bin whose variance, taken at its average brightness, loses the
    spread. The line through each bin's patches grouped by their rings' mean (`_refined_line`) reads the read noise
    with a fraction of the bins' line's error over eight draws; at 0.2-3 photons, where the shot noise is most skewed,
    the groups (chosen by the ring, not by the patches' own noisy means) leave the gain and read noise unbiased."""
    from sslrecon.noise.estimate import _wls, mean_variance

    scenes = [blob_scene(256, seed) for seed in range(3)]
    for lo, hi, gain, read, offset in ((1, 1000, 2.0, 4.0, 0.0), (0.2, 3, 2.0, 3.0, 100.0)):
        refined, bins, gains = [], [], []
        for draw in range(8):
            rng = np.random.default_rng(draw)
            frames = [gain * rng.poisson(lo + x * (hi - lo)) + offset + rng.normal(0, read, x.shape) for x in scenes]
            fit = mean_variance(frames)
            line = fit.bin_used & ~fit.bin_texture
            a, b, _ = _wls(fit.bin_mean[line], fit.bin_var[line], fit.bin_count[line])
            refined.append(np.sqrt(fit.intercept + fit.slope * offset) / read - 1)
            bins.append(np.sqrt(max(b + a * offset, 0.0)) / read - 1)
            gains.append(fit.slope / gain - 1)
        rms, bins_rms = np.sqrt(np.mean(np.square(refined))), np.sqrt(np.mean(np.square(bins)))
        if hi == 1000:
            assert rms < 0.6 * bins_rms and rms < 0.2
        else:
            assert abs(np.mean(refined)) < 0.02 and abs(np.mean(gains)) < 0.03


def test_a_floor_too_sparse_to_clip_keeps_the_bins_line():
    """8-bit frames of a smooth scene at 2-100 photons: a few zeros (under 0.1 % of the pixels, too few to count as
    clipping) spike over the ones while the counts rise beyond. The noise of the darkest patches is cut there, and the
    patch groups would take that in full, so the fit keeps the bins' own line. Counts below a photon (falling from 0)
    and rounded Gaussian data (rising from their lowest value) show no such floor."""
    from sslrecon.noise.estimate import _wls, detect_clipping, mean_variance

    rng = np.random.default_rng(3)
    frames = [np.clip(np.round(2.0 * rng.poisson(2 + 98 * blob_scene(256, seed)) + rng.normal(0, 3.0, (256, 256))),
                      0, 255).astype(np.uint8) for seed in range(4)]
    clip = detect_clipping(frames)
    assert clip.low is None and clip.sparse_low == 0 and clip.to_dict()["sparse_low"] == 0
    assert 1e-4 < clip.fraction_low < 1e-3
    fit = mean_variance(frames, clip)
    line = fit.bin_used & ~fit.bin_texture
    assert (fit.slope, fit.intercept) == _wls(fit.bin_mean[line], fit.bin_var[line], fit.bin_count[line])[:2]
    counts = [rng.poisson(0.05 + 0.5 * blob_scene(256, 0)).astype(np.uint16) for _ in range(3)]
    grey = [np.round(100 + rng.normal(0, 5, (256, 256))).astype(np.int16) for _ in range(3)]
    assert detect_clipping(counts).sparse_low is None and detect_clipping(grey).sparse_low is None


@pytest.mark.parametrize("gain,read", [(0.5, 1.0), (2.0, 4.0), (8.0, 24.0)])
def test_poisson_gaussian_over_three_decades(gain, read):
    rng = np.random.default_rng(int(gain * 10))
    frames = [gain * rng.poisson(ramp_scene()) + rng.normal(0, read, (384, 384)) for _ in range(2)]
    rep = analyze(frames)
    assert rep.kind == "signal-dependent" and isinstance(rep.model, PoissonGaussian)
    assert abs(rep.model.gain / gain - 1) < 0.1
    assert abs(rep.model.sigma / read - 1) < 0.1
    assert rep.r2 > 0.95


def test_gain_at_very_low_counts_where_read_noise_dominates():
    """0.2-3 photons, gain 2, read noise 3: the patch variance is mostly read noise and a patch's own mean is a
    noisy brightness (sd 0.5 counts against a 6-count range). Binned by their own mean the bins' brightness
    spreads wider than their variance follows (regression dilution): the gain came out 9-12 % low (here 9.8 %).
    Binned by the mean of the ring around each patch (independent of its noise) it is unbiased (-2.1 to +3.6 %
    over five draws)."""
    rng = np.random.default_rng(11)
    frames = [2.0 * rng.poisson(ramp_scene(lo=0.2, hi=3, linear=True)) + 100 + rng.normal(0, 3, (384, 384))
              for _ in range(3)]
    model = analyze(frames, offset=100.0).model
    assert abs(model.gain / 2 - 1) < 0.06 and abs(model.sigma / 3 - 1) < 0.03, model


def test_known_offset_separates_dark_level_from_read_noise():
    rng = np.random.default_rng(3)
    frames = [2.0 * rng.poisson(ramp_scene(lo=1, hi=300)) + 100 + rng.normal(0, 6, (384, 384)) for _ in range(2)]
    # offset and read noise move the same intercept; the third cumulant tells them apart where many pixels are dark
    rep = analyze(frames)
    blind = rep.model
    assert isinstance(blind, PoissonGaussian) and abs(blind.offset - 100) < 3 * rep.dark.se, (blind, rep.dark)
    assert abs(blind.sigma / 6 - 1) < 0.1, blind
    told = analyze(frames, offset=100.0).model
    assert isinstance(told, PoissonGaussian) and told.offset == 100.0
    assert abs(told.gain / 2 - 1) < 0.1 and abs(told.sigma / 6 - 1) < 0.1
    # both predict the same variance
    x = np.array([150.0, 500.0])
    np.testing.assert_allclose(blind.variance(__import__("torch").tensor(x)).numpy(),
                               told.variance(__import__("torch").tensor(x)).numpy(), rtol=0.02)


def test_third_cumulant_finds_the_dark_level_the_variance_cannot():
    """1..20 photons, gain 2, read noise 3, offset 100: the mean-variance line cannot tell the offset from read
    noise (alone it gives a Poisson model with a dark level near 95.5), but shot noise is skewed and read noise
    is not: the noise's third cumulant puts the dark level at 100, and `auto` takes it as the offset, so the
    read noise comes out right; the note says so, and a given offset still wins."""
    rng = np.random.default_rng(5)
    frames = [2.0 * rng.poisson(ramp_scene(lo=1, hi=20, linear=True)) + 100 + rng.normal(0, 3, (384, 384))
              for _ in range(2)]
    rep = analyze(frames)
    dark = rep.dark
    assert dark is not None and dark.consistent and dark.se < 1.5, dark
    assert abs(dark.offset - 100) < max(3 * dark.se, 0.5), dark
    assert isinstance(rep.model, PoissonGaussian) and rep.model.offset == dark.offset, rep.model
    assert abs(rep.model.sigma / 3 - 1) < 0.15 and abs(rep.model.gain / 2 - 1) < 0.05, rep.model
    assert any("third cumulant" in n and f"{dark.offset:.5g}" in n for n in rep.notes)
    assert rep.to_dict()["dark_level_third_cumulant"]["offset"] == dark.offset
    from sslrecon.noise.estimate import estimate_auto

    assert estimate_auto(frames) == rep.model  # --noise auto uses it too
    told = analyze(frames, offset=90.0)
    assert told.model.offset == 90.0 and not any("third cumulant" in n for n in told.notes)


def test_third_cumulant_leaves_offset_free_data_alone():
    """The dark level is taken only where it lies over five standard errors above the line's own choice of 0:
    offset-free data at low counts keep offset 0 (over several draws), as do clipped 8-bit data."""
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        frames = [2.0 * rng.poisson(ramp_scene(lo=1, hi=20, linear=True)) + rng.normal(0, 3, (384, 384))
                  for _ in range(2)]
        rep = analyze(frames)
        assert isinstance(rep.model, PoissonGaussian) and rep.model.offset == 0.0, (seed, rep.model, rep.dark)
        assert abs(rep.model.sigma / 3 - 1) < 0.15
    rng = np.random.default_rng(7)
    frames = [np.clip(np.round(4.0 * rng.poisson(ramp_scene(lo=1, hi=60, linear=True)) + rng.normal(0, 4, (384, 384))),
                      0, 255).astype(np.uint8) for _ in range(2)]
    assert analyze(frames).model.offset == 0.0


def test_third_cumulant_level_above_the_darkest_data_is_not_taken():
    """Offset-free data at 5-200 photons (gain 1.5, read noise 2): in one draw of sixteen on benchmarks'
    smooth scene the third cumulant put the dark level at 23.2 +- 4.2, 5.5 standard errors above 0, and `auto`
    took it (read noise 6.2 for a true 2). Here (a ramp whose darkest data average 7.5) the darkest level is read
    near that, a level three standard errors above it is refused, and the model keeps offset 0."""
    from sslrecon.noise.estimate import _dark_offset

    rng = np.random.default_rng(11)
    frames = [1.5 * rng.poisson(ramp_scene(lo=5, hi=200, linear=True)) + rng.normal(0, 2, (384, 384))
              for _ in range(2)]
    rep = analyze(frames)
    dark = rep.dark
    assert dark is not None and 5 < dark.darkest < 12, dark  # the darkest flat region: 7.5 counts
    assert dark.below_data == (dark.offset <= dark.darkest + 2 * dark.se)
    above = type(dark)(offset=dark.darkest + 3 * dark.se, se=dark.se, chi2=dark.chi2, bins=dark.bins,
                       darkest=dark.darkest)
    assert _dark_offset(above, rep.fit, rep.clipping) is None
    assert isinstance(rep.model, PoissonGaussian) and rep.model.offset == 0.0, (rep.model, dark)
    assert abs(rep.model.sigma / 2 - 1) < 0.3, rep.model
    assert rep.to_dict()["dark_level_third_cumulant"]["below_data"] == dark.below_data


def test_dark_offset_rules():
    """Which third-cumulant level `auto` takes as the offset: with a negative intercept only one above the
    least offset the line allows (a level below it leaves the line's choice, read noise 0); with a positive
    one only a level over five standard errors above 0; never an inconsistent or imprecise one, nor on data
    clipped at a floor."""
    from types import SimpleNamespace as NS

    from sslrecon.noise.estimate import DarkLevel, _dark_offset

    fit = NS(slope=2.0, intercept=-191.0, darkest_variance=20.0)  # least offset 95.5
    free = NS(low=None)
    assert _dark_offset(DarkLevel(100.0, 0.5, 1.0, 8), fit, free) == 100.0
    assert _dark_offset(DarkLevel(90.0, 0.5, 1.0, 8), fit, free) is None
    assert _dark_offset(DarkLevel(100.0, 0.5, 9.0, 8), fit, free) is None  # bins disagree
    assert _dark_offset(DarkLevel(100.0, 5.0, 1.0, 8), fit, free) is None  # 2 x 5 > 0.25 x 20
    assert _dark_offset(DarkLevel(100.0, 0.5, 1.0, 8), fit, NS(low=0.0)) is None
    positive = NS(slope=2.0, intercept=9.0, darkest_variance=20.0)
    assert _dark_offset(DarkLevel(2.4, 0.5, 1.0, 8), positive, free) is None  # 4.8 se
    assert _dark_offset(DarkLevel(2.6, 0.5, 1.0, 8), positive, free) == 2.6
    # never above the darkest data (their means are offset + gain * photons), beyond two standard errors
    assert _dark_offset(DarkLevel(100.0, 0.5, 1.0, 8, darkest=99.5), fit, free) == 100.0
    assert _dark_offset(DarkLevel(100.0, 0.5, 1.0, 8, darkest=98.9), fit, free) is None
    assert _dark_offset(DarkLevel(2.6, 0.5, 1.0, 8, darkest=1.0), positive, free) is None
    rng = np.random.default_rng(8)  # end to end: the line's choice stands and says so
    frames = [2.0 * rng.poisson(ramp_scene(lo=1, hi=300)) + 100 + rng.normal(0, 6, (384, 384)) for _ in range(2)]
    rep = analyze(frames)
    took = any("third cumulant" in n for n in rep.notes)
    assert took == (rep.model.offset != -rep.fit.intercept / rep.fit.slope), (rep.model, rep.notes)


def test_clipped_8bit_is_detected_and_fitted_away_from_the_clips():
    rng = np.random.default_rng(4)
    lam = ramp_scene(lo=0.5, hi=150)
    frames = [np.clip(np.round(2.0 * rng.poisson(lam) + rng.normal(0, 3, lam.shape)), 0, 255).astype(np.uint8)
              for _ in range(2)]
    rep = analyze(frames)
    assert rep.clipping.low == 0 and rep.clipping.high == 255
    assert any("clipped" in n for n in rep.notes)
    used = rep.fit.bin_mean[rep.fit.bin_used]
    sd = np.sqrt(rep.fit.predict(used))
    assert (used - 1.5 * sd > 0).all() and (used + 1.5 * sd < 255).all()  # fitted only away from the clips
    assert abs(rep.model.gain / 2 - 1) < 0.1 and abs(rep.model.sigma / 3 - 1) < 0.15


def test_pile_up_tells_a_floor_from_the_edge_of_a_count_distribution():
    """Exact histograms: a Poisson one, or a mixture of them, falls off toward zero more steeply at each value
    outwards and holds no floor at any rate; a clipped level gathers the tail beyond it into one spike, and where
    the pile-up spans two values (FMD fish: 3 and 4) the floor is its last."""
    from math import erf, factorial

    def poisson(k, lam):
        return lam**k * np.exp(-lam) / np.array([factorial(int(j)) for j in np.ravel(k)]).reshape(np.shape(k))

    def normal_cdf(x, mu, sd):
        return 0.5 * (1 + np.vectorize(erf)((np.asarray(x) - mu) / (sd * np.sqrt(2))))

    k = np.arange(6)
    for lam in (0.05, 0.3, 1.0, 2.0, 4.0):
        assert _pile_up(k, 1e6 * poisson(k, lam), 10**6) is None, lam
    rates = np.linspace(0.05, 0.6, 50)  # a scene's spread of rates: k! P(k) is then log-convex, still no floor
    assert _pile_up(k, 1e6 * poisson(k[:, None] + 0 * rates, rates).mean(1), 10**6) is None
    gauss = np.diff(normal_cdf(np.arange(-0.5, 6), -1.0, 2.0))  # around -1, clipped at 0: the tail lands on 0
    gauss[0] += normal_cdf(-0.5, -1.0, 2.0)
    assert _pile_up(k, 1e6 * gauss, 10**6) == 0
    fish = np.array([104, 1393, 107143, 32689, 2656, 2333])
    assert _pile_up(k + 1, fish, 262144) == 3


def test_zeros_of_photon_counts_are_no_floor():
    """Photon counts without read noise at 0.05-0.6 and 0.2-2 photons per pixel, as uint16: most pixels read 0, which
    is where the counts start, neither a pile-up nor the type's limit (once read as a floor, the fit lost every dark
    bin and chose Gaussian noise of sd 0.24 and 0.64)."""
    rng = np.random.default_rng(11)
    for lo, hi in ((0.05, 0.6), (0.2, 2.0)):
        frames = [rng.poisson(ramp_scene(lo=lo, hi=hi, linear=True)).astype(np.uint16) for _ in range(2)]
        rep = analyze(frames)
        assert not rep.clipping.detected, (lo, rep.clipping)
        assert rep.kind == "signal-dependent" and abs(rep.model.gain - 1) < 0.1, (lo, rep.model)


def test_the_few_counts_of_a_counting_cameras_frame_are_no_floor():
    """0.01-0.09 photons per pixel (a counting camera's single frame): 95 % of the pixels read 0, 0.1-0.2 % read 2 and
    the values beyond are all but empty, so 2 looked like a pile-up (the drop beyond it was not measurable) and every
    patch touching it was left out: none were left, and `analyze` failed ("Eigenvalues did not converge"). A level
    clips the tail of the data and never lies beyond their median."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        frames = [rng.poisson(0.05 * np.ones((512, 512)) * np.linspace(0.2, 1.8, 512)).astype(np.uint16)
                  for _ in range(3)]
        rep = analyze(frames)
        assert not rep.clipping.detected and rep.model == Poisson(gain=1.0, offset=0.0), (seed, rep.clipping)


def test_sparse_counts_are_read_by_their_dispersion_index():
    """At 0.0001-0.05 photons per pixel flat patches are all dark and the brightness bins too narrow for a line: `auto`
    gave `Gaussian(sigma=1e-12)` (or failed outright, a lattice of place means stepping over the bins' span) and called
    the zeros a floor. Counts on a lattice whose lowest value holds most pixels are read by their variance over mean
    within blocks: the step's Poisson model where that matches it (step 2 too, and a dark level of 100), not events
    of random height 1-5 (dispersion about 3.7), nor an 8-bit frame of read noise clipped at 0 (over half its pixels)."""
    n = 256
    y, x = np.mgrid[:n, :n] / n
    shape = 0.5 + 0.4 * np.sin(6 * x) * np.cos(4 * y)
    shape = (shape - shape.min()) / np.ptp(shape)
    rng = np.random.default_rng(4)
    for lo, hi in ((0.0001, 0.001), (0.001, 0.01), (0.005, 0.05)):
        for _ in range(3):
            rep = analyze([rng.poisson(lo + (hi - lo) * shape).astype(np.uint16)])
            assert rep.model == Poisson(gain=1.0, offset=0.0) and not rep.clipping.detected, (lo, rep.notes)
    k = rng.poisson(0.002 + 0.02 * shape)
    assert analyze([2 * k]).model == Poisson(gain=2.0, offset=0.0)
    rep = analyze([(k + 100).astype(np.uint16)])
    assert rep.model == Poisson(gain=1.0, offset=100.0) and any(t.startswith("sparse counts") for t in rep.notes)
    heights = np.zeros_like(k)
    for v in range(1, k.max() + 1):
        heights[k >= v] += rng.integers(1, 6, int((k >= v).sum()))
    assert not isinstance(analyze([heights.astype(np.uint16)]).model, Poisson)
    read = np.round(np.clip(rng.normal(0, 0.8, (n, n)) + 20 * shape * (shape > 0.7), 0, 255)).astype(np.uint8)
    assert (read == 0).mean() > 0.5 and not any(t.startswith("sparse counts") for t in analyze([read]).notes)


def test_regions_filled_with_one_value_are_left_out(rng):
    """Zero padding round an aligned image, a masked half and a mean-filled border: the flattest patches were the
    fill's, and `gaussian_sigma` read 0 (`gaussian:sigma=1e-12`). A value filling whole regions is now left out as a
    clipped level is, and reported; noise on a lattice (8-bit rounding) and sparse counts' zeros are no fill."""
    clean = smooth_image(rng, 256, 256, level=0.0, amp=0.3)  # zero-mean, as normalised micrographs
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    for frame, value in ((np.pad(noisy, 48), 0.0), (np.where(np.arange(256) < 140, np.float32(0), noisy), 0.0),
                         (np.pad(noisy, 24, constant_values=0.125), 0.125)):
        rep = analyze([frame])
        assert rep.clipping.fill == (value,) and not rep.clipping.detected, rep.clipping
        assert abs(rep.model.sigma / 0.05 - 1) < 0.05, rep.model
        assert any(n.startswith("regions filled with exactly") for n in rep.notes)
        assert not any("hot pixel" in n for n in rep.notes), rep.notes  # (over half masked: the spread read 0)
    rep = analyze([np.pad(noisy + 1, 48)])  # below all the data: a floor, whose margin costs nothing here
    assert rep.clipping.low == 0.0 and not rep.clipping.fill and abs(rep.model.sigma / 0.05 - 1) < 0.05
    rep = analyze([np.pad(np.pad(noisy, 20, constant_values=0.125), 20)])  # padded twice, 0.125 inside 0
    assert set(rep.clipping.fill) == {0.0, 0.125} and abs(rep.model.sigma / 0.05 - 1) < 0.05, rep.clipping
    eight_bit = np.round(np.clip(100 * (clean + 1) + rng.normal(0, 2, clean.shape), 0, 255)).astype(np.uint8)
    assert not analyze([eight_bit]).clipping.fill
    assert not analyze([rng.poisson(0.02 * (clean + 0.5)).astype(np.uint16)]).clipping.fill


def test_hot_pixels_are_read_as_a_neighbours_value(rng):
    """One pixel in a thousand far above all its neighbours (a defective pixel, a cosmic-ray hit) put white noise of
    sd 0.05 at `pg:gain=2.4,sigma=0.74` and a Poisson-Gaussian image's gain at 29000 for 2: the estimate now reads
    them as a neighbour's value, and says how many. Clean data and sparse counts have none. Nearer the data the
    patch fit leaves out the patches holding one."""
    from sslrecon.noise.estimate import repair_hot

    clean = smooth_image(rng, 384, 384, level=0.5, amp=0.3)
    hot = rng.random(clean.shape) < 1e-3
    white = clean + rng.normal(0, 0.05, clean.shape)
    rep = analyze([np.where(hot, 50.0, white)])
    assert isinstance(rep.model, Gaussian) and abs(rep.model.sigma / 0.05 - 1) < 0.03, rep.model
    assert any(n.startswith(f"{hot.sum()} hot pixel") for n in rep.notes), rep.notes
    counts = 100 + 2 * rng.poisson(200 * clean) + rng.normal(0, 3, clean.shape)
    assert abs(analyze([np.where(hot, 60000.0, counts)]).model.gain / 2 - 1) < 0.05
    assert repair_hot(white)[1] == 0 and repair_hot(counts)[1] == 0
    # 60 noise sd high (sd 20 at the mean): under the repair's threshold, and the patches that hold one are left out
    # (their noise-only energy far over their bin's), where they put the gain at 2.1x
    rep = analyze([np.where(hot, counts + 1200, counts)])
    assert abs(rep.model.gain / 2 - 1) < 0.05 and not any("hot pixel" in n for n in rep.notes), rep.model
    assert repair_hot(rng.poisson(0.02 * clean))[1] == 0
    fixed, n = repair_hot(np.where(hot, 5000, rng.poisson(20 * clean)))
    assert n == hot.sum() and fixed.dtype.kind == "i" and fixed.max() < 5000


def test_a_constant_or_non_finite_frame_is_refused(tmp_path, capsys):
    """No noise to measure: one clear error (and exit 2 naming the file through the CLI), not a model of sigma 0."""
    with pytest.raises(ValueError, match="same value"):
        analyze([np.full((64, 64), 7, np.uint16)])
    with pytest.raises(ValueError, match="NaN"):
        analyze([np.where(np.eye(64, dtype=bool), np.nan, 1.0)])
    import tifffile

    from .test_cli import run

    tifffile.imwrite(tmp_path / "flat.tif", np.full((64, 64), 7, np.uint16))
    code, _, err = run(["noise", tmp_path / "flat.tif"], capsys)
    assert code == 2 and "flat.tif" in err and "same value" in err and err.count("\n") == 1


def test_a_noise_free_mask_is_refused(tmp_path, capsys):
    """Blocks of 0 and 255 without noise: every patch sits on a clipping level. `gaussian_sigma` reads 0 (its patch
    covariance failed with "Eigenvalues did not converge"), and `analyze` refuses the frame as noise-free (a model of
    sigma 1e-12 before), through the CLI as one line naming the file, exit 2."""
    mask = np.kron(np.random.default_rng(0).choice((0, 255), (8, 8)), np.ones((32, 32))).astype(np.uint8)
    assert gaussian_sigma(mask.astype(np.float64)) == 0
    with pytest.raises(ValueError, match="no noise found"):
        analyze([mask])
    import tifffile

    from .test_cli import run

    tifffile.imwrite(tmp_path / "mask.tif", mask)
    code, _, err = run(["noise", tmp_path / "mask.tif"], capsys)
    assert code == 2 and "mask.tif" in err and "no noise found" in err and err.count("\n") == 1


def test_whole_counts_are_read_as_a_counting_detectors():
    """Whole counts whose fitted gain is within 10 % of their lattice's step, without read noise, take the step as the
    gain and a dark level on the lattice (exactly what the risk estimates need: a photon removed is a value the data
    can hold). Counts on a lattice of step 3 above a dark level of 7 too; not an offset given off the lattice, nor
    data with read noise, nor 8-bit frames whose gain is many grey levels."""
    rng = np.random.default_rng(12)
    lam = ramp_scene(lo=0.3, hi=3.0, linear=True)
    counts = [rng.poisson(lam).astype(np.float32) for _ in range(2)]
    rep = analyze(counts)
    assert (rep.model.gain, rep.model.offset, rep.model.as_pg().sigma) == (1.0, 0.0, 0.0), rep.model
    assert any("whole counts" in n for n in rep.notes)
    assert count_lattice(np.asarray([7 + 3 * c for c in counts])) == (3.0, 1.0)
    assert analyze([7 + 3 * c for c in counts]).model == Poisson(gain=3.0, offset=7.0)
    assert analyze(counts, offset=0.5).model.offset == 0.5
    read = analyze([c + rng.normal(0, 0.7, c.shape) for c in counts]).model
    assert read.gain != 1.0
    eight_bit = [np.clip(np.round(4 * rng.poisson(10 * lam) + rng.normal(0, 1.5, lam.shape)), 0, 255).astype(np.uint8)
                 for _ in range(2)]
    assert count_lattice(np.asarray(eight_bit)) == (1.0, 0.0) and abs(analyze(eight_bit).model.gain - 4) < 0.4
    assert count_lattice(np.asarray([c + 0.5 * (c > 1) for c in counts])) is None


def test_clipping_not_reported_for_unclipped_float_data():
    rng = np.random.default_rng(5)
    assert not detect_clipping([rng.normal(0, 1, (64, 64))]).detected


def test_whole_numbers_stored_as_floats_keep_their_integer_type_limit():
    # 8-bit data with a handful of saturated pixels: too few to pile up, so only the type's limit marks the ceiling,
    # and converting the frame to float32 (as image editors do) must not lose it
    rng = np.random.default_rng(11)
    x = np.clip(np.round(rng.normal(120, 30, (96, 96))), 0, 254)
    x[5, 7] = x[40, 41] = 255
    for frame in (x.astype(np.uint8), x.astype(np.float32), x.astype(np.float64)):
        assert detect_clipping([frame]).high == 255, frame.dtype
    assert detect_clipping([x.astype(np.float32) + 0.5]).high is None  # not whole numbers: no integer type
    assert detect_clipping([(x - 100).astype(np.float32)]).high is None  # whole numbers, in int16: 155 is no limit


def test_offset_below_zero_is_held_to_the_darkest_data():
    # dark-subtracted data whose dark level was over-subtracted: the line cannot tell the offset from read noise, and
    # offset 0 would put the read noise at 10.4; no offset lies above the darkest data, so it is taken there
    rng = np.random.default_rng(3)
    lam = ramp_scene(384, lo=0.05, hi=200.0)
    frames = [-50 + 2 * rng.poisson(lam) + rng.normal(0, 3, lam.shape) for _ in range(3)]
    rep = analyze(frames)
    m = rep.model
    assert isinstance(m, PoissonGaussian) and -56 < m.offset < -44, m.spec()
    assert abs(m.gain / 2 - 1) < 0.05 and abs(m.sigma / 3 - 1) < 0.4, m.spec()
    assert any("lie below 0" in n for n in rep.notes)
    # offset-free data keep 0
    frames = [2 * rng.poisson(lam) + rng.normal(0, 3, lam.shape) for _ in range(3)]
    assert analyze(frames).model.offset == 0


def test_white_gaussian_is_chosen_with_no_correlation():
    rng = np.random.default_rng(6)
    x = smooth_image(rng, 384, 384, level=500, amp=200)
    rep = analyze([x + rng.normal(0, 10, x.shape)])
    assert isinstance(rep.model, Gaussian) and rep.kind == "gaussian"
    assert abs(rep.model.sigma / 10 - 1) < 0.05
    off = rep.correlation.acf.copy()
    off[LAGS, LAGS] = 0
    assert np.abs(off).max() < 0.05


def test_correlated_noise_is_recognised_with_its_marginal_level():
    import torch

    rng = np.random.default_rng(7)
    x = smooth_image(rng, 384, 384, level=500, amp=200)
    truth = Correlated(sigma=8.0, kernel=((1, 1, 1), (1, 1, 1), (1, 1, 1)))
    y = truth.sample(torch.tensor(x)[None, None], generator=torch.Generator().manual_seed(0))[0, 0].numpy()
    rep = analyze([y])
    assert rep.kind == "correlated" and isinstance(rep.model, Correlated)
    assert abs(rep.model.sigma / 8 - 1) < 0.1
    np.testing.assert_allclose(rep.correlation.acf[LAGS - 1 : LAGS + 2, LAGS - 1 : LAGS + 2],
                               truth.covariance(3) / 64, atol=0.05)


def _natural(folder, name):
    from PIL import Image

    return np.asarray(Image.open(SHARED / "natural" / folder / name).convert("L"), dtype=np.float64)


@needs_shared
@pytest.mark.parametrize("folder,name", [("BSD68", "test012.png"), ("BSD68", "test007.png"), ("Set12", "12.png")])
def test_texture_in_flat_blocks_is_not_taken_for_correlated_noise(folder, name):
    """White noise at 5/255 on textured images: lag-1 0.2-0.45 in the flattest blocks, at every brightness, but
    fading in the quieter half of them (4-8 standard errors below what stationary noise gives): Gaussian."""
    x = _natural(folder, name)
    rep = analyze([x + np.random.default_rng(3).normal(0, 5, x.shape)])
    assert rep.correlation.lag1 > 0.15 and min(rep.correlation.lag1_terciles) > 0.1  # the brightness test alone fails
    assert rep.correlation.texture and rep.kind == "gaussian", rep.correlation
    assert any("taken as texture" in n for n in rep.notes)


@needs_shared
@pytest.mark.parametrize("name", ["02.png", "07.png"])
def test_correlated_noise_on_a_small_natural_image(name):
    """A 256 x 256 image (90 flat blocks) with correlated noise (lag-1 0.38) at 25/255 is called correlated, with
    its marginal level within 15 %; its quieter blocks are as correlated as stationary noise's."""
    import torch

    x = _natural("Set12", name)
    truth = Correlated(sigma=25.0, kernel=((0.05, 0.2, 0.05), (0.2, 1.0, 0.2), (0.05, 0.2, 0.05)))
    y = truth.sample(torch.tensor(x)[None, None], generator=torch.Generator().manual_seed(1))[0, 0].numpy()
    rep = analyze([y])
    assert rep.kind == "correlated" and not rep.correlation.texture, rep.correlation
    assert abs(rep.model.sigma / 25 - 1) < 0.15, rep.model.sigma


@needs_shared
@pytest.mark.parametrize("name", ["01.png", "09.png"])
def test_correlated_level_on_textured_images_at_low_noise(name):
    """Correlated noise (lag-1 0.38) at 15/255 on textured Set12 images: the sub-band level alone read 7-15 % high
    over three draws (texture in the smooth places); the smaller of it and the principal-component level divided
    by that estimator's reading on unit noise of the estimated kernel (`correlated_sigma`) is within 6 %."""
    import torch

    x = _natural("Set12", name)
    truth = Correlated(sigma=15.0, kernel=((0.05, 0.2, 0.05), (0.2, 1.0, 0.2), (0.05, 0.2, 0.05)))
    y = truth.sample(torch.tensor(x)[None, None], generator=torch.Generator().manual_seed(15))[0, 0].numpy()
    rep = analyze([y])
    assert rep.kind == "correlated" and abs(rep.model.sigma / 15 - 1) < 0.06, rep.model.sigma


@needs_shared
@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_gaussian_sigma_on_textured_natural_images(sigma):
    """Peppers (03) and boat (10) read 9 and 12 % high at 5/255 when flat patches were chosen on their
    difference energy alone; the structure tensor's statistics (`_texture`) bring them under 8 %."""
    from PIL import Image

    rng = np.random.default_rng(sigma)
    errs = []
    for name in ("02.png", "05.png", "08.png", "03.png", "10.png"):
        x = np.asarray(Image.open(SHARED / "natural" / "Set12" / name).convert("L"), dtype=np.float64)
        errs.append(gaussian_sigma(x + rng.normal(0, sigma, x.shape)) / sigma - 1)
    assert np.max(np.abs(errs)) < 0.08, errs


@needs_shared
def test_gaussian_sigma_of_a_large_frame_looks_beyond_its_centre():
    """A 1024 x 1024 MR slice whose centre is the head, textured everywhere: a central crop kept only the patches
    where the noise happened to be low (2.6-7.5 % low at 3 % of the range); tiles spread over the frame take in the
    flat background round it. No patch crosses a seam: white noise of any size reads its level."""
    import pydicom

    from sslrecon.noise.estimate import _spread

    x = pydicom.dcmread(SHARED / "dicom" / "pydicom_data" / "MR2_UNCR.dcm").pixel_array.astype(np.float64)
    for seed in range(2):
        y = (x + np.random.default_rng(seed).normal(0, 12.9, x.shape)).astype(np.float32)
        assert abs(gaussian_sigma(y) / 12.9 - 1) < 0.03
    white = np.random.default_rng(5).normal(0, 3.0, (2048, 1500))
    mosaic, tiles = _spread(white)
    assert mosaic.shape == (768, 768) and tiles == (192, 192)
    assert abs(gaussian_sigma(white) / 3 - 1) < 0.01


def test_gaussian_sigma_leaves_out_patches_near_a_clipping_level():
    """8-bit data with Gaussian noise, a third of the scene dark enough to sit on the floor of 0 and a third on the
    ceiling of 255: the saturated places are flat and those near them hold noise cut short. Counted, they put sigma
    at 0; left out (`CLIP_MARGINS`), it is within 3 %. Also through `analyze`, as `sslrecon noise`."""
    rng = np.random.default_rng(4)
    scene = np.repeat(np.linspace(-60, 315, 384)[None, :], 384, axis=0)
    y = np.clip(np.round(scene + rng.normal(0, 30, scene.shape)), 0, 255).astype(np.uint8)
    unaware = gaussian_sigma(y, clip=Clipping(None, None, 0.0, 0.0)) / 30 - 1
    aware = gaussian_sigma(y) / 30 - 1
    assert unaware < -0.5 and abs(aware) < 0.03, (unaware, aware)
    rep = analyze([y])
    assert rep.kind == "gaussian" and rep.clipping.low == 0 and rep.clipping.high == 255
    assert abs(rep.model.sigma / 30 - 1) < 0.03, rep.model.sigma


@pytest.mark.parametrize("sigma", [3.0, 5.0, 20.0])
def test_censored_fit_reads_noise_cut_at_a_level(sigma):
    """Pure white noise cut at a clipping level, flat on the level or on a ramp across it, as 8 bits (ceiling and
    floor) or as floats cut at 0: the censored-normal fit of the places on the level reads its sigma within 5 %, and
    the four together within 2.5 % (each fit pools a few thousand patches). (At 2 grey levels the 8-bit steps lift it:
    +3.0 +- 1.4 % over 20 draws of the floor's ramp.)"""
    from sslrecon.noise.estimate import _censored_sigma

    rng = np.random.default_rng(int(sigma))
    ramp = np.tile(np.linspace(-3 * sigma, sigma, 256), (256, 1))
    errors = []
    for x, whole in ((np.full((256, 256), 255.0), True), (255 - ramp, True), (-ramp, True), (-ramp, False)):
        y = x + rng.normal(0, sigma, x.shape)
        if whole:
            y = np.clip(np.round(y), 0, 255)
            clip = detect_clipping([y])
        else:
            y = np.maximum(y, 0.0)
            clip = Clipping(0.0, None, float((y <= 0).mean()), 0.0)
        errors.append(_censored_sigma(y, clip, (None, None), 1.3 * sigma) / sigma - 1)
    assert max(map(abs, errors)) < 0.05 and abs(np.mean(errors)) < 0.025, errors


def test_censored_fit_cuts_the_noise_half_a_lattice_step_short_of_the_level():
    """12-bit data stored as 16 bits (every value a multiple of 16), cut at its ceiling: a value rounds onto the level
    from half a lattice step short of it, 8 here, not half a unit (which read these 11 % high)."""
    from sslrecon.noise.estimate import _censored_sigma

    y = np.clip(np.round(4095 + np.random.default_rng(0).normal(0, 4, (256, 256))), 0, 4095) * 16
    clip = detect_clipping([y.astype(np.uint16)])
    assert clip.high == 4095 * 16
    assert abs(_censored_sigma(y, clip, (None, None), 80.0) / 64 - 1) < 0.03


@needs_shared
@pytest.mark.parametrize("sigma", [5, 15])
def test_noise_on_a_saturated_sky_is_read_where_it_is_cut(sigma):
    """BSD68 test001 as 8 bits with white noise: its flat places are a sky saturated at 255, which the patches leave
    out (their noise is cut), so the patches away from it read texture, 45 / 13 % high at 5 / 15 grey levels. The
    places on the level read the noise within 5 % by a censored-normal fit."""
    y = _saturated_sky(sigma)
    assert gaussian_sigma(y, censored=False) / sigma - 1 > 0.1
    assert abs(gaussian_sigma(y) / sigma - 1) < 0.05, gaussian_sigma(y)


def _saturated_sky(sigma):
    x = _natural("BSD68", "test001.png")
    return np.clip(np.round(x + np.random.default_rng(sigma).normal(0, sigma, x.shape)), 0, 255).astype(np.uint8)


@needs_shared
def test_noise_model_of_a_saturated_sky():
    """`analyze` (`sslrecon noise`) on the same image at 5 grey levels: white Gaussian noise, clipped at 255, its
    level within 5 % (45 % high before the places on the level were read). (At 15 it takes the texture for correlated
    noise, as before: the censored fit is made for white noise and is not used there.)"""
    rep = analyze([_saturated_sky(5)])
    assert rep.kind == "gaussian" and rep.clipping.high == 255
    assert abs(rep.model.sigma / 5 - 1) < 0.05, rep.model
    assert any(n.startswith("noise level read where the data sit on a clipping level") for n in rep.notes), rep.notes


def _near_levels(levels, sigma, seed=0):
    """A scene of 32 x 32 blocks, each at one of `levels`, with white noise `sigma`, saved as 8 bits (levels near 0 and
    255: a scanned page, a mask)."""
    rng = np.random.default_rng(seed)
    x = np.kron(rng.choice(levels, (8, 8)), np.ones((32, 32)))
    return np.clip(np.round(x + rng.normal(0, sigma, x.shape)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("levels", [(0, 20, 235, 255), (10, 245)])
def test_noise_near_the_clipping_levels_everywhere_is_read_where_it_is_cut(levels):
    """Where noise of the true level leaves no flat patch clear of the clipping levels, the patches that the lower
    patch level lets in are cut short (27-35 % low here): the censored-normal fit's level is taken, not the smaller."""
    y = _near_levels(levels, 50)
    readings = []
    level = gaussian_sigma(y, readings=readings)
    patches, cut, taken = readings[0]
    assert patches / 50 - 1 < -0.2 and taken == level == cut, readings
    assert abs(level / 50 - 1) < 0.05, level


def test_noise_model_of_a_scene_whose_every_patch_touches_a_level():
    """`analyze` (`sslrecon noise`, `--noise auto`) on the same scene of blocks at 10 and 245: every patch touches 0 or
    255, so the mean-variance fit has no patch to measure (it failed with an IndexError) and the Gaussian level is the
    censored fit's, with a note saying why."""
    rep = analyze([_near_levels((10, 245), 50)])
    assert rep.kind == "gaussian" and abs(rep.model.sigma / 50 - 1) < 0.05, rep.model
    assert any("leaves no flat place clear of the clipping levels" in n for n in rep.notes), rep.notes


@pytest.mark.parametrize("above", [0.0, 0.5, 1.0])
def test_a_flat_background_near_the_floor(above):
    """A flat background `above` noise sd over an 8-bit floor (a dark microscopy field), sigma 10. The patches read
    42 / 26 % low at 0 / 0.5 sd (every place within reach of the floor) and the censored level is taken; at 1 sd a
    sixth of the pixels are cut, the patches read within 10 %, and the censored fit, which chose patches by their own
    pixels (those whose noise reached the floor often: 22-27 % high), chooses them by the frame round them: too few
    there, so it does not run."""
    y = np.clip(np.round(10 * above + np.random.default_rng(1).normal(0, 10, (256, 256))), 0, 255).astype(np.uint8)
    readings = []
    level = gaussian_sigma(y, readings=readings)
    patches, cut, _ = readings[0]
    if above < 1:
        assert patches / 10 - 1 < -0.2 and abs(level / 10 - 1) < 0.03, readings
    else:
        assert cut is None or abs(cut / 10 - 1) < 0.05, readings
        assert abs(level / 10 - 1) < 0.1, readings


def test_patches_clear_of_the_levels_keep_the_smaller_level():
    """With flat places clear of the levels for noise of the censored fit's level (blocks of 15 to 240 at 25 grey
    levels) the smaller of the two levels stands, as before."""
    readings = []
    level = gaussian_sigma(_near_levels((15, 30, 225, 240), 25), readings=readings)
    patches, cut, taken = readings[0]
    assert cut > patches and level == taken == patches, readings


@needs_shared
def test_noise_of_a_scene_near_its_levels_and_its_note():
    """BSD68 test028 as 8 bits at 50 grey levels (97 % of the clean image within one noise sd of 0 or 255): the
    patches read 34 % low, the censored fit within 5 %, and `analyze` says which it took and why."""
    x = _natural("BSD68", "test028.png")
    y = np.clip(np.round(x + np.random.default_rng(50).normal(0, 50, x.shape)), 0, 255).astype(np.uint8)
    assert gaussian_sigma(y, censored=False) / 50 - 1 < -0.2
    rep = analyze([y])
    assert rep.kind == "gaussian" and abs(rep.model.sigma / 50 - 1) < 0.05, rep.model
    assert any("leaves no flat place clear of the clipping levels" in n for n in rep.notes), rep.notes


def test_small_frames_leave_out_blocks_on_a_clipping_level():
    """Frames too small for patches (24 x 24: the wavelet MAD), half of each on the 8-bit floor: the 2 x 2 blocks
    touching the floor are left out (27 % low with them, over 40 frames)."""
    rng = np.random.default_rng(0)
    x = np.zeros((24, 24))
    x[:, 12:] = 120
    frames = [np.clip(np.round(x + rng.normal(0, 10, x.shape)), 0, 255).astype(np.uint8) for _ in range(40)]
    aware = np.mean([gaussian_sigma(y) / 10 - 1 for y in frames])
    unaware = np.mean([gaussian_sigma(y, clip=Clipping(None, None, 0.0, 0.0)) / 10 - 1 for y in frames])
    assert abs(aware) < 0.08 and unaware < -0.15, (aware, unaware)


@needs_shared
@pytest.mark.parametrize("sigma", [25, 50])
def test_gaussian_sigma_on_natural_images_saved_as_8_bits(sigma):
    """Set12 with Gaussian noise, rounded and clipped to 0..255 as an 8-bit file holds it: cameraman (01), starfish
    (04) and parrot (07), with dark and bright areas, read 15 / 6 / 9 % (25/255) and 31 / 14 / 25 % (50/255) low
    while patches on and near the clipping levels counted; now within 5 %."""
    from PIL import Image

    rng = np.random.default_rng(sigma)
    errs = []
    for name in ("01.png", "04.png", "07.png"):
        x = np.asarray(Image.open(SHARED / "natural" / "Set12" / name).convert("L"), dtype=np.float64)
        y = np.clip(np.round(x + rng.normal(0, sigma, x.shape)), 0, 255).astype(np.uint8)
        errs.append(analyze([y]).model.sigma / sigma - 1)
    assert np.max(np.abs(errs)) < 0.05, errs


@needs_shared
def test_fmd_frames_signal_dependent_clipped_and_predictive():
    import tifffile

    paths = sorted((FMD / "noisy_raw").glob("*.tif"))
    frames = [tifffile.imread(p) for p in paths]
    rep = analyze(frames)
    assert rep.kind == "signal-dependent" and rep.model.signal_dependent
    # saturation, and the 8-bit floor: the dark pixels pile up on 3 and 4 (BPAE_B, BPAE_G, fish), the floor ends on 4
    assert rep.clipping.high == 255 and rep.clipping.low == 4
    assert any("clipped" in n for n in rep.notes)
    for p, f in zip(paths, frames):
        own = analyze([f])
        assert own.kind == "signal-dependent", p.name
        assert own.r2 > 0.6, (p.name, own.r2)  # held-out local variance follows the fitted line
        assert own.heldout_error < 0.15, (p.name, own.heldout_error)
        # neighbouring pixels correlate (lag-1 0.2-0.36 on four of them): the cumulant dark level is not claimed
        # there (it read 11.6 +- 1.5 on BPAE_R, whose clean reference puts the dark level at 5.1)
        assert own.dark is None or own.correlation.lag1 <= 0.1, p.name


@needs_shared
def test_fmd_frames_floored_at_different_levels_pool_with_the_highest_floor_and_are_not_one_detector():
    """BPAE_R is floored at 3, BPAE_B and BPAE_G at 4, the mouse frame not at all: pooled, the floors' pile-ups spread
    over two values and none stood out, so the pool fitted the floor's narrowed noise (gain 2.55, its held-out
    variance 48 % off). Each frame's own floor now holds for the pool. The pool's model (gain 3.89) sits 25 % below
    the mouse frame's variance: each keeps its own (3.6-4.9)."""
    import tifffile

    from sslrecon.noise.estimate import one_session

    names = ("BPAE_B", "BPAE_G", "BPAE_R", "mice")
    frames = [tifffile.imread(FMD / "noisy_raw" / f"Confocal_{n}.tif") for n in names]
    assert [detect_clipping([f]).low for f in frames] == [4, 4, 3, None]
    assert detect_clipping(frames).low == 4
    pooled = analyze(frames, evidence=False)
    assert pooled.clipping.low == 4 and pooled.heldout_error < 0.1, pooled.heldout_error
    assert 3.5 < pooled.model.gain < 5.2, pooled.model
    assert not one_session([analyze([f], evidence=False) for f in frames], pooled)


@needs_shared
def test_a_folder_of_signal_dependent_correlated_noise_is_pooled():
    """Six Set12 crops at 30 photons (gain 2, read noise 3) with plus-kernel correlated noise: the pool's
    `corr:...,gain=...` model is within 2 % of the true variance where single crops read it up to 25 % high, so the
    folder is one detector's. (Checking the pool against each file's fit raised on a correlated model, which has no
    Poisson-Gaussian form, and then split this folder.)"""
    import torch

    from sslrecon.noise.estimate import one_session

    unit = Correlated(sigma=1.0, kernel=((0.0, 0.5, 0.0), (0.5, 1.0, 0.5), (0.0, 0.5, 0.0)))
    clean = [_natural("Set12", f"{i:02d}.png")[:256, :256] for i in range(1, 7)]
    mean = float(np.mean([x.mean() for x in clean]))
    frames = []
    for i, x in enumerate(clean):
        lam = 30 * x / mean
        n = unit.sample(torch.zeros(1, 1, *x.shape, dtype=torch.float64), torch.Generator().manual_seed(i))[0, 0]
        frames.append(100 + 2 * lam + np.sqrt(4 * lam + 9) * n.numpy())
    pooled = analyze(frames, evidence=False)
    assert isinstance(pooled.model, Correlated) and pooled.kind == "signal-dependent"
    assert abs(pooled.model.gain / 2 - 1) < 0.1, pooled.model
    assert one_session([analyze([f], evidence=False) for f in frames], pooled)


@needs_shared
def test_an_fmd_frame_reads_the_same_model_as_float32():
    import tifffile

    frame = tifffile.imread(FMD / "noisy_raw" / "Confocal_BPAE_G.tif")  # six pixels at 255
    as_uint8, as_float = analyze([frame]), analyze([frame.astype(np.float32)])
    assert as_float.clipping.high == as_uint8.clipping.high == 255
    assert as_float.model.spec() == as_uint8.model.spec()


@needs_shared
def test_epu_micrograph_noise_level_matches_its_variance():
    import mrcfile

    with mrcfile.open(EPU, permissive=True) as m:
        y = np.asarray(m.data, dtype=np.float64)
    rep = analyze([y])
    # raw counts about 5600 with variance about 390 000: the marginal noise level is about 625
    level = float(np.sqrt(rep.model.variance(__import__("torch").tensor([float(y.mean())]))[0]))
    assert 0.85 < level / np.sqrt(y.var()) < 1.05
    assert rep.heldout_error < 0.15
    # counts whose level follows the signal and whose noise is correlated (lag-1 0.55 at every brightness):
    # one model with both, so SURE does not let a network copy the correlation
    assert rep.kind == "signal-dependent" and isinstance(rep.model, Correlated) and rep.model.gain > 0
    assert min(rep.correlation.lag1_terciles) > 0.5
    assert not rep.correlation.nonstationary, rep.correlation.block_spread_ratio


@pytest.mark.parametrize("side", [16, 128])
def test_a_frame_too_small_to_measure_correlation_says_so(side):
    """Below the flat blocks that telling correlated noise from texture takes, the lag-1 figures are no measurement:
    the report says the noise is taken as white for want of them, not that it was found white."""
    y = 100 + 10 * np.random.default_rng(side).standard_normal((side, side))
    rep = analyze([y])
    assert rep.correlation.blocks < 90 and isinstance(rep.model, Gaussian)
    assert any(n.startswith("spatial correlation not measured") for n in rep.notes), rep.notes
    big = analyze([100 + 10 * np.random.default_rng(side).standard_normal((256, 256))])
    assert not any(n.startswith("spatial correlation") for n in big.notes), big.notes


@needs_shared
def test_particle_stack_noise_level_matches_its_clean_reference():
    """576 simulated projections of 32 x 32 (EMPIAR-10076, CTF, SNR about 0.09, contrast inverted and in other units
    than the clean stack): white noise of one level, read off the stack within 3 % of the sd of the noisy stack less
    the clean one mapped into its units (7.04, read 7.11; per frame only as far apart as chance, so one level, not one
    a frame). The stack's own sd, 7.36, is 4.5 % above it: the signal is that weak."""
    from sslrecon import api
    from sslrecon.io import open_image

    def load(name):
        with open_image(str(PARTICLES).format(name)) as f:
            return np.stack(list(f.frames())).astype(np.float64)

    clean, noisy = load("clean"), load("sim")
    slope, intercept = np.polyfit(clean.ravel(), noisy.ravel(), 1)
    truth = float(np.std(noisy - (slope * clean + intercept)))
    doc = api.noise([str(PARTICLES).format("sim")])
    assert doc["kind"] == "gaussian" and doc["model"]["name"] == "gaussian", doc["spec"]
    assert abs(doc["model"]["sigma"] / truth - 1) < 0.03, (doc["model"]["sigma"], truth)


@needs_shared
def test_a_folder_of_differently_correlated_files_is_not_taken_for_texture():
    """The two EPU micrographs pooled (lag-1 0.16 binned, 0.47 raw, levels apart): the quieter half of the blocks is
    taken within each file, so one file's lower correlation does not read as texture fading in the quiet blocks
    (split over all blocks at once, the pair was called Gaussian with sigma half the marginal level)."""
    import mrcfile

    frames = []
    for p in sorted(EPU.parent.glob("*.mrc")):
        with mrcfile.open(p, permissive=True) as m:
            frames.append(np.asarray(m.data, dtype=np.float64))
    rep = analyze(frames)
    assert not rep.correlation.texture and isinstance(rep.model, Correlated), (rep.correlation.quiet_z, rep.model)


def test_signal_dependence_over_a_narrow_brightness_range():
    """Variance grows only 1.3x over the range, but the slope is many standard errors from zero."""
    rng = np.random.default_rng(8)
    x = smooth_image(rng, 384, 384, level=20, amp=8)
    rep = analyze([rng.poisson(x) + rng.normal(0, 2, x.shape) for _ in range(2)])
    assert rep.kind == "signal-dependent"
    assert abs(rep.model.gain - 1) < 0.15 and abs(rep.model.sigma / 2 - 1) < 0.25


@needs_shared
@pytest.mark.parametrize("lo,gain,read", [(1, 2.0, 4.0), (10, 8.0, 24.0)])
def test_poisson_gaussian_gain_on_textured_natural_images(lo, gain, read):
    """Set12 images mapped onto lo..1000 photons: at this signal-to-noise ratio their pixel-scale texture
    is as strong as the noise. Per-brightness principal components keep the gain right (a Haar
    fit ran 2x high), and the texture's correlation is not taken for correlated noise."""
    from PIL import Image

    rng = np.random.default_rng(lo)
    frames = []
    for name in ("01.png", "02.png", "03.png", "04.png", "05.png", "06.png"):
        x = np.asarray(Image.open(SHARED / "natural" / "Set12" / name).convert("L"), dtype=np.float64)
        lam = lo + x / x.max() * (1000 - lo)
        frames.append(gain * rng.poisson(lam) + rng.normal(0, read, x.shape))
    rep = analyze(frames)
    assert rep.kind == "signal-dependent" and not rep.correlation.significant
    assert abs(rep.model.gain / gain - 1) < 0.1  # the target; texture still leaves +6 to +9 % here
    assert rep.heldout_error < 0.1
    assert not any("third cumulant" in n for n in rep.notes)  # texture skews the residuals: no dark level claimed


def test_poorly_determined_read_noise_is_reported():
    """Photons 200..1000 with read noise 2: the darkest variance is 200x the read noise's, so the
    intercept is an extrapolation; the report says so and gives its standard error."""
    rng = np.random.default_rng(9)
    frames = [rng.poisson(ramp_scene(lo=200, hi=1000)) + rng.normal(0, 2, (384, 384)) for _ in range(2)]
    rep = analyze(frames)
    assert rep.kind == "signal-dependent" and abs(rep.model.gain - 1) < 0.05
    d = rep.to_dict()["mean_variance"]
    assert d["intercept_se"] > 4 * 0.2  # far more than a fifth of the true read-noise variance (4)
    assert any("read noise poorly determined" in n for n in rep.notes)
    well = analyze([2.0 * rng.poisson(ramp_scene()) + rng.normal(0, 4, (384, 384)) for _ in range(2)])
    assert not any("poorly determined" in n for n in well.notes)


def test_small_sample_shrink_table_matches_simulation():
    """The trailing-eigenvalue shrink for few patches (tabled) is what simulation gives."""
    from sslrecon.noise.estimate import SAMPLE_SHRINK, _sample_shrink, _simulated_shrink

    assert abs(_simulated_shrink(1024, 25, reps=200) - SAMPLE_SHRINK[25][3]) < 0.005
    assert abs(_simulated_shrink(512, 49, reps=200) - SAMPLE_SHRINK[49][2]) < 0.01
    assert _sample_shrink(1024, 49) == SAMPLE_SHRINK[49][3]
    assert SAMPLE_SHRINK[49][2] < _sample_shrink(700, 49) < SAMPLE_SHRINK[49][3]


def test_read_noise_where_few_pixels_are_dark():
    """Photons mapped linearly onto 1..1000 (as a scene's grey levels would be): about 1 % of the area
    is below 10 photons. Bins spaced by the predicted variance resolve that dark end, and a common
    noise-only basis measures each bin without the scatter of its own eigenvalues. Over three draws the
    read noise's root-mean-square error is 5.5 % (with equal-share bins 58 %: one draw gave read noise 0
    and an invented dark level)."""
    gains, reads = [], []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        rep = analyze([8.0 * rng.poisson(ramp_scene(linear=True)) + rng.normal(0, 24.0, (384, 384)) for _ in range(4)])
        assert isinstance(rep.model, PoissonGaussian)
        gains.append(rep.model.gain / 8.0 - 1)
        reads.append(rep.model.sigma / 24.0 - 1)
    assert max(np.abs(gains)) < 0.03 and max(np.abs(reads)) < 0.15
    assert np.sqrt(np.mean(np.square(reads))) < 0.1


def test_variance_edges_resolve_the_dark_end():
    from sslrecon.noise.estimate import _variance_edges

    means = np.linspace(1, 1000, 100_000)
    edges = _variance_edges(means, lambda m: 2 * m + 16, 24, 2000)
    counts = np.histogram(means, edges)[0]
    assert counts.min() >= 2000 and counts.sum() == means.size
    assert edges[1] < 30  # equal shares would put the first edge at 42.6
    ratios = (2 * edges[2:-1] + 16) / (2 * edges[1:-2] + 16)  # the predicted variance across a bin
    assert len(edges) - 1 >= 12 and np.allclose(ratios[-6:], ratios[-1], rtol=0.01)  # even in its logarithm
    assert ratios.max() < 2  # dark bins merged up to the minimum count stay narrow


def test_bin_variance_in_the_noise_basis_is_unbiased_and_precise():
    """Flat Poisson-Gaussian fields: 20 disjoint sets of 500 patches each give the variance with a mean
    within 3 standard errors of the truth and a scatter below 4 % (a bin's own trailing eigenvalues
    scattered 5-17 % with so few patches)."""
    from sslrecon.noise.estimate import Clipping, _noise_basis, _site_variance, _sites

    rng = np.random.default_rng(3)
    images = [2.0 * rng.poisson(20.0, (256, 256)) + rng.normal(0, 4.0, (256, 256)) for _ in range(2)]
    true = 4 * 20 + 16
    s = _sites(images, Clipping(None, None, 0.0, 0.0), 5)
    s.basis = _noise_basis(s, np.ones(len(s.mean), bool), lambda m: np.full_like(m, true), rng)
    assert s.basis is not None and 3 <= s.basis.shape[1] < 25
    order = rng.permutation(len(s.mean))
    rel = np.array([_site_variance(s, np.sort(order[k * 500:(k + 1) * 500]), rng) / true - 1 for k in range(20)])
    assert abs(rel.mean()) < 3 * rel.std(ddof=1) / np.sqrt(len(rel)) + 0.01
    assert rel.std(ddof=1) < 0.04


def test_signal_dependent_correlated_noise_is_recognised_with_both():
    """Counts with Poisson-Gaussian level and a correlating kernel (lag-1 0.4): the model keeps gain, read
    noise and the correlation; the same level without the kernel stays white Poisson-Gaussian."""
    import torch

    truth = Correlated(3.0, ((0.0, 0.35, 0.0), (0.35, 1.0, 0.35), (0.0, 0.35, 0.0)), gain=2.0)
    x = torch.tensor(np.stack([ramp_scene(lo=20, hi=500) for _ in range(2)]))[:, None]
    y = truth.sample(x, generator=torch.Generator().manual_seed(0))[:, 0].numpy()
    rep = analyze(list(y))
    assert rep.kind == "signal-dependent" and isinstance(rep.model, Correlated)
    assert abs(rep.model.gain / 2.0 - 1) < 0.15 and rep.correlation.lag1 > 0.3
    from sslrecon.api import auto_loss

    assert auto_loss(rep.model) == "sure"  # generalised SURE takes the covariance; pg-sure would not
    assert not rep.correlation.rises, rep.correlation.rise_z  # stationary: as correlated at every brightness
    assert rep.correlation.block_spread_ratio < 1.3, rep.correlation.block_spread_ratio  # evenly spread, as noise
    white = analyze([2.0 * np.random.default_rng(1).poisson(ramp_scene(lo=20, hi=500)) for _ in range(2)])
    assert isinstance(white.model, (Poisson, PoissonGaussian))


def test_texture_whose_share_grows_with_the_signal_raises_the_correlation_with_brightness():
    """Counts of a scene with fine correlated texture (lag-1 0.5, 20 % of the signal): the texture's share of a flat
    place's variance grows with the signal, so does its correlation (`rise_z` over `RISE_Z`); the model stays white."""
    from sslrecon.noise.estimate import RISE_Z

    rng = np.random.default_rng(0)
    lam = ramp_scene(512, lo=5, hi=100, linear=True)
    t = rng.normal(0, 1, lam.shape)
    t = (t + np.roll(t, 1, 0) + np.roll(t, 1, 1) + np.roll(t, (1, 1), (0, 1))) / 2
    rep = analyze([100 + 2 * rng.poisson(lam * np.clip(1 + 0.2 * t, 0, None)) + rng.normal(0, 3, lam.shape)])
    assert rep.correlation.rise_z > RISE_Z and rep.correlation.rises
    assert isinstance(rep.model, (Poisson, PoissonGaussian))


@needs_shared
def test_fmd_texture_rising_with_brightness_is_not_taken_for_correlated_noise():
    """FMD BPAE_G alone: lag-1 0.20 / 0.28 / 0.34 from the darkest brightness tercile of its flat blocks to the
    brightest, every one over 0.1, so the whole acf was taken as the noise's, and its correction put the gain at 5.59,
    38 % over its reference (4.04, from the residual against the 50-frame average). The rise marks texture: the
    darkest third's correlation is taken, near the residual's own (lag-1 0.15 / 0.11), and the gain comes within 15 %
    of the reference."""
    import tifffile

    rep = analyze([tifffile.imread(FMD / "noisy_raw" / "Confocal_BPAE_G.tif")])
    assert rep.correlation.rises and rep.correlation.lag1 < 0.2, rep.correlation
    # its noise is correlated (the residual's lag-1 0.15 / 0.11): clearly enough for the margin over the threshold
    # (the white fit would read the gain 10 % low), though its darkest tercile, 0.14, is near it
    assert rep.correlation.significant and rep.correlation.excess_z > EXCESS_Z, rep.correlation
    assert isinstance(rep.model, (Poisson, PoissonGaussian)) and abs(rep.model.gain / 4.04 - 1) < 0.15, rep.model
    assert any("the darkest third's taken" in n for n in rep.notes)


@needs_shared
def test_texture_crossing_the_correlation_threshold_by_chance_is_not_taken_for_correlated_noise():
    """Clipped 8-bit Set12 at 5-200 photons (gain 1.5, read noise 2): texture left in the flat blocks reads lag-1
    0.08-0.17 per brightness tercile, and in about one draw in five all three cross 0.1 (here 0.11 / 0.15 / 0.10).
    Taken as the noise's correlation, its correction put the gain 16 % high; the least tercile's margin over the
    threshold is under `EXCESS_Z` standard errors, so the white fit stands, within 5 %."""
    from PIL import Image

    xs = [np.asarray(Image.open(p).convert("L"), dtype=np.float64)
          for p in sorted((SHARED / "natural" / "Set12").glob("*.png"))[:6]]
    rng = np.random.default_rng(9)
    frames = [np.clip(np.round(1.5 * rng.poisson(5 + 195 * x / x.max()) + rng.normal(0, 2, x.shape)), 0, 255)
              .astype(np.uint8) for x in xs]
    rep = analyze(frames)
    corr = rep.correlation
    assert min(corr.lag1_terciles) > CORR_THRESHOLD and corr.marginal and not corr.significant, corr
    assert abs(rep.model.gain / 1.5 - 1) < 0.05, rep.model
    assert any("not every one clearly over" in n for n in rep.notes), rep.notes


def test_block_spread_of_stationary_noise_is_one_and_of_uneven_blocks_more():
    """`Correlation.block_spread` on 8x8 blocks of stationary correlated noise (another draw than its own simulation)
    reads about 1, whatever the level's dependence on brightness that `variance_of` divides out; blocks whose variance
    varies from place to place, as texture makes it, read more; too few blocks with a positive variance read None."""
    import torch

    from sslrecon.noise.estimate import Correlation, _iqr, _plane_residual_operator, _simulated_residuals

    acf = np.zeros((2 * LAGS + 1, 2 * LAGS + 1))
    acf[LAGS, LAGS], acf[LAGS, LAGS + 1], acf[LAGS, LAGS - 1] = 1.0, 0.4, 0.4
    acf[LAGS + 1, LAGS] = acf[LAGS - 1, LAGS] = 0.4
    unit = Correlated(sigma=1.0, kernel=((0.0, 0.25, 0.0), (0.25, 1.0, 0.25), (0.0, 0.25, 0.0)))
    noise = unit.noise_like(torch.zeros(3000, 8, 8, dtype=torch.float64), torch.Generator().manual_seed(11)).numpy()
    squares = ((noise.reshape(3000, -1) @ _plane_residual_operator(8).T) ** 2).mean(1)
    means = np.linspace(10.0, 1000.0, 3000)
    simulated = (_simulated_residuals(acf, _plane_residual_operator(8), 8) ** 2).mean((1, 2))  # as `correlation` does
    stationary = _iqr(np.log(simulated))

    def spread(block_var, variance_of=lambda m: 2.0 * m):
        corr = Correlation(acf, [0.4] * 3, 3000, stationary_spread=stationary, block_var=block_var, block_mean=means,
                           block_frame=np.zeros(3000, int))
        return corr.block_spread(variance_of)

    assert abs(spread(2.0 * means * squares) - 1) < 0.1
    uneven = np.exp(np.random.default_rng(0).normal(0, 0.4, 3000))  # each place's variance off by about 40 %
    assert spread(2.0 * means * squares * uneven) > 1.7
    assert spread(squares, lambda m: m - 999.0) is None  # positive at only the last few means


def test_blurred_counts_at_a_few_photons_keep_their_correlation():
    """Photon counts at 0.3-5 per pixel blurred by a plus-shaped kernel (as motion correction's interpolation blurs a
    counting camera's frames): shot noise's variance moves with each flat block's own mean, so the block spread, taken
    at that mean, stays near 1 (0.93-1.05 over three draws) and the correlated model stands, its gain near the counts'
    gain times the kernel's sum of squares (0.47-0.50 for 0.52)."""
    import torch

    from sslrecon.noise.models import correlate

    k = np.array([[0.0, 0.35, 0.0], [0.35, 1.0, 0.35], [0.0, 0.35, 0.0]])
    k /= k.sum()
    rng = np.random.default_rng(0)
    frames = [2.0 * correlate(torch.tensor(np.pad(rng.poisson(ramp_scene(lo=0.3, hi=5)), 1, mode="reflect"),
                                           dtype=torch.float64), k).numpy() for _ in range(2)]
    rep = analyze(frames)
    assert rep.correlation.block_spread_ratio < 1.3 and not rep.correlation.nonstationary, rep.correlation
    assert isinstance(rep.model, Correlated) and abs(rep.model.gain / (2.0 * (k**2).sum()) - 1) < 0.15, rep.model


@needs_shared
@pytest.mark.parametrize("name,limit", [("test056.png", 1.1), ("test031.png", 2.0)])
def test_texture_whose_refit_follows_the_signal_is_not_taken_for_correlated_noise(name, limit):
    """White noise at 5/255 on two BSD68 images whose texture survives in the flat blocks with lag-1 0.4-0.7 at every
    brightness and passes the other texture tests: the correlated refit found the noise following the signal and read
    its level at mid-grey about 4 times the truth. The flat blocks' variances spread over twice as far as stationary
    noise's (`block_spread`), so the white fit stands: test056 Gaussian within 10 %; test031's white fit follows its
    texture's growth with brightness (gain 0.41, read noise 4.1), 1.7 times the truth at mid-grey."""
    import torch

    x = _natural("BSD68", name)
    rep = analyze([x + np.random.default_rng(5).normal(0, 5, x.shape)])
    corr = rep.correlation
    assert min(corr.lag1_terciles) > 0.3 and not corr.texture and not corr.uneven and not corr.marginal, corr
    assert corr.nonstationary and not corr.significant, corr.block_spread_ratio
    assert rep.to_dict()["correlation"]["block_spread_ratio"] == corr.block_spread_ratio  # in `noise --json`
    assert not isinstance(rep.model, Correlated), rep.model
    level = float(rep.model.variance(torch.tensor([128.0], dtype=torch.float64))[0]) ** 0.5
    assert level / 5 < limit, rep.model
    assert any("as stationary noise's: taken as texture" in n for n in rep.notes), rep.notes


def _session(rng, gains, offsets, reads, n=192):
    """One frame per (gain, offset, read noise), of differently placed ramp scenes at 1-100 photons."""
    return [o + g * rng.poisson(np.roll(ramp_scene(n, lo=1, hi=100), 37 * i, axis=i % 2)) + rng.normal(0, r, (n, n))
            for i, (g, o, r) in enumerate(zip(gains, offsets, reads))]


@pytest.mark.parametrize("case,expected", [("one detector", True), ("gain 4", False), ("offset +40", False),
                                           ("read noise 8", False)])
def test_one_session_pools_one_detector_and_splits_others(case, expected):
    """Half the frames with a doubled gain, a dark level 40 counts higher or read noise 8 instead of 3 are not one
    detector's; the same gain, offset and read noise are."""
    from sslrecon.noise.estimate import one_session

    g, o, r = [2.0] * 6, [100.0] * 6, [3.0] * 6
    half = {"gain 4": (g[:3] + [4.0] * 3, o, r), "offset +40": (g, o[:3] + [140.0] * 3, r),
            "read noise 8": (g, o, r[:3] + [8.0] * 3)}.get(case, (g, o, r))
    frames = _session(np.random.default_rng(5), *half)
    pooled = analyze(frames, evidence=False)
    assert one_session([analyze([f], evidence=False) for f in frames], pooled) is expected


def test_a_file_without_a_fit_vetoes_the_pool_only_where_most_files_find_their_shot_noise():
    """Six frames of one detector: with one file's fit missing, the others (signal-dependent, each with a fit) keep
    their own models, as at 300 photons, where the pool's three-bin fit cost 0.1-0.9 dB. Where most files read
    Gaussian noise (as bright crops whose texture hides their shot noise) a missing fit says nothing against the pool,
    and a fit whose variance falls with brightness (texture's) is not counted."""
    from dataclasses import replace

    from sslrecon.noise.estimate import one_session

    frames = _session(np.random.default_rng(5), [2.0] * 6, [100.0] * 6, [3.0] * 6)
    files = [analyze([f], evidence=False) for f in frames]
    pooled = analyze(frames, evidence=False)
    assert all(f.kind == "signal-dependent" and f.fit is not None for f in files) and one_session(files, pooled)
    assert not one_session([replace(files[0], fit=None)] + files[1:], pooled)
    gaussian = [replace(f, kind="gaussian") for f in files]
    assert one_session([replace(gaussian[0], fit=None)] + gaussian[1:], pooled)
    falling = replace(gaussian[0].fit, slope=-3.0)  # far below zero for its standard error
    assert one_session([replace(gaussian[0], fit=falling)] + gaussian[1:], pooled)
    assert not one_session([replace(files[0], fit=falling)] + files[1:], pooled)


def _set12_crops() -> list[np.ndarray]:
    """The central 256 x 256 crops of the twelve Set12 images (grey levels 0-255), as `benchmarks/denoise_pg.py`."""
    from PIL import Image

    xs = []
    for p in sorted((SHARED / "natural" / "Set12").glob("*.png")):
        x = np.asarray(Image.open(p).convert("L"), dtype=np.float64)
        h, w = x.shape
        xs.append(x[(h - 256) // 2:(h + 256) // 2, (w - 256) // 2:(w + 256) // 2])
    return xs


@needs_shared
def test_correlated_signal_dependent_level_on_textured_crops():
    """The twelve Set12 crops at 30 photons with gain 2, read noise 3 and a plus-shaped kernel (lag-1 0.5, as
    `denoise_pg.py --correlated`), pooled: the patches' noise-only directions, corrected for the correlation, read the
    gain within 5 % (HH alone, which the crops' texture inflates, read it 19 % high)."""
    import torch

    xs = _set12_crops()
    mean = np.mean([x.mean() for x in xs])
    truth = Correlated(3.0, ((0.0, 0.5, 0.0), (0.5, 1.0, 0.5), (0.0, 0.5, 0.0)), gain=2.0, offset=100.0)
    g = torch.Generator().manual_seed(0)
    frames = [truth.sample(torch.tensor(100 + 60 * x / mean)[None, None], generator=g)[0, 0].numpy() for x in xs]
    rep = analyze(frames, evidence=False)
    assert rep.kind == "signal-dependent" and isinstance(rep.model, Correlated)
    assert abs(rep.model.gain / 2.0 - 1) < 0.05, rep.model


@needs_shared
def test_pooled_fit_corrects_single_crops_at_one_photon():
    """The twelve 256 x 256 Set12 crops at 1 photon per pixel (gain 2, read noise 3, offset 100): alone each reads
    the gain 7-28 % low (two are even taken for Gaussian noise); their fits agree, so `--noise auto` takes the
    pooled fit, whose gain is within 5 %."""
    from sslrecon.noise.estimate import one_session

    rng = np.random.default_rng(0)
    xs = _set12_crops()
    mean = np.mean([x.mean() for x in xs])
    frames = [100 + 2 * rng.poisson(x / mean) + rng.normal(0, 3, x.shape) for x in xs]
    files = [analyze([f], evidence=False) for f in frames]
    pooled = analyze(frames, evidence=False)
    assert np.median([getattr(f.model, "gain", 0.0) for f in files]) < 1.9  # single crops read low
    assert one_session(files, pooled) and abs(pooled.model.gain / 2 - 1) < 0.05, pooled.model


def _bright_crops() -> list[np.ndarray]:
    """The centre 128 x 128 of the 11th to 18th BSD68 image (`robustness.py`'s crops), grey levels."""
    from PIL import Image

    return [np.asarray(Image.open(p).convert("L"), dtype=np.float64)[96:224, 176:304]
            for p in sorted((SHARED / "natural" / "BSD68").glob("*.png"))[10:18]]


@needs_shared
def test_bright_crops_whose_terciles_disagree_are_not_taken_for_correlated_noise():
    """One draw in five of `robustness.py`'s bright crops at 3000 photons (white noise: gain 1, read noise 3, offset
    100, rounded to uint16) gives the pool lag-1 correlations 0.80 / 0.43 / 0.84 from the darkest third of its flat
    blocks to the brightest: texture's, for stationary noise would give the same at every brightness. Taken for
    correlated noise it became `corr:...,gain=8.7`; as texture, the white fit reads the gain within 15 %."""
    rng = np.random.default_rng(4)
    xs = _bright_crops()
    lams = [3000 * x / np.mean([x.mean() for x in xs]) for x in xs]
    frames = [np.round(100 + rng.poisson(lam) + rng.normal(0, 3, lam.shape)).astype(np.uint16) for lam in lams]
    pooled = analyze(frames)
    corr = pooled.correlation
    assert corr.uneven and not corr.significant, (corr.lag1_terciles, corr.spread_z)
    assert max(corr.lag1_terciles) - min(corr.lag1_terciles) > 0.3 and corr.spread_z > 4
    assert pooled.model.name == "poisson" and abs(pooled.model.gain - 1) < 0.15, pooled.model
    assert any("taken as texture" in n and "standard errors apart" in n for n in pooled.notes), pooled.notes


@needs_shared
def test_bright_crops_without_evidence_of_their_own_take_the_pooled_fit():
    """Eight 128 x 128 BSD68 crops at 3000 photons (gain 1, read noise 3, offset 100; `robustness.py`'s bright case):
    alone, texture hides the shot noise from most of them (Gaussian reports; some crops without a mean-variance fit,
    some with slopes that texture makes negative), while the pool reads the gain within 15 %, so `--noise auto` gives
    every crop the pooled model. A file of white Gaussian noise among them, whose flat variance its own fit pins
    down, still keeps the folder from being taken for one detector's."""
    from sslrecon.noise.estimate import one_session

    rng = np.random.default_rng(5)
    xs = _bright_crops()
    mean = np.mean([x.mean() for x in xs])
    frames = [100 + rng.poisson(3000 * x / mean) + rng.normal(0, 3, x.shape) for x in xs]
    files = [analyze([f], evidence=False) for f in frames]
    pooled = analyze(frames, evidence=False)
    assert sum(f.kind != "signal-dependent" for f in files) > len(files) / 2, [f.kind for f in files]
    assert pooled.kind == "signal-dependent" and abs(pooled.model.gain - 1) < 0.15, pooled.model
    assert one_session(files, pooled)
    flat = 3000 + rng.normal(0, 55, (128, 128)) + np.linspace(-2000, 2000, 128)[None, :]  # a ramp, noise of one level
    files.append(analyze([flat], evidence=False))
    assert files[-1].fit is not None and files[-1].fit.slope_se < 0.2, files[-1].fit
    assert not one_session(files, analyze(frames + [flat], evidence=False))


def test_the_line_leaves_out_a_bin_that_texture_lifts():
    """Bins of `var = 0.5 mean + 1` with each one's sampling error, one of them 1.5x (one image's textured region at
    that brightness): the line leaves it out and reads the slope within 1 %, where the plain weighted line read it 2-3 %
    high. Bins that only scatter as they should keep the plain weighted line."""
    from sslrecon.noise.estimate import _wls, _wls_line

    rng = np.random.default_rng(0)
    mu = np.linspace(30, 460, 12)
    cnt = np.full(12, 2000)
    true = 0.5 * mu + 1
    var = true * (1 + rng.normal(0, np.sqrt(2 / cnt)))
    a, b, kept = _wls(mu, var, cnt)
    assert (a, b) == _wls_line(mu, var, cnt) and kept.all()
    for k in (3, 7, 10):
        lifted = var.copy()
        lifted[k] *= 1.5
        assert _wls_line(mu, lifted, cnt)[0] > 0.508
        a, _, kept = _wls(mu, lifted, cnt)
        assert abs(a / 0.5 - 1) < 0.01
        assert np.flatnonzero(~kept).tolist() == [k]  # (the report marks it, and its errors and R^2 leave it out)


@needs_shared
def test_bins_left_out_as_texture_are_reported_and_leave_the_errors(monkeypatch, tmp_path):
    """Set12 at 1-1000 photons (this draw lifts two bins): the fit marks the bins its line left out, they lie above
    it, and the reported standard errors and R^2 are those of the bins the line went through. The plot draws them
    apart, and no clipping where there is none."""
    from PIL import Image

    from sslrecon.noise.estimate import _fit_covariance, _r2

    rng = np.random.default_rng(1)
    frames = []
    for name in ("01.png", "02.png", "03.png", "04.png", "05.png", "06.png"):
        x = np.asarray(Image.open(SHARED / "natural" / "Set12" / name).convert("L"), dtype=np.float64)
        frames.append(2.0 * rng.poisson(1 + x / x.max() * 999) + rng.normal(0, 4.0, x.shape))
    rep = analyze(frames)
    fit = rep.fit
    tex = fit.bin_texture
    assert tex.any() and not (tex & ~fit.bin_used).any()
    assert (fit.bin_var[tex] > fit.predict(fit.bin_mean[tex])).all()
    line = fit.bin_used & ~tex
    args = fit.bin_mean[line], fit.bin_var[line], fit.bin_count[line]
    # (the line is refined on those bins' patch groups, `_refined_line`, whose errors are of the bins' own size: 0.7
    # of them here, since the patches holding an outlier left the groups, `SITE_OUTLIER`, and they scatter less)
    ratio = np.sqrt(np.diag(fit.cov) / np.diag(_fit_covariance(*args)))
    assert ((ratio > 0.5) & (ratio < 1.2)).all(), ratio
    assert fit.r2 == pytest.approx(_r2(*args, fit.slope, fit.intercept))
    everything = _fit_covariance(fit.bin_mean[fit.bin_used], fit.bin_var[fit.bin_used], fit.bin_count[fit.bin_used])
    assert fit.intercept_se < np.sqrt(everything[1, 1])  # the lifted bins' scatter no longer widens them
    assert [b["texture"] for b in fit.to_dict()["bins"]] == tex.tolist()

    import matplotlib.figure

    from sslrecon.noise.plot import plot_report

    labels = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: labels.extend(
        t.get_text() for t in fig.axes[0].get_legend().get_texts()))
    plot_report(rep, tmp_path / "fit.png")
    assert "lifted by texture (not fitted)" in labels and not any("clipping" in t for t in labels)


@needs_shared
def test_clipping_margin_takes_the_bins_own_variance():
    """Set12 at 1-60 photons, gain 4, read noise 4, as 8-bit (the benchmark's setting, a draw it did not make): the
    line's intercept, raised by texture, put its predicted sd at the darkest bin over half that bin's distance from
    the floor, so the bin was left out and the line, fitted without it, rose further (read noise 7.16 for 4). By the
    bin's own variance it lies 2.1 sd clear of the floor and is kept: 4.93 (above a floor the line is not refined on
    the bins' patch groups)."""
    from PIL import Image

    from sslrecon.noise.estimate import _wls

    rng = np.random.default_rng([49607488, 102])
    frames = []
    for k in range(1, 7):
        x = np.asarray(Image.open(SHARED / "natural" / "Set12" / f"{k:02d}.png").convert("L"), dtype=np.float64)
        y = 4.0 * rng.poisson(1 + x / x.max() * 59) + rng.normal(0, 4.0, x.shape)
        frames.append(np.clip(np.round(y), 0, 255).astype(np.uint8))
    rep = analyze(frames)
    fit = rep.fit
    assert rep.clipping.low == 0
    darkest = np.nanargmin(np.where(fit.bin_count > 0, fit.bin_mean, np.nan))
    u = fit.bin_used  # the bins' line before the margin, which it is measured in
    a, b, _ = _wls(fit.bin_mean[u], fit.bin_var[u], fit.bin_count[u])
    assert fit.bin_used[darkest] and fit.bin_mean[darkest] < 2 * np.sqrt(a * fit.bin_mean[darkest] + b)
    assert abs(rep.model.sigma / 4 - 1) < 0.3 and abs(rep.model.gain / 4 - 1) < 0.05


def _fit(slope, slope_se, intercept, span, data):
    """A mean-variance fit of the given line, fitted over brightness `span` of a data range `data` (10th-90th
    percentiles)."""
    from sslrecon.noise.estimate import MeanVarianceFit

    empty = np.zeros(0)
    return MeanVarianceFit(slope=slope, intercept=intercept, cov=np.diag([slope_se**2, 1.0]), r2=1.0, r2_heldout=1.0,
                           bin_mean=empty, bin_var=empty, bin_count=empty, bin_used=empty.astype(bool),
                           bin_texture=empty.astype(bool), heldout_mean=empty, heldout_var=empty,
                           mean_lo=span[0], mean_hi=span[1], data_lo=data[0], data_hi=data[1])


@pytest.mark.parametrize("slope_se,data,expected", [
    (0.1, (200, 500), True),    # 4.5 standard errors, grows 1.9x over the data: signal-dependent
    (0.15, (200, 500), False),  # 3 standard errors: the fitted span's growth (1.3x) is not enough
    (0.1, (360, 490), False),   # grows 1.3x over the data too
])
def test_signal_dependence_judged_over_the_datas_brightness_range(slope_se, data, expected):
    """A textured image finds flat places over a narrow span of its brightness (BSD68 test005 at 10-1000 photons:
    367-485 of its 205-499), where the variance grows too little to call it signal-dependent; a slope clearly above
    zero (`EXTEND_Z` standard errors) that grows the variance by `SLOPE_RATIO` over the data's own range is."""
    from sslrecon.noise.estimate import _follows_signal

    fit = _fit(0.45, slope_se, 60.0, (367, 485), data)
    assert bool(_follows_signal(fit)) is expected


@needs_shared
def test_textured_image_with_flat_places_over_a_narrow_span_is_read_as_signal_dependent():
    """BSD68 test005 alone at 10-1000 photons (gain 0.5, read noise 1): its flat places cover a narrow span of its
    brightness, so the variance grew 1.2-1.3 times over it and every draw was read as Gaussian noise."""
    x = _natural("BSD68", "test005.png")
    for seed in range(3):
        rng = np.random.default_rng(seed)
        y = 0.5 * rng.poisson(10 + 990 * x / x.max()) + rng.normal(0, 1.0, x.shape)
        rep = analyze([y])
        assert rep.kind == "signal-dependent" and isinstance(rep.model, PoissonGaussian | Poisson), rep.model
        assert abs(rep.model.gain / 0.5 - 1) < 0.25, rep.model
        assert rep.fit.data_hi - rep.fit.data_lo > 1.5 * (rep.fit.mean_hi - rep.fit.mean_lo), rep.fit


def test_a_given_offset_that_leaves_no_read_noise_refits_the_gain_with_none():
    """Counts with a dark level of 100 and little read noise, told offset 50 (a nominal bias below the real one): the
    line leaves no read noise at that offset. Its slope with the intercept dropped predicted 1.4 to 4 times the
    measured variances at every brightness; the gain refitted through the bins with no read noise, 0.5 to 1.5 times:
    the model closest to them that the given offset allows."""
    rng = np.random.default_rng(0)
    x = ramp_scene(256, lo=5, hi=100)
    y = 100 + 2.0 * rng.poisson(x) + rng.normal(0, 0.5, x.shape)
    rep = analyze([y], offset=50.0)
    assert isinstance(rep.model, Poisson) and rep.model.offset == 50.0, rep.model
    assert any("leaves no read noise: gain" in n for n in rep.notes), rep.notes
    f = rep.fit
    line = f.bin_used & ~f.bin_texture
    mu, var = f.bin_mean[line], f.bin_var[line]

    def rms(gain):  # relative error of `gain * (mean - 50)` against the bins' variances
        return float(np.sqrt(np.mean((gain * (mu - 50) / var - 1) ** 2)))

    assert rep.model.gain < f.slope and rms(rep.model.gain) < 0.5 * rms(f.slope), (rep.model.gain, f.slope)


def _line_fit(mu, var, slope, intercept):
    """A mean-variance fit whose bins (`mu`, `var`, 500 places each, all on the line) gave `slope` and `intercept`."""
    from sslrecon.noise.estimate import MeanVarianceFit

    n = len(mu)
    return MeanVarianceFit(slope=slope, intercept=intercept, cov=np.eye(2), r2=1.0, r2_heldout=1.0, bin_mean=mu,
                           bin_var=var, bin_count=np.full(n, 500), bin_used=np.ones(n, bool),
                           bin_texture=np.zeros(n, bool), heldout_mean=mu, heldout_var=var, mean_lo=mu[0],
                           mean_hi=mu[-1], data_lo=mu[0], data_hi=mu[-1])


def test_a_dark_level_above_the_darkest_data_is_not_taken():
    """A line steepened by texture puts its zero, the dark level with no read noise, at 260, where data reach down
    to 128: Poisson-Gaussian data never average below their offset, so the offset is the darkest data's and the gain
    is refitted through the bins with no read noise there. A dark level below the darkest data stands."""
    from sslrecon.noise.estimate import _gain_through, _signal_dependent

    mu = np.linspace(270.0, 310.0, 8)
    fit = _line_fit(mu, 20.0 * (mu - 260.0), 20.0, -5200.0)
    notes = []
    m = _signal_dependent(fit, None, notes, darkest=128.0)
    assert isinstance(m, Poisson) and m.offset == 128.0, m
    assert m.gain == pytest.approx(_gain_through(fit, 128.0)) and m.gain < 20.0 / 4, m
    assert any("above the darkest data" in n for n in notes), notes
    m = _signal_dependent(fit, None, notes := [], darkest=265.0)
    assert isinstance(m, Poisson) and m.offset == pytest.approx(260.0) and m.gain == 20.0, m
    assert not any("above the darkest data" in n for n in notes), notes


@needs_shared
def test_texture_cannot_put_the_dark_level_above_the_darkest_data():
    """BSD68 test036 alone at 10-1000 photons (gain 0.5, read noise 1): flat places over a narrow span of its
    brightness, lifted by texture, put the line's dark level at 248 and its slope at 29 times the gain, where the
    darkest data lie near 127. The offset now lies at the darkest data, and the gain refitted there reads 7.8 times
    the truth (texture still lifts it, but no longer through an impossible offset)."""
    from sslrecon.noise.estimate import darkest_data

    x = _natural("BSD68", "test036.png")
    rng = np.random.default_rng(0)
    y = 0.5 * rng.poisson(10 + 990 * x / x.max()) + rng.normal(0, 1.0, x.shape)
    rep = analyze([y])
    assert rep.kind == "signal-dependent", rep.model
    m = rep.model.as_pg()
    assert m.offset <= darkest_data([y], rep.clipping, rep.fit) + 1e-9, (m, rep.notes)
    assert m.gain < rep.fit.slope / 3, (m, rep.fit.slope)
    assert any("above the darkest data" in n for n in rep.notes), rep.notes


def _acf(lag1, lag2):
    """A normalised autocorrelation (lags up to `LAGS`) with `lag1` and `lag2` along both axes."""
    acf = np.zeros((2 * LAGS + 1, 2 * LAGS + 1))
    acf[LAGS, LAGS] = 1.0
    for d, v in ((1, lag1), (2, lag2)):
        acf[LAGS, LAGS + d] = acf[LAGS, LAGS - d] = acf[LAGS + d, LAGS] = acf[LAGS - d, LAGS] = v
    return acf


@pytest.mark.parametrize("lag1,lag2,terciles,expected", [
    (0.25, 0.02, [0.26, 0.25, 0.27], False),  # a compact kernel's weak correlation: noise
    (0.22, 0.13, [0.20, 0.25, 0.21], True),   # as far at lag 2 as texture's (BSD68 test004 at 10-1000 photons)
    (0.55, 0.25, [0.52, 0.55, 0.58], False),  # strong correlation at every brightness: a wide kernel's, kept
])
def test_a_weak_correlation_that_reaches_as_far_as_textures_is_texture(lag1, lag2, terciles, expected):
    """Texture left in flat blocks correlates neighbours at lag 2 nearly as much as at lag 1, while a weak noise
    correlation from a compact kernel falls off fast: a weak correlation (some tercile at most 0.3) whose lag-2 share
    reaches `LONG_REACH` is taken for texture."""
    from sslrecon.noise.estimate import LONG_REACH, Correlation

    corr = Correlation(_acf(lag1, lag2), terciles, 3000, excess_z=10.0)
    assert corr.reach == pytest.approx(lag2 / lag1)
    assert corr.far_reaching is expected
    assert corr.significant is not expected
    assert (corr.reach >= LONG_REACH) is (lag2 / lag1 >= LONG_REACH)


@needs_shared
def test_a_borderline_reach_is_reported_as_uncertain():
    """FMD BPAE_G's darkest-third correlation reaches 0.33 +- 0.18 of itself at lag 2 as its uint8 file and 0.39 +-
    0.12 as uint16 x 256: one call each side of `LONG_REACH`, within its standard error, so the report says the call
    is uncertain (the gains read 4.35 and 3.60); a texture call far past the line (test027, below) does not."""
    import tifffile

    frame = tifffile.imread(FMD / "noisy_raw" / "Confocal_BPAE_G.tif")
    for rep in (analyze([frame]), analyze([frame.astype(np.uint16) * 256])):
        corr = rep.correlation
        assert 0.1 < corr.reach_se < 0.25 and corr.reach_uncertain, (corr.reach, corr.reach_se)
        assert any("is uncertain" in n for n in rep.notes)
        assert rep.to_dict()["correlation"]["lag2_reach_se"] == corr.reach_se


@needs_shared
def test_textures_far_reaching_correlation_leaves_the_white_gain():
    """BSD68 test027 alone at 10-1000 photons (gain 0.5, read noise 1): its texture correlates the flat blocks' noise
    by 0.2-0.3 at every brightness, and the refit that took it for the noise's own put the gain 57 % high, where the
    white fit reads it within 1 %. That correlation reaches 0.5-0.6 of itself at lag 2, as texture's does."""
    x = _natural("BSD68", "test027.png")
    rng = np.random.default_rng([1, 26])
    y = 0.5 * rng.poisson(10 + 990 * x / x.max()) + rng.normal(0, 1.0, x.shape)
    rep = analyze([y])
    assert rep.kind == "signal-dependent" and not rep.correlation.significant, rep.notes
    assert rep.correlation.far_reaching and any("as far as texture's" in n for n in rep.notes), rep.notes
    assert rep.to_dict()["correlation"]["lag2_reach"] == rep.correlation.reach >= 0.35  # in `noise --json`
    assert not rep.correlation.reach_uncertain and not any("is uncertain" in n for n in rep.notes)
    assert abs(rep.model.gain / 0.5 - 1) < 0.1, rep.model


@needs_shared
def test_a_weak_noise_correlation_on_texture_is_kept():
    """The same kind of image (BSD68 test025 alone at 10-1000 photons) with Poisson-Gaussian noise correlated by a
    compact plus-shaped kernel (lag-1 0.25): the correlation falls off fast (its lag-2 share 0.1), stays the noise's,
    and the refit on it reads the gain within 10 %, where the white fit reads it 44 % low."""
    import torch

    x = _natural("BSD68", "test025.png")
    arm = 0.134
    truth = Correlated(1.0, ((0.0, arm, 0.0), (arm, 1.0, arm), (0.0, arm, 0.0)), gain=0.5, offset=0.0)
    clean = torch.tensor(0.5 * (10 + 990 * x / x.max()))[None, None]
    y = truth.sample(clean, generator=torch.Generator().manual_seed(1024))[0, 0].numpy().astype(np.float64)
    rep = analyze([y])
    assert rep.correlation.significant and not rep.correlation.far_reaching, rep.notes
    assert abs(rep.model.gain / 0.5 - 1) < 0.1, rep.model


def _reference_ratio(noisy: np.ndarray, clean: np.ndarray, model, lo: float, hi: float) -> float:
    """A model's variance over the mean square of `noisy - clean` at the clean grey levels [lo, hi) where the clean
    image is flat (its 5 x 5 range within 2 grey levels or a quarter of the level: the frame and its average are
    not perfectly registered at edges)."""
    import torch
    from numpy.lib.stride_tricks import sliding_window_view

    n, c = noisy.astype(np.float64), clean.astype(np.float64)
    window = sliding_window_view(np.pad(c, 2, mode="reflect"), (5, 5))
    flat = window.max((-2, -1)) - window.min((-2, -1)) <= np.maximum(2, 0.25 * c)
    at = flat & (c >= lo) & (c < hi)
    assert at.sum() > 1000
    return float(model.variance(torch.from_numpy(c[at])).mean()) / float(np.mean((n[at] - c[at]) ** 2))


@needs_shared
def test_a_floor_that_cuts_no_noise_is_fitted_through():
    """FMD BPAE_B piles its pixels that caught no photon on 3 and 4, which reads as clipping at 4, so the line was
    fitted over 20 grey levels only: its dark level 5.7 gave the frame's darkest half no noise (0.06 of the variance
    against the 50-frame average at grey levels 5-6) and its 256 x 256 centre, from a few bright bins, 5.9 times it.
    Clipping could not leave those dark bins the variance they hold, so the line now runs through them."""
    import tifffile

    noisy = tifffile.imread(FMD / "noisy_raw" / "Confocal_BPAE_B.tif")
    clean = tifffile.imread(FMD / "clean_avg50" / "Confocal_BPAE_B.tif")
    for part in (np.s_[:, :], np.s_[128:384, 128:384]):
        rep = analyze([noisy[part]])
        assert rep.clipping.low == 4, rep.clipping
        for lo, hi in ((5, 7), (7, 30)):
            ratio = _reference_ratio(noisy[part], clean[part], rep.model, lo, hi)
            assert 0.7 < ratio < 1.3, (part, lo, hi, ratio, rep.model)


def test_clipped_variance_is_that_of_noise_on_the_line_cut_at_the_floor():
    from sslrecon.noise.estimate import _clipped_variance

    rng = np.random.default_rng(0)
    a, b, floor = 4.0, 9.0, 0.0
    true_means = np.array([-3.0, 0.0, 2.0, 8.0])
    cut = [np.maximum(rng.normal(m, np.sqrt(max(a * m + b, 0)), 400_000), floor) for m in true_means]
    got = _clipped_variance(np.array([y.mean() for y in cut]), floor, a, b)
    assert np.allclose(got, [y.var() for y in cut], rtol=0.02), got


def test_dark_bins_that_clipping_explains_stay_out_and_others_are_fitted():
    """Bins from a line: dark ones whose variance noise on it cut at the floor leaves stay out of the fit; dark ones
    holding their uncut variance on a line that bends from the bright ones' (as the FMD frames') are fitted."""
    from sslrecon.noise.estimate import _censored_moments, _uncensored_floor

    a, b, floor = 4.0, 9.0, 0.0
    mu = np.linspace(-2.0, 60.0, 24)
    m_cut, v_cut = _censored_moments(mu, np.sqrt(np.maximum(a * mu + b, 0)), floor)
    cnt = np.full(24, 500.0)
    candidates = np.ones(24, bool)
    used = m_cut > 12
    assert _uncensored_floor(m_cut, v_cut, cnt, candidates, used, floor, (a, b)) is used
    bent = 3.5 * (mu - 1) + 0.01 * (mu - 1) ** 2  # dark level 1 above the floor, a little read noise
    m, v, cnt = mu[mu > 2], bent[mu > 2] + 0.1, cnt[mu > 2]
    used = m > 12
    line = tuple(np.polyfit(m[used], v[used], 1, w=np.sqrt(cnt[used]) / v[used]))
    assert _uncensored_floor(m, v, cnt, np.ones(len(m), bool), used, floor, line).all()
    assert (_uncensored_floor(m, v, cnt, m > 5, used, floor, line) == (m > 5)).all()


@needs_shared
def test_a_line_that_cannot_be_checked_on_the_held_out_half_is_reported():
    """A 256 x 256 crop of FMD BPAE_B has half its pixels on its floor at 4: the fit rests on the bins between the
    floor and a few bright ones, none of them held out. The report says the line went unchecked; the whole frame's,
    checked, gets no such note."""
    import tifffile

    frame = tifffile.imread(FMD / "noisy_raw" / "Confocal_BPAE_B.tif")
    crop = analyze([frame[128:384, 128:384]])
    assert not np.isfinite(crop.fit.r2_heldout) and any("too few flat places" in n for n in crop.notes), crop.notes
    whole = analyze([frame])
    assert np.isfinite(whole.fit.r2_heldout) and not any("too few flat places" in n for n in whole.notes)


def test_a_line_that_fails_on_the_held_out_half_is_reported():
    """BSD68 test031 alone at 10-1000 photons: texture lifts its flat places unevenly, so the line fitted on one half
    of the image predicts the other half's variances worse than their mean does (held-out R^2 -7.4) and its gain reads
    2.4 times the truth; the report says so. A smooth scene's line (held-out R^2 near 1) gets no such note."""
    x = _natural("BSD68", "test031.png")
    rng = np.random.default_rng([1, 30])
    rep = analyze([0.5 * rng.poisson(10 + 990 * x / x.max()) + rng.normal(0, 1.0, x.shape)])
    assert rep.kind == "signal-dependent" and rep.r2 < 0.5, (rep.r2, rep.model)
    assert any("predicts the held-out half of the data poorly" in n for n in rep.notes), rep.notes
    rng = np.random.default_rng(0)
    smooth = analyze([0.5 * rng.poisson(ramp_scene(256, lo=10, hi=1000)) + rng.normal(0, 1.0, (256, 256))])
    assert smooth.r2 > 0.9 and not any("held-out half" in n for n in smooth.notes), (smooth.r2, smooth.notes)
