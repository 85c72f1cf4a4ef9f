"""Self-supervised losses, keyed by their command-line name."""
from __future__ import annotations

import inspect
import json

from ..errors import ConfigError
from .base import Loss, LossOutput, sure_mse
from .n2s import Noise2Self
from .pg import GR2RPoisson, PgSure
from .r2r import R2RGaussian
from .sure import SureGaussian
from .unsure import PgUnsure, Unsure

LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (SureGaussian, PgSure, Unsure, PgUnsure, R2RGaussian,
                                                            GR2RPoisson, Noise2Self)}

__all__ = ["LOSSES", "Loss", "LossOutput", "build_loss", "earlier_defaults", "parse_options", "sure_mse"]


def build_loss(name: str, **options) -> Loss:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'", fix=f"choose --loss from: {', '.join(LOSSES)}")
    try:
        return LOSSES[name](**options)
    except TypeError as e:  # an option the loss does not take
        cls = LOSSES[name]
        known = ", ".join(k for k in inspect.signature(cls).parameters if k not in cls.internal_options) or "none"
        raise ConfigError(f"bad option for loss {name}: {e}", fix=f"its options are: {known}") from None
    except ValueError as e:  # a value it refuses: the message names what it takes
        raise ConfigError(f"bad option for loss {name}: {e}",
                          fix="give a value the message names (`sslrecon fit --help`, --loss-option, lists them)") from None


def earlier_defaults(name: str, recorded: dict) -> dict:
    """For a checkpoint of loss `name` whose recorded options are `recorded`: the options it lacks because they were
    added after it was written, with the value such a run was trained with (`Loss.saved_defaults`)."""
    saved = LOSSES[name].saved_defaults if name in LOSSES else {}
    return {k: v for k, v in saved.items() if k not in recorded}


def parse_options(items: list[str]) -> dict:
    """`KEY=VALUE` strings (`--loss-option`) as a dict; values are read as JSON where they parse (numbers,
    true/false), else kept as text."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"loss option '{item}' is not KEY=VALUE", fix="write e.g. --loss-option second_order=true")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options
