"""Random patches from memory-mapped frames, a train/held-out split, and dihedral augmentation.

A `Region` is a rectangle of one frame of one open file. Patches are cut from the memory map, so
only the pixels of the patch are read; the folder is never loaded whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..io import ImageFile
from .normalize import Normalization


@dataclass(frozen=True)
class Region:
    image: ImageFile
    source: int  # index of `image` in the list given to `split_regions`
    frame: int
    rows: tuple[int, int]

    @property
    def area(self) -> int:
        return (self.rows[1] - self.rows[0]) * self.image.shape[1]


def split_regions(images: list[ImageFile], val_fraction: float) -> tuple[list[Region], list[Region]]:
    """Train and held-out regions. Many frames: whole frames are held out (every k-th); few frames:
    the bottom `val_fraction` band of rows of every frame is held out."""
    frames = [(k, img, i) for k, img in enumerate(images) for i in range(img.n_frames)]
    whole = [Region(img, k, i, (0, img.shape[0])) for k, img, i in frames]
    if val_fraction <= 0:
        return whole, []
    if len(frames) * val_fraction >= 2:
        k = max(2, int(round(1 / val_fraction)))
        return [r for j, r in enumerate(whole) if j % k != k - 1], [r for j, r in enumerate(whole) if j % k == k - 1]
    train, val = [], []
    for k, img, i in frames:
        cut = img.shape[0] - max(1, int(round(img.shape[0] * val_fraction)))
        train.append(Region(img, k, i, (0, cut)))
        val.append(Region(img, k, i, (cut, img.shape[0])))
    return train, val


def fit_patch_size(regions: list[Region], wanted: int) -> int:
    """The largest patch side no larger than `wanted` that fits every region."""
    side = min(min(r.rows[1] - r.rows[0], r.image.shape[1]) for r in regions)
    return max(1, min(wanted, side))


class PatchSampler:
    """Draws batches of normalised (B, 1, p, p) float32 patches, areas weighted, with random flips,
    and the (source, frame) of each patch (so the caller can attach each file's, or each frame's,
    noise model)."""

    def __init__(self, regions: list[Region], patch_size: int, norm: Normalization, augment: bool = True):
        self.regions = regions
        self.p = fit_patch_size(regions, patch_size)
        self.norm = norm
        self.augment = augment
        areas = np.array([r.area for r in regions], dtype=np.float64)
        self.weights = torch.as_tensor(areas / areas.sum())

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        idx = torch.multinomial(self.weights, batch, replacement=True, generator=generator).tolist()
        out = []
        for j in idx:
            r = self.regions[j]
            h, w = r.rows[1] - r.rows[0], r.image.shape[1]
            top = r.rows[0] + int(torch.randint(0, h - self.p + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - self.p + 1, (1,), generator=generator))
            patch = np.asarray(r.image.frame(r.frame)[top : top + self.p, left : left + self.p], dtype=np.float32)
            t = torch.from_numpy(self.norm(patch))
            if self.augment:
                k, flip = torch.randint(0, 4, (2,), generator=generator).tolist()
                t = torch.rot90(t, k, (0, 1))
                t = torch.flip(t, (1,)) if flip % 2 else t
            out.append(t)
        return torch.stack(out)[:, None], [(self.regions[j].source, self.regions[j].frame) for j in idx]

    def fixed_batch(self, n: int, seed: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """A reproducible batch (same patches every call), for held-out evaluation."""
        g = torch.Generator().manual_seed(seed)
        aug, self.augment = self.augment, False
        try:
            return self.sample(n, g)
        finally:
            self.augment = aug
