"""A trained reconstructor: network + loss (with its test-time rule) + normalisation + noise model.

`Reconstructor.predict(frame)` and `.risk(frame)` work on whole 2-D frames in the data's units,
tile by tile, so memory does not grow with the image. With `tta` (the default) each tile's test-time rule is
averaged over the symmetries of the square that the noise allows (`tta.symmetries`), and the risk estimate is that
average's.

With `blend` (the default) the output is `y + alpha (f(y) - y)`: the rule's reconstruction `f` moved back towards the
measurement by the weight `alpha` that `fit` found to minimise the estimated risk on a few whole frames
(`blend_weight`, recorded in the checkpoint as `blend`, one weight with and one without `tta`). SURE is affine in the
output apart from the data term, so the risk of every blend follows from three numbers of `f` alone (`blend_risk`).
A J-invariant rule (Noise2Self) has thrown away each pixel's own value, which at high signal-to-noise holds most of
what there is to know: there the weight puts it back (BSD68 crops at 300 photons: 29.0 dB to 33.8, the noisy input
32.4). A rule that already uses the pixel gets a weight near 1 where its network is far better than the input, and
moves towards the input where it is not.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from ..data import Normalization
from ..losses import Loss, build_loss, earlier_defaults, sure_mse
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
    blend: dict | None = None  # the checkpoint's `blend`: {"tta": alpha, "single": alpha}; None: no blend

    @classmethod
    def from_checkpoint(cls, state: dict, device: torch.device, tile_size: int | None = None,
                        loss_options: dict | None = None, tta: bool = True, blend: bool = True) -> "Reconstructor":
        model = UNet(UNetConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
        model.to(device).eval()
        norm = Normalization(**state["normalization"])
        recorded = state["loss_options"]
        opts = {**earlier_defaults(state["loss"], recorded), **recorded, **(loss_options or {})}
        loss = build_loss(state["loss"], **opts)
        if state.get("loss_state"):
            loss.load_state_dict(state["loss_state"])
        loss.to(device)
        return cls(model, loss, norm, device, tile_size, tta, state.get("blend") if blend else None)

    @property
    def alpha(self) -> float:
        """The weight of the rule's reconstruction against the measurement (1: the rule's alone)."""
        return 1.0 if self.blend is None else float(self.blend["tta" if self.tta else "single"])

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

    def _apply(self, y: np.ndarray, physics: Denoising, seed: int, autocast: bool, alpha: float = 1.0,
               terms: bool = False) -> np.ndarray:
        """The test-time rule averaged over the symmetries, tile by tile (normalised units), blended with the
        measurement by `alpha`; a rule that draws noise draws it from one stream seeded by `seed`. `terms` (a loss
        with its own risk, unblended): the rule and its risk terms (`predict_and_terms`) as two channels, averaged
        together."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        ctx = autocast_context(self.device) if autocast else torch.autocast("cpu", enabled=False)
        group, shared = self._symmetries(physics)

        def rule(v):
            if terms:
                return torch.cat(self.loss.predict_and_terms(self.model, v, physics, generator=g, **shared), 1)
            return self.loss.predict(self.model, v, physics, generator=g, **shared)

        def fn(t):
            t = t.to(self.device)
            with ctx:
                f = averaged(rule, t, group)
            return f if alpha == 1 else t + alpha * (f - t)

        batch = 8 if self.device.type == "cuda" else 1
        return tiled_apply(fn, y, tile=self._tile(), margin=self._margin(), multiple=self.model.multiple,
                           device=self.device, batch=batch)

    def blend_weight(self, frames: Iterable[tuple[np.ndarray, NoiseModel]], seed: int = 0) -> float:
        """The weight `alpha` in [0, 1] that minimises the estimated risk of `y + alpha (f(y) - y)` over `frames` (each
        a frame in data units with its noise model; best held out from training), pooled by pixel count."""
        sums = np.zeros(3)
        for k, (frame, noise) in enumerate(frames):
            _, _, s, step, trace = self._frame_terms(frame, self._physics(noise), seed + k)
            sums += np.array([float(s[0]), float(step), float(trace)]) * np.size(frame)
        return best_blend(*sums)

    def predict(self, frame: np.ndarray, noise: NoiseModel, seed: int = 0) -> np.ndarray:
        """The test-time reconstruction of one frame with noise model `noise` (data units), as float32."""
        y = self.norm(np.asarray(frame, dtype=np.float32))
        return self.norm.denormalize(self._apply(y, self._physics(noise), seed, autocast=True, alpha=self.alpha))

    def risk(self, frame: np.ndarray, noise: NoiseModel, seed: int = 0,
             correlation: NoiseModel | None = None) -> tuple[float, np.ndarray]:
        """Self-supervised estimate of the MSE of the test-time reconstruction of `frame` against the clean
        frame (data units^2), and that reconstruction (float32, data units), computed once for both. `correlation`
        (data units): `sure_mse`'s, for noise whose white model leaves out a correlation (not with a loss's own
        risk)."""
        y, fy, s, step, trace = self._frame_terms(frame, self._physics(noise), seed, correlation)
        a = self.alpha
        mse = blend_risk(float(s[0]), float(step), float(trace), a)
        return mse * self.norm.scale**2, self.norm.denormalize((y + a * (fy - y))[0, 0].numpy())

    def _frame_terms(self, frame: np.ndarray, physics: Denoising, seed: int,
                     correlation: NoiseModel | None = None) -> tuple[torch.Tensor, ...]:
        """What `blend_risk` needs, of the rule's tiled reconstruction `f` of `frame` (data units): the normalised
        frame `y` (1, 1, H, W), `f(y)`, the risk estimate of `f` (SURE, or the loss's own, `predict_and_terms`), the
        mean squared step `|f(y) - y|^2` and the noise's trace term `V` (normalised units)."""
        y = torch.from_numpy(self.norm(np.asarray(frame, dtype=np.float32)))[None, None]
        trace = physics.noise.stein_weight(y).mean()
        if self.loss.own_risk:  # the prediction and its risk terms, tiled and averaged over the symmetries together
            fy, rest = torch.from_numpy(self._apply(y[0, 0].numpy(), physics, seed, autocast=False, terms=True))
            fy = fy[None, None]
            step = ((fy - y) ** 2).mean()
            return y, fy, (step + rest.double().mean()).reshape(1), step, trace

        def apply(v):
            return torch.from_numpy(self._apply(v[0, 0].numpy(), physics, seed, autocast=False))[None, None]

        fy = apply(y)
        g = torch.Generator().manual_seed(seed + 1)
        s = sure_mse(lambda v: fy if v is y else apply(v), y, physics.noise, generator=g,
                     divergence=not self.loss.j_invariant,
                     correlation=None if correlation is None else self._physics(correlation).noise)
        return y, fy, s, ((fy - y) ** 2).mean(), trace


def blend_risk(sure: float, step: float, trace: float, alpha: float) -> float:
    """The risk estimate of `y + alpha (f(y) - y)` from `f`'s: `sure` (SURE of `f`), `step` (`|f(y) - y|^2`) and
    `trace` (`V`, the noise's trace term). SURE of a blend is `alpha^2 step - V + 2 div`, with the divergence term
    `(1 - alpha) V + alpha div f` (the identity's is `V`), so it is the quadratic
    `alpha^2 step + V + alpha (sure - step - V)`: 1 gives `sure`, 0 the input's `V`."""
    return alpha**2 * step + trace + alpha * (sure - step - trace)


def best_blend(sure: float, step: float, trace: float) -> float:
    """The `alpha` in [0, 1] that minimises `blend_risk`."""
    if step <= 0:
        return 1.0
    return float(min(1.0, max(0.0, (step + trace - sure) / (2 * step))))
