import mrcfile
import numpy as np
import pytest

from sslrecon.errors import FormatError
from sslrecon.io import open_image, write_like

from .conftest import EPU, SHARED, needs_shared


def _make(path, data, **header):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = header.get("voxel", 1.25)
        m.header.origin = (10.0, 20.0, 30.0)
        m.add_label("original label")
        if data.ndim == 3 and str(path).endswith(".mrcs"):
            m.set_image_stack()


@pytest.mark.parametrize("dtype,mode,out_dtype", [(np.int8, 0, np.float32), (np.int16, 1, np.float32),
                                                  (np.float32, 2, np.float32), (np.uint16, 6, np.float32),
                                                  (np.float16, 12, np.float16)])
def test_round_trip_modes(tmp_path, dtype, mode, out_dtype):
    data = (np.arange(24 * 20).reshape(24, 20) % 100).astype(dtype)
    src = tmp_path / "a.mrc"
    _make(src, data)
    with open_image(src) as img:
        assert img.n_frames == 1 and img.shape == (24, 20)
        assert int(img.header.mode) == mode
        frame = np.asarray(img.frame(0), np.float32) + 0.5
        dest = write_like(tmp_path / "out" / "a.mrc", [frame], img, label="test")
    with mrcfile.open(dest) as out:
        assert out.data.dtype == out_dtype
        np.testing.assert_allclose(out.data, frame, rtol=1e-3)
        assert np.allclose(out.voxel_size.x, 1.25)
        assert tuple(out.header.origin.item()) == (10.0, 20.0, 30.0)
        labels = [bytes(x).decode().strip() for x in out.header.label[: out.header.nlabl]]
        assert "original label" in labels and labels[-1].startswith("sslrecon") and len(labels) >= 2
        assert np.isclose(out.header.dmean, frame.mean(), rtol=1e-3)  # statistics recomputed
        assert np.isclose(out.header.dmax, frame.max(), rtol=1e-3)


def test_dtype_input_keeps_integer(tmp_path):
    src = tmp_path / "a.mrc"
    _make(src, np.full((8, 8), 7, np.uint16))
    with open_image(src) as img:
        dest = write_like(tmp_path / "o.mrc", [np.full((8, 8), 7.6, np.float32)], img, dtype="input")
    with mrcfile.open(dest) as out:
        assert out.data.dtype == np.uint16 and (out.data == 8).all()


def test_stack_sections_are_images(tmp_path):
    data = np.random.default_rng(0).normal(size=(5, 16, 12)).astype(np.float32)
    src = tmp_path / "s.mrcs"
    _make(src, data)
    with open_image(src) as img:
        assert img.n_frames == 5 and img.shape == (16, 12)
        np.testing.assert_array_equal(img.frame(3), data[3])
        dest = write_like(tmp_path / "o" / "s.mrcs", (img.frame(i) * 2 for i in range(5)), img)
    with mrcfile.open(dest) as out:
        assert out.data.shape == (5, 16, 12) and out.is_image_stack()
        np.testing.assert_allclose(out.data, data * 2)


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "a.mrc"
    _make(src, np.zeros((8, 8), np.float32))
    with open_image(src) as img:
        with pytest.raises(Exception, match="overwrite an input"):
            write_like(src, [np.ones((8, 8))], img, overwrite=True)
    assert (mrcfile.read(src) == 0).all()


def test_truncated_file_is_a_format_error(tmp_path):
    src = tmp_path / "a.mrc"
    _make(src, np.zeros((64, 64), np.float32))
    raw = src.read_bytes()
    src.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError, match="a.mrc"):
        open_image(src)


def test_unsupported_mode(tmp_path):
    src = tmp_path / "c.mrc"
    with mrcfile.new(src) as m:
        m.set_data(np.zeros((8, 8), np.complex64))
    with pytest.raises(FormatError, match="unsupported MRC mode 4"):
        open_image(src)


@needs_shared
def test_real_epu_micrograph_round_trip(tmp_path):
    with open_image(EPU) as img:
        assert img.dtype == np.uint16 and img.shape == (1536, 1536)
        ext = img.extended_header
        assert img.header.exttyp.item() == b"FEI2" and ext.size > 0
        dest = write_like(tmp_path / EPU.name, [np.asarray(img.frame(0), np.float32)], img)
        with mrcfile.open(dest) as out:
            assert out.data.dtype == np.float32
            assert np.isclose(out.voxel_size.x, 0.667, atol=1e-3)
            assert out.header.exttyp.item() == b"FEI2"
            assert out.extended_header.tobytes() == ext.tobytes()
            assert tuple(out.header.origin.item()) == tuple(img.header.origin.item())


@needs_shared
def test_reads_all_shared_micrographs():
    for p in sorted((SHARED / "cryoem" / "micrographs").glob("*.mrc")):
        with open_image(p) as img:
            f = img.frame(0)
            assert f.ndim == 2 and np.isfinite(np.asarray(f, np.float64)).all()


def _strip_map_id(path):
    raw = bytearray(path.read_bytes())
    raw[208:216] = bytes(8)  # no "MAP " and no machine stamp, as older writers leave them
    path.write_bytes(bytes(raw))


def test_mrc_without_map_id_is_read_when_its_header_accounts_for_the_file(tmp_path):
    src = tmp_path / "old.mrcs"
    data = np.arange(3 * 16 * 20, dtype=np.float32).reshape(3, 16, 20)
    _make(src, data)
    _strip_map_id(src)
    with open_image(src) as img:
        assert img.n_frames == 3 and img.shape == (16, 20)
        np.testing.assert_array_equal(np.asarray(img.frame(2)), data[2])
        dest = write_like(tmp_path / "out" / "old.mrcs", [np.asarray(img.frame(i)) for i in range(3)], img)
    with mrcfile.open(dest) as out:  # the output is a standard MRC2014 file
        assert out.header.map.item() == b"MAP " and np.isclose(out.voxel_size.x, 1.25)
    # without the ID, a header that does not account for every byte is still refused
    raw = src.read_bytes()
    src.write_bytes(raw[:-4])
    with pytest.raises(FormatError, match="old.mrcs.*signature"):
        open_image(src)


@needs_shared
def test_reads_shared_particle_stacks_without_map_id():
    for p in sorted((SHARED / "cryoem" / "simulated_pairs").glob("*.mrcs")):
        with open_image(p) as img:
            assert img.n_frames == 576 and img.shape == (32, 32)
            assert np.isfinite(np.asarray(img.frame(575), np.float64)).all()
