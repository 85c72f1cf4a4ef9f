"""Statistical promises of the losses (DESIGN.md section 5): for a fixed denoiser, the Monte-Carlo
mean of each risk estimate equals the true MSE within three standard errors of that mean."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslrecon.errors import ConfigError
from sslrecon.losses import LOSSES, build_loss, sure_mse
from sslrecon.models import UNet, UNetConfig
from sslrecon.noise import Gaussian, PoissonGaussian
from sslrecon.physics import Denoising

from .conftest import smooth_image

N_DRAWS = 400


def _clean(n=N_DRAWS, h=24, w=24):
    x = torch.tensor(smooth_image(np.random.default_rng(1), h, w, level=0.5, amp=0.3), dtype=torch.float32)
    return x.expand(n, 1, h, w).contiguous()


def _blur(y):
    k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    return F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), k[None, None])


def _random_cnn():
    torch.manual_seed(3)
    net = UNet(UNetConfig(width=4, depth=1), identity_start=False)
    for p in net.parameters():
        p.data.mul_(3.0)
    net.eval()
    return net


def _within(diff: torch.Tensor, k: float = 3.0) -> tuple[bool, float, float]:
    m, se = float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))
    return abs(m) < k * se, m, se


@pytest.mark.parametrize("denoiser", ["blur", "cnn"])
def test_sure_expectation_equals_true_mse(denoiser):
    f = _blur if denoiser == "blur" else _random_cnn()
    sigma = 0.2
    x = _clean()
    g = torch.Generator().manual_seed(0)
    y = x + sigma * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        true = ((f(y) - x) ** 2).mean((1, 2, 3))
        est = sure_mse(f, y, Gaussian(sigma), generator=g)
        ok, m, se = _within(est - true)
        assert ok, f"SURE - MSE = {m:.3g} +- {se:.3g}"
        # the test has power: without the divergence the estimate is visibly biased
        no_div = sure_mse(f, y, Gaussian(sigma), generator=g, divergence=False)
        assert not _within(no_div - true)[0]


def test_sure_training_loss_is_unbiased():
    net, sigma = _random_cnn(), 0.2
    loss, phys = build_loss("sure"), Denoising(Gaussian(sigma))
    x = _clean(n=10)
    g = torch.Generator().manual_seed(1)
    diffs = []
    with torch.no_grad():
        for _ in range(60):
            y = x + sigma * torch.randn(x.shape, generator=g)
            diffs.append(float(loss(net, y, phys, generator=g).value) - float(((net(y) - x) ** 2).mean()))
    ok, m, se = _within(torch.tensor(diffs))
    assert ok, f"{m:.3g} +- {se:.3g}"


def test_sure_probes_average_the_divergence():
    """`probes=K` averages K Monte-Carlo divergences: the same mean as one probe, about a K-th of its variance."""
    net, sigma = _random_cnn(), 0.2
    y = _clean(n=4) + sigma * torch.randn(4, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    phys, g = Denoising(Gaussian(sigma)), torch.Generator().manual_seed(3)
    with torch.no_grad():
        one, four = (torch.tensor([build_loss("sure", probes=k)(net, y, phys, generator=g).terms["div"]
                                   for _ in range(300)]) for k in (1, 4))
    m, se = float(four.mean() - one.mean()), math.sqrt(float(one.var() + four.var()) / 300)
    assert abs(m) < 3 * se, f"mean of four probes - one probe's = {m:.3g} +- {se:.3g}"
    assert 0.15 < float(four.var() / one.var()) < 0.4
    with pytest.raises(ConfigError):
        build_loss("sure", probes=0)


def test_r2r_loss_is_mse_plus_known_constant():
    net, sigma, alpha = _random_cnn(), 0.2, 0.5
    loss, phys = build_loss("r2r", alpha=alpha), Denoising(Gaussian(sigma))
    x = _clean(n=10)
    g = torch.Generator().manual_seed(2)
    diffs = []
    with torch.no_grad():
        for _ in range(80):
            y = x + sigma * torch.randn(x.shape, generator=g)
            value = float(loss(net, y, phys, generator=g).value)
            y1 = y + alpha * sigma * torch.randn(x.shape, generator=g)  # an independent recorruption
            diffs.append(value - float(((net(y1) - x) ** 2).mean()) - sigma**2 * (1 + 1 / alpha**2))
    ok, m, se = _within(torch.tensor(diffs))
    assert ok, f"{m:.3g} +- {se:.3g}"


def test_r2r_predict_averages_recorruptions():
    loss = build_loss("r2r", test_samples=64)
    y = torch.zeros(1, 1, 16, 16)
    out = loss.predict(lambda v: v, y, Denoising(Gaussian(0.1)), generator=torch.Generator().manual_seed(0))
    assert out.abs().mean() < 0.1 * 0.5 * 0.3  # mean of 64 draws of N(0, (0.05)^2) is near 0
    for bad in (0, True, "auto"):  # r2r has no automatic count
        with pytest.raises(ConfigError, match="test_samples"):
            build_loss("r2r", test_samples=bad)


def test_n2s_prediction_is_j_invariant_and_full_pass_is_not():
    net = _random_cnn()
    loss = build_loss("n2s")
    y = torch.rand(1, 1, 20, 23, generator=torch.Generator().manual_seed(0))
    y2 = y.clone()
    y2[0, 0, 7, 11] += 5.0
    with torch.no_grad():
        a, b = loss.predict(net, y), loss.predict(net, y2)
        # the J-invariant rule never reads a pixel to output it ...
        assert torch.allclose(a[0, 0, 7, 11], b[0, 0, 7, 11], atol=1e-5)
        assert (a - b).abs().max() > 1e-3  # ... while neighbours do depend on it
        # ... whereas a plain full-input pass of a residual net passes the pixel (and its noise) through
        assert (net(y)[0, 0, 7, 11] - net(y2)[0, 0, 7, 11]).abs() > 1.0


def test_n2s_masked_input_hides_masked_pixels():
    loss = build_loss("n2s", grid=3)
    y = torch.rand(2, 1, 12, 12)
    phases = torch.tensor([[0, 1], [2, 2]])
    m = loss._mask(y, phases)
    assert torch.allclose(m.mean((1, 2, 3)), torch.tensor([1 / 9, 1 / 9]))
    y2 = y + 10 * m  # change only masked pixels
    assert torch.allclose(loss._masked_input(y, m), loss._masked_input(y2, m))


def test_n2s_hides_a_square_around_each_pixel_under_correlated_noise():
    """Under correlated noise the blind spot covers every lag the noise correlates (`radius` auto: 1 where lag 1
    correlates and lag 2 less than 0.1, 0 for white noise) and the grid spaces the squares (auto: `2 radius + 2`);
    the prediction at a pixel then reads nothing in its square, and the masked input nothing of the squares."""
    from sslrecon.noise import Correlated

    corr = Correlated(0.1, ((0.0, 0.3, 0.0), (0.3, 1.0, 0.3), (0.0, 0.3, 0.0)))  # lag 1: 0.44, lag 2: 0.07
    loss = build_loss("n2s")
    y = torch.rand(1, 1, 20, 23, generator=torch.Generator().manual_seed(0))
    loss.adapt(y, Denoising(corr))
    assert loss.options() == {"grid": 4, "radius": 1}
    white = build_loss("n2s")
    white.adapt(y, Denoising(Gaussian(0.1)))
    assert white.options() == {"grid": 3, "radius": 0}
    net = _random_cnn()
    with torch.no_grad():
        a = loss.predict(net, y)
        near, far = y.clone(), y.clone()
        near[0, 0, 6:9, 10:13] += 5.0  # the square around (7, 11)
        far[0, 0, 7, 13] += 5.0  # two pixels away
        assert torch.allclose(a[0, 0, 7, 11], loss.predict(net, near)[0, 0, 7, 11], atol=1e-5)
        assert (a[0, 0, 7, 11] - loss.predict(net, far)[0, 0, 7, 11]).abs() > 1e-3
    m = loss._mask(y, torch.tensor([[1, 2]]))
    square = F.conv2d(F.pad(m, (1, 1, 1, 1)), torch.ones(1, 1, 3, 3)).clamp_max(1)
    assert torch.allclose(loss._masked_input(y, m), loss._masked_input(y + 10 * square, m))
    with pytest.raises(ConfigError, match="too fine"):
        build_loss("n2s", grid=3, radius=2)
    given = build_loss("n2s", grid=3)  # a grid given too fine for the radius found is widened, and recorded so
    given.adapt(y, Denoising(corr))
    assert given.options() == {"grid": 4, "radius": 1}


def test_registry_is_documented():
    for name, cls in LOSSES.items():
        assert cls.name == name and cls.__module__.startswith("sslrecon.losses.")
        doc = __import__(cls.__module__, fromlist=["x"]).__doc__
        assert "Cost per step" in doc and "Test-time rule" in doc or "test-time rule" in doc.lower()


def test_mixed_batch_noise_is_per_sample():
    from sslrecon.noise import PoissonGaussian
    from sslrecon.noise.models import stack

    models = [Gaussian(2.0), PoissonGaussian(gain=3.0, sigma=1.0, offset=10.0), Gaussian(2.0)]
    batch = stack(models)
    y = torch.full((3, 1, 8, 8), 30.0)
    var = batch.variance_map(y)
    assert torch.allclose(var[:, 0, 0, 0], torch.tensor([4.0, 3.0 * 20 + 1.0, 4.0]))
    assert stack([Gaussian(2.0)] * 4) == Gaussian(2.0)


@pytest.mark.parametrize("photons", [1.0, 10.0])
def test_sure_with_poisson_gaussian_model_is_unbiased_for_linear_denoisers(photons):
    """First-order PG-SURE (Hudson's identity) is exact for linear denoisers, at any count and with an offset."""
    from sslrecon.noise import PoissonGaussian

    gain, offset = 2.0, -10.0
    model = PoissonGaussian(gain=gain, sigma=1.5, offset=offset)
    x = _clean() * 2 * photons * gain + offset  # about `photons` counts per pixel, negative values included
    g = torch.Generator().manual_seed(4)
    y = model.sample(x, generator=g)
    with torch.no_grad():
        true = ((_blur(y) - x) ** 2).mean((1, 2, 3))
        est = sure_mse(_blur, y, model, generator=g)
    ok, m, se = _within(est - true)
    assert ok, f"{m:.3g} +- {se:.3g}"


@pytest.mark.parametrize("photons", [20.0, 100.0])
def test_sure_with_signal_dependent_correlated_noise_is_unbiased_for_linear_denoisers(photons):
    """Generalised SURE with the covariance `S K K^T S` taken at the measurement: the trace term is exact
    (the weight is linear in y), the divergence's plug-in `s_i s_j` is off by O(1 / counts) in relative terms."""
    from sslrecon.noise import Correlated

    model = Correlated(1.5, ((0.0, 0.5, 0.0), (0.5, 1.0, 0.5), (0.0, 0.5, 0.0)), gain=2.0, offset=-10.0)
    x = _clean() * 2 * photons * 2.0 - 10.0
    g = torch.Generator().manual_seed(6)
    y = model.sample(x, generator=g)
    with torch.no_grad():
        true = ((_blur(y) - x) ** 2).mean((1, 2, 3))
        est = sure_mse(_blur, y, model, generator=g)
        white = sure_mse(_blur, y, PoissonGaussian(gain=2.0, sigma=1.5, offset=-10.0), generator=g)
    ok, m, se = _within(est - true)
    assert ok, f"{m:.3g} +- {se:.3g}"
    assert not _within(white - true)[0]  # the white model of the same level is biased: the test can fail


def _blind_spot(y):
    """A J-invariant denoiser (Noise2Self's kind): each pixel from its four neighbours only, nonlinearly."""
    k = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]) / 4
    m = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), k[None, None])
    return m + 0.3 * torch.tanh(m)


def test_risk_of_a_j_invariant_predictor_keeps_the_correlated_cross_terms():
    """A blind-spot predictor's own divergence is 0 (`divergence=False`), but under correlated noise it reads each
    pixel's noise from its neighbours': the covariances between pixels stay in its risk, which is then unbiased."""
    from sslrecon.noise import Correlated

    model = Correlated(0.2, ((0.0, 0.5, 0.0), (0.5, 1.0, 0.5), (0.0, 0.5, 0.0)))
    x = _clean()
    g = torch.Generator().manual_seed(8)
    y = model.sample(x, generator=g)
    with torch.no_grad():
        true = ((_blind_spot(y) - x) ** 2).mean((1, 2, 3))
        est = sure_mse(_blind_spot, y, model, generator=g, divergence=False)
        white = sure_mse(_blind_spot, y, Gaussian(0.2), generator=g, divergence=False)
    ok, m, se = _within(est - true)
    assert ok, f"{m:.3g} +- {se:.3g}"
    assert not _within(white - true)[0]  # without the cross terms it is biased (low): the test can fail


@pytest.mark.parametrize("photons", [20.0, 100.0])
def test_white_model_with_the_correlation_added_is_unbiased(photons):
    """`validate`'s estimate where training kept a white model of correlated noise: the white model's own terms (the
    photon removal at 20 counts) plus the divergence over the covariances between pixels (`correlation`)."""
    from sslrecon.noise import Correlated

    model = Correlated(1.5, ((0.0, 0.5, 0.0), (0.5, 1.0, 0.5), (0.0, 0.5, 0.0)), gain=2.0, offset=-10.0)
    white = PoissonGaussian(gain=2.0, sigma=1.5, offset=-10.0)
    x = _clean() * 2 * photons * 2.0 - 10.0
    g = torch.Generator().manual_seed(7)
    y = model.sample(x, generator=g)
    with torch.no_grad():
        true = ((_blur(y) - x) ** 2).mean((1, 2, 3))
        est = sure_mse(_blur, y, white, generator=g, correlation=model)
        alone = sure_mse(_blur, y, white, generator=g)
    ok, m, se = _within(est - true)
    assert ok, f"{m:.3g} +- {se:.3g}"
    assert not _within(alone - true)[0]
