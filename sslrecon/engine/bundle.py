"""A trained reconstructor: network + loss (with its test-time rule) + normalisation + noise model.

`Reconstructor.predict(frame)` and `.risk(frame)` work on whole 2-D frames in the data's units,
tile by tile, so memory does not grow with the image. With `tta` (the default) each tile's test-time rule is
averaged over the symmetries of the square that the noise allows (`tta.symmetries`), and the risk estimate is that
average's.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..data import Normalization
from ..losses import Loss, build_loss, sure_mse
from ..losses.base import is_count
from ..models import UNet, UNetConfig
from ..noise.models import NoiseModel
from ..physics import Denoising
from .infer import auto_tile_size, tiled_apply
from .train import autocast_context
from .tta import IDENTITY, Symmetry, averaged, symmetries


def file_seed(seed: int, name: str) -> int:
    """Per-file seed derived from the run seed and the file name."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


@dataclass
class Reconstructor:
    model: UNet
    loss: Loss
    norm: Normalization
    device: torch.device
    tile_size: int | None = None
    tta: bool = True

    @classmethod
    def from_checkpoint(cls, state: dict, device: torch.device, tile_size: int | None = None,
                        loss_options: dict | None = None, tta: bool = True) -> "Reconstructor":
        model = UNet(UNetConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
        model.to(device).eval()
        norm = Normalization(**state["normalization"])
        opts = {**state["loss_options"], **(loss_options or {})}
        loss = build_loss(state["loss"], **opts)
        if state.get("loss_state"):
            loss.load_state_dict(state["loss_state"])
        loss.to(device)
        return cls(model, loss, norm, device, tile_size, tta)

    def _tile(self) -> int:
        passes = 2 if self.tta or "test_samples" in self.loss.options() else 1  # a running average beside each pass
        return self.tile_size or auto_tile_size(self.model.config.width, self.model.multiple, self.device, passes)

    def _margin(self) -> int:
        return self.model.receptive_radius() + 8

    def _physics(self, noise: NoiseModel) -> Denoising:
        return Denoising(noise.rescaled(self.norm.shift, self.norm.scale))

    def _symmetries(self, physics: Denoising) -> tuple[tuple[Symmetry, ...], dict]:
        """The symmetries to average over, and the test-time rule's keyword arguments: a rule that averages
        `test_samples` noise draws shares them out among the symmetries (at least one each), so that averaging over
        both costs about the passes of either."""
        group = symmetries(physics.noise) if self.tta else (IDENTITY,)
        k = self.loss.options().get("test_samples")
        return group, {"samples": max(1, round(k / len(group)))} if is_count(k) and len(group) > 1 else {}

    def _apply(self, y: np.ndarray, physics: Denoising, seed: int, autocast: bool) -> np.ndarray:
        g = torch.Generator(device=self.device).manual_seed(seed)
        ctx = autocast_context(self.device) if autocast else torch.autocast("cpu", enabled=False)
        group, shared = self._symmetries(physics)

        def fn(t):
            with ctx:
                return averaged(lambda v: self.loss.predict(self.model, v, physics, generator=g, **shared),
                                t.to(self.device), group)

        batch = 8 if self.device.type == "cuda" else 1
        return tiled_apply(fn, y, tile=self._tile(), margin=self._margin(), multiple=self.model.multiple,
                           device=self.device, batch=batch)

    def predict(self, frame: np.ndarray, noise: NoiseModel, seed: int = 0) -> np.ndarray:
        """The test-time reconstruction of one frame with noise model `noise` (data units), as float32."""
        y = self.norm(np.asarray(frame, dtype=np.float32))
        return self.norm.denormalize(self._apply(y, self._physics(noise), seed, autocast=True))

    def risk(self, frame: np.ndarray, noise: NoiseModel, seed: int = 0,
             correlation: NoiseModel | None = None) -> tuple[float, np.ndarray]:
        """Self-supervised estimate of the MSE of the test-time reconstruction of `frame` against the clean
        frame (data units^2), and that reconstruction (float32, data units), computed once for both. `correlation`
        (data units): `sure_mse`'s, for noise whose white model leaves out a correlation (not with a loss's own
        risk)."""
        physics = self._physics(noise)
        if self.loss.own_risk:  # the loss's own per-pixel risk map, tiled beside its prediction
            g = torch.Generator(device=self.device).manual_seed(seed)
            group, shared = self._symmetries(physics)

            def both(t):
                return averaged(lambda v: torch.cat(self.loss.predict_and_risk(self.model, v, physics, generator=g,
                                                                               **shared), 1),
                                t.to(self.device), group)

            pred, risk = tiled_apply(both, self.norm(np.asarray(frame, dtype=np.float32)), tile=self._tile(),
                                     margin=self._margin(), multiple=self.model.multiple, device=self.device)
            return float(risk.mean()) * self.norm.scale**2, self.norm.denormalize(pred)
        y = torch.from_numpy(self.norm(np.asarray(frame, dtype=np.float32)))[None, None]

        def apply(v):
            return torch.from_numpy(self._apply(v[0, 0].numpy(), physics, seed, autocast=False))[None, None]

        fy = apply(y)
        g = torch.Generator().manual_seed(seed + 1)
        mse = sure_mse(lambda v: fy if v is y else apply(v), y, physics.noise, generator=g,
                       divergence=not self.loss.j_invariant,
                       correlation=None if correlation is None else self._physics(correlation).noise)
        return float(mse[0]) * self.norm.scale**2, self.norm.denormalize(fy[0, 0].numpy())
