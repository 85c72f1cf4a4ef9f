"""UNSURE and PG-UNSURE: the multipliers are loss state that only training moves, and on synthetic data of known
noise they approach the true parameters (tolerances stated per test)."""
import numpy as np
import pytest
import torch

from sslrecon.errors import ConfigError
from sslrecon.losses import build_loss
from sslrecon.models import UNet, UNetConfig
from sslrecon.noise import Gaussian, Poisson, PoissonGaussian
from sslrecon.noise.models import Correlated
from sslrecon.physics import Denoising

from .conftest import smooth_image
from .test_losses import _random_cnn


def _learn(loss, y, start, steps=400, seed=0):
    """A small denoiser trained by `loss` on random 32x32 patches of the image `y` (1, 1, H, W)."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(width=8, depth=2), identity_start=False)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    loss.initialise(start, y)
    h, p = y.shape[-1], 32
    for _ in range(steps):
        i, j = torch.randint(0, h - p, (2, 8), generator=g)
        batch = torch.cat([y[..., a:a + p, b:b + p] for a, b in zip(i.tolist(), j.tolist())])
        out = loss(net, batch, Denoising(start), generator=g)
        opt.zero_grad()
        out.value.backward()
        opt.step()
    return loss.pooled_model()


def _scene():
    return torch.tensor(smooth_image(np.random.default_rng(1), 96, 96, level=0.5, amp=0.3), dtype=torch.float32)[None, None]


def test_unsure_learns_the_noise_level_from_three_times_too_high():
    """UNSURE's multiplier estimates sigma^2 from above (a denoiser's own divergence is paid off): enforced here,
    sigma within [-5 %, +25 %] of the truth after 400 steps from a start at three times it."""
    sigma = 0.1
    y = _scene() + sigma * torch.randn(_scene().shape, generator=torch.Generator().manual_seed(1))
    learned = _learn(build_loss("unsure"), y, Gaussian(3 * sigma))
    assert 0.95 * sigma < learned.sigma < 1.25 * sigma, learned


def test_pg_unsure_learns_gain_and_read_noise():
    """Gain within 30 %, read noise within 40 %, the variance at the mean signal within 25 %, from a start at twice
    the gain and 1.5 times the read noise (the offset given)."""
    true = PoissonGaussian(gain=0.02, sigma=0.04, offset=-0.1)
    x = _scene() * 0.9 - 0.05
    y = true.sample(x, generator=torch.Generator().manual_seed(1))
    learned = _learn(build_loss("pg-unsure"), y, PoissonGaussian(gain=0.04, sigma=0.06, offset=-0.1))
    assert abs(learned.gain / true.gain - 1) < 0.3 and abs(learned.sigma / true.sigma - 1) < 0.4, learned
    ratio = float(learned.variance(x).mean() / true.variance(x).mean())
    assert abs(ratio - 1) < 0.25, ratio


def test_pg_unsure_removes_photons_at_low_counts():
    """Below `FINITE_COUNTS` the network's term is `pg-sure`'s photon removal, exact for any denoiser: its value with
    the multipliers at the truth is unbiased at one photon per pixel for a denoiser with a third derivative, which
    the Taylor terms (`finite=false`, with the second-order term) misjudge; above, the Taylor terms stay."""
    from .test_losses import _within
    from .test_losses_pg import GAIN, OFFSET, SIGMA, _blur, _scene

    true = PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)

    def f(v):
        return _blur(v) + 0.05 * ((v - OFFSET) / GAIN) ** 3

    x = _scene(1.0, n=10)
    for options, unbiased in (({}, True), ({"finite": False}, False)):
        loss = build_loss("pg-unsure", **options)
        loss.initialise(true, x)
        g, diffs = torch.Generator().manual_seed(1), []
        with torch.no_grad():
            for _ in range(150):
                y = true.sample(x, generator=g)
                out = loss(f, y, Denoising(true), generator=g)
                diffs.append(float(out.value) - float(((f(y) - x) ** 2).mean()))
        assert ("second_order" in out.terms) != unbiased  # (the Taylor path adds its second-order term here)
        assert _within(torch.tensor(diffs))[0] == unbiased, options
    loss = build_loss("pg-unsure")
    loss.initialise(true, _scene(30.0, n=2))
    with torch.no_grad():
        assert "second_order" in loss(f, true.sample(_scene(30.0, n=2)), Denoising(true)).terms
    with pytest.raises(ConfigError, match="finite is auto or false"):
        build_loss("pg-unsure", finite=True)


K3 = ((0.05, 0.2, 0.05), (0.2, 1.0, 0.2), (0.05, 0.2, 0.05))  # lag-1 correlation about 0.4


def test_pg_unsure_learns_the_level_of_correlated_noise():
    """Correlated Poisson-Gaussian noise (lag-1 0.4), started from twice the gain and 1.5 times the read noise with the
    true kernel: the variance at the mean signal within [-10 %, +50 %] (the constrained network's own error inflates
    it). The same data and start without the kernel (a pixel-wise constraint) fall below 0.8 times: the network
    predicts each pixel's noise from its neighbours."""
    true = Correlated(sigma=0.04, kernel=K3, gain=0.02, offset=-0.1)
    x = _scene() * 0.9 - 0.05
    y = true.sample(x, generator=torch.Generator().manual_seed(1))
    start = dict(sigma=0.06, gain=0.04, offset=-0.1)
    learned = _learn(build_loss("pg-unsure"), y, Correlated(kernel=K3, **start))
    assert isinstance(learned, Correlated) and np.allclose(learned.kernel, true.kernel), learned
    ratio = float(learned.variance(x).mean() / true.variance(x).mean())
    assert 0.9 < ratio < 1.5, ratio
    white = _learn(build_loss("pg-unsure"), y, PoissonGaussian(**start))
    assert float(white.variance(x).mean() / true.variance(x).mean()) < 0.8, white


def test_unsure_learns_the_level_of_stationary_correlated_noise():
    """Stationary correlated Gaussian noise: sigma within [-10 %, +40 %] from a start at three times it; the model
    learned keeps the kernel."""
    true = Correlated(sigma=0.1, kernel=K3)
    y = true.sample(_scene(), generator=torch.Generator().manual_seed(1))
    learned = _learn(build_loss("unsure"), y, Correlated(sigma=0.3, kernel=K3))
    assert isinstance(learned, Correlated) and np.allclose(learned.kernel, true.kernel), learned
    assert 0.9 * true.sigma < learned.sigma < 1.4 * true.sigma, learned


def test_learned_kernels_are_state_restored_from_a_checkpoint():
    """Files with white and with correlated noise in one run: each keeps its own kernel (white stays white), and a
    fresh loss restores them from the state dict, as `--resume` and `reconstruct` do; a state dict from before the
    kernels existed loads as white."""
    y = _scene() + 0.1 * torch.randn(2, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    loss = build_loss("pg-unsure", groups=2)
    loss.initialise([PoissonGaussian(gain=0.01, sigma=0.1), Correlated(sigma=0.1, kernel=K3, gain=0.01)], y, [0, 1])
    own = loss.noise_models()
    assert isinstance(own[0], PoissonGaussian) and isinstance(own[1], Correlated)
    assert np.allclose(own[1].kernel, Correlated(sigma=1.0, kernel=K3).kernel)
    net = _random_cnn()
    out = loss(net, y, Denoising(None, sources=[0, 1]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.value)
    fresh = build_loss("pg-unsure", groups=2)
    fresh.load_state_dict(loss.state_dict())
    assert fresh.noise_models() == loss.noise_models() and isinstance(fresh.pooled_model(), Correlated)
    old = {k: v for k, v in loss.state_dict().items() if k != "kernel"}
    legacy = build_loss("pg-unsure", groups=2)
    legacy.load_state_dict(old)
    assert all(isinstance(m, PoissonGaussian) for m in legacy.noise_models())


def test_multipliers_are_state_that_only_training_moves():
    net, y = _random_cnn(), _scene() + 0.1 * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    for name, start in (("unsure", Gaussian(0.2)), ("pg-unsure", PoissonGaussian(gain=0.01, sigma=0.1, offset=-0.2))):
        loss = build_loss(name)
        loss.initialise(start, y)
        before = {k: v.clone() for k, v in loss.state_dict().items()}
        assert set(before) >= {"variance", "initialised"} and bool(before["initialised"])
        with torch.no_grad():  # validation / evaluation: no update
            loss(net, y, Denoising(start), generator=torch.Generator().manual_seed(0))
        loss.eval()
        loss(net, y, Denoising(start), generator=torch.Generator().manual_seed(0))  # eval mode: no update
        assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())
        loss.train()
        out = loss(net, y, Denoising(start), generator=torch.Generator().manual_seed(0))
        assert not torch.equal(before["variance"], loss.variance)  # a training step moves it ...
        assert all(float(v) > 0 for k, v in loss.state_dict().items() if k in ("gain", "variance"))  # ... kept positive
        assert not out.value.grad_fn is None and loss.variance.grad_fn is None  # no graph kept across steps
        # with learn_steps, the ascent stops after that many training steps (then it is SURE with the learned noise)
        frozen = build_loss(name, learn_steps=1)
        frozen.initialise(start, y)
        for _ in range(3):
            frozen(net, y, Denoising(start), generator=torch.Generator().manual_seed(0))
        assert int(frozen.ascents) == 1 and torch.equal(frozen.variance, _after_one_step(name, start, net, y))
        # with hold_steps, the multipliers stay at their start for that many training steps, then the ascent begins
        held = build_loss(name, hold_steps=2)
        held.initialise(start, y)
        for step in range(3):
            held(net, y, Denoising(start), generator=torch.Generator().manual_seed(0))
            assert (int(held.held), int(held.ascents)) == ((1, 0), (2, 0), (2, 1))[step]
            assert torch.equal(held.variance, before["variance"]) is (step < 2)
        auto = build_loss(name)  # "auto": hold 0 outside a run, half the run's steps once `fit` plans it
        assert auto.options()["hold_steps"] == "auto"
        auto.plan(300)
        assert auto.options()["hold_steps"] == 150
        for bad in (-1, 2.5, True, "half"):
            with pytest.raises(ConfigError, match="hold_steps"):
                build_loss(name, hold_steps=bad)
            with pytest.raises(ConfigError, match="room_steps"):
                build_loss(name, room_steps=bad)
        # a second initialise (e.g. after --resume restored the state) keeps the learned values
        learned = loss.state_dict()["variance"].clone()
        loss.initialise(Gaussian(5.0), y)
        assert torch.equal(loss.variance, learned)
        # restored into a fresh loss from the state dict, as a checkpoint does
        fresh = build_loss(name)
        fresh.load_state_dict(loss.state_dict())
        assert fresh.pooled_model() == loss.pooled_model()


def _after_one_step(name, start, net, y):
    loss = build_loss(name)
    loss.initialise(start, y)
    loss(net, y, Denoising(start), generator=torch.Generator().manual_seed(0))
    return loss.variance


def test_pg_unsure_started_from_a_gaussian_model_keeps_its_level_at_the_mean():
    """A Gaussian start (no shot noise known, as for a binned micrograph) gets a small gain to learn from, taken out of
    the read noise, so the starting model's variance at the data's mean is the given one."""
    y = 0.5 + _scene() + 0.1 * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(3))
    loss = build_loss("pg-unsure")
    loss.initialise(Gaussian(0.1), y)
    start = loss.pooled_model()
    assert start.gain > 0 and start.sigma < 0.1
    assert abs(float(start.variance(y.mean().reshape(1))) / 0.1**2 - 1) < 1e-4


def test_pg_unsure_started_from_a_poisson_model_keeps_its_variance_line():
    """A Poisson start (no read noise, as `--noise auto` gives where the intercept is negative) needs a read-noise
    multiplier above 0 to learn from: 5 % of the shot variance at the data's mean, whatever the image's contrast (a
    share of the image's variance had started it at 6.7 for a true 3 on Set12 crops at 30 photons), taken from the
    shot noise by raising the dark level, so that every level's variance is the estimate's (read noise added on top
    of it had cost 0.7 dB on the FMD frames while the multipliers were held)."""
    scene = 40 * (1 + 4 * _scene())  # high contrast: the image's variance is many times the noise's
    g = torch.Generator().manual_seed(3)
    # (a little read noise the start leaves out: whole counts would be a counting detector's, with nothing to learn)
    y = 100 + 2 * torch.poisson(scene, generator=g) + 0.5 * torch.randn(scene.shape, generator=g)
    loss = build_loss("pg-unsure")
    estimate = PoissonGaussian(gain=2.0, sigma=0.0, offset=100.0)
    loss.initialise(estimate, y)
    start = loss.pooled_model()
    shot = 2.0 * float((y - 100).mean())
    assert start.gain == pytest.approx(2.0) and float(start.sigma) ** 2 == pytest.approx(0.05 * shot, rel=1e-4)
    assert float(start.sigma) ** 2 < 0.01 * float(y.var())
    levels = torch.linspace(float(start.offset), float(y.max()), 9)  # (below its dark level the read noise alone)
    assert torch.allclose(start.variance(levels).double(), estimate.variance(levels).double(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["pg-unsure", "unsure"])
def test_unsure_losses_hold_a_counting_detectors_model(name):
    """On whole counts of a model without read noise (photon counting; `--noise auto` reads such data so) the gain is
    the count step and there is no read noise: the multipliers stay at their start and the loss is PG-SURE with the
    photon removal (a Taylor probe off the lattice is one a network sees: pg-unsure's learned gain fell to 0.59 for a
    true 1, unsure's to 0.89). Files of both kinds in one run are refused, naming both."""
    model = Poisson(gain=2.0, offset=100.0)
    y = model.sample(100 + 2 * (0.3 + 2 * _scene()).expand(4, 1, -1, -1), generator=torch.Generator().manual_seed(0))
    loss = build_loss(name, hold_steps=0)
    loss.train()
    torch.manual_seed(0)
    net, phys = UNet(UNetConfig(width=8, depth=2), identity_start=False), Denoising(model)
    g = torch.Generator().manual_seed(1)
    out = loss(net, y, phys, generator=g)
    out.value.backward()
    assert bool(loss.counts.all()) and not loss.learning and int(loss.ascents) == 0
    held = loss.pooled_model()
    assert (held.gain, held.sigma, held.offset) == pytest.approx((2.0, 0.0, 100.0))
    with torch.no_grad():  # the same value as pg-sure's default, which takes the photon removal on whole counts
        same = build_loss("pg-sure")(net, y, phys, generator=torch.Generator().manual_seed(1))
    assert out.value.item() == pytest.approx(same.value.item(), rel=1e-5)
    assert "second_order" not in out.terms
    mixed = build_loss(name, groups=2)
    with pytest.raises(ConfigError, match="whole counts") as e:
        mixed.initialise([model, PoissonGaussian(gain=2.0, sigma=1.0, offset=100.0)], y, [0, 0, 1, 1],
                         ["counts.tif", "camera.tif"])
    assert e.value.path == "camera.tif" and "counts.tif" in e.value.message


def test_unsure_keeps_a_signal_dependent_start_models_shape():
    """Started from a Poisson-Gaussian model (what `--noise auto` finds on detector data) unsure learns the level and
    keeps the start's shape, `gain u + sigma^2` over its mean: its model starts as the start model, and with the
    multipliers there its training value is the first-order PG-SURE, unbiased for a fixed denoiser (within 3 SE;
    with one constant variance it rewarded a network for an output falling as the input rises where the signal is
    dark: on the real FMD frames it ended at 23.0 dB for a noisy 29.6)."""
    from .test_losses import _within
    from .test_losses_pg import GAIN, OFFSET, SIGMA, _cnn_in_units
    from .test_losses_pg import _scene as _counts_scene

    model = PoissonGaussian(gain=GAIN, sigma=SIGMA, offset=OFFSET)
    x = _counts_scene(20.0, 8)
    g = torch.Generator().manual_seed(0)
    loss = build_loss("unsure", hold_steps=0)
    loss.initialise(model, model.sample(x, generator=g))
    start = loss.pooled_model()
    assert isinstance(start, PoissonGaussian)
    assert (start.gain, start.sigma, start.offset) == pytest.approx((GAIN, SIGMA, OFFSET), rel=1e-5)
    f, phys, diffs = _cnn_in_units(20.0), Denoising(model), []
    with torch.no_grad():  # (no ascent outside training steps: the multipliers stay at the start)
        for _ in range(150):
            y = model.sample(x, generator=g)
            diffs.append(float(loss(f, y, phys, generator=g).value) - float(((f(y) - x) ** 2).mean()))
    ok, m, se = _within(torch.tensor(diffs))
    assert ok, f"{m:.3g} +- {se:.3g}"
    assert loss.pooled_model().gain == pytest.approx(GAIN, rel=1e-5)
    back = build_loss("unsure")  # the shape is loss state: checkpointed and resumed with the level
    back.load_state_dict(loss.state_dict())
    assert back.pooled_model() == loss.pooled_model()
    with pytest.raises(ConfigError, match="its options are: tau, step"):  # the shape is state, not an option
        build_loss("unsure", shape_gain=1.0)
    older = build_loss("unsure")  # a checkpoint from before the shape: white Gaussian, as it was trained
    older.load_state_dict({k: v for k, v in loss.state_dict().items() if not k.startswith("shape_")})
    assert isinstance(older.pooled_model(), Gaussian)


def test_the_ascent_slows_with_the_learning_rate():
    """The multipliers' log-step is the loss's `step` times the schedule's factor (`pace`): at the end of a cosine
    schedule, where the network no longer moves, they cannot keep climbing against a constraint only it can meet."""
    y = 0.5 + _scene() + 0.1 * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(3))
    moves = []
    for factor in (1.0, 0.1):
        torch.manual_seed(0)
        net = UNet(UNetConfig(width=8, depth=2), identity_start=False)
        loss = build_loss("unsure", hold_steps=0, momentum=0.0)
        loss.initialise(Gaussian(0.3), y)
        loss.pace(factor)
        before = float(loss.variance[0])
        loss(net, y, Denoising(Gaussian(0.3)), generator=torch.Generator().manual_seed(0))
        moves.append(float(np.log(float(loss.variance[0]) / before)))
    assert moves[0] != 0 and moves[1] == pytest.approx(0.1 * moves[0], rel=1e-4)


@pytest.mark.parametrize("room_steps", [300, 0])
def test_a_longer_run_gives_the_ascent_the_room_of_a_shorter_one(room_steps):
    """Planned for 2000 steps, the ascent takes steps `room_steps / 2000` the size of a 300-step run's (equal where
    `room_steps=0`), so the multipliers cannot wander further in the longer run (FMD frames: by run-to-run chance,
    0.6x to 2x the estimated variance at 2000 steps with full-size steps)."""
    y = 0.5 + _scene() + 0.1 * torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(3))
    moves = []
    for steps in (300, 2000):
        torch.manual_seed(0)
        net = UNet(UNetConfig(width=8, depth=2), identity_start=False)
        loss = build_loss("unsure", hold_steps=0, momentum=0.0, room_steps=room_steps)
        loss.plan(steps)
        loss.initialise(Gaussian(0.3), y)
        loss.pace(1.0)
        before = float(loss.variance[0])
        loss(net, y, Denoising(Gaussian(0.3)), generator=torch.Generator().manual_seed(0))
        moves.append(float(np.log(float(loss.variance[0]) / before)))
    ratio = room_steps / 2000 if room_steps else 1.0
    assert moves[0] != 0 and moves[1] == pytest.approx(ratio * moves[0], rel=1e-4)
    assert loss.options()["room_steps"] == room_steps


def test_fit_paces_the_loss_with_its_learning_rate_schedule(tiny_data, tmp_path, capsys, monkeypatch):
    from sslrecon.engine.train import cosine_lr
    from sslrecon.losses.unsure import Unsure

    from .conftest import TINY
    from .test_cli import run

    seen = []
    monkeypatch.setattr(Unsure, "pace", lambda self, factor: seen.append(factor))
    data, _ = tiny_data
    code, _, err = run(["fit", data, "-o", tmp_path / "run", "--loss", "unsure", *TINY], capsys)
    assert code == 0, err
    steps = int(TINY[TINY.index("--steps") + 1])
    assert seen == pytest.approx([cosine_lr(s, steps, 1.0) for s in range(steps)])
