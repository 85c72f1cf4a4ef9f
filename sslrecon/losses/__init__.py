"""Self-supervised losses, keyed by their command-line name."""
from __future__ import annotations

from ..errors import ConfigError
from .base import Loss, LossOutput, sure_mse
from .n2s import Noise2Self
from .r2r import R2RGaussian
from .sure import SureGaussian

LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (SureGaussian, R2RGaussian, Noise2Self)}

__all__ = ["LOSSES", "Loss", "LossOutput", "build_loss", "sure_mse"]


def build_loss(name: str, **options) -> Loss:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'", fix=f"choose --loss from: {', '.join(LOSSES)}")
    return LOSSES[name](**options)
