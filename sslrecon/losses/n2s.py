"""Noise2Self / Noise2Void-style masking (Batson & Royer, ICML 2019; Krull et al., CVPR 2019).

Assumption: noise independent between pixels, zero mean (any noise model; none is needed to train).
A grid of pixels, one in `grid x grid` at a random phase, is replaced by the mean of its four direct
neighbours (which are never masked), and the loss scores the network only at those pixels, so it
cannot learn the identity.

Test-time rule (J-invariant, the default because it is right): the network's output at a pixel is
only ever read from the pass in which that pixel was masked; the `grid^2` phases tile the image, so
`predict` costs `grid^2` passes and never sees a pixel it outputs. A plain full-input pass is not
used: a residual network's output at unmasked pixels is unconstrained by this loss (it can pass the
noise through), which a test checks.

Correlated noise (`corr:...`, as `--noise auto` finds on motion-corrected micrographs) breaks the assumption: a
blind-spot network reads each pixel's noise from its correlated neighbours and passes it through (on the raw EPU
micrograph, lag-1 correlation 0.58, 300 steps, its output kept 86 % of the input's variance and `validate` scored its
error at 3.2e5 for a noise variance near 3.9e5; with the square, radius 1, 6.8 % and 1.29e4, beside `pg-sure`'s
1.37e4 and `gr2r-poisson`'s 6.4e3). There the blind spot grows to a square of `radius` pixels around each
masked pixel (structured masking in the spirit of Broaddus et al.'s structN2V, ISBI 2020), filled with the mean of
the ring just outside it, and the grid spaces the squares so that no ring touches another square (`grid` at least
`2 radius + 2`). `radius="auto"` (the default) is 0 for white noise and, for correlated noise, the largest lag at
which the noise model's correlation is still `CORRELATION_BELOW` or more (`correlation_radius`); `grid="auto"` is 3,
or `2 radius + 2` (a grid given finer than that is widened to it). Both are settled once per run and recorded.

Cost per step: one network pass. Test time: `grid^2` passes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..physics import DENOISING
from .base import Loss, LossOutput, is_count

#: `radius="auto"`: the blind square reaches every lag whose noise correlation is at least this.
CORRELATION_BELOW = 0.1


def correlation_radius(noise, below: float = CORRELATION_BELOW) -> int:
    """The largest lag (in the max norm) at which the correlation of `noise` is at least `below` in magnitude, over
    all of a batch's models; 0 for white noise or none."""
    if noise is None or noise.white:
        return 0
    side = noise.side
    corr = np.abs(noise.correlation(2 * side - 1)).reshape(-1, 2 * side - 1, 2 * side - 1).max(0)
    lags = np.argwhere(corr >= below * corr[side - 1, side - 1]) - (side - 1)
    return int(np.abs(lags).max()) if len(lags) else 0

_CROSS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])


class Noise2Self(Loss):
    name = "n2s"
    needs_noise = False
    j_invariant = True

    def __init__(self, grid: int | str = "auto", radius: int | str = "auto"):
        super().__init__()
        if not (radius == "auto" or (isinstance(radius, int) and not isinstance(radius, bool) and radius >= 0)):
            raise ValueError(f"radius is a whole number of pixels (0: one pixel) or auto, not {radius!r}")
        if not (grid == "auto" or (is_count(grid) and grid >= 2)):
            raise ValueError(f"grid is a whole number of pixels, at least 2, or auto, not {grid!r}")
        if grid != "auto" and radius != "auto" and radius > 0 and grid < 2 * radius + 2:
            raise ValueError(f"grid {grid} is too fine for radius {radius}: give at least {2 * radius + 2}")
        self.grid, self.radius = grid, radius

    def options(self):
        return {"grid": self.grid, "radius": self.radius}

    def adapt(self, y, physics=DENOISING):
        if self.radius == "auto":
            self.radius = correlation_radius(physics.noise)
        self.grid = self._settled()[0]

    def _settled(self) -> tuple[int, int]:
        """`(grid, radius)`: "auto" as for white noise where `adapt` did not run (the loss used on its own), and a
        grid too fine for the radius widened to `2 radius + 2`."""
        radius = 0 if self.radius == "auto" else self.radius
        if radius == 0:
            return (3 if self.grid == "auto" else self.grid), 0
        return (2 * radius + 2 if self.grid == "auto" else max(self.grid, 2 * radius + 2)), radius

    def _mask(self, y, phases):
        """(B,1,H,W) mask: pixels with (row - pi) % grid == 0 and (col - pj) % grid == 0."""
        _, _, h, w = y.shape
        grid = self._settled()[0]
        rows = torch.arange(h, device=y.device)[None, :, None]
        cols = torch.arange(w, device=y.device)[None, None, :]
        pi, pj = phases[:, 0, None, None], phases[:, 1, None, None]
        m = ((rows - pi) % grid == 0) & ((cols - pj) % grid == 0)
        return m[:, None].to(y.dtype)

    def _masked_input(self, y, m):
        """`y` with each masked pixel hidden: by the mean of its four neighbours, or with a `radius`, the square of
        that radius around it by the mean of the ring just outside the square."""
        r, c = self._settled()[1], y.shape[1]
        if r == 0:
            k = _CROSS.to(y)[None, None].expand(c, 1, 3, 3)
            interp = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), k, groups=c)
            return y * (1 - m) + interp * m
        side = 2 * r + 3
        ring = torch.ones(side, side, dtype=y.dtype, device=y.device)
        ring[1:-1, 1:-1] = 0
        ring = ring[None, None].expand(c, 1, side, side)
        inside = F.conv2d(F.pad(torch.ones_like(y), (r + 1,) * 4), ring, groups=c)  # (at a border: the ring's part
        fill = F.conv2d(F.pad(y, (r + 1,) * 4), ring, groups=c) / inside * m  # in the image, never a square's pixel)
        box = torch.ones(c, 1, 2 * r + 1, 2 * r + 1, dtype=y.dtype, device=y.device)
        square = F.conv2d(F.pad(m.expand_as(y), (r,) * 4), box, groups=c).clamp_max(1)  # (squares do not overlap)
        spread = F.conv2d(F.pad(fill, (r,) * 4), box, groups=c)
        return y * (1 - square) + spread * square

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        phases = torch.randint(0, self._settled()[0], (y.shape[0], 2), generator=generator, device=y.device)
        m = self._mask(y, phases)
        out = model(self._masked_input(y, m))
        value = (m * (out - y) ** 2).sum() / (m.sum() * y.shape[1])
        return LossOutput(value, {"masked_fraction": float(m.mean())})

    def predict(self, model, y, physics=DENOISING, generator=None):
        out, grid = torch.zeros_like(y), self._settled()[0]
        for pi in range(grid):
            for pj in range(grid):
                phases = torch.tensor([[pi, pj]], device=y.device).expand(y.shape[0], 2)
                m = self._mask(y, phases)
                out += m * model(self._masked_input(y, m))
        return out
