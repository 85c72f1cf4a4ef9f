"""Forward operators, each carrying the noise model of its measurements (`physics.noise`).

Denoising is the identity; MRI, blur, inpainting and CT come later.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..noise.models import NoiseModel


@dataclass(frozen=True)
class Denoising:
    """`y = noise(x)`: the identity operator (`A = A^T = I`) with the measurements' noise model."""

    noise: NoiseModel | None = None
    #: For each sample of a batch, the input file it comes from (losses that learn per-file noise use it).
    sources: list[int] | None = None
    name = "identity"

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


DENOISING = Denoising()
