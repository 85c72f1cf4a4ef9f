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

Cost per step: one network pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..physics import DENOISING
from .base import Loss, LossOutput

_CROSS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])


class Noise2Self(Loss):
    name = "n2s"
    needs_noise = False
    j_invariant = True

    def __init__(self, grid: int = 3):
        super().__init__()
        self.grid = grid

    def options(self):
        return {"grid": self.grid}

    def _mask(self, y, phases):
        """(B,1,H,W) mask: pixels with (row - pi) % grid == 0 and (col - pj) % grid == 0."""
        _, _, h, w = y.shape
        rows = torch.arange(h, device=y.device)[None, :, None]
        cols = torch.arange(w, device=y.device)[None, None, :]
        pi, pj = phases[:, 0, None, None], phases[:, 1, None, None]
        m = ((rows - pi) % self.grid == 0) & ((cols - pj) % self.grid == 0)
        return m[:, None].to(y.dtype)

    def _masked_input(self, y, m):
        k = _CROSS.to(y)[None, None].expand(y.shape[1], 1, 3, 3)
        interp = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), k, groups=y.shape[1])
        return y * (1 - m) + interp * m

    def forward(self, model, y, physics=DENOISING, generator=None) -> LossOutput:
        phases = torch.randint(0, self.grid, (y.shape[0], 2), generator=generator, device=y.device)
        m = self._mask(y, phases)
        out = model(self._masked_input(y, m))
        value = (m * (out - y) ** 2).sum() / (m.sum() * y.shape[1])
        return LossOutput(value, {"masked_fraction": float(m.mean())})

    def predict(self, model, y, physics=DENOISING, generator=None):
        out = torch.zeros_like(y)
        for pi in range(self.grid):
            for pj in range(self.grid):
                phases = torch.tensor([[pi, pj]], device=y.device).expand(y.shape[0], 2)
                m = self._mask(y, phases)
                out += m * model(self._masked_input(y, m))
        return out
