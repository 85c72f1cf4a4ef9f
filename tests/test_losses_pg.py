"""Statistical promises of the Poisson-Gaussian losses (DESIGN.md section 5), on synthetic data with an offset and
negative values, at about 1, 10 and 100 photons per pixel: the Monte-Carlo mean of each risk estimate equals the
true MSE within three standard errors of that mean, and the tests have the power to see the known biases."""
import math

import pytest
import torch

from sslrecon.engine.bundle import blend_risk
from sslrecon.errors import ConfigError
from sslrecon.losses import build_loss, sure_mse
from sslrecon.losses import base
from sslrecon.losses.base import REMOVAL_SPACING, low_counts, removal_divergence, whole_counts
from sslrecon.losses.pg import (PRIOR_BOX, auto_alpha, auto_test_samples, photon_posterior, second_order_term,
                               skewed_probe)
from sslrecon.noise import Poisson, PoissonGaussian
from sslrecon.physics import Denoising

from .test_losses import _blur, _clean, _random_cnn, _within

GAIN, OFFSET, SIGMA = 2.0, -10.0, 1.5


def _scene(photons: float, n: int = 400) -> torch.Tensor:
    """Clean images of about `photons` counts per pixel (0.2 to 1.6 times that), below zero near the dark level."""
    return _clean(n) * 2 * photons * GAIN + OFFSET


def _cnn_in_units(photons: float):
    """The fixed random CNN applied in the data's units (normalised by the signal level, like training does)."""
    net, scale = _random_cnn(), 2 * photons * GAIN

    def f(v):
        return net((v - OFFSET) / scale) * scale + OFFSET

    return f


def _quadratic(photons: float):
    """A strongly nonlinear denoiser whose second-order Taylor expansion is exact."""
    c = 0.5 / (photons * GAIN)
    return lambda v: _blur(v) + c * (_blur(v) - OFFSET) ** 2


def _pg_sure(f, y, model, g, second: bool):
    est = sure_mse(f, y, model, generator=g, removal=False)  # the Taylor terms, at every count
    if second:
        est = est + second_order_term(f, y, model, 0.2 * model.mean_sigma(y), g, dims=(1, 2, 3))
    return est


def _bias(photons: float, f, estimate, seed: int, n: int = 400, model=None) -> tuple[bool, float, float]:
    """`_within` of a risk estimate `estimate(f, y, model, generator)` minus the true MSE of `f`, over `n` draws at
    `photons` counts per pixel (of `model`, Poisson-Gaussian with read noise unless given)."""
    model = model or PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    x = _scene(photons, n)
    g = torch.Generator().manual_seed(seed)
    y = model.sample(x, generator=g)
    with torch.no_grad():
        return _within(estimate(f, y, model, g) - ((f(y) - x) ** 2).mean((1, 2, 3)))


def _pg_sure_bias(photons: float, f, second: bool) -> tuple[bool, float, float]:
    return _bias(photons, f, lambda f, y, model, g: _pg_sure(f, y, model, g, second=second), seed=4)


@pytest.mark.parametrize("photons", [10.0, 100.0])
def test_first_order_pg_sure_is_unbiased_from_ten_photons(photons):
    for f in (_cnn_in_units(photons), _quadratic(photons)):
        ok, m, se = _pg_sure_bias(photons, f, second=False)
        assert ok, f"{photons} photons: PG-SURE - MSE = {m:.3g} +- {se:.3g}"


@pytest.mark.parametrize("photons", [1.0, 10.0, 100.0])
def test_second_order_pg_sure_is_unbiased_at_every_count(photons):
    for f in (_cnn_in_units(photons), _quadratic(photons)):
        ok, m, se = _pg_sure_bias(photons, f, second=True)
        assert ok, f"{photons} photons: second-order PG-SURE - MSE = {m:.3g} +- {se:.3g}"


def test_first_order_pg_sure_is_visibly_biased_at_one_photon():
    """What the second-order term and the finite difference are for (and proof that the tests can fail)."""
    assert not _pg_sure_bias(1.0, _quadratic(1.0), second=False)[0]


def _removal_bias(photons: float, f, spacing: int = REMOVAL_SPACING, seed: int = 6, n: int = 400,
                  model=None) -> tuple[bool, float, float]:
    """`_bias` of PG-SURE with the photon removal by a finite difference on a lattice of `spacing`."""
    def estimate(f, y, model, g):
        fy, dims = f(y), (1, 2, 3)
        return (((fy - y) ** 2).mean(dims) - model.stein_weight(y).mean(dims)
                + 2 * removal_divergence(f, y, fy, model, spacing, generator=g, dims=dims))

    return _bias(photons, f, estimate, seed=seed, n=n, model=model)


@pytest.mark.parametrize("photons", [1.0, 10.0, 100.0])
def test_finite_difference_pg_sure_is_unbiased_at_every_count(photons):
    for f in (_cnn_in_units(photons), _quadratic(photons)):
        ok, m, se = _removal_bias(photons, f)
        assert ok, f"{photons} photons: finite-difference PG-SURE - MSE = {m:.3g} +- {se:.3g}"


def test_the_read_noise_probe_averages_over_a_networks_pieces(monkeypatch):
    """A ReLU network's derivative is constant on pieces far smaller than the noise and jumps between them, so a
    probe of a step far below the noise reads a jump at each pixel. The read noise's term of the photon removal
    probes at `READ_STEP` times the read noise, over many pieces: for a denoiser whose slope flips every quarter of
    a count (a steep triangle wave beside a blur) its spread over probes is under half that of a probe at 1 % of the
    noise level (the step before), at the same mean, and the whole estimate stays unbiased."""
    period = GAIN / 4

    def f(v):  # the wave has period GAIN / 4, so the removal of a photon (GAIN) does not see it
        return _blur(v) + 2 * (torch.remainder(v - OFFSET, period) - period / 2).abs()

    model = PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    y = model.sample(_scene(1.0, 8), generator=torch.Generator().manual_seed(0))
    spread = {}
    for step in (base.READ_STEP, 0.01 * model.mean_sigma(y) / SIGMA):
        monkeypatch.setattr(base, "READ_STEP", step)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            d = torch.stack([removal_divergence(f, y, f(y), model, generator=g) for _ in range(200)])
        spread[step] = (float(d.mean()), float(d.std()))
    (m, s), (m_fine, s_fine) = spread.values()
    assert s < s_fine / 2, spread
    assert abs(m - m_fine) < 3 * math.hypot(s, s_fine) / math.sqrt(200), spread
    monkeypatch.undo()
    ok, m, se = _removal_bias(1.0, f)
    assert ok, f"{m:.3g} +- {se:.3g}"


def test_finite_difference_needs_its_lattice_spread_out():
    """Pixels of one lattice move each other's outputs where they lie within the denoiser's reach: a denoiser curved
    towards the pixel two to the right reads biased on a lattice of spacing 2 and unbiased on one of 4 (the power
    to see the cross terms that `REMOVAL_SPACING` keeps out of reach)."""
    c = 0.5 / GAIN

    def f(v):
        return v + c * torch.roll(v - OFFSET, 2, dims=-1) ** 2

    assert not _removal_bias(1.0, f, spacing=2)[0]
    assert _removal_bias(1.0, f, spacing=4)[0]


def test_the_risk_estimate_removes_photons_off_the_training_lattice():
    """A network trained on the photon removal learns curvature towards pixels one training lattice away, which a
    removal on that lattice counts as each pixel's own: such a denoiser reads biased there, and unbiased in
    `sure_mse`, whose lattice is twice as far apart (`RISK_SPACING`)."""
    c = 0.5 / GAIN

    def f(v):
        return _blur(v) + c * torch.roll(v - OFFSET, REMOVAL_SPACING, dims=-1) ** 2

    shot = Poisson(gain=GAIN, offset=OFFSET)
    assert not _removal_bias(1.0, f, n=1600, model=shot)[0]
    ok, m, se = _bias(1.0, f, lambda f, y, model, g: sure_mse(f, y, model, generator=g), seed=7, n=1600, model=shot)
    assert ok, f"{m:.3g} +- {se:.3g}"


def test_sure_mse_takes_the_finite_difference_below_low_counts():
    """`sure_mse` (validation, `validate`) removes photons by a finite difference below `LOW_COUNTS` and keeps the
    first-order term above: at one photon its default is unbiased where the first-order estimate is not."""
    model = PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    y = _scene(1.0)
    assert low_counts(y, model) and not low_counts(_scene(200.0), model)
    assert not low_counts(y, model.__class__(gain=0.0, sigma=SIGMA, offset=OFFSET))
    # the finite difference's terms are sparse: more draws
    ok, m, se = _bias(1.0, _quadratic(1.0), lambda f, y, model, g: sure_mse(f, y, model, generator=g), seed=7, n=1600)
    assert ok, f"{m:.3g} +- {se:.3g}"


def test_values_below_the_dark_level_count_as_no_photon_without_read_noise():
    """Data reaching below a Poisson model's offset (a clipped floor under a fitted dark level, as on the FMD frames):
    without read noise every term of the risk estimate takes those pixels as holding no photon, so a network that
    rises steeply with the signal there earns nothing from them (with a negative count it would lower the estimate
    without bound); with read noise such values are possible and count as they are."""
    y = torch.full((2, 1, 24, 24), OFFSET - 3.0)

    def steep(v):  # rising steeply, and curved
        return 50 * v + (v - OFFSET) ** 2

    shot, read = Poisson(gain=GAIN, offset=OFFSET), PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    assert (shot.photon_signal(y) == 0).all() and (shot.stein_weight(y) == 0).all()
    assert torch.allclose(read.photon_signal(y), y - OFFSET)
    for model, vanishes in ((shot, True), (read, False)):
        g = torch.Generator().manual_seed(0)
        removal = removal_divergence(steep, y, steep(y), model, generator=g)
        second = second_order_term(steep, y, model.as_pg(), 0.1, g)
        assert (removal.item() == 0 and second.item() == 0) == vanishes, (model, removal, second)
    # without read noise counts are whole: the finite difference removes no photon from a pixel holding less than
    # half of one (which would probe the network below anything the data hold), and does from one holding one
    g = torch.Generator().manual_seed(0)
    for photons, vanishes in ((0.4, True), (1.0, False)):
        y = torch.full((2, 1, 24, 24), OFFSET + photons * GAIN)
        assert (removal_divergence(steep, y, steep(y), shot, generator=g).item() == 0) == vanishes, photons
        assert removal_divergence(steep, y, steep(y), read, generator=g).item() != 0


def test_finite_difference_is_unbiased_for_shot_noise_alone():
    """Whole counts above an offset (no read noise): the finite difference, which there removes photons only where at
    least half of one was counted, stays unbiased at one photon per pixel."""
    ok, m, se = _removal_bias(1.0, _quadratic(1.0), seed=8, n=1600, model=Poisson(gain=GAIN, offset=OFFSET))
    assert ok, f"{m:.3g} +- {se:.3g}"


def _lattice_reader(c: float):
    """A denoiser that reads where its input lies between whole counts: on them it is `_blur`, and a Taylor probe off
    the count lattice moves its output by `2 pi c` times the probe, so the first-order term credits it with a
    divergence that its photon removal (`f(y) - f(y - gain e_i)`, 0 for the sine) does not have."""
    return lambda v: _blur(v) + c * GAIN * torch.sin(2 * math.pi * (v - OFFSET) / GAIN)


def test_whole_counts_take_the_photon_removal_at_any_count():
    """On whole counts (no read noise) a network can see a Taylor probe, and one that reads it lowers the first-order
    estimate as far as it likes (a count level above `LOW_COUNTS`, where only `whole_counts` calls for the removal);
    `sure_mse`, `sure` and `pg-sure`'s default take the photon removal there, which is unbiased for it. Off the
    lattice (read noise) `pg-sure`'s default takes it below `FINITE_COUNTS` only."""
    shot, read = Poisson(gain=GAIN, offset=OFFSET), PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    f = _lattice_reader(-0.2)
    y = shot.sample(_scene(200.0, 2), generator=torch.Generator().manual_seed(0))
    assert whole_counts(y, shot) and not low_counts(y, shot)
    assert not whole_counts(y + 0.5, shot) and not whole_counts(y, read) and not whole_counts(y, Poisson(gain=1.5))
    assert not _bias(200.0, f, lambda f, y, m, g: sure_mse(f, y, m, generator=g, removal=False), 2, model=shot)[0]
    ok, m, se = _bias(200.0, f, lambda f, y, m, g: sure_mse(f, y, m, generator=g), 2, model=shot)
    assert ok, f"{m:.3g} +- {se:.3g}"
    pg_sure, taylor = build_loss("pg-sure"), build_loss("pg-sure", finite=False)
    assert pg_sure.options()["finite"] == "auto" and pg_sure.removes_photons(y, shot)
    # off the lattice (read noise): the removal below `FINITE_COUNTS`, the Taylor terms above; "counts": whole counts
    assert pg_sure.removes_photons(read.sample(_scene(1.0, 2)), read)
    assert not pg_sure.removes_photons(read.sample(_scene(200.0, 2)), read)
    counts = build_loss("pg-sure", finite="counts")
    assert counts.removes_photons(y, shot) and not counts.removes_photons(read.sample(_scene(1.0, 2)), read)
    x = _scene(200.0, 8)
    for loss, counted in ((pg_sure, True), (taylor, False), (build_loss("sure"), True)):
        g, diffs = torch.Generator().manual_seed(3), []
        for _ in range(100):
            y = shot.sample(x, generator=g)
            diffs.append(float(loss(f, y, Denoising(shot), generator=g).value) - float(((f(y) - x) ** 2).mean()))
        assert _within(torch.tensor(diffs))[0] == counted, (loss.name, loss.options())


def test_photon_removal_moves_no_pixel_below_the_data():
    """Without read noise a pixel that holds no photon is not moved: moved down it would hold a value below any the
    data hold, which shows a network the moved input and where its lattice lies, and a network that raises its
    output at the lattice's other pixels when it sees one lowers the estimate without bound."""
    neg, s = lambda v: (OFFSET - v).clamp_min(0), REMOVAL_SPACING

    def f(v):
        seen = sum(torch.roll(neg(v), k, d) for k in (s, -s) for d in (-1, -2))
        return _blur(v) + 5 * seen

    ok, m, se = _removal_bias(1.0, f, n=1600, model=Poisson(gain=GAIN, offset=OFFSET))
    assert ok, f"{m:.3g} +- {se:.3g}"


@pytest.mark.parametrize("options", [{"second_order": True, "finite": True}, {"spacing": 1}, {"spacing": 2.5},
                                     {"finite": "yes"}])
def test_pg_sure_refuses_options_that_cannot_work(options):
    with pytest.raises(ConfigError):
        build_loss("pg-sure", **options)


def test_a_refused_value_is_not_answered_with_the_option_names():
    with pytest.raises(ConfigError) as e:
        build_loss("pg-unsure", finite=True)
    assert "auto or false" in e.value.message and "give a value the message names" in e.value.fix
    with pytest.raises(ConfigError, match="its options are: tau"):  # an unknown option still lists them
        build_loss("pg-sure", finites=True)


def test_skewed_probe_moments():
    d = skewed_probe((400_000,), torch.zeros(1), torch.Generator().manual_seed(0)).double()
    assert abs(float(d.mean())) < 0.01 and abs(float(d.pow(2).mean()) - 1) < 0.01
    assert abs(float(d.pow(3).mean()) - 1) < 0.03


@pytest.mark.parametrize("options", [{}, {"finite": True}, {"second_order": True},
                                     {"finite": False, "second_order": True}])
def test_pg_sure_training_value_is_unbiased_at_one_photon(options):
    """With the finite difference (the default, `finite="auto"`, takes it at one photon, also beside
    `second_order=true`, which then applies from `FINITE_COUNTS` up) and with the second-order Taylor terms."""
    model = PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    loss, phys = build_loss("pg-sure", **options), Denoising(model)
    x, f = _scene(1.0, n=10), _quadratic(1.0)
    g = torch.Generator().manual_seed(1)
    diffs = []
    with torch.no_grad():
        for _ in range(150):
            y = model.sample(x, generator=g)
            out = loss(f, y, phys, generator=g)
            diffs.append(float(out.value) - float(((f(y) - x) ** 2).mean()))
    assert ("second_order" in out.terms) == (options.get("finite") is False)
    ok, m, se = _within(torch.tensor(diffs))
    assert ok, f"{m:.3g} +- {se:.3g}"


def _partial(photons: float):
    """A fixed nonlinear denoiser that keeps half of its input: its output moves with the noise (a large divergence),
    so a risk estimate that gets the noise's share wrong is seen (the random CNN barely moves with it)."""
    scale = 2 * photons * GAIN

    def f(v):
        u = (v - OFFSET) / scale
        return (0.5 * u + 0.5 * _blur(u) + 0.1 * torch.tanh(3 * u)) * scale + OFFSET

    return f


def _gr2r_bias(model, photons, n=400, seed=5, samples=3, weights=(1.0,)):
    """Whether gr2r-poisson's risk estimate of its test-time rule (the average of `samples` splits), and of its blends
    `y + w (g - y)` with the measurement, matches the true MSE within 3 SE (the worst weight's result)."""
    x, f = _scene(photons, n), _partial(photons)
    g = torch.Generator().manual_seed(seed)
    y = model.sample(x, generator=g)
    loss, phys = build_loss("gr2r-poisson"), Denoising(model)
    results = []
    with torch.no_grad():
        pred, rest = loss.predict_and_terms(f, y, phys, generator=g, samples=samples)
        dims = (1, 2, 3)
        step, trace = ((pred - y) ** 2).mean(dims), model.stein_weight(y).mean(dims)
        est = step + rest.mean(dims)
        for w in weights:
            true = ((y + w * (pred - y) - x) ** 2).mean(dims)
            results.append(_within(blend_risk(est, step, trace, w) - true))
    return max(results, key=lambda r: abs(r[1]) / r[2])


def test_gr2r_poisson_risk_is_that_of_the_average_of_splits_and_of_every_blend():
    """The estimate is of the error of the very average the rule outputs, and SURE's form gives every blend's: here
    a single split's error lies many standard errors above the average's, so an estimate of the former would fail."""
    model = Poisson(gain=GAIN, offset=OFFSET)
    ok, m, se = _gr2r_bias(model, 10.0, samples=8, weights=(0.0, 0.3, 0.7, 1.0))
    assert ok, f"GR2R - MSE = {m:.3g} +- {se:.3g}"
    x, f = _scene(10.0), _partial(10.0)
    g = torch.Generator().manual_seed(5)
    y = model.sample(x, generator=g)
    loss, phys = build_loss("gr2r-poisson"), Denoising(model)
    with torch.no_grad():
        one = ((loss.predict(f, y, phys, generator=torch.Generator().manual_seed(1), samples=1) - x) ** 2).mean((1, 2, 3))
        many = ((loss.predict(f, y, phys, generator=torch.Generator().manual_seed(1), samples=8) - x) ** 2).mean((1, 2, 3))
    assert not _within(one - many, k=10)[0]


@pytest.mark.parametrize("photons", [1.0, 10.0, 100.0])
def test_gr2r_poisson_risk_is_unbiased_for_poisson_noise_with_an_offset(photons):
    ok, m, se = _gr2r_bias(Poisson(gain=GAIN, offset=OFFSET), photons)
    assert ok, f"{photons} photons: GR2R - MSE = {m:.3g} +- {se:.3g}"


@pytest.mark.parametrize("photons", [1.0, 10.0, 100.0])
def test_gr2r_poisson_risk_is_unbiased_for_poisson_gaussian_noise(photons):
    """With read noise the posterior split (the default) draws the photons from their posterior given the local mean:
    unbiased from one photon (the shifted-Poisson split is about 2 % of the MSE off at one photon)."""
    ok, m, se = _gr2r_bias(PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET), photons)
    assert ok, f"{photons} photons: GR2R - MSE = {m:.3g} +- {se:.3g}"


def test_gr2r_poisson_takes_white_gaussian_noise_by_the_gaussian_split():
    """A Gaussian model (what `--noise auto` reports where read noise hides the shot noise) has no counts to thin:
    the split is the family's Gaussian member, with the lowest alpha (it is exact), its risk unbiased for a fixed
    denoiser and its halves independent, centred on the clean image."""
    from sslrecon.noise import Gaussian

    model = Gaussian(sigma=SIGMA)
    loss = build_loss("gr2r-poisson", test_samples=1)
    assert loss.supports(model)
    x = _scene(10.0)
    loss.adapt(model.sample(x, generator=torch.Generator().manual_seed(3)), Denoising(model))
    assert loss.options()["alpha"] == 0.15
    ok, m, se = _gr2r_bias(model, 10.0)
    assert ok, f"GR2R - MSE = {m:.3g} +- {se:.3g}"
    y = model.sample(x, generator=torch.Generator().manual_seed(4))
    y1, y2 = loss.split(y, Denoising(model), generator=torch.Generator().manual_seed(2))
    a, b = (y1 - x).flatten(), (y2 - x).flatten()
    for half, var in ((a, SIGMA**2 / 0.85), (b, SIGMA**2 / 0.15)):
        assert abs(float(half.mean())) < 4 * float(half.std()) / math.sqrt(half.numel())
        assert abs(float(half.var()) / var - 1) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.01


def test_gr2r_poisson_splits_a_batch_of_count_and_gaussian_files():
    """`--noise auto` can give some files of a folder a Gaussian model and others a Poisson one; a batch holding
    both has one Poisson-Gaussian model with gain 0 for the Gaussian files. Its alpha was NaN (read noise over a
    gain of 0: `fit` stopped with "cannot convert float NaN to integer"); now those files take the Gaussian split
    (independent halves of variances sigma^2 / (1 - alpha) and sigma^2 / alpha) and the others are thinned (halves
    centred on the clean image)."""
    from sslrecon.noise import Gaussian
    from sslrecon.noise.models import stack

    models = [Gaussian(sigma=SIGMA), PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)] * 100
    batch = stack(models)
    x = _scene(10.0, n=200)
    y = torch.cat([m.sample(x[i : i + 1], generator=torch.Generator().manual_seed(i)) for i, m in enumerate(models)])
    loss = build_loss("gr2r-poisson")
    loss.adapt(y, Denoising(batch))
    alpha = loss.options()["alpha"]
    assert 0.15 <= alpha < 0.95 and loss.options()["test_samples"] >= 5, loss.options()
    y1, y2 = loss.split(y, Denoising(batch), generator=torch.Generator().manual_seed(2))
    a, b = (y1 - x)[0::2].flatten(), (y2 - x)[0::2].flatten()  # the Gaussian files
    for half, var in ((a, SIGMA**2 / (1 - alpha)), (b, SIGMA**2 / alpha)):
        assert abs(float(half.mean())) < 4 * float(half.std()) / math.sqrt(half.numel())
        assert abs(float(half.var()) / var - 1) < 0.03
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.02
    for half in ((y1 - x)[1::2].flatten(), (y2 - x)[1::2].flatten()):  # the counted files
        assert torch.isfinite(half).all()
        assert abs(float(half.mean())) < 4 * float(half.std()) / math.sqrt(half.numel())


def test_gr2r_split_keeps_the_mean_for_fractional_and_negative_counts():
    """No silent rounding: at fractional counts, below the dark level and with read noise, both halves keep the
    measurement as their mean, given the measurement."""
    model = PoissonGaussian(gain=0.37, sigma=0.5, offset=-3.2)
    y = torch.tensor([-5.0, -3.3, -3.2, -3.0, 0.123, 7.77, 41.1]).view(1, 1, 1, -1).expand(20_000, 1, 1, 7)
    y1, y2 = build_loss("gr2r-poisson", alpha=0.3).split(y, Denoising(model), torch.Generator().manual_seed(0))
    for half in (y1, y2):
        m, se = half.mean(0).flatten(), half.std(0).flatten() / math.sqrt(y.shape[0])
        assert ((m - y[0].flatten()).abs() < 4 * se + 1e-5).all(), (m, y[0].flatten())
    # integer counts without read noise split exactly into Poisson halves: values stay on the count grid
    pure = Poisson(gain=3.0, offset=1.0)
    yp = pure.sample(torch.full((1, 1, 8, 8), 20.0), torch.Generator().manual_seed(1))
    a, b = build_loss("gr2r-poisson", alpha=0.25).split(yp, Denoising(pure), torch.Generator().manual_seed(2))
    assert torch.allclose((a - 1) / 3 * 0.75 + (b - 1) / 3 * 0.25, (yp - 1) / 3, atol=1e-4)


def test_gr2r_predict_averages_splits_and_refuses_bad_alpha():
    model = Poisson(gain=1.0)
    y = torch.full((1, 1, 16, 16), 50.0)
    loss = build_loss("gr2r-poisson", test_samples=32)
    out = loss.predict(lambda v: v, y, Denoising(model), generator=torch.Generator().manual_seed(0))
    assert (out - y).abs().mean() < 2.5  # one split has std sqrt(50 / 0.85) ~ 7.7; the mean of 32 about 1.4
    with pytest.raises(ConfigError, match="alpha"):
        build_loss("gr2r-poisson", alpha=1.0)
    with pytest.raises(ConfigError, match="test_samples"):
        build_loss("gr2r-poisson", test_samples=0)


def test_gr2r_auto_test_samples_grow_with_alpha():
    """test_samples="auto" averages more splits where each varies more (the input holds fewer counts): 5 at
    alpha 0.2, 10 at 0.4, 35 at 0.7, at most 64; `adapt` settles it from the settled alpha, keeps an explicit one,
    and without `adapt` the rule counts its passes from the alpha it uses."""
    assert [auto_test_samples(a) for a in (0.15, 0.2, 0.4, 0.7, 0.99)] == [5, 5, 10, 35, 64]
    model = PoissonGaussian(gain=2.0, sigma=3.0, offset=100.0)
    y = model.sample(torch.full((2, 1, 64, 64), 102.0), generator=torch.Generator().manual_seed(0))
    loss = build_loss("gr2r-poisson", split="shifted")  # (whose alpha grows with the read noise)
    assert loss.options()["test_samples"] == "auto"
    loss.adapt(y, Denoising(model))
    assert loss.options()["test_samples"] == auto_test_samples(loss.options()["alpha"]) > 5
    fixed = build_loss("gr2r-poisson", test_samples=3)
    fixed.adapt(y, Denoising(model))
    assert fixed.options()["test_samples"] == 3
    passes = []
    build_loss("gr2r-poisson", alpha=0.7).predict(lambda v: passes.append(1) or v, y, Denoising(model))
    assert len(passes) == 35


def test_gr2r_auto_alpha_follows_the_read_noise_share():
    """alpha="auto" is 0.15 for shot noise alone and grows with the share of the noise variance that the split does
    not take exactly: for the shifted-Poisson split all read noise, which it finds in the data's third cumulant too
    (where an estimated model hides the read noise in a dark level it still sees it); for the posterior split (the
    default) only read noise the model leaves out. It does not depend on the data's units, is settled by `adapt` (then
    recorded in `options`), and an explicit alpha is kept."""
    x = torch.full((4, 1, 128, 128), 100.0 + 2.0 * 1.0)  # one photon per pixel: gain 2, offset 100
    shot = Poisson(gain=2.0, offset=100.0)
    y = shot.sample(x, generator=torch.Generator().manual_seed(0))
    assert auto_alpha(y, shot.as_pg(), posterior=False) == pytest.approx(0.15, abs=0.04)  # the data's share ~ 0
    true_alpha = 0.15 + 0.8 * 9 / (4 + 9)  # read variance 9 of 4 + 9
    values = []
    for c in (1.0, 1000.0):
        model = PoissonGaussian(gain=2.0 * c, sigma=3.0 * c, offset=100.0 * c)
        y = model.sample(x * c, generator=torch.Generator().manual_seed(1))
        values.append(auto_alpha(y, model.as_pg(), posterior=False))
        assert auto_alpha(y, model.as_pg()) < 0.15 + 0.8 * 0.1  # the posterior split takes it (up to kappa3's noise)
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert values[0] == pytest.approx(true_alpha, abs=0.05)
    hidden = Poisson(gain=1.55, offset=93.7)  # what `--noise auto` finds on such data: no read noise, a dark level
    assert hidden.variance(torch.tensor([102.0])).item() == pytest.approx(13.0, rel=0.05)  # the same variance
    for posterior in (False, True):  # (y: the units x 1000 draw)
        assert auto_alpha(y / 1000, hidden.as_pg(), posterior) == pytest.approx(true_alpha, abs=0.08)
    for split, expected in (("shifted", values[1]), ("posterior", auto_alpha(y, model.as_pg()))):
        loss = build_loss("gr2r-poisson", split=split)
        assert loss.options()["alpha"] == "auto"
        loss.adapt(y, Denoising(model))
        assert loss.options()["alpha"] == pytest.approx(expected)
    fixed = build_loss("gr2r-poisson", alpha=0.2)
    fixed.adapt(y, Denoising(model))
    assert fixed.options()["alpha"] == 0.2
    with pytest.raises(ConfigError, match="split"):
        build_loss("gr2r-poisson", split="binomial")


def _split_dependence(alpha, split, side=548, bins=64):
    """E[b(y1)^2] at one photon with read noise 1.5 photons, where b(y1) = E[y2 - x | y1]: what a network can
    learn from the input about its target's noise (zero for an exact split), over bins of equal shares of y1, less
    the bins' own sampling variance."""
    model = PoissonGaussian(gain=2.0, sigma=3.0, offset=100.0)
    x = torch.full((1, 1, side, side), 102.0, dtype=torch.float64)
    y = model.sample(x, generator=torch.Generator().manual_seed(0))
    y1, y2 = build_loss("gr2r-poisson", alpha=alpha, split=split).split(y, Denoising(model),
                                                                         torch.Generator().manual_seed(1))
    if split == "posterior":  # (the shifted split's y1 sits on a grid of count values, but below the dark level,
        # where both halves are the measurement itself and each value is its own; the posterior's nowhere)
        edges = torch.quantile(y1.flatten().float(), torch.linspace(0, 1, bins + 1)[1:-1]).double()
        which = torch.bucketize(y1.flatten(), edges)
    else:
        _, which = torch.unique(y1.flatten(), return_inverse=True)
    e = (y2 - x).flatten()
    count = torch.bincount(which).double()
    keep = count >= 1000
    b = torch.bincount(which, weights=e) / count.clamp_min(1)
    noise = (torch.bincount(which, weights=e**2) / count.clamp_min(1) - b**2) / count.clamp_min(1)
    return float((count[keep] * (b[keep] ** 2 - noise[keep])).sum() / count[keep].sum())


def test_gr2r_split_dependence_shrinks_with_the_auto_alpha_and_vanishes_with_the_posterior_split():
    """At one photon with read noise the shifted-Poisson halves are dependent: the target's mean given the input
    departs from the clean value by a mean square of about 0.23 (in counts x gain, where the best denoiser's
    error is about as large) at alpha 0.15 and about half that at the alpha "auto" gives it there (~0.7). The
    posterior split's halves are all but independent at alpha 0.15 (0.004, with every pixel counted)."""
    model = PoissonGaussian(gain=2.0, sigma=3.0, offset=100.0)
    y = model.sample(torch.full((1, 1, 64, 64), 102.0), generator=torch.Generator().manual_seed(2))
    fixed, auto = _split_dependence(0.15, "shifted"), _split_dependence(auto_alpha(y, model.as_pg(), False), "shifted")
    assert fixed > 0.15 and auto < 0.6 * fixed, (fixed, auto)
    assert abs(_split_dependence(0.15, "posterior")) < 0.1 * fixed


def test_photon_posterior_draws_have_the_law_of_the_photons_and_the_read_noise():
    """On a flat image (the local mean is the clean count, up to its own noise) the drawn counts `k` and read noise
    `u - gain k` have the photons' mean and variance, the read noise's variance, and no correlation: the law that
    makes their splits exact. Pixels whose posterior is too wide for the window are left to the shifted split."""
    gain, sigma = 2.0, 3.0
    for lam in (0.5, 5.0, 30.0):  # (30: the window of the posterior's Gaussian approximation)
        model = PoissonGaussian(gain=gain, sigma=sigma, offset=0.0)
        y = model.sample(torch.full((8, 1, 128, 128), gain * lam, dtype=torch.float64),
                         generator=torch.Generator().manual_seed(3))
        k, drawn = photon_posterior(y, gain, sigma, torch.Generator().manual_seed(4))
        assert bool(drawn.all())
        r = y - gain * k
        n = k.numel()
        assert float(k.mean()) == pytest.approx(lam, abs=4 * math.sqrt(lam / n) + 0.01 * lam)
        # the local mean is a noisy prior: the counts' variance exceeds the photons' by at most the prior's own
        assert lam * 0.97 < float(k.var()) < lam + (lam + (sigma / gain) ** 2) / PRIOR_BOX**2
        assert float(r.var()) == pytest.approx(sigma**2, rel=0.03)
        assert abs(float(torch.corrcoef(torch.stack([k.flatten(), r.flatten()]))[0, 1])) < 0.03
    # single precision at 1e5 photons (the prior relative to the window's first count): the read noise's variance
    bright = PoissonGaussian(gain=1.0, sigma=sigma).sample(torch.full((2, 1, 128, 128), 1e5, dtype=torch.float64),
                                                           generator=torch.Generator().manual_seed(8)).float()
    k, drawn = photon_posterior(bright, 1.0, sigma, torch.Generator().manual_seed(9))
    assert float(drawn.double().mean()) > 0.999
    assert float((bright - k)[drawn].double().var()) == pytest.approx(sigma**2, rel=0.04)
    dark = PoissonGaussian(gain=gain, sigma=sigma, offset=0.0).sample(torch.full((1, 1, 16, 16), gain),
                                                                       generator=torch.Generator().manual_seed(5))
    dark[..., 8, 8] = 2000.0  # an outlier (a hot pixel) a thousand photons above its neighbours
    k, drawn = photon_posterior(dark, gain, sigma)
    assert not bool(drawn[..., 8, 8]) and bool(drawn[..., 0, 0])
    wide = PoissonGaussian(gain=0.5, sigma=24.0)  # read noise of 48 photons at 1000 photons: too wide a posterior
    y = wide.sample(torch.full((1, 1, 16, 16), 500.0), generator=torch.Generator().manual_seed(6))
    assert not bool(photon_posterior(y, 0.5, 24.0)[1].any())
    one, two = build_loss("gr2r-poisson", alpha=0.3).split(y, Denoising(wide), torch.Generator().manual_seed(7))
    assert torch.allclose(0.7 * one + 0.3 * two, y, atol=1.0)  # the shifted split (up to its random rounding)


def test_a_gr2r_run_from_before_the_posterior_split_keeps_the_shifted_one():
    """A checkpoint without the `split` option was trained with the shifted-Poisson split, and its test-time rule
    must split as its network saw in training."""
    from sslrecon.engine.bundle import Reconstructor
    from sslrecon.models import UNet, UNetConfig

    model = UNet(UNetConfig(width=4, depth=1))
    state = {"model_config": model.config.to_dict(), "model": model.state_dict(), "loss": "gr2r-poisson",
             "loss_options": {"alpha": 0.4, "test_samples": 10}, "normalization": {"shift": 0.0, "scale": 1.0}}
    assert Reconstructor.from_checkpoint(state, torch.device("cpu")).loss.options()["split"] == "shifted"
    state["loss_options"]["split"] = "posterior"
    assert Reconstructor.from_checkpoint(state, torch.device("cpu")).loss.options()["split"] == "posterior"


def test_pg_sure_works_in_any_units():
    """The probe steps follow the noise level: data, model and a scale-equivariant denoiser in units c times larger
    give c^2 times the risk, draw for draw (so no unit of the data needs choosing)."""
    model = PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    x = _scene(3.0, n=4)
    y = model.sample(x, generator=torch.Generator().manual_seed(0))
    values = []
    for c, options in ((c, o) for o in ({"finite": False, "second_order": True}, {}) for c in (1.0, 1000.0)):
        loss = build_loss("pg-sure", **options)
        scaled = PoissonGaussian(gain=GAIN * c, sigma=SIGMA * c, offset=OFFSET * c)
        with torch.no_grad():
            values.append(float(loss(_quadratic_scaled(c), y * c, Denoising(scaled),
                                     generator=torch.Generator().manual_seed(1)).value) / c**2)
    assert math.isclose(values[0], values[1], rel_tol=1e-3) and math.isclose(values[2], values[3], rel_tol=1e-3), values


def _quadratic_scaled(c: float):
    f = _quadratic(3.0)
    return lambda v: f(v / c) * c


CORR_KERNEL = ((0.0, 0.5, 0.0), (0.5, 1.0, 0.5), (0.0, 0.5, 0.0))


@pytest.mark.parametrize("photons", [20.0, 100.0])
def test_pg_sure_and_gr2r_take_correlated_signal_dependent_noise(photons):
    """`corr:...,gain=...` (motion-corrected micrographs): `pg-sure` is the first-order estimate with the covariance
    (`sure`'s, no photon-scale term: the pixels are not counts), and `gr2r-poisson` splits by the Gaussian member of
    its family; both risks are unbiased for a fixed denoiser (a CNN), and the split's halves are independent."""
    from sslrecon.noise import Correlated

    model = Correlated(SIGMA, CORR_KERNEL, gain=GAIN, offset=OFFSET)
    assert build_loss("pg-sure").supports(model) and build_loss("gr2r-poisson").supports(model)
    x, f = _scene(photons), _cnn_in_units(photons)
    g = torch.Generator().manual_seed(7)
    y = model.sample(x, generator=g)
    phys = Denoising(model)
    with torch.no_grad():
        pg_sure = build_loss("pg-sure")
        out = pg_sure(f, y[:8], phys, generator=torch.Generator().manual_seed(1))
        assert set(out.terms) == {"fit", "div"}  # no second-order term below 100 counts for correlated noise
        pg_sure.adapt(y[:8], phys)  # its defaults (auto) are accepted, and forcing a photon-scale term is refused
        for forced in ({"finite": True}, {"second_order": True}):
            with pytest.raises(ConfigError, match=f"{next(iter(forced))}=true"):
                build_loss("pg-sure", **forced).adapt(y[:8], phys)
        ok, m, se = _within(pg_sure.risk(f, y, phys, generator=g) - ((f(y) - x) ** 2).mean((1, 2, 3)))
        assert ok, f"pg-sure {photons} photons: {m:.3g} +- {se:.3g}"
        gr2r = build_loss("gr2r-poisson", test_samples=1)
        gr2r.adapt(y, phys)
        assert gr2r.options()["alpha"] == 0.15  # the Gaussian split is exact: the lowest alpha
        ok, m, se = _gr2r_bias(model, photons, seed=7)
        assert ok, f"gr2r {photons} photons: {m:.3g} +- {se:.3g}"
        # the halves' noises are independent and both centred on the clean image (as for a Gaussian they must be)
        y1, y2 = gr2r.split(y, phys, generator=torch.Generator().manual_seed(2))
        a, b = (y1 - x).flatten(), (y2 - x).flatten()
        assert abs(float(a.mean())) < 4 * float(a.std()) / math.sqrt(a.numel())
        assert abs(float(b.mean())) < 4 * float(b.std()) / math.sqrt(b.numel())
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.01
