"""Per-frame noise: a stack whose Gaussian level changes from frame to frame (a tilt or exposure
series) gets one sigma per frame, which training, reconstruction and validation use frame by frame."""
import json

import numpy as np
import tifffile
import torch

from sslrecon.api import batch_noise
from sslrecon.data import Normalization, PatchSampler, split_regions
from sslrecon.io import open_image
from sslrecon.noise import Gaussian
from sslrecon.noise.estimate import per_frame
from sslrecon.noise.models import PerFrame, file_model, frame_model, from_dict

from .conftest import smooth_image
from .test_cli import run

SIGMAS = (3.0, 6.0, 9.0, 12.0)


def stack(rng, sigmas, size=96):
    x = smooth_image(rng, size, size)
    return np.stack([x + rng.normal(0, s, x.shape) for s in sigmas]).astype(np.float32)


def test_per_frame_sigmas_are_found_and_a_steady_stack_keeps_one_model():
    rng = np.random.default_rng(0)
    y = stack(rng, SIGMAS, 160)
    m = per_frame(Gaussian(7.0), lambda i: y[i], len(y))
    assert isinstance(m, PerFrame) and len(m.frames) == len(SIGMAS)
    np.testing.assert_allclose([f.sigma for f in m.frames], SIGMAS, rtol=0.08)
    steady = stack(rng, (5.0,) * 4, 160)
    assert per_frame(Gaussian(5.0), lambda i: steady[i], 4) == Gaussian(5.0)
    # small particle images estimate one level noisily (about 5 % at 32 px): that is not a per-frame level
    particles = stack(rng, (5.0,) * 64, 32)
    assert per_frame(Gaussian(5.0), lambda i: particles[i], 64) == Gaussian(5.0)
    # other kinds of noise keep their per-file model
    from sslrecon.noise import PoissonGaussian

    pg = PoissonGaussian(gain=2.0, sigma=3.0)
    assert per_frame(pg, lambda i: y[i], len(y)) is pg


def test_per_frame_model_round_trips_rescales_and_stands_for_its_file():
    m = PerFrame(tuple(Gaussian(s) for s in SIGMAS))
    assert from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert m.rescaled(10.0, 2.0) == PerFrame(tuple(Gaussian(s / 2) for s in SIGMAS))
    assert frame_model(m, 2) == Gaussian(9.0) and frame_model(Gaussian(1.0), 5) == Gaussian(1.0)
    assert abs(file_model(m).sigma - np.sqrt(np.mean(np.square(SIGMAS)))) < 1e-9
    assert "per frame" in m.spec()


def test_batches_take_each_patch_frames_model(tmp_path):
    """The sampler says which frame each patch is from, and the batch's noise follows it."""
    frames = np.stack([np.full((32, 32), 100.0 * i, np.float32) for i in range(3)])
    tifffile.imwrite(tmp_path / "s.tif", frames, photometric="minisblack")
    with open_image(tmp_path / "s.tif") as img:
        norm = Normalization(shift=0.0, scale=100.0)
        sampler = PatchSampler(split_regions([img], 0.0)[0], 16, norm)
        y, sources = sampler.sample(12, torch.Generator().manual_seed(0))
        assert {f for _, f in sources} == {0, 1, 2}
        for k, (src, frame) in enumerate(sources):
            assert src == 0 and torch.allclose(y[k], torch.full_like(y[k], float(frame)))
    per_file = [PerFrame((Gaussian(1.0), Gaussian(2.0), Gaussian(3.0))), Gaussian(5.0)]
    batch = batch_noise(per_file, [(0, 2), (1, 0), (0, 0)])
    assert batch.sigma.flatten().tolist() == [3.0, 5.0, 1.0]


def test_fit_reconstruct_validate_use_per_frame_noise(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "series"
    data.mkdir()
    tifffile.imwrite(data / "tilt.tif", stack(rng, SIGMAS), photometric="minisblack")
    code, out, err = run(["noise", data, "--json"], capsys)
    assert code == 0, err
    found = json.loads(out)["files"][0]["sigma_per_frame"]
    np.testing.assert_allclose(found, SIGMAS, rtol=0.15)
    code, out, err = run(["noise", data], capsys)
    assert code == 0 and "sigma_per_frame\t" in out
    code, out, err = run(["fit", data, "--loss", "sure", "--steps", "2", "--val-every", "2", "--width", "8",
                          "-o", tmp_path / "run", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    recorded = from_dict(doc["noise_per_file"][str(data / "tilt.tif")])
    assert isinstance(recorded, PerFrame) and doc["noise"]["name"] == "gaussian"
    np.testing.assert_allclose([f.sigma for f in recorded.frames], SIGMAS, rtol=0.15)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["noise_per_file"] == doc["noise_per_file"]
    code, out, err = run(["reconstruct", tmp_path / "run", data, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert tifffile.imread(tmp_path / "out" / "tilt.tif").shape == (4, 96, 96)
    code, out, err = run(["validate", tmp_path / "run", data, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["files"][0]["noise"]["name"] == "per-frame"


def test_per_frame_sigmas_given_on_the_command_line(tmp_path, capsys):
    """`--noise gaussian:sigma_per_frame=FILE` (one sigma per frame, e.g. from a tilt scheme or from
    `sslrecon noise`) is recorded and used; a file of another frame count is refused, nothing written."""
    from sslrecon.errors import NoiseSpecError
    from sslrecon.noise import parse_noise

    rng = np.random.default_rng(2)
    data = tmp_path / "series"
    data.mkdir()
    tifffile.imwrite(data / "tilt.tif", stack(rng, SIGMAS, 64), photometric="minisblack")
    sig = tmp_path / "sigmas.txt"
    sig.write_text("\n".join(str(s) for s in SIGMAS))
    assert parse_noise(f"gaussian:sigma_per_frame={sig}") == PerFrame(tuple(Gaussian(s) for s in SIGMAS))
    bad = tmp_path / "bad.txt"
    bad.write_text("3\n-1\n")
    for spec in (f"gaussian:sigma_per_frame={bad}", f"gaussian:sigma_per_frame={tmp_path / 'none.txt'}"):
        try:
            parse_noise(spec)
            raise AssertionError(spec)
        except NoiseSpecError:
            pass
    try:  # another key after the file is named as such, not as a missing file
        parse_noise(f"gaussian:sigma_per_frame={sig},offset=1")
        raise AssertionError("offset accepted")
    except NoiseSpecError as e:
        assert "takes no other keys" in str(e) and "not found" not in str(e), e
    code, out, err = run(["fit", data, "--loss", "sure", "--noise", f"gaussian:sigma_per_frame={sig}", "--steps", "2",
                          "--val-every", "2", "--width", "8", "-o", tmp_path / "run", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert from_dict(doc["noise_per_file"][str(data / "tilt.tif")]) == parse_noise(f"gaussian:sigma_per_frame={sig}")
    three = tmp_path / "three.txt"
    three.write_text("3\n6\n9\n")
    code, out, err = run(["reconstruct", tmp_path / "run", data, "-o", tmp_path / "out", "--noise",
                          f"gaussian:sigma_per_frame={three}"], capsys)
    assert code == 2 and "tilt.tif" in err and "3 per-frame sigmas" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "tilt.tif").exists()
