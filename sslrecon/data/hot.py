"""Hot pixels read as a neighbour's value wherever a network sees the data (training, reconstruction, validation).

A defective detector pixel, a cosmic ray or an X-ray hit lies hundreds of noise standard deviations over its
neighbours (`noise.estimate.hot_pixels`). Left in, one pixel in a thousand wrecked training
(`benchmarks/hot_pixels.py`: twelve 256 x 256 Set12 crops at 30 photons, gain 2, read noise 3, offset 100, hot
pixels at 60000): `n2s` (300 steps) ended at the noisy input's 20.57 dB after the blend (its output alone 5.94 dB)
where the same data without them reached 27.48, and with them repaired 27.50. The normalisation's scale read 65
times too large, and fixing that alone changed nothing (7.9 dB unblended in a trial): the pixels themselves
dominate the loss. A hot pixel holds no measurement of the scene, so the reconstruction there is
the network's estimate from its neighbours, as everywhere else.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..noise.estimate import hot_pixels, with_values

#: Repaired frames kept per file (a frame with hot pixels is copied once, not for every patch cut from it)
CACHED_FRAMES = 2


class HotRepaired:
    """An open `ImageFile` whose frames are read with their hot pixels set to a neighbour's value. Everything else
    (path, format, metadata for the writers) is the file's own; frames without hot pixels are the file's own views.
    `hot` counts the hot pixels of the frames read so far. Opening and closing stay with the file."""

    def __init__(self, image):
        self._image = image
        self._found: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getattr__(self, name):
        return getattr(self._image, name)

    @property
    def hot(self) -> int:
        return sum(len(r) for r, _, _ in self._found.values())

    def frame(self, i: int) -> np.ndarray:
        f = self._image.frame(i)
        if i not in self._found:
            self._found[i] = hot_pixels(f)
        if not self._found[i][0].size:
            return f
        if i not in self._cache:
            self._cache[i] = with_values(f, self._found[i])
            if len(self._cache) > CACHED_FRAMES:
                self._cache.popitem(last=False)
        self._cache.move_to_end(i)
        return self._cache[i]

    def frames(self):
        for i in range(self._image.n_frames):
            yield self.frame(i)
