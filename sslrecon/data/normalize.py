"""The affine normalisation `x' = (x - shift) / scale`, computed once from the inputs and stored."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Normalization:
    shift: float
    scale: float

    def __call__(self, x):
        return (x - self.shift) / self.scale

    def denormalize(self, x):
        return x * self.scale + self.shift

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_frames(cls, frames: Iterable[np.ndarray], count: int, max_samples: int = 2_000_000) -> "Normalization":
        """Mean and standard deviation over `strided_sample` of the `count` frames."""
        v = strided_sample(frames, count, max_samples)
        scale = float(v.std())
        if not np.isfinite(scale) or scale <= 0:
            raise InputError("the input images are constant (zero variance)", fix="check the inputs hold image data")
        return cls(shift=float(v.mean()), scale=scale)


def strided_sample(frames: Iterable[np.ndarray], count: int, max_samples: int = 2_000_000) -> np.ndarray:
    """A strided subsample of each of the `count` frames (float64, flattened), read one at a time: memory is
    bounded by `max_samples`, however many or large the frames."""
    per = max(1, max_samples // max(1, count))
    samples = []
    for f in frames:
        step = max(1, int(np.sqrt(f.size / per)))
        samples.append(np.asarray(f[::step, ::step], dtype=np.float64).ravel())
    return np.concatenate(samples)
