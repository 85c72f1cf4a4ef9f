"""Hot pixels (a defective detector pixel, a cosmic ray) read as a neighbour's value wherever a network sees the
data."""
import json

import numpy as np
import pytest
import tifffile

from sslrecon.cli import main
from sslrecon.data import HotRepaired, Normalization
from sslrecon.io import open_image
from sslrecon.noise import estimate

from .conftest import TINY


def _with_hot(rng, shape=(96, 80), every=300):
    y = 100 + 2.0 * rng.poisson(20 + 10 * np.sin(np.arange(shape[1]) / 9)[None, :], shape) + rng.normal(0, 3, shape)
    hot = rng.random(shape) < 1 / every
    hot[0, 0] = hot[-1, 5] = hot[40, -1] = True  # on the frame's edges too
    return np.where(hot, 60000.0, y).astype(np.float32), hot


def test_hot_pixels_read_in_bands_find_what_the_whole_frame_does(rng, monkeypatch):
    """The bands (`HOT_BAND` rows, a one-row halo, the frame's own edges reflected) see every pixel's eight
    neighbours, so they find the same pixels and values as one band holding the frame."""
    y, hot = _with_hot(rng)
    whole = estimate.hot_pixels(y)
    for band in (1, 7, 40):
        monkeypatch.setattr(estimate, "HOT_BAND", band)
        found = estimate.hot_pixels(y)
        assert all(np.array_equal(a, b) for a, b in zip(found, whole)), band
    r, c, v = whole
    assert np.array_equal(np.sort(np.ravel_multi_index((r, c), y.shape)), np.flatnonzero(hot))
    assert v.dtype == y.dtype and np.all(v < 1000)  # a neighbour's value, not another hot one


def test_frames_are_read_repaired_and_untouched_frames_are_the_files_own(rng, tmp_path):
    y, hot = _with_hot(rng)
    clean = np.where(hot, 150, y).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([y, clean]))
    with open_image(tmp_path / "stack.tif") as raw:
        img = HotRepaired(raw)
        assert img.path == raw.path and img.format == raw.format and img.n_frames == 2
        fixed = img.frame(0)
        assert fixed.max() < 1000 and np.array_equal(fixed[~hot], y[~hot]) and img.hot == hot.sum()
        assert np.array_equal(img.frame(1), raw.frame(1))  # nothing hot: the file's own frame
        assert img.hot == hot.sum()
        assert img.frame(0) is fixed  # repaired once, not for every patch cut from it
        norm = Normalization.from_frames(img.frames(), 2)
        assert norm.scale < 3 * float(np.std(clean))  # with the hot pixels in, the scale read 20 times too large


def test_fit_and_reconstruct_see_no_hot_pixel_and_report_them(rng, tmp_path, capsys):
    """The run records how many hot pixels each file held; the reconstruction at a hot pixel is the network's
    estimate from its neighbours, not the defect."""
    d = tmp_path / "data"
    d.mkdir()
    hots = []
    for i in range(2):
        y, hot = _with_hot(rng)
        tifffile.imwrite(d / f"{i}.tif", y)
        hots.append(hot)
    assert main(["fit", str(d), "-o", str(tmp_path / "run"), "--loss", "n2s", "--json", *TINY]) == 0
    doc = json.loads(capsys.readouterr().out)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["hot_pixels"] == doc["hot_pixels"] == {str(d / f"{i}.tif"): int(h.sum()) for i, h in enumerate(hots)}
    assert main(["reconstruct", str(tmp_path / "run"), str(d), "-o", str(tmp_path / "out"), "--json",
                 "--device", "cpu"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert [f["hot_pixels"] for f in files] == [int(h.sum()) for h in hots]
    out = tifffile.imread(tmp_path / "out" / "0.tif")
    assert out[hots[0]].max() < 1000, out[hots[0]].max()


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_repair_hot_keeps_the_frames_dtype_and_whole_counts(rng, dtype):
    y, hot = _with_hot(rng)
    fixed, n = estimate.repair_hot(np.round(y).astype(dtype))
    assert n == hot.sum() and fixed.dtype == dtype and np.array_equal(fixed, np.round(fixed))
