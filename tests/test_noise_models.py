"""Noise models: moments and covariances of their samples, normalisation, serialisation, specs, batching."""
import json

import numpy as np
import pytest
import torch

from sslrecon.errors import NoiseSpecError
from sslrecon.noise import Gaussian, Poisson, PoissonGaussian, parse_noise
from sslrecon.noise.models import (
    MODELS,
    Correlated,
    Gamma,
    from_dict,
    kernel_from_autocorrelation,
    kernel_from_psd,
    stack,
)

BOX3 = ((1.0,) * 3,) * 3
SKEW = ((0.0, 0.2, 0.0), (0.5, 1.0, 0.0), (0.1, 0.3, -0.4))  # square and odd, but not symmetric
BINOMIAL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])  # its spectrum is non-negative: its own zero-phase root

ALL = [Gaussian(3.0), Poisson(2.0, offset=-20.0), PoissonGaussian(1.5, 2.0, offset=10.0), Gamma(4.0),
       Gamma(2.5, offset=50.0), Correlated(2.5, BOX3), Correlated(1.5, SKEW)]
IDS = ["gaussian", "poisson-offset", "pg-offset", "gamma", "gamma-offset", "corr-box3", "corr-skew"]
LAGS = [(0, 0), (0, 1), (1, 0), (1, 1), (1, -1)]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ramp(n, h=4, w=4, lo=60.0, hi=400.0):
    """`n` copies (as channels of one image) of an h x w image with values from lo to hi."""
    return torch.linspace(lo, hi, h * w, dtype=torch.float64).view(1, 1, h, w).expand(1, n, h, w).contiguous()


def assert_moments(noise, var, mean=None, k=5.0):
    """Per-pixel mean and variance over dim 1 of `noise` match `mean` (default 0) and `var` within k standard errors."""
    n = noise.shape[1]
    m, v = noise.mean(1, keepdim=True), noise.var(1, keepdim=True)
    m4 = ((noise - m) ** 4).mean(1, keepdim=True)
    mean = torch.zeros_like(m) if mean is None else mean
    assert ((m - mean).abs() <= k * (var / n).sqrt() + 1e-9).all()
    assert ((v - var).abs() <= k * ((m4 - v**2).clamp_min(0) / n).sqrt() + 1e-9).all()


def lag_cov(n, dy, dx):
    """Empirical E[n(i, j) n(i + dy, j + dx)] (dy >= 0) over all draws and positions."""
    h, w = n.shape[-2:]
    a = n[..., : h - dy, max(0, -dx): w - max(0, dx)]
    b = n[..., dy:, max(0, dx): w - max(0, -dx)]
    return float((a * b).mean())


@pytest.mark.parametrize("model", ALL, ids=IDS)
def test_samples_have_the_model_mean_and_variance(model):
    x = ramp(4000)
    y = model.sample(x, generator=gen())
    var = model.variance(x[:, :1])
    if isinstance(model, Correlated):
        torch.testing.assert_close(var, torch.full_like(var, model.sigma**2))
    assert_moments(y - x, var)


@pytest.mark.parametrize("model", ALL, ids=IDS)
def test_noise_like_has_the_model_variance_at_the_measurement(model):
    y = ramp(4000, 6, 6)
    n = model.noise_like(y, generator=gen(1))
    assert n.shape == y.shape
    assert_moments(n, model.variance_map(y[:, :1]))


@pytest.mark.parametrize("kernel", [BOX3, SKEW], ids=["box3", "skew"])
@pytest.mark.parametrize("draw", ["sample", "noise_like"])
def test_correlated_noise_autocovariance(kernel, draw):
    model = Correlated(2.0, kernel)
    zeros = torch.zeros(2000, 1, 16, 16, dtype=torch.float64)
    n = getattr(model, draw)(zeros, generator=gen(2))
    cov = model.covariance(3)
    assert cov.shape == (3, 3) and np.isclose(cov[1, 1], 4.0)
    for dy, dx in LAGS:
        assert abs(lag_cov(n, dy, dx) - cov[1 + dy, 1 + dx]) < 0.03 * 4.0, (dy, dx)
    if kernel is SKEW:  # the sign convention of lags matters for a kernel that is not symmetric
        assert abs(cov[2, 2] - cov[2, 0]) > 0.2


def test_correlated_cov_apply_is_the_noise_covariance_matrix():
    """`cov_apply` is exactly `sigma^2 K K^T`: entry (i, j) is the autocovariance at lag j - i, borders included."""
    model = Correlated(1.3, SKEW)
    h = w = 6
    cov = model.covariance(2 * h - 1)
    eye = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    sigma = model.cov_apply(torch.zeros(1, 1, h, w), eye).view(h * w, h * w)
    ii, jj = np.divmod(np.arange(h * w), w)
    expect = cov[h - 1 + ii[None, :] - ii[:, None], w - 1 + jj[None, :] - jj[:, None]]
    np.testing.assert_allclose(sigma.numpy(), expect, atol=1e-12)


def _covariance_estimate(n, v):
    """The Monte-Carlo estimate of Sigma v, E[n (n . v)] over dim 0 of `n`, and the norm of its standard error."""
    z = n * (n * v).sum((-2, -1), keepdim=True)
    return z.mean(0, keepdim=True), float((z.var(0) / z.shape[0]).sum().sqrt())


def test_cov_apply_matches_empirical_covariance():
    """E[n (n . v)] = Sigma v, for correlated noise (at any measurement) and for Poisson-Gaussian noise (where
    `cov_apply` uses the measurement itself: right on average over the noise, by Hudson's identity)."""
    v = torch.randn(1, 1, 16, 16, generator=gen(3), dtype=torch.float64)
    draws = 10000

    corr = Correlated(2.0, SKEW)
    y = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    emp, se = _covariance_estimate(corr.noise_like(y.expand(draws, 1, 16, 16), generator=gen(4)), v)
    pred = corr.cov_apply(y, v)
    assert float((emp - pred).norm()) < 2 * se
    assert float((emp - corr.sigma**2 * v).norm()) > 3 * se  # the test tells correlated from white noise

    pg = PoissonGaussian(gain=2.0, sigma=3.0, offset=-10.0)
    x = torch.linspace(0, 300, 256, dtype=torch.float64).view(1, 1, 16, 16)
    y = pg.sample(x.expand(draws, 1, 16, 16), generator=gen(5))
    emp, se = _covariance_estimate(y - x, v)
    truth = pg.variance(x) * v
    assert float((emp - truth).norm()) < 2 * se
    pred = pg.cov_apply(y, v.expand_as(y)).mean(0, keepdim=True)
    assert float((pred - truth).norm() / truth.norm()) < 0.01


@pytest.mark.parametrize("model", ALL, ids=IDS)
def test_rescaled_model_matches_normalised_samples(model):
    shift, scale = 150.0, 12.5
    x = ramp(4000)
    x_n = (x - shift) / scale
    m_n = model.rescaled(shift, scale)
    torch.testing.assert_close(m_n.variance(x_n), model.variance(x) / scale**2)
    normalised = (model.sample(x, generator=gen(6)) - shift) / scale - x_n
    drawn = m_n.sample(x_n, generator=gen(7)) - x_n
    var = m_n.variance(x_n[:, :1])
    assert_moments(normalised, var)
    assert_moments(drawn, var)
    if isinstance(model, Correlated):
        np.testing.assert_allclose(m_n.covariance(3), model.covariance(3) / scale**2)


@pytest.mark.parametrize("model", ALL, ids=IDS)
def test_dict_round_trip(model):
    d = json.loads(json.dumps(model.to_dict()))
    assert d["name"] == model.name and from_dict(d) == model
    assert hash(from_dict(d)) == hash(model)
    if isinstance(model, Correlated):
        assert model.spec() == f"corr:sigma={model.sigma:g},kernel=<3x3>"
    else:
        assert parse_noise(model.spec()) == model


def test_registry_and_flags():
    assert set(MODELS) == {"gaussian", "poisson", "pg", "gamma", "corr"}
    assert all(m.white for m in ALL if not isinstance(m, Correlated))
    assert not Correlated(1.0, BOX3).white
    y = torch.ones(1, 1, 4, 4)
    with pytest.raises(ValueError, match="gamma noise has no Poisson-Gaussian form"):
        Gamma(2.0).as_pg()
    # gamma's Stein weight estimates the pixel's variance without bias from its own value
    x = torch.full((200_000,), 50.0)
    yg = Gamma(3.0, offset=10.0).sample(x, generator=torch.Generator().manual_seed(0))
    assert abs(float(Gamma(3.0, offset=10.0).stein_weight(yg).mean()) / (40.0**2 / 3) - 1) < 0.02
    with pytest.raises(ValueError, match="gamma"):
        Gamma(2.0).cov_apply(y, y)
    corr = Correlated(1.5, BOX3)
    with pytest.raises(ValueError, match="correlated"):
        corr.as_pg()
    torch.testing.assert_close(corr.stein_weight(y), torch.full_like(y, 2.25))  # the covariance's diagonal


def test_correlated_kernel_is_normalised_and_validated():
    m = Correlated(2.0, BOX3)
    assert np.allclose(np.asarray(m.kernel), 1 / 3) and isinstance(m.kernel[0], tuple)
    assert Correlated(2.0, np.asarray(BOX3) * 7) == m
    for bad in (((1.0, 1.0), (1.0, 1.0)), ((1.0, 2.0, 3.0),), ((0.0,),)):
        with pytest.raises(ValueError):
            Correlated(1.0, bad)


def test_gamma_sampling_is_reproducible_with_a_generator():
    x = torch.full((1000,), 100.0)
    a, b, c = (Gamma(0.7).sample(x, generator=gen(s)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a >= 0).all()


def test_parse_new_forms(tmp_path):
    assert parse_noise("gamma:looks=4") == Gamma(4.0, 0.0)
    assert parse_noise("Gamma: looks=2.5, offset=-100") == Gamma(2.5, -100.0)
    box = parse_noise("corr:sigma=2,size=3")
    assert box == Correlated(2.0, BOX3) and np.allclose(np.asarray(box.kernel), 1 / 3)
    assert parse_noise("corr:size=1,sigma=0.5") == Correlated(0.5, ((1.0,),))
    k = np.asarray(SKEW)
    np.save(tmp_path / "k.npy", k)
    np.savetxt(tmp_path / "k.txt", k)
    for name in ("k.npy", "k.txt"):
        m = parse_noise(f"corr:sigma=1.5,kernel={tmp_path / name}")
        assert m == Correlated(1.5, SKEW)


def _spec_error(spec) -> str:
    with pytest.raises(NoiseSpecError) as info:
        parse_noise(spec)
    line = str(info.value)
    assert "\n" not in line and "fix:" in line
    return line


@pytest.mark.parametrize("spec, expect", [
    ("gamma:looks=0", "looks must be a finite positive"), ("gamma:looks=-1", "looks must be"),
    ("gamma:offset=3", "lacks looks"), ("gamma:sigma=3", "bad parameter"),
    ("corr:sigma=1,size=4", "odd whole number"), ("corr:sigma=1,size=0", "odd whole number"),
    ("corr:sigma=1,size=2.5", "odd whole number"), ("corr:sigma=1,size=abc", "odd whole number"),
    ("corr:sigma=1", "exactly one of kernel=FILE, size=N or psd=FILE"),
    ("corr:sigma=1,size=3,kernel=k.npy", "exactly one of"), ("corr:sigma=1,psd=p.npy,size=3", "exactly one of"),
    ("corr:size=3", "lacks sigma"), ("corr:sigma=0,size=3", "sigma must be"), ("corr:sigma=1,gain=2", "exactly one of"),
    ("corr:sigma=1,looks=2,size=3", "bad parameter"), ("corr:sigma=1,gain=-2,size=3", "gain must be"),
])
def test_parse_errors_of_new_forms(spec, expect):
    assert expect in _spec_error(spec)


def test_kernel_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.npy"
    line = _spec_error(f"corr:sigma=1,kernel={missing}")
    assert str(missing) in line and "not found" in line
    cases = {"even.npy": (np.ones((4, 4)), "odd side"), "rect.npy": (np.ones((3, 5)), "odd side"),
             "flat.npy": (np.ones(3), "odd side"), "rect.txt": (np.ones((3, 5)), "odd side"),
             "nan.txt": (np.array([[1.0, np.nan, 1.0]] * 3), "non-finite"), "zero.txt": (np.zeros((3, 3)), "all zeros")}
    for name, (arr, expect) in cases.items():
        path = tmp_path / name
        np.save(path, arr) if name.endswith(".npy") else np.savetxt(path, arr)
        line = _spec_error(f"corr:sigma=1,kernel={path}")
        assert str(path) in line and expect in line, line
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("1 2 3\nfoo bar\n")
    line = _spec_error(f"corr:sigma=1,kernel={garbage}")
    assert str(garbage) in line and "cannot read" in line


def test_kernel_from_autocorrelation():
    model = Correlated(1.7, BINOMIAL)
    k = kernel_from_autocorrelation(model.covariance(5))
    assert k.shape == (5, 5) and np.isclose((k**2).sum(), 1.0)
    np.testing.assert_allclose(k[1:4, 1:4], np.asarray(model.kernel), atol=1e-9)  # the kernel itself, padded
    np.testing.assert_allclose(k[[0, -1]], 0, atol=1e-9)
    # a box's spectrum changes sign: the zero-phase root differs from the box, its autocorrelation does not
    box = Correlated(1.0, BOX3)
    k = kernel_from_autocorrelation(box.covariance(7))
    assert np.allclose(k, k[::-1, ::-1]) and np.allclose(k, k.T)
    np.testing.assert_allclose(Correlated(1.0, k).covariance(5), box.covariance(5), atol=0.02)
    # from an estimate: the autocovariance of sampled noise
    truth = Correlated(2.0, BINOMIAL)
    n = truth.sample(torch.zeros(200, 1, 32, 32, dtype=torch.float64), generator=gen(8))
    est = np.array([[lag_cov(n, dy, dx) if dy >= 0 else lag_cov(n, -dy, -dx) for dx in range(-2, 3)]
                    for dy in range(-2, 3)])
    k = kernel_from_autocorrelation(est)
    np.testing.assert_allclose(Correlated(2.0, k).covariance(5), truth.covariance(5), atol=0.1)
    with pytest.raises(ValueError):
        kernel_from_autocorrelation(np.ones((4, 4)))


GAUSS5 = np.exp(-np.arange(-2, 3) ** 2 / 2)
# symmetric, anisotropic, and with a non-negative spectrum (a product of two): its own zero-phase root
SMOOTH = np.pad(np.outer(GAUSS5, [1.0, 2.0, 1.0]), ((0, 0), (1, 1)))


def centred_psd(kernel, shape):
    """The power spectrum of `kernel` on a `shape` grid, zero frequency at (H // 2, W // 2)."""
    return np.fft.fftshift(np.abs(np.fft.fft2(kernel, s=shape)) ** 2)


def save(path, a):
    np.save(path, a) if path.suffix == ".npy" else np.savetxt(path, a)
    return path


@pytest.mark.parametrize("shape", [(32, 32), (31, 31), (24, 17)], ids=["even", "odd", "non-square"])
@pytest.mark.parametrize("ext", [".npy", ".txt"])
def test_psd_round_trips_to_its_kernel(tmp_path, shape, ext):
    path = save(tmp_path / f"psd{ext}", centred_psd(SMOOTH, shape) * 123.0)  # the scale of a spectrum is irrelevant
    model = parse_noise(f"corr:sigma=2,psd={path}")
    assert model.sigma == 2.0 and model.side == 5
    np.testing.assert_allclose(np.asarray(model.kernel), SMOOTH / np.sqrt((SMOOTH**2).sum()), atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32), (33, 27)])
def test_psd_model_has_the_covariance_of_its_spectrum(tmp_path, shape):
    """A smooth anisotropic spectrum (a kernel with long tails, cropped at 99.9% of its energy): the model's
    autocovariance is the inverse transform of the spectrum, scaled to sigma^2 at lag 0."""
    fy = (np.arange(shape[0]) - shape[0] // 2) / shape[0]
    fx = (np.arange(shape[1]) - shape[1] // 2) / shape[1]
    psd = np.exp(-(fy[:, None] / 0.12) ** 2 - (fx[None, :] / 0.25) ** 2)
    acf = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(psd)).real)
    cy, cx = shape[0] // 2, shape[1] // 2
    expect = 4.0 * acf[cy - 2:cy + 3, cx - 2:cx + 3] / acf[cy, cx]
    assert expect[3, 2] > 3.0 and expect[2, 3] < 2.5  # longer correlation along y than x: catches swapped axes
    model = parse_noise(f"corr:sigma=2,psd={save(tmp_path / 'psd.npy', psd)}")
    assert model.side <= 15
    np.testing.assert_allclose(model.covariance(5), expect, atol=0.01 * 4.0)
    k = kernel_from_psd(psd, max_side=31, energy=1 - 1e-12)  # uncropped: closer
    np.testing.assert_allclose(Correlated(2.0, k).covariance(5), expect, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 3), (8, 8), (9, 6)])
def test_flat_psd_is_white_noise(tmp_path, shape):
    assert parse_noise(f"corr:sigma=1.5,psd={save(tmp_path / 'flat.txt', np.full(shape, 7.0))}") \
        == parse_noise("corr:sigma=1.5,size=1") == Correlated(1.5, ((1.0,),))


def test_kernel_from_psd_crops_and_validates():
    narrow = np.exp(-(np.arange(-16, 16) / 3.0) ** 2)  # a wide kernel: cropped at max_side
    k = kernel_from_psd(np.outer(narrow, narrow), max_side=9)
    assert k.shape == (9, 9) and np.isclose((k**2).sum(), 1.0) and np.allclose(k, k[::-1, ::-1])
    assert kernel_from_psd(np.outer(narrow, narrow), max_side=9, energy=0.5).shape[0] < 9
    for bad in (np.ones(5), np.ones((2, 3, 3)), -np.ones((3, 3)), np.full((3, 3), np.nan)):
        with pytest.raises(ValueError):
            kernel_from_psd(bad)
    with pytest.raises(ValueError):
        kernel_from_psd(np.zeros((4, 4)))


def test_psd_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.npy"
    line = _spec_error(f"corr:sigma=1,psd={missing}")
    assert str(missing) in line and "not found" in line and "psd=FILE" in line
    ok = np.ones((5, 5))
    cases = {"flat.npy": (np.ones(5), "not 2-D"), "cube.npy": (np.ones((3, 3, 3)), "not 2-D"),
             "small.txt": (np.ones((2, 5)), "at least 3 x 3"), "nan.txt": (np.where(np.eye(5) > 0, np.nan, ok), "non-finite"),
             "inf.npy": (np.where(np.eye(5) > 0, np.inf, ok), "non-finite"), "neg.txt": (ok - 2 * np.eye(5), "negative"),
             "zero.npy": (np.zeros((4, 4)), "all zeros")}
    for name, (arr, expect) in cases.items():
        path = save(tmp_path / name, arr)
        line = _spec_error(f"corr:sigma=1,psd={path}")
        assert str(path) in line and expect in line and "power spectrum" in line, line
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("1 2 3\nfoo bar\n")
    line = _spec_error(f"corr:sigma=1,psd={garbage}")
    assert str(garbage) in line and "cannot read the power spectrum" in line


def test_stack_of_same_class_keeps_the_class():
    assert stack([Gaussian(2.0)] * 3) == Gaussian(2.0)
    g = stack([Gaussian(1.0), Gaussian(3.0)])
    assert isinstance(g, Gaussian) and g.sigma.shape == (2, 1, 1, 1)
    x = ramp(4000).expand(2, -1, -1, -1)
    assert_moments(g.sample(x, generator=gen(9)) - x, torch.tensor([1.0, 9.0], dtype=x.dtype).view(2, 1, 1, 1))

    models = [Gamma(4.0), Gamma(1.5, offset=50.0)]
    batch = stack(models)
    assert isinstance(batch, Gamma) and batch.looks.shape == (2, 1, 1, 1)
    var = torch.cat([m.variance(x[i:i + 1, :1]) for i, m in enumerate(models)])
    torch.testing.assert_close(batch.variance(x[:, :1]), var)
    assert_moments(batch.sample(x, generator=gen(10)) - x, var)


def test_stack_of_mixed_white_models_is_poisson_gaussian():
    models = [Gaussian(2.0), PoissonGaussian(gain=3.0, sigma=1.0, offset=10.0), Poisson(0.5)]
    batch = stack(models)
    assert isinstance(batch, PoissonGaussian)
    x = ramp(4000).expand(3, -1, -1, -1)
    var = torch.cat([m.variance(x[i:i + 1, :1]) for i, m in enumerate(models)])
    y = batch.sample(x, generator=gen(11))
    assert torch.isfinite(y).all()
    assert_moments(y - x, var)
    v = torch.randn(x.shape, generator=gen(12), dtype=x.dtype)
    expect = torch.cat([m.cov_apply(y[i:i + 1], v[i:i + 1]) for i, m in enumerate(models)])
    torch.testing.assert_close(batch.cov_apply(y, v), expect)
    y = y[:, :1].expand_as(x)  # one measurement per sample, many noise draws
    n = batch.noise_like(y, generator=gen(13))
    assert_moments(n, torch.cat([m.variance_map(y[i:i + 1, :1]) for i, m in enumerate(models)]))


def test_stack_of_correlated_models_with_different_kernels():
    models = [Correlated(2.0, SKEW), Correlated(0.5, np.ones((5, 5)))]
    batch = stack(models)
    assert isinstance(batch, Correlated) and tuple(batch.kernel.shape) == (2, 1, 5, 5)
    np.testing.assert_allclose(batch.covariance(3), np.stack([m.covariance(3) for m in models]), atol=1e-6)
    zeros = torch.zeros(2, 2000, 16, 16)
    n = batch.sample(zeros, generator=gen(14))
    for i, m in enumerate(models):
        cov = m.covariance(3)
        for dy, dx in LAGS:
            assert abs(lag_cov(n[i], dy, dx) - cov[1 + dy, 1 + dx]) < 0.03 * m.sigma**2, (i, dy, dx)
    v = torch.randn(2, 3, 16, 16, generator=gen(15))
    expect = torch.cat([m.cov_apply(zeros[i:i + 1, :3], v[i:i + 1]) for i, m in enumerate(models)])
    torch.testing.assert_close(batch.cov_apply(zeros[:, :3], v), expect, atol=1e-5, rtol=1e-5)
    var = torch.tensor([4.0, 0.25]).view(2, 1, 1, 1).expand(2, 1, 16, 16)
    torch.testing.assert_close(batch.variance(zeros[:, :1]), var)
    assert batch.rescaled(0.0, 2.0).sigma.flatten().tolist() == [1.0, 0.25]


@pytest.mark.parametrize("models", [[Gamma(2.0), Gaussian(1.0)], [Correlated(1.0, BOX3), Gamma(2.0)]])
def test_stack_refuses_models_without_a_common_form(models):
    with pytest.raises(ValueError, match="cannot batch .* noise together"):
        stack(models)


def test_signal_dependent_correlated_noise_has_its_level_and_covariance():
    """`corr` with a gain: per-pixel variance `gain (x - offset) + sigma^2`, correlation that of the kernel
    (covariance `S K K^T S`), `cov_apply` matching the Monte-Carlo covariance at the clean signal, and the
    model's units, spec and stacking like the other models'."""
    model = Correlated(1.5, SKEW, gain=2.0, offset=-10.0)
    assert model.signal_dependent and not Correlated(1.5, SKEW).signal_dependent
    x = torch.linspace(0, 300, 256, dtype=torch.float64).view(1, 1, 16, 16)
    draws = 10000
    n = model.sample(x.expand(draws, 1, 16, 16), generator=gen(12)) - x
    assert_moments(n[:, 0][None], model.variance(x)[0])
    v = torch.randn(1, 1, 16, 16, generator=gen(13), dtype=torch.float64)
    emp, se = _covariance_estimate(n, v)
    assert float((emp - model.cov_apply(x, v)).norm()) < 2 * se
    assert float((emp - model.variance(x) * v).norm()) > 3 * se  # tells it from white noise of that level
    assert from_dict(model.to_dict()) == model and "gain=2" in model.spec()
    assert model.rescaled(10.0, 2.0) == Correlated(0.75, SKEW, gain=1.0, offset=-10.0)
    assert parse_noise("corr:sigma=1.5,gain=2,offset=-10,size=3") == Correlated(1.5, BOX3, gain=2.0, offset=-10.0)
    assert "gain" not in Correlated(1.5, SKEW).to_dict()  # a stationary model's record is unchanged
    batch = stack([model, Correlated(2.0, SKEW)])
    var = batch.variance_map(torch.full((2, 1, 8, 8), 50.0, dtype=torch.float64))
    assert torch.allclose(var[:, 0, 4, 4].float(), torch.tensor([2.0 * 60 + 2.25, 4.0]))


def test_white_models_share_a_batch_with_correlated_ones_as_1x1_kernels():
    batch = stack([Correlated(1.5, SKEW, gain=2.0), PoissonGaussian(gain=3.0, sigma=1.0, offset=10.0), Gaussian(2.0)])
    assert isinstance(batch, Correlated) and batch.kernel.shape == (3, 1, 3, 3)
    y = torch.full((3, 1, 8, 8), 30.0, dtype=torch.float64)
    var = batch.stein_weight(y)[:, 0, 4, 4]
    assert torch.allclose(var.float(), torch.tensor([2.0 * 30 + 2.25, 3.0 * 20 + 1.0, 4.0]))
    v = torch.randn(3, 1, 8, 8, generator=gen(14), dtype=torch.float64)
    white = batch.cov_apply(y, v)[1:, :, 2:-2, 2:-2]  # the white samples: a diagonal covariance
    assert torch.allclose(white, (batch.stein_weight(y) * v)[1:, :, 2:-2, 2:-2], atol=1e-5)
    with pytest.raises(ValueError, match="cannot batch gamma and corr"):
        stack([Correlated(1.5, SKEW), Gamma(3.0)])
