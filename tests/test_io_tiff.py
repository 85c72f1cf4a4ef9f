import numpy as np
import pytest
import tifffile

from sslrecon.errors import FormatError, InputError
from sslrecon.io import find_inputs, open_image, write_like

from .conftest import FMD, needs_shared


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_dtypes(tmp_path, dtype):
    data = (np.arange(30 * 20).reshape(30, 20) % 50).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", data)
    with open_image(tmp_path / "a.tif") as img:
        assert img.n_frames == 1 and img.shape == (30, 20) and img.dtype == dtype
        dest = write_like(tmp_path / "o" / "a.tif", [img.frame(0).astype(np.float32) + 0.25], img)
    out = tifffile.imread(dest)
    assert out.dtype == (dtype if np.dtype(dtype).kind == "f" else np.float32)
    np.testing.assert_allclose(out, data.astype(np.float32) + 0.25)


def test_imagej_stack_keeps_axes_and_pixel_size(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (2, 3, 16, 24)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TZYX", "spacing": 0.5, "unit": "um"})
    with open_image(tmp_path / "s.tif") as img:
        assert img.n_frames == 6 and img.shape == (16, 24)
        np.testing.assert_array_equal(img.frame(4), data[1, 1])
        dest = write_like(tmp_path / "o" / "s.tif", (img.frame(i) * 1.0 for i in range(6)), img)
    with tifffile.TiffFile(dest) as t:
        assert t.is_imagej and t.series[0].axes == "TZYX" and t.series[0].shape == (2, 3, 16, 24)
        assert t.imagej_metadata["spacing"] == 0.5 and t.imagej_metadata["unit"] == "um"
        xres = t.pages[0].tags["XResolution"].value
        assert np.isclose(xres[0] / xres[1], 5.0)
        assert t.series[0].dtype == np.float32
        np.testing.assert_array_equal(t.asarray()[1, 1], data[1, 1])


def test_ome_keeps_physical_size(tmp_path):
    data = np.zeros((3, 16, 16), np.float32)
    tifffile.imwrite(tmp_path / "o.ome.tif", data, metadata={"axes": "ZYX", "PhysicalSizeX": 0.2,
                                                               "PhysicalSizeY": 0.2})
    with open_image(tmp_path / "o.ome.tif") as img:
        assert img.n_frames == 3
        dest = write_like(tmp_path / "out" / "o.ome.tif", img.frames(), img)
    with tifffile.TiffFile(dest) as t:
        assert t.is_ome and 'PhysicalSizeX="0.2"' in t.ome_metadata


def test_compressed_tiff_reads_plane_by_plane(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (4, 32, 32)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", data, compression="zlib", photometric="minisblack")
    with open_image(tmp_path / "c.tif") as img:
        assert img.n_frames == 4
        np.testing.assert_array_equal(img.frame(2), data[2])


def test_three_frames_tagged_rgb_are_refused_with_the_way_to_save_a_stack(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (3, 16, 16)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", stack)  # tifffile's default tags 3 planes as RGB
    with pytest.raises(FormatError, match="RGB") as e:
        open_image(tmp_path / "rgb.tif")
    assert "photometric='minisblack'" in e.value.fix
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    with open_image(tmp_path / "stack.tif") as img:
        assert img.n_frames == 3 and img.shape == (16, 16)


def test_text_file_named_tif(tmp_path):
    (tmp_path / "notes.tif").write_text("this is not an image\n")
    with pytest.raises(FormatError, match="notes.tif.*not a valid TIFF"):
        open_image(tmp_path / "notes.tif")


def test_find_inputs_recursive_glob_and_stdin(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/x.tif", "a/b/y.mrc", "a/b/z.txt", "a/w.tiff"):
        (tmp_path / p).write_bytes(b"")
    names = [p.name for p in find_inputs([str(tmp_path / "a")])]
    assert names == ["w.tiff", "y.mrc", "x.tif"] or sorted(names) == ["w.tiff", "x.tif", "y.mrc"]
    assert [p.name for p in find_inputs([str(tmp_path / "a")], glob="*.mrc")] == ["y.mrc"]
    got = find_inputs(["-"], stdin=[str(tmp_path / "a/x.tif") + "\n", "\n"])
    assert [p.name for p in got] == ["x.tif"]
    with pytest.raises(InputError, match="no input images"):
        find_inputs([str(tmp_path / "a" / "b")], glob="*.png")


@needs_shared
def test_reads_real_fmd_frames():
    paths = sorted((FMD / "noisy_raw").glob("*.tif"))
    assert len(paths) == 5
    for p in paths:
        with open_image(p) as img:
            assert img.dtype == np.uint8 and img.shape == (512, 512) and img.n_frames == 1
            assert img.frame(0).max() > 0
