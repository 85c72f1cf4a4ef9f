"""A residual 2-D U-Net for any image size.

`depth` down-samplings (max-pool 2) with `width * 2^level` channels, two 3x3 convolutions with
LeakyReLU per level, no normalisation layers (a batch statistic would couple images and tiles),
skip connections by concatenation, and a residual output `y + net(y)`. Inputs whose sides are not
multiples of `2^depth` are reflect-padded and the output is cropped back.
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
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c, w, d = config.channels, config.width, config.depth
        widths = [w * 2**i for i in range(d + 1)]
        self.down = nn.ModuleList([_block(c if i == 0 else widths[i - 1], widths[i]) for i in range(d)])
        self.bottom = _block(widths[d - 1] if d else c, widths[d])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(d))])
        self.dec = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in reversed(range(d))])
        self.head = nn.Conv2d(widths[0], c, 1)

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
