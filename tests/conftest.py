from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FMD = SHARED / "fluorescence" / "fmd"
EPU = SHARED / "cryoem" / "micrographs" / "epu2.9_example_center1536.mrc"
PARTICLES = SHARED / "cryoem" / "simulated_pairs" / "10076_classD_32_{}.mrcs"  # "sim" (noisy) or "clean"

needs_shared = pytest.mark.shared  # real data from ../shared/data (always beside the checkout in CI)


def smooth_image(rng, h, w, level=100.0, amp=40.0):
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    x = level + amp * np.sin(6 * xx + 1) * np.cos(4 * yy) + amp * 0.5 * ((xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.05)
    return x


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_data(tmp_path, rng):
    """Two noisy 48x48 float32 MRC images and one uint16 TIFF, with clean references."""
    d, ref = tmp_path / "data", tmp_path / "ref"
    d.mkdir()
    ref.mkdir()
    for i in range(2):
        x = smooth_image(rng, 48, 48).astype(np.float32)
        y = (x + rng.normal(0, 10, x.shape)).astype(np.float32)
        for folder, arr in ((d, y), (ref, x)):
            with mrcfile.new(folder / f"img{i}.mrc") as m:
                m.set_data(arr)
                m.voxel_size = 1.5
    x = smooth_image(rng, 48, 48, level=1000)
    tifffile.imwrite(d / "cells.tif", np.round(x + rng.normal(0, 10, x.shape)).astype(np.uint16))
    tifffile.imwrite(ref / "cells.tif", np.round(x).astype(np.uint16))
    return d, ref


TINY = ["--steps", "4", "--width", "4", "--depth", "2", "--batch-size", "2", "--patch-size", "32", "--val-every", "2",
        "--device", "cpu"]
