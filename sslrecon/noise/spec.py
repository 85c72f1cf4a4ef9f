"""Parsing `--noise` specifications: `gaussian:sigma=V`, `poisson:gain=V[,offset=V]`,
`pg:gain=V,sigma=V[,offset=V]` (data units), or `auto` (estimated from the measurements)."""
from __future__ import annotations

import math
from dataclasses import MISSING, fields

from ..errors import NoiseSpecError
from .models import MODELS, NoiseModel

FORMS = "gaussian:sigma=V, poisson:gain=V[,offset=V], pg:gain=V,sigma=V[,offset=V], or auto"
_POSITIVE = {"sigma", "gain"}


def parse(spec: str) -> NoiseModel | None:
    """Parse a noise spec; returns None for `auto`. Raises NoiseSpecError naming the valid forms."""
    spec = spec.strip()
    if spec.lower() == "auto":
        return None
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in MODELS:
        raise NoiseSpecError(f"unknown noise model '{name}' in --noise '{spec}'", fix=f"use {FORMS}")
    cls = MODELS[name]
    allowed = {f.name: f for f in fields(cls)}
    values: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in allowed:
            raise NoiseSpecError(f"bad parameter '{item}' in --noise '{spec}' (the {name} model takes "
                                 f"{', '.join(allowed)})", fix=f"use {FORMS}")
        try:
            v = float(val)
        except ValueError:
            raise NoiseSpecError(f"'{val}' is not a number in --noise '{spec}'", fix=f"use {FORMS}") from None
        if not math.isfinite(v) or (key in _POSITIVE and v <= 0):
            raise NoiseSpecError(f"{key} must be a finite{' positive' if key in _POSITIVE else ''} number "
                                 f"in --noise '{spec}'", fix=f"use {FORMS}")
        values[key] = v
    missing = [k for k, f in allowed.items() if k not in values and f.default is MISSING]
    if missing:
        raise NoiseSpecError(f"--noise '{spec}' lacks {', '.join(missing)}", fix=f"use {FORMS}")
    return cls(**values)

