"""Noise models (data units), `--noise` spec parsing, and estimation from the measurements."""
from .estimate import estimate_auto as estimate_noise
from .models import MODELS, Gaussian, NoiseModel, Poisson, PoissonGaussian
from .spec import FORMS, parse as parse_noise

__all__ = ["MODELS", "FORMS", "Gaussian", "NoiseModel", "Poisson", "PoissonGaussian", "estimate_noise", "parse_noise"]
