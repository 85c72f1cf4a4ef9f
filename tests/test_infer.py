import numpy as np
import pytest
import torch

from sslrecon.engine.infer import auto_tile_size, tiled_apply
from sslrecon.engine.metrics import data_range, psnr, ssim
from sslrecon.models import UNet, UNetConfig


@pytest.mark.parametrize("depth,shape", [(2, (150, 211)), (3, (97, 260))])
def test_tiled_equals_untiled(depth, shape):
    torch.manual_seed(0)
    net = UNet(UNetConfig(width=4, depth=depth), identity_start=False).eval()
    for p in net.parameters():
        p.data.mul_(2.0)
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with torch.no_grad():
        full = net(torch.from_numpy(img)[None, None])[0, 0].numpy()
    tile = 96 if depth == 2 else 160
    tiled = tiled_apply(net, img, tile=tile, margin=net.receptive_radius() + 8, multiple=net.multiple,
                        device=torch.device("cpu"), batch=3)
    assert tiled.shape == img.shape
    rel = np.abs(tiled - full).max() / np.abs(full).max()
    assert rel < 1e-4, rel
    assert np.abs(full - img).max() > 1e-2  # the network is not the identity


def test_receptive_radius_bounds_the_influence():
    torch.manual_seed(1)
    net = UNet(UNetConfig(width=4, depth=3), identity_start=False).eval()
    y = torch.zeros(1, 1, 256, 256, requires_grad=True)
    net(y)[0, 0, 128, 128].backward()
    rows, cols = torch.nonzero(y.grad[0, 0].abs() > 0, as_tuple=True)
    reach = max(int((rows - 128).abs().max()), int((cols - 128).abs().max()))
    assert reach <= net.receptive_radius()


def test_auto_tile_size_is_a_multiple():
    t = auto_tile_size(32, 8, torch.device("cpu"))
    assert t % 8 == 0 and 64 <= t <= 4096


def test_metrics_data_range_rules():
    ref = np.array([[0.0, 2.0], [4.0, 6.0]])
    assert data_range(np.uint8, ref) == 255
    assert data_range(np.uint16, ref) == 65535
    assert data_range(np.float32, ref) == 6.0
    assert np.isclose(psnr(ref, ref + 1, 6.0), 10 * np.log10(36.0))
    img = np.random.default_rng(0).normal(size=(32, 32))
    assert np.isclose(ssim(img, img, 5.0), 1.0)
    assert ssim(img, img + np.random.default_rng(1).normal(size=img.shape), 5.0) < 0.9


def test_a_new_residual_network_is_the_identity_and_learns_from_there():
    """The residual U-Net's last convolution starts at zero: untrained, it returns the measurement exactly (a
    denoiser where the noise is small must start near it). Every layer still learns: the last one at the first
    step, the others from the second, once it has moved."""
    torch.manual_seed(0)
    y = torch.randn(4, 1, 32, 32)
    net = UNet(UNetConfig(width=4, depth=2))
    with torch.no_grad():
        assert torch.equal(net(y), y)
        assert not torch.equal(UNet(UNetConfig(width=4, depth=2), identity_start=False)(y), y)
        assert UNet(UNetConfig(width=4, depth=2, residual=False))(y).abs().max() > 0  # (no zero output)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        loss = ((net(y) - 0.5 * y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
