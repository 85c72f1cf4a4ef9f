"""Parsing `--noise` specifications: `gaussian:sigma=V`, `poisson:gain=V[,offset=V]`,
`pg:gain=V,sigma=V[,offset=V]`, `gamma:looks=V[,offset=V]`, `corr:sigma=V,kernel=FILE` or
`corr:sigma=V,size=N` (data units), or `auto[:offset=V]` (estimated from the measurements; a known
dark level separates the offset from the read noise, which the measurements alone cannot).

A correlated-noise kernel comes from a file (`.npy`, or text that numpy.loadtxt reads) holding a square
2-D array with an odd side, or is an N x N box (`size=N`: white noise averaged over N x N neighbourhoods);
either way it is normalised so that `sigma` is the per-pixel standard deviation."""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import NoiseSpecError
from .models import MODELS, Correlated, NoiseModel

FORMS = ("gaussian:sigma=V, poisson:gain=V[,offset=V], pg:gain=V,sigma=V[,offset=V], gamma:looks=V[,offset=V], "
         "corr:sigma=V,kernel=FILE, corr:sigma=V,size=N, or auto[:offset=V]")
_POSITIVE = {"sigma", "gain", "looks"}
_KERNEL_FIX = "give a .npy file, or a text file numpy.loadtxt reads, holding a square 2-D array with an odd side"


@dataclass(frozen=True)
class AutoNoise:
    """`--noise auto`: estimate the model from the measurements, with the dark level if known."""

    offset: float | None = None


def parse(spec: str) -> NoiseModel | AutoNoise:
    """Parse a noise spec (`AutoNoise` for `auto`). Raises NoiseSpecError naming the valid forms."""
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    if head.strip().lower() == "auto":
        return _parse_auto(spec, rest)
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in MODELS:
        raise NoiseSpecError(f"unknown noise model '{name}' in --noise '{spec}'", fix=f"use {FORMS}")
    cls = MODELS[name]
    allowed = {f.name: f for f in fields(cls)}
    if cls is Correlated:
        allowed["size"] = None
    values: dict[str, float] = {}
    kernel_args: dict[str, str] = {}  # kernel=FILE or size=N, read once the numbers are checked
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in allowed:
            raise NoiseSpecError(f"bad parameter '{item}' in --noise '{spec}' (the {name} model takes "
                                 f"{', '.join(allowed)})", fix=f"use {FORMS}")
        if key in ("kernel", "size"):
            kernel_args[key] = val.strip()
            continue
        try:
            v = float(val)
        except ValueError:
            raise NoiseSpecError(f"'{val}' is not a number in --noise '{spec}'", fix=f"use {FORMS}") from None
        if not math.isfinite(v) or (key in _POSITIVE and v <= 0):
            raise NoiseSpecError(f"{key} must be a finite{' positive' if key in _POSITIVE else ''} number "
                                 f"in --noise '{spec}'", fix=f"use {FORMS}")
        values[key] = v
    missing = [k for k, f in allowed.items() if f and k != "kernel" and k not in values and f.default is MISSING]
    if missing:
        raise NoiseSpecError(f"--noise '{spec}' lacks {', '.join(missing)}", fix=f"use {FORMS}")
    if cls is Correlated:
        if len(kernel_args) != 1:
            raise NoiseSpecError(f"--noise '{spec}' needs one of kernel=FILE or size=N", fix=f"use {FORMS}")
        values["kernel"] = _read_kernel(kernel_args["kernel"]) if "kernel" in kernel_args \
            else _box(kernel_args["size"], spec)
    return cls(**values)


def _parse_auto(spec: str, rest: str) -> AutoNoise:
    offset = None
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, eq, val = item.partition("=")
        if key.strip().lower() != "offset" or not eq:
            raise NoiseSpecError(f"bad parameter '{item}' in --noise '{spec}' (auto takes offset)", fix=f"use {FORMS}")
        try:
            offset = float(val)
        except ValueError:
            raise NoiseSpecError(f"'{val}' is not a number in --noise '{spec}'", fix=f"use {FORMS}") from None
        if not math.isfinite(offset):
            raise NoiseSpecError(f"offset must be finite in --noise '{spec}'", fix=f"use {FORMS}")
    return AutoNoise(offset)


def _box(val: str, spec: str) -> np.ndarray:
    """An N x N uniform kernel: white noise averaged over N x N neighbourhoods."""
    try:
        n = float(val)
    except ValueError:
        n = math.nan
    if not (n.is_integer() and n >= 1 and n % 2 == 1):
        raise NoiseSpecError(f"size must be an odd whole number >= 1, not '{val}', in --noise '{spec}'",
                             fix="use corr:sigma=V,size=N with N = 1, 3, 5, ...")
    return np.ones((int(n), int(n)))


def _read_kernel(val: str) -> np.ndarray:
    path = Path(val).expanduser()
    if not path.is_file():
        raise NoiseSpecError("kernel file not found", path=path,
                             fix="check the path in kernel=FILE, or use corr:sigma=V,size=N for a box kernel")
    try:
        k = np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=2)
        k = np.asarray(k, dtype=float)
    except (OSError, ValueError, TypeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NoiseSpecError(f"cannot read the kernel ({reason})", path=path, fix=_KERNEL_FIX) from None
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise NoiseSpecError(f"the kernel has shape {k.shape}, not a square with an odd side", path=path,
                             fix=_KERNEL_FIX)
    if not np.isfinite(k).all():
        raise NoiseSpecError("the kernel holds non-finite values (nan or inf)", path=path, fix=_KERNEL_FIX)
    if not k.any():
        raise NoiseSpecError("the kernel is all zeros", path=path, fix=_KERNEL_FIX)
    return k
