"""UNSURE and PG-UNSURE: the multipliers are loss state that only training moves, and on synthetic data of known
noise they approach the true parameters (tolerances stated per test)."""
import numpy as np
import torch

from sslrecon.losses import build_loss
from sslrecon.models import UNet, UNetConfig
from sslrecon.noise import Gaussian, PoissonGaussian
from sslrecon.physics import Denoising

from .conftest import smooth_image
from .test_losses import _random_cnn


def _learn(loss, y, start, steps=400, seed=0):
    """A small denoiser trained by `loss` on random 32x32 patches of the image `y` (1, 1, H, W)."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(width=8, depth=2))
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
