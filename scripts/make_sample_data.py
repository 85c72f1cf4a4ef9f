"""Generate sample_data/: small synthetic cryo-EM-like micrographs (MRC) and microscopy-like TIFFs.

Deterministic (fixed seed). Micrographs: blurred particles of a few shapes on a slowly varying ice
background, in electron counts, with Poisson-Gaussian noise (gain 1, read noise 2, offset 0),
float32 MRC with a 1.06 A voxel size. Microscopy: filament-like structures, Poisson-Gaussian noise
(gain 4, read noise 6, dark offset 100), uint16 ImageJ TIFF with a 0.1 um pixel size.

    python scripts/make_sample_data.py [OUTDIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import mrcfile
import numpy as np
import tifffile


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(img) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))))


def micrograph(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    density = np.zeros((size, size))
    for _ in range(rng.integers(12, 20)):
        cy, cx = rng.uniform(16, size - 16, 2)
        r = rng.uniform(5, 11)
        ring = np.exp(-((np.hypot(yy - cy, xx - cx) - r * 0.6) ** 2) / 4)
        disc = np.hypot(yy - cy, xx - cx) < r
        density += disc * 0.6 + ring
    ice = 1 + 0.15 * np.sin(xx / size * 2.5 + rng.uniform(0, 6)) * np.cos(yy / size * 1.7)
    signal = 20 * ice - 8 * _blur(density, 1.2)  # particles scatter electrons away: darker
    return np.clip(signal, 1, None)


def cells(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    img = np.zeros((size, size))
    for _ in range(14):
        t = np.linspace(0, 1, 400)
        p0, v = rng.uniform(0, size, 2), rng.normal(0, 1, 2)
        curve = p0 + np.outer(t, v) * size * 0.6 + np.outer(np.sin(t * rng.uniform(2, 6)), rng.normal(0, 20, 2))
        idx = np.round(curve).astype(int)
        ok = (idx >= 0).all(1) & (idx < size).all(1)
        img[idx[ok, 0], idx[ok, 1]] += rng.uniform(40, 120)
    return 5 + 60 * _blur(img, 1.5) / 10


def pg_noise(rng, x, gain, sigma, offset):
    return gain * rng.poisson(x / gain) + offset + rng.normal(0, sigma, x.shape)


def main(out: Path) -> None:
    rng = np.random.default_rng(20261125)
    (out / "micrographs").mkdir(parents=True, exist_ok=True)
    (out / "microscopy").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        y = pg_noise(rng, micrograph(rng), gain=1.0, sigma=2.0, offset=0.0).astype(np.float32)
        with mrcfile.new(out / "micrographs" / f"mic_{i:03d}.mrc", overwrite=True) as m:
            m.set_data(y)
            m.voxel_size = 1.06
            m.header.label[0] = b"synthetic micrograph made by scripts/make_sample_data.py"
            m.header.nlabl = 1
    for i in range(2):
        y = np.clip(pg_noise(rng, cells(rng), gain=4.0, sigma=6.0, offset=100.0), 0, 65535).astype(np.uint16)
        tifffile.imwrite(out / "microscopy" / f"cells_{i:03d}.tif", y, imagej=True, resolution=(10.0, 10.0),
                         metadata={"axes": "YX", "unit": "um"})


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "sample_data")
