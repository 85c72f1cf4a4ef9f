"""The blend of a reconstruction with its measurement: the risk of every weight from SURE of the reconstruction
alone, the weight that fit records, and reconstruct and validate applying it."""
import json

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from sslrecon.data import Normalization
from sslrecon.engine import checkpoint
from sslrecon.engine.bundle import Reconstructor, best_blend, blend_risk
from sslrecon.losses import build_loss, sure_mse
from sslrecon.models import UNet, UNetConfig
from sslrecon.noise.models import Gaussian, PoissonGaussian

from .conftest import TINY, smooth_image
from .test_cli import run


def _smoother(v):
    """A fixed nonlinear smoother, not J-invariant."""
    return F.avg_pool2d(v, 3, 1, 1, count_include_pad=False) + 0.05 * torch.tanh(v)


def _blind(v):
    """A J-invariant one: the mean of the four neighbours, without the pixel itself."""
    k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])[None, None]
    return F.conv2d(F.pad(v, (1, 1, 1, 1), mode="reflect"), k)


@pytest.mark.parametrize("noise, scale, f, divergence", [
    (Gaussian(sigma=0.3), 1.0, _smoother, True),
    (Gaussian(sigma=0.3), 1.0, _blind, False),
    (PoissonGaussian(gain=0.5, sigma=0.4, offset=2.0), 100.0, _smoother, True),  # about 200 counts: Taylor terms
    (PoissonGaussian(gain=0.5, sigma=0.0, offset=2.0), 0.5, _smoother, True),  # about one count: photon removal
])
def test_blend_risk_is_unbiased_for_every_weight_and_picks_the_best_one(noise, scale, f, divergence):
    """Over 300 draws the estimated risk of `y + alpha (f(y) - y)` matches its true MSE within 3 SE at every weight,
    and the weight that minimises the pooled estimate is within 0.05 of the one that minimises the true MSE."""
    n, rng = 300, np.random.default_rng(0)
    x = torch.tensor(2.0 + scale * smooth_image(rng, 24, 24, level=1.0, amp=0.8), dtype=torch.float32)
    x = x.expand(n, 1, 24, 24).contiguous()
    y = noise.sample(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fy = f(y)
        s = sure_mse(f, y, noise, generator=torch.Generator().manual_seed(2), divergence=divergence)
    step, trace = ((fy - y) ** 2).mean((1, 2, 3)), noise.stein_weight(y).mean((1, 2, 3))
    errors = []
    for alpha in (0.0, 0.3, 0.7, 1.0):
        estimate = alpha**2 * step + trace + alpha * (s - step - trace)
        assert torch.allclose(estimate[:3], torch.tensor([blend_risk(float(a), float(b), float(c), alpha)
                                                         for a, b, c in zip(s[:3], step[:3], trace[:3])]))
        true = (((y + alpha * (fy - y)) - x) ** 2).mean((1, 2, 3))
        gap = (estimate - true).double()
        assert abs(float(gap.mean())) < 3 * float(gap.std()) / n**0.5 + 1e-9, (alpha, float(gap.mean()))
        errors.append(float(true.mean()))
    grid = np.linspace(0, 1, 201)
    true_best = grid[np.argmin([float((((y + a * (fy - y)) - x) ** 2).mean()) for a in grid])]
    assert abs(best_blend(float(s.sum()), float(step.sum()), float(trace.sum())) - true_best) < 0.05


def test_best_blend_stays_in_the_unit_interval():
    assert best_blend(sure=5.0, step=1.0, trace=1.0) == 0.0  # worse than the input: the input
    assert best_blend(sure=-1.0, step=1.0, trace=4.0) == 1.0  # would extrapolate past the network: the network
    assert best_blend(sure=1.0, step=0.0, trace=1.0) == 1.0  # the identity
    assert best_blend(sure=1.0, step=2.0, trace=1.0) == pytest.approx(0.5)


def _reconstructor(loss: str, blend: dict | None) -> Reconstructor:
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=4, depth=2), identity_start=False).eval()
    return Reconstructor(net, build_loss(loss), Normalization(shift=0.0, scale=1.0), torch.device("cpu"),
                         tile_size=64, tta=False, blend=blend)


def test_a_loss_with_its_own_risk_is_blended_by_it():
    """gr2r-poisson's risk estimate has SURE's form, so its rule is blended too: a weight near 0 for an untrained
    network on a bright frame (far worse than the measurement), and `risk` scores the blended output it returns."""
    frame = np.random.default_rng(0).poisson(400.0, (32, 32)).astype(np.float32)
    noise = PoissonGaussian(gain=1.0, sigma=0.5, offset=0.0)
    assert _reconstructor("gr2r-poisson", {"tta": 0.5, "single": 0.25}).alpha == 0.25
    rec = _reconstructor("gr2r-poisson", None)
    w = rec.blend_weight([(frame, noise)])
    assert 0 <= w < 0.05
    rec.blend = {"tta": w, "single": w}
    mse, out = rec.risk(frame, noise)
    unblended = _reconstructor("gr2r-poisson", None).risk(frame, noise)[1]
    assert np.allclose(out, frame + w * (unblended - frame), atol=1e-3)
    assert 0.5 * 400 < mse < 2 * 400  # about the measurement's own error, its variance
    assert _reconstructor("sure", {"tta": 0.5, "single": 0.25}).alpha == 0.25
    assert _reconstructor("sure", None).alpha == 1.0


def test_fit_records_the_blend_and_reconstruct_and_validate_apply_it(tiny_data, tmp_path, capsys):
    """A blind-spot (J-invariant) rule leaves out each pixel's own value, so the weight is below one; reconstruct's
    output is `y + alpha (f(y) - y)` with `f` the --no-blend output, and validate scores exactly that output."""
    data, ref = tiny_data
    run_dir = tmp_path / "n2s"
    code, out, err = run(["fit", data / "cells.tif", "-o", run_dir, "--loss", "n2s", "--json", *TINY], capsys)
    assert code == 0, err
    blend = json.loads(out)["blend"]
    assert 0 < blend["tta"] < 1 and 0 < blend["single"] < 1 and blend["frames"] == 1 and blend["pixels"] == 48 * 48
    assert not blend["held_out"]  # one frame: a band of it is held out, and the weight is found on the whole frame
    assert json.loads((run_dir / "config.json").read_text())["blend"] == blend
    assert checkpoint.load(run_dir)["blend"] == blend
    outs = {}
    for flag in ("--blend", "--no-blend"):
        code, out, err = run(["reconstruct", run_dir, data / "cells.tif", "-o", tmp_path / flag, "--device", "cpu",
                              "--dtype", "float32", "--json", flag], capsys)
        assert code == 0, err
        assert json.loads(out)["files"][0]["blend"] == (blend["tta"] if flag == "--blend" else 1.0)
        outs[flag] = tifffile.imread(tmp_path / flag / "cells.tif").astype(np.float64)
        code, out, err = run(["validate", run_dir, data / "cells.tif", "--reference", ref, "--json", "--device", "cpu",
                              flag], capsys)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["blend"] == (blend["tta"] if flag == "--blend" else 1.0)
        clean = tifffile.imread(ref / "cells.tif").astype(np.float64)
        true_mse = float(np.mean((outs[flag] - clean) ** 2))
        assert abs(doc["files"][0]["psnr"] - 10 * np.log10(65535.0**2 / true_mse)) < 1e-3
    y = tifffile.imread(data / "cells.tif").astype(np.float64)
    a = blend["tta"]
    assert np.allclose(outs["--blend"], y + a * (outs["--no-blend"] - y), atol=1e-3 * np.abs(y).max())
    assert np.abs(outs["--blend"] - outs["--no-blend"]).max() > 1.0
