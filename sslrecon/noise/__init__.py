"""Noise models (data units), `--noise` spec parsing, and estimation from the measurements."""
from .estimate import NoiseReport
from .estimate import analyze as analyze_noise
from .estimate import estimate_auto as estimate_noise
from .models import (
    MODELS,
    Correlated,
    Gamma,
    Gaussian,
    NoiseModel,
    Poisson,
    PoissonGaussian,
)
from .spec import FORMS, AutoNoise
from .spec import parse as parse_noise

__all__ = [
    "FORMS",
    "MODELS",
    "AutoNoise",
    "Correlated",
    "Gamma",
    "Gaussian",
    "NoiseModel",
    "NoiseReport",
    "Poisson",
    "PoissonGaussian",
    "analyze_noise",
    "estimate_noise",
    "parse_noise",
]
