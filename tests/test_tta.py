"""Test-time augmentation: the symmetries, which of them a noise model allows, and the averaged reconstruction."""
import math

import numpy as np
import pytest
import torch

from sslrecon.data import Normalization
from sslrecon.engine.bundle import Reconstructor
from sslrecon.engine.tta import DIHEDRAL, IDENTITY, inverse, symmetries, transform
from sslrecon.losses import build_loss
from sslrecon.models import UNet, UNetConfig
from sslrecon.noise.models import Correlated, Gaussian, PoissonGaussian


def test_symmetries_are_the_eight_distinct_ones_and_invert():
    t = torch.arange(3 * 5, dtype=torch.float32).reshape(1, 1, 3, 5)
    seen = set()
    for s in DIHEDRAL:
        g = transform(t, s)
        assert torch.equal(inverse(g, s), t)
        seen.add((tuple(g.shape), tuple(g.flatten().tolist())))
    assert len(seen) == 8 and DIHEDRAL[0] == IDENTITY


def test_noise_decides_the_symmetries():
    assert symmetries(None) == DIHEDRAL
    assert symmetries(Gaussian(sigma=1.0)) == DIHEDRAL
    assert symmetries(PoissonGaussian(gain=2.0, sigma=1.0, offset=3.0)) == DIHEDRAL
    rows = Correlated(sigma=1.0, kernel=((0, 0, 0), (0.5, 1, 0.5), (0, 0, 0)))  # correlated along rows only
    kept = set(symmetries(rows))
    assert kept == {(0, False), (0, True), (2, False), (2, True)}  # those that keep rows rows: no quarter turn
    near_isotropic = Correlated(sigma=1.0, kernel=((0.05, 0.2, 0.05), (0.2, 1, 0.22), (0.04, 0.2, 0.05)))
    assert symmetries(near_isotropic) == DIHEDRAL
    diagonal = Correlated(sigma=1.0, kernel=((0.6, 0, 0), (0, 1, 0), (0, 0, 0.6)))  # along the main diagonal
    kept = set(symmetries(diagonal))
    assert (0, False) in kept and (2, False) in kept and (1, False) not in kept and len(kept) == 4


def _reconstructor(loss="sure", tta=True, **options):
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=4, depth=2), identity_start=False).eval()
    for p in net.parameters():
        p.data.mul_(3.0)  # far from the identity, and far from equivariant
    return Reconstructor(net, build_loss(loss, **options), Normalization(shift=0.0, scale=1.0), torch.device("cpu"),
                         tile_size=64, tta=tta)


def test_averaged_reconstruction_is_equivariant_and_the_single_pass_is_not():
    frame = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    noise = Gaussian(sigma=1.0)
    for tta, equal in ((True, True), (False, False)):
        rec = _reconstructor(tta=tta)
        out = rec.predict(frame, noise)
        turned = rec.predict(np.ascontiguousarray(np.rot90(frame)), noise)
        gap = np.abs(np.rot90(out) - turned).max() / np.abs(out).max()
        assert (gap < 1e-5) == equal, (tta, gap)
    single = _reconstructor(tta=False).predict(frame, noise)
    averaged = _reconstructor(tta=True).predict(frame, noise)
    net = _reconstructor().model
    with torch.no_grad():
        y = torch.from_numpy(frame)[None, None]
        manual = sum(inverse(net(transform(y, s)), s) for s in DIHEDRAL)[0, 0].numpy() / 8
    assert np.abs(averaged - manual).max() < 1e-4 and np.abs(single - manual).max() > 1e-2


def test_rules_that_draw_noise_share_their_draws_among_the_symmetries():
    frame = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    for loss, options in (("gr2r-poisson", {"alpha": 0.3, "test_samples": 16}), ("r2r", {"test_samples": 16})):
        for tta in (True, False):
            rec = _reconstructor(loss, tta=tta, **options)
            calls = []
            rec.model.register_forward_hook(lambda *a: calls.append(1))
            rec.predict(frame + 10.0, PoissonGaussian(gain=1.0, sigma=1.0))
            assert len(calls) == 16, (loss, tta, len(calls))  # one tile: 8 symmetries x 2 draws, or 16 draws


def test_sure_of_the_averaged_reconstruction_is_unbiased():
    """DESIGN.md section 5: over independent noise draws, the mean of `validate`'s SURE estimate of the averaged
    reconstruction equals its true MSE within three standard errors."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:64, 0:64]
    clean = (np.sin(xx / 5.0) + np.cos(yy / 7.0)).astype(np.float32)
    sigma = 0.5
    rec = _reconstructor(tta=True)
    diffs = []
    for i in range(40):
        noisy = (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)
        est, out = rec.risk(noisy, Gaussian(sigma=sigma), seed=i)
        diffs.append(est - float(np.mean((out - clean) ** 2)))
    m, se = float(np.mean(diffs)), float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
    assert abs(m) < 3 * se + 1e-6, (m, se)
    assert se < 0.05 * float(np.mean((out - clean) ** 2))  # the test can fail: its spread is small beside the error
