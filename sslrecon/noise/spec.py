"""Parsing `--noise` specifications: `gaussian:sigma=V`, `gaussian:sigma_per_frame=FILE`, `poisson:gain=V[,offset=V]`,
`pg:gain=V,sigma=V[,offset=V]`, `gamma:looks=V[,offset=V]`, `corr:sigma=V,kernel=FILE`,
`corr:sigma=V,size=N` or `corr:sigma=V,psd=FILE` (each with an optional `gain=V[,offset=V]`: a level that follows
the signal), all in data units, or `auto[:offset=V]` (estimated from the
measurements; a known dark level separates the offset from the read noise, which the measurements alone cannot).

A correlated-noise kernel comes from a file (`.npy`, or text that numpy.loadtxt reads) holding a square
2-D array with an odd side, or is an N x N box (`size=N`: white noise averaged over N x N neighbourhoods),
or comes from a 2-D power spectrum in such a file (`psd=FILE`: any shape of at least 3 x 3, non-negative, zero
frequency at the centre, index (H // 2, W // 2), as `numpy.fft.fftshift(abs(numpy.fft.fft2(noise)) ** 2)` gives;
see `models.kernel_from_psd`); either way it is normalised so that `sigma` is the per-pixel standard deviation
(of a spectrum only the shape matters). `sigma_per_frame=FILE` gives a stack's Gaussian level frame by frame (a
tilt or exposure series): one positive value per frame in such a file (what `sslrecon noise` reports as
`sigma_per_frame`)."""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import NoiseSpecError
from .models import MODELS, Correlated, Gaussian, NoiseModel, PerFrame, kernel_from_psd

FORMS = ("gaussian:sigma=V, gaussian:sigma_per_frame=FILE, poisson:gain=V[,offset=V], pg:gain=V,sigma=V[,offset=V], "
         "gamma:looks=V[,offset=V], corr:sigma=V,kernel=FILE, corr:sigma=V,size=N, corr:sigma=V,psd=FILE "
         "(corr also with gain=V[,offset=V]), or auto[:offset=V]")
_POSITIVE = {"sigma", "gain", "looks"}
_KERNEL_FIX = "give a .npy file, or a text file numpy.loadtxt reads, holding a square 2-D array with an odd side"
_PSD_FIX = ("give a .npy file, or a text file numpy.loadtxt reads, holding a 2-D power spectrum of at least 3 x 3 "
            "non-negative finite values, not all zero, zero frequency at the centre")


@dataclass(frozen=True)
class AutoNoise:
    """`--noise auto`: estimate the model from the measurements, with the dark level if known."""

    offset: float | None = None


def parse(spec: str) -> NoiseModel | PerFrame | AutoNoise:
    """Parse a noise spec (`AutoNoise` for `auto`). Raises NoiseSpecError naming the valid forms."""
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    if head.strip().lower() == "auto":
        return _parse_auto(spec, rest)
    key, eq, val = rest.strip().partition("=")
    if head.strip().lower() == "gaussian" and key.strip().lower() == "sigma_per_frame" and eq:
        return _per_frame(val.strip())
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in MODELS:
        raise NoiseSpecError(f"unknown noise model '{name}' in --noise '{spec}'", fix=f"use {FORMS}")
    cls = MODELS[name]
    allowed = {f.name: f for f in fields(cls)}
    if cls is Correlated:
        allowed["size"] = allowed["psd"] = None
    values: dict[str, float] = {}
    kernel_args: dict[str, str] = {}  # kernel=FILE, size=N or psd=FILE, read once the numbers are checked
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in allowed:
            raise NoiseSpecError(f"bad parameter '{item}' in --noise '{spec}' (the {name} model takes "
                                 f"{', '.join(allowed)})", fix=f"use {FORMS}")
        if key in ("kernel", "size", "psd"):
            kernel_args[key] = val.strip()
            continue
        values[key] = _number(key, val, spec)
    missing = [k for k, f in allowed.items() if f and k != "kernel" and k not in values and f.default is MISSING]
    if missing:
        raise NoiseSpecError(f"--noise '{spec}' lacks {', '.join(missing)}", fix=f"use {FORMS}")
    if cls is Correlated:
        if len(kernel_args) != 1:
            raise NoiseSpecError(f"--noise '{spec}' needs exactly one of kernel=FILE, size=N or psd=FILE",
                                 fix=f"use {FORMS}")
        [(key, val)] = kernel_args.items()
        kernel = _box(val, spec) if key == "size" else _read_array(val, key)
        values["kernel"] = kernel_from_psd(kernel) if key == "psd" else kernel
    return cls(**values)


def _parse_auto(spec: str, rest: str) -> AutoNoise:
    offset = None
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, eq, val = item.partition("=")
        if key.strip().lower() != "offset" or not eq:
            raise NoiseSpecError(f"bad parameter '{item}' in --noise '{spec}' (auto takes offset)", fix=f"use {FORMS}")
        offset = _number("offset", val, spec)
    return AutoNoise(offset)


def _per_frame(val: str) -> PerFrame:
    """`gaussian:sigma_per_frame=FILE`: one Gaussian sigma per frame, from a file of positive numbers."""
    fix = "give a .npy file, or a text file numpy.loadtxt reads, holding one positive sigma per frame"
    path = Path(val).expanduser()
    head, _, extra = val.partition(",")
    if not path.is_file() and extra and Path(head).expanduser().is_file():  # e.g. sigma_per_frame=F,offset=1
        raise NoiseSpecError(f"gaussian:sigma_per_frame=FILE takes no other keys (',{extra}' in --noise)",
                             fix="give the per-frame sigmas alone: --noise gaussian:sigma_per_frame=FILE")
    if not path.is_file():
        raise NoiseSpecError("per-frame sigma file not found", path=path, fix=fix)
    a = _load(path, "per-frame sigmas", fix, ndmin=1).ravel()
    if a.size == 0 or not (np.isfinite(a) & (a > 0)).all():
        raise NoiseSpecError("the per-frame sigmas must be finite positive numbers, at least one", path=path, fix=fix)
    return PerFrame(tuple(Gaussian(sigma=float(v)) for v in a))


def _number(key: str, val: str, spec: str) -> float:
    """The value of `key=val`: a finite number, positive for sigma, gain and looks."""
    try:
        v = float(val)
    except ValueError:
        raise NoiseSpecError(f"'{val}' is not a number in --noise '{spec}'", fix=f"use {FORMS}") from None
    if not math.isfinite(v) or (key in _POSITIVE and v <= 0):
        raise NoiseSpecError(f"{key} must be a finite{' positive' if key in _POSITIVE else ''} number "
                             f"in --noise '{spec}'", fix=f"use {FORMS}")
    return v


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


def _read_array(val: str, key: str) -> np.ndarray:
    """The kernel (`key` 'kernel') or power spectrum ('psd') in a .npy file or a text file numpy.loadtxt reads."""
    what, fix = ("kernel", _KERNEL_FIX) if key == "kernel" else ("power spectrum", _PSD_FIX)
    path = Path(val).expanduser()
    if not path.is_file():
        raise NoiseSpecError(f"{what} file not found", path=path,
                             fix=f"check the path in {key}=FILE, or use corr:sigma=V,size=N for a box kernel")
    a = _load(path, what, fix, ndmin=2)
    if key == "kernel" and (a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] % 2 == 0):
        raise NoiseSpecError(f"the kernel has shape {a.shape}, not a square with an odd side", path=path, fix=fix)
    if key == "psd" and (a.ndim != 2 or min(a.shape) < 3):
        raise NoiseSpecError(f"the power spectrum has shape {a.shape}, not 2-D of at least 3 x 3", path=path, fix=fix)
    if not np.isfinite(a).all():
        raise NoiseSpecError(f"the {what} holds non-finite values (nan or inf)", path=path, fix=fix)
    if key == "psd" and (a < 0).any():
        raise NoiseSpecError("the power spectrum holds negative values", path=path, fix=fix)
    if not a.any():
        raise NoiseSpecError(f"the {what} is all zeros", path=path, fix=fix)
    return a


def _load(path: Path, what: str, fix: str, ndmin: int) -> np.ndarray:
    """A float array from a .npy file or a text file numpy.loadtxt reads; an unreadable one is a NoiseSpecError."""
    try:
        a = np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=ndmin)
        return np.asarray(a, dtype=float)
    except (OSError, ValueError, TypeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NoiseSpecError(f"cannot read the {what} ({reason})", path=path, fix=fix) from None
