"""A residual 2-D U-Net for any image size.

`depth` down-samplings (max-pool 2) with `width * 2^level` channels, two 3x3 convolutions with
LeakyReLU per level, no normalisation layers (a batch statistic would couple images and tiles),
skip connections by concatenation, and a residual output `y + net(y)`. Inputs whose sides are not
multiples of `2^depth` are reflect-padded and the output is cropped back.

The residual network's last convolution starts at zero, so an untrained network is the identity: it starts
from the measurement and learns the correction (the noise), as a denoiser where the noise is small must. With
the default random start its output was off by more than the noise at a few thousand photons per pixel and
took the run to undo; trained 200 steps on eight 128x128 BSD68 crops at 300 and 3000 photons per pixel
(`benchmarks/robustness.py --scenarios bright-300 bright-3000`), `pg-sure` ended 0.7 and 0.0 dB above the
noisy input (its blend weight 0.02 at 3000: the network's own output was worse than the input), and with
the zero start 2.8 and 1.0 dB above it; at 5 photons per pixel (`benchmarks/denoise_pg.py`, Set12) the two
starts are within 0.2 dB for the oracle, `pg-sure` and `gr2r-poisson`. The other layers get gradients once
the last one has moved, from the second step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    channels: int = 1
    width: int = 32
    depth: int = 3
    residual: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig(), identity_start: bool = True):
        """`identity_start`: a residual network's last convolution starts at zero (see the module docstring);
        `False` keeps PyTorch's random start there too (a fixed random denoiser, as the tests use)."""
        super().__init__()
        self.config = config
        c, w, d = config.channels, config.width, config.depth
        widths = [w * 2**i for i in range(d + 1)]
        self.down = nn.ModuleList([_block(c if i == 0 else widths[i - 1], widths[i]) for i in range(d)])
        self.bottom = _block(widths[d - 1] if d else c, widths[d])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(d))])
        self.dec = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in reversed(range(d))])
        self.head = nn.Conv2d(widths[0], c, 1)
        if identity_start and config.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this; tiles must start on multiples of it."""
        return 2**self.config.depth

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h, w = y.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(y, (0, pw, 0, ph), mode=mode) if ph or pw else y
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        out = self.head(x)[..., :h, :w]
        return y + out if self.config.residual else out

    def receptive_radius(self) -> int:
        """Half-width (pixels) beyond which an input change cannot reach an output pixel."""
        d = self.config.depth
        r = sum(2 * 2**i for i in range(d)) + 2 * 2**d + sum(2 * 2**i + 2**i for i in range(d))
        return int(r) + 2**d
