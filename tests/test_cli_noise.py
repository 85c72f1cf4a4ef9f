"""`sslrecon noise`, `--loss auto`, and the noise model a run records and reuses."""
import json

import numpy as np
import pytest
import torch

from sslrecon.noise.models import from_dict

from .conftest import FMD, TINY, needs_shared
from .test_cli import run


@needs_shared
def test_noise_verb_on_fmd_names_a_signal_dependent_model_with_evidence(tmp_path, capsys):
    png = tmp_path / "noise.png"
    code, out, err = run(["noise", FMD / "noisy_raw", "--json", "--plot", png], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "signal-dependent" and {"gain", "sigma", "offset"} <= doc.keys() and doc["gain"] > 0
    assert doc["r2_heldout"] > 0.8 and doc["heldout_variance_error"] < 0.15
    assert doc["clipping"]["detected"] and any("clipped" in n for n in doc["notes"])
    assert doc["loss_auto"] == "gr2r-poisson" and len(doc["files"]) == 5  # 1-3 photons
    assert all(f["kind"] == "signal-dependent" for f in doc["files"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    # the plot is never silently replaced, and a bad plot path is one line, exit 2
    code, _, err = run(["noise", FMD / "noisy_raw", "--plot", png], capsys)
    assert code == 2 and "exists" in err and err.count("\n") == 1


def test_noise_verb_reads_a_sparse_counting_frame(tmp_path, capsys):
    """A counting camera's frame at 0.002-0.02 electrons per pixel: counting noise with its evidence, the zeros not
    called a floor, and a plot that says what the model was read from."""
    import tifffile

    rng = np.random.default_rng(0)
    frame = rng.poisson(np.linspace(0.002, 0.02, 256)[None, :] * np.ones((256, 1))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "frame.tif", frame)
    png = tmp_path / "noise.png"
    code, out, err = run(["noise", tmp_path / "frame.tif", "--json", "--plot", png], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["spec"] == "poisson:gain=1,offset=0" and not doc["clipping"]["detected"], doc["notes"]
    assert abs(doc["sparse_counts"]["dispersion_index"] - 1) < 0.1 and doc["sparse_counts"]["dark_share"] > 0.95
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noise_verb_text_output_and_bad_input(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    code, out, err = run(["noise", data], capsys)
    assert code == 0, err
    assert out.startswith("model\t") and "loss_auto\t" in out
    code, _, err = run(["noise", tmp_path / "missing"], capsys)
    assert code == 2 and "missing" in err


def test_loss_auto_records_its_choice_and_the_noise(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    code, out, err = run(["fit", data, "-o", tmp_path / "run", "--loss", "auto", "--json", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["config"]["loss"] == "sure"  # the tiny data has white Gaussian noise
    ckpt = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert ckpt["noise"] == doc["noise"] and ckpt["noise_normalized"] == doc["noise_normalized"]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["noise"] == doc["noise"] and len(cfg["noise_per_file"]) == 3


def test_gamma_noise_needs_a_loss_that_supports_it(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    code, _, err = run(["fit", data, "-o", tmp_path / "r1", "--noise", "gamma:looks=4", "--loss", "sure", *TINY], capsys)
    assert code == 2 and "does not support gamma" in err and not (tmp_path / "r1" / "model.pt").exists()
    code, out, err = run(["fit", data, "-o", tmp_path / "r2", "--noise", "gamma:looks=4", "--loss", "auto", "--json",
                          *TINY], capsys)
    assert code == 0, err
    assert json.loads(out)["config"]["loss"] == "n2s"


def test_corr_noise_trains_with_sure_and_r2r(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    for loss in ("sure", "r2r"):
        code, out, err = run(["fit", data, "-o", tmp_path / loss, "--noise", "corr:sigma=8,size=3", "--loss", loss,
                              "--json", *TINY], capsys)
        assert code == 0, err
        assert np.isfinite(json.loads(out)["best_val_mse"])


@pytest.fixture
def trained_auto(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    code, out, err = run(["fit", data / "img0.mrc", data / "img1.mrc", "-o", tmp_path / "run", "--json", *TINY],
                         capsys)
    assert code == 0, err
    return tmp_path / "run", json.loads(out)


def test_validate_reuses_the_recorded_noise_unless_overridden(trained_auto, tiny_data, capsys):
    from sslrecon import api

    run_dir, doc = trained_auto
    data, ref = tiny_data
    args = ["validate", run_dir, data, "--reference", ref, "--json", "--device", "cpu"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    files = {f["path"].rsplit("/", 1)[-1]: f["noise"] for f in json.loads(out)["files"]}
    recorded = {p.rsplit("/", 1)[-1]: m for p, m in doc["noise_per_file"].items()}
    assert files["img0.mrc"] == recorded["img0.mrc"]
    # not trained on: the run gave its two files their own models (Gaussian noise is never pooled), so the new file
    # gets its own estimate, not the pool of the run's
    assert doc["noise_own_per_file"] is True
    assert from_dict(files["cells.tif"]).spec() == api.noise([str(data / "cells.tif")])["spec"]
    code, out, err = run([*args, "--noise", "auto"], capsys)
    assert code == 0, err
    own = {f["path"].rsplit("/", 1)[-1]: f["noise"] for f in json.loads(out)["files"]}
    assert own["cells.tif"] != doc["noise"]  # re-estimated from the file itself
    assert from_dict(own["cells.tif"]).name in ("gaussian", "pg", "poisson", "corr")


def test_validate_flags_a_noise_model_that_overstates_the_noise(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    run_dir = tmp_path / "n2s"
    code, _, err = run(["fit", data / "img0.mrc", "-o", run_dir, "--loss", "n2s", *TINY], capsys)
    assert code == 0, err
    # a J-invariant rule's risk is |f(y) - y|^2 - variance: negative when the variance is overstated
    args = ["validate", run_dir, data / "img0.mrc", "--noise", "gaussian:sigma=1000", "--device", "cpu", "--no-blend"]
    code, out, err = run([*args, "--json"], capsys)
    assert code == 0, err
    f = json.loads(out)["files"][0]
    assert f["estimated_mse"] < 0 and f["estimated_psnr"] is None and "overstates" in f["warning"]
    code, out, _ = run(args, capsys)
    assert code == 0 and "estimated_psnr n/a" in out and "warning" in out


def test_noise_models_that_cannot_share_a_batch_are_refused_before_training(tiny_data, tmp_path, capsys,
                                                                            monkeypatch):
    from sslrecon import api
    from sslrecon.noise import Correlated, Gamma

    data, _ = tiny_data
    mixed = [Correlated(5.0, ((1, 1, 1),) * 3), Gamma(3.0), Gamma(3.0)]  # gamma has no form to share a batch
    monkeypatch.setattr(api, "noise_models", lambda spec, images: (mixed[1], mixed[: len(images)]))
    code, _, err = run(["fit", data, "-o", tmp_path / "run", "--loss", "n2s", *TINY], capsys)
    assert code == 2 and err.count("\n") == 1 and "--noise" in err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_one_file_is_analysed_once(tiny_data, monkeypatch):
    """For a single file the pooled frames are the file's own: its report serves as the pooled one,
    in the noise verb and in fit's auto estimate, instead of the same analysis running twice."""
    from sslrecon import api

    data, _ = tiny_data
    one = min(p for p in data.iterdir() if p.is_file())
    calls = []
    real = api.analyze_noise
    monkeypatch.setattr(api, "analyze_noise", lambda *a, **k: calls.append(1) or real(*a, **k))
    doc = api.noise([str(one)])
    assert len(calls) == 1 and doc["spec"] == doc["files"][0]["spec"]
    calls.clear()
    assert len(api.noise([str(data)])["files"]) == 3 and len(calls) == 3 + 1  # each file, then the pool
    calls.clear()
    with api.open_image(one) as img:
        pooled, per_file = api.noise_models("auto", [img])
    assert len(calls) == 1 and pooled == per_file[0]


def test_auto_noise_pools_files_of_one_detector(tmp_path):
    """`--noise auto` gives every file the pooled model where their signal-dependent noise agrees, and each
    file its own where it does not (half the files at another gain); the noise verb says which."""
    import tifffile

    from sslrecon import api

    from .test_noise_estimate import _session

    for name, gains in (("one", [2.0] * 4), ("two", [2.0, 2.0, 6.0, 6.0])):
        folder = tmp_path / name
        folder.mkdir()
        for i, f in enumerate(_session(np.random.default_rng(1), gains, [100.0] * 4, [3.0] * 4)):
            tifffile.imwrite(folder / f"f{i}.tif", f.astype(np.float32))
        paths = sorted(folder.iterdir())
        images = [api.open_image(p) for p in paths]
        try:
            pooled, per_file = api.noise_models("auto", images)
        finally:
            for img in images:
                img.close()
        same = all(m == pooled for m in per_file)
        assert same is (name == "one"), (pooled, per_file)
        assert api.noise([str(folder)])["one_session"] is (name == "one")


def test_new_files_take_the_runs_pooled_model_only_where_its_files_were_one_detectors(tmp_path, capsys):
    """A file a `--noise auto` run was not trained on takes the run's model where its files were one detector's
    (pooled), and its own estimate where they were not: the pool of files at gains 2 and 6 fits neither. `validate`
    also gives a file the run's model does not fit (gain 6 for a run at gain 2) its own estimate, with a note."""
    import tifffile

    from sslrecon import api

    from .test_noise_estimate import _session

    frames = _session(np.random.default_rng(3), [2.0, 2.0, 6.0, 6.0, 6.0], [100.0] * 5, [3.0] * 5, n=96)
    for name, train in (("one", [0, 1]), ("two", [0, 2])):
        folder = tmp_path / name
        folder.mkdir()
        for i in train:
            tifffile.imwrite(folder / f"f{i}.tif", frames[i].astype(np.float32))
        new = tmp_path / f"new_{name}.tif"
        tifffile.imwrite(new, frames[1 if name == "one" else 3].astype(np.float32))
        code, out, err = run(["fit", folder, "-o", tmp_path / f"run_{name}", "--loss", "pg-sure", "--json", *TINY],
                             capsys)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["noise_own_per_file"] is (name == "two")
        code, out, err = run(["validate", tmp_path / f"run_{name}", new, "--json", "--device", "cpu"], capsys)
        assert code == 0, err
        entry = json.loads(out)["files"][0]
        used = from_dict(entry["noise"])
        if name == "one":
            assert used == from_dict(doc["noise"]) and "note" not in entry
            # a file of another gain is not the run's detector's: validate takes its own estimate, and says so
            other = tmp_path / "gain6.tif"
            tifffile.imwrite(other, frames[4].astype(np.float32))
            code, out, err = run(["validate", tmp_path / f"run_{name}", other, "--device", "cpu", "--json"], capsys)
            assert code == 0, err
            entry = json.loads(out)["files"][0]
            assert from_dict(entry["noise"]).spec() == api.noise([str(other)])["spec"] and "does not fit" in entry["note"]
        else:
            assert used.spec() == api.noise([str(new)])["spec"] and "note" not in entry
            assert abs(used.gain / 6 - 1) < 0.15 and abs(from_dict(doc["noise"]).gain / 6 - 1) > 0.2


def test_auto_noise_at_validation_pools_files_of_one_detector(trained_auto, tmp_path, capsys):
    """`validate` (and `reconstruct`, which shares the lookup) with `--noise auto` takes the models `fit` would: the
    pooled one for every file of one detector, each file's own where half the files are at another gain."""
    import tifffile

    from sslrecon import api

    from .test_noise_estimate import _session

    run_dir, _ = trained_auto
    for name, gains in (("one", [2.0] * 4), ("two", [2.0, 2.0, 6.0, 6.0])):
        folder = tmp_path / name
        folder.mkdir()
        for i, f in enumerate(_session(np.random.default_rng(1), gains, [100.0] * 4, [3.0] * 4, n=96)):
            tifffile.imwrite(folder / f"f{i}.tif", f.astype(np.float32))
        images = [api.open_image(p) for p in sorted(folder.iterdir())]
        try:
            _, fit_models = api.noise_models("auto", images)
        finally:
            for img in images:
                img.close()
        code, out, err = run(["validate", run_dir, folder, "--noise", "auto", "--json", "--device", "cpu"], capsys)
        assert code == 0, err
        used = [from_dict(f["noise"]) for f in sorted(json.loads(out)["files"], key=lambda f: f["path"])]
        assert [m.spec() for m in used] == [m.spec() for m in fit_models]
        assert (len({m.spec() for m in used}) == 1) is (name == "one")


def _refuse_constant(token):
    raise ValueError(f"not JSON: {token}")


@needs_shared
def test_noise_json_is_strict_json(tmp_path, capsys):
    """One frame stored in two units (uint8, and float32 / 255) in one folder leaves mean-variance bins empty: their
    undefined means are null, not Python's NaN token, which jq, JavaScript and Go refuse."""
    import tifffile

    frame = tifffile.imread(FMD / "noisy_raw" / "Confocal_BPAE_G.tif")
    tifffile.imwrite(tmp_path / "a.tif", frame)
    tifffile.imwrite(tmp_path / "b.tif", (frame / 255).astype(np.float32))
    code, out, err = run(["noise", tmp_path, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out, parse_constant=_refuse_constant)
    assert any(b["mean"] is None for b in doc["mean_variance"]["bins"])


def test_noise_of_a_frame_too_small_is_one_error_line(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "row.tif", np.random.default_rng(0).normal(100, 5, (1, 512)).astype(np.float32))
    code, _, err = run(["noise", tmp_path / "row.tif"], capsys)
    assert code == 2 and "row.tif" in err and "too small" in err and err.count("\n") == 1, err
