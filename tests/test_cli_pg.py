"""The Poisson-Gaussian losses through the command line: the noise model given, inferred or learned, recorded in the
run and reused by reconstruct and validate."""
import json

import numpy as np
import pytest
import tifffile
import torch

from sslrecon.losses.pg import auto_test_samples
from sslrecon.noise.models import from_dict

from .conftest import FMD, TINY, smooth_image
from .test_cli import run

GAIN, SIGMA, OFFSET = 3.0, 4.0, 100.0


@pytest.fixture
def pg_data(tmp_path):
    """Three 48x48 float32 TIFFs of Poisson-Gaussian counts (about 5 to 25 photons, offset 100), with references."""
    d, ref = tmp_path / "pg", tmp_path / "pg_ref"
    d.mkdir()
    ref.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        x = OFFSET + GAIN * smooth_image(rng, 48, 48, level=15.0, amp=8.0)
        y = OFFSET + GAIN * rng.poisson((x - OFFSET) / GAIN) + rng.normal(0, SIGMA, x.shape)
        tifffile.imwrite(d / f"im{i}.tif", y.astype(np.float32))
        tifffile.imwrite(ref / f"im{i}.tif", x.astype(np.float32))
    return d, ref


@pytest.mark.parametrize("loss", ["pg-sure", "gr2r-poisson"])
def test_known_model_losses_end_to_end(loss, pg_data, tmp_path, capsys):
    data, ref = pg_data
    spec = f"pg:gain={GAIN},sigma={SIGMA},offset={OFFSET}"
    code, out, err = run(["fit", data, "-o", tmp_path / loss, "--loss", loss, "--noise", spec, "--json", *TINY], capsys)
    assert code == 0, err
    assert json.loads(out)["noise"] == {"name": "pg", "gain": GAIN, "sigma": SIGMA, "offset": OFFSET}
    if loss == "gr2r-poisson":  # alpha "auto" is settled from the data before training and recorded as a number
        options = json.loads((tmp_path / loss / "config.json").read_text())["loss_options"]
        alpha = options["alpha"]  # the posterior split takes the model's read noise as it is: the lowest alpha
        assert options["split"] == "posterior" and alpha == pytest.approx(0.15, abs=0.05)
        assert torch.load(tmp_path / loss / "model.pt", weights_only=True)["loss_options"]["alpha"] == alpha
        samples = json.loads((tmp_path / loss / "config.json").read_text())["loss_options"]["test_samples"]
        assert samples == auto_test_samples(alpha)  # "auto" settled with it
    code, out, err = run(["validate", tmp_path / loss, data, "--reference", ref, "--json", "--device", "cpu",
                          "--tile-size", "32"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert all(np.isfinite(f["estimated_mse"]) and f["psnr"] > 0 for f in doc["files"])
    code, out, err = run(["reconstruct", tmp_path / loss, data, "-o", tmp_path / f"{loss}_out", "--test-samples", "2",
                          "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    assert tifffile.imread(tmp_path / f"{loss}_out" / "im0.tif").shape == (48, 48)
    code, _, err = run(["reconstruct", tmp_path / loss, data, "-o", tmp_path / "zero", "--test-samples", "0",
                        "--device", "cpu"], capsys)
    assert code == 2 and "--test-samples" in err and err.count("\n") == 1 and not (tmp_path / "zero").exists()


def test_a_gr2r_run_from_before_the_posterior_split_resumes_with_the_shifted_one(pg_data, tmp_path, capsys):
    """A run trained before `split` existed used the shifted-Poisson split: `--resume` continues with it (a new
    run, and one that recorded its split, take theirs)."""
    data, _ = pg_data
    spec = f"pg:gain={GAIN},sigma={SIGMA},offset={OFFSET}"
    out_dir = tmp_path / "old"
    code, out, err = run(["fit", data, "-o", out_dir, "--loss", "gr2r-poisson", "--noise", spec, "--json", *TINY], capsys)
    assert code == 0, err
    assert json.loads(out)["loss_options"]["split"] == "posterior"
    last = torch.load(out_dir / "last.pt", weights_only=False)
    del last["loss_options"]["split"]  # as written before the option existed
    torch.save(last, out_dir / "last.pt")
    code, out, err = run(["fit", data, "-o", out_dir, "--resume", "--json", *TINY[:1], "6", *TINY[2:]], capsys)
    assert code == 0, err
    assert json.loads(out)["loss_options"]["split"] == "shifted"


def test_a_pg_unsure_run_from_before_the_hold_and_the_removal_resumes_without_them(pg_data, tmp_path, capsys):
    """A run trained before `hold_steps` existed learned from its first step, and one trained before `finite`
    existed on the Taylor terms: `--resume` keeps both (0, false), from the losses' shared `saved_defaults` (the old
    code's own special case gave the same hold)."""
    data, _ = pg_data
    out_dir = tmp_path / "old_unsure"
    code, out, err = run(["fit", data, "-o", out_dir, "--loss", "pg-unsure", "--json", *TINY], capsys)
    assert code == 0, err
    options = json.loads(out)["loss_options"]
    assert options["hold_steps"] == 2 and options["finite"] == "auto"
    last = torch.load(out_dir / "last.pt", weights_only=False)
    del last["loss_options"]["hold_steps"], last["loss_options"]["finite"]  # as written before the options existed
    torch.save(last, out_dir / "last.pt")
    code, out, err = run(["fit", data, "-o", out_dir, "--resume", "--json", *TINY[:1], "6", *TINY[2:]], capsys)
    assert code == 0, err
    options = json.loads(out)["loss_options"]
    assert options["hold_steps"] == 0 and options["finite"] is False


def test_pg_unsure_learns_records_and_resumes_the_noise(pg_data, tmp_path, capsys):
    data, _ = pg_data
    out_dir = tmp_path / "unsure"
    code, out, err = run(["fit", data, "-o", out_dir, "--loss", "pg-unsure", "--json", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    learned, initial = doc["noise_learned"], doc["noise_initial"]
    assert learned["name"] == "pg" and learned["gain"] > 0 and learned == doc["noise"]
    assert initial != learned  # started from the estimate, then trained
    cfg = json.loads((out_dir / "config.json").read_text())
    per_file = cfg["noise_per_file"]  # one learned model per file, each started from that file's estimate
    assert cfg["noise_learned"] == learned and len(per_file) == 3 == len(cfg["noise_initial_per_file"])
    assert all(m["name"] == "pg" and m["gain"] > 0 for m in per_file.values()) and per_file == doc["noise_per_file"]
    assert np.isclose(learned["gain"], np.mean([m["gain"] for m in per_file.values()]))
    lines = [json.loads(ln) for ln in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["noise_learned"] == learned != lines[0]["noise_learned"]  # learned throughout training
    assert lines[-1]["noise_learned_per_file"] == per_file
    ckpt = torch.load(out_dir / "last.pt", weights_only=True)
    assert ckpt["noise"] == learned and {"gain", "variance", "offset"} <= ckpt["loss_state"].keys()
    assert ckpt["loss_state"]["gain"].shape == (3,) and ckpt["loss_options"]["groups"] == 3
    # held at the start for half the run (hold_steps="auto", settled and recorded), then an ascent every step
    assert ckpt["loss_options"]["learn_steps"] is None and ckpt["loss_options"]["hold_steps"] == 2
    assert int(ckpt["loss_state"]["held"]) == 2 and int(ckpt["loss_state"]["ascents"]) == 2
    # --resume continues from the learned multipliers (not a fresh start from the estimate), with the run's hold
    code, out, err = run(["fit", data, "-o", out_dir, "--resume", "--json", *TINY[:1], "6", *TINY[2:]], capsys)
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["noise_initial"] == initial and resumed["loss_options"]["hold_steps"] == 2
    g0, g1 = learned["gain"], resumed["noise_learned"]["gain"]
    assert 0 < abs(np.log(g1 / g0)) < 2 * 0.02 + 1e-9  # two more ascent steps, each of at most `step`
    assert int(torch.load(out_dir / "last.pt", weights_only=True)["loss_state"]["ascents"]) == 4
    # validate and reconstruct use the learned model unless --noise overrides
    code, out, err = run(["validate", out_dir, data, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    assert all(f["noise"] == resumed["noise_per_file"][f["path"]] for f in json.loads(out)["files"])


def test_unsure_on_gaussian_data(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    code, out, err = run(["fit", data, "-o", tmp_path / "u", "--loss", "unsure", "--json", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["noise_learned"]["name"] == "gaussian" and doc["noise_learned"]["sigma"] > 0


def test_loss_auto_takes_gr2r_at_low_counts_and_pg_sure_above():
    from sslrecon.api import GR2R_BELOW_COUNTS as LOW_COUNTS, auto_loss
    from sslrecon.noise import Correlated, PoissonGaussian

    pg = PoissonGaussian(gain=2.0, sigma=3.0, offset=100.0)
    assert auto_loss(pg, 100 + 2 * 0.5 * LOW_COUNTS) == "gr2r-poisson"
    assert auto_loss(pg, 100 + 2 * 2 * LOW_COUNTS) == "pg-sure"
    assert auto_loss(pg) == "pg-sure"  # the mean unknown
    # thinning needs independent pixels: correlated signal-dependent noise keeps SURE with its covariance at any count
    corr = Correlated(sigma=3.0, kernel=((0, 0.2, 0), (0.2, 1.0, 0.2), (0, 0.2, 0)), gain=2.0, offset=100.0)
    assert auto_loss(corr, 100 + 2 * 0.5 * LOW_COUNTS) == auto_loss(corr) == "sure"


def test_loss_auto_on_real_fmd_frames_trains_gr2r_with_the_inferred_model(tmp_path, capsys):
    """Issue 3's check: `fit --noise auto` on the FMD frames uses the inferred Poisson-Gaussian models once a
    Poisson-Gaussian loss exists, and the checkpoint carries them. At their 1-3 photons that loss is
    gr2r-poisson."""
    frames = sorted((FMD / "noisy_raw").glob("*.tif"))[:2]
    code, out, err = run(["fit", *frames, "-o", tmp_path / "fmd", "--loss", "auto", "--json", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["loss"] == "gr2r-poisson" and doc["noise"]["name"] in ("pg", "poisson")
    ckpt = torch.load(tmp_path / "fmd" / "model.pt", weights_only=True)
    assert all(m["name"] in ("pg", "poisson") and m["gain"] > 0 for m in ckpt["noise_per_file"].values())
    assert ckpt["noise_per_file"] == doc["noise_per_file"] and len(doc["noise_per_file"]) == 2


def test_loss_options_from_the_command_line(pg_data, tmp_path, capsys):
    data, _ = pg_data
    spec = f"pg:gain={GAIN},sigma={SIGMA},offset={OFFSET}"
    code, out, err = run(["fit", data, "-o", tmp_path / "so", "--loss", "pg-sure", "--noise", spec, "--json",
                          "--loss-option", "finite=false", "--loss-option", "second_order=true",
                          "--loss-option", "tau2=0.3", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["loss_options"]["second_order"] is True and doc["loss_options"]["tau2"] == 0.3
    assert "second_order" in json.loads((tmp_path / "so" / "metrics.jsonl").read_text().splitlines()[0])
    for bad in ("nonsense=1", "second_order"):
        code, _, err = run(["fit", data, "-o", tmp_path / "bad", "--loss", "pg-sure", "--noise", spec,
                            "--loss-option", bad, *TINY], capsys)
        assert code == 2 and "loss" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()
    for bad in ("test_samples=0", "test_samples=true", "test_samples=2.5"):  # gr2r-poisson: a count or auto
        code, _, err = run(["fit", data, "-o", tmp_path / "bad", "--loss", "gr2r-poisson", "--noise", spec,
                            "--loss-option", bad, *TINY], capsys)
        assert code == 2 and "test_samples" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()
    code, _, err = run(["fit", data, "-o", tmp_path / "bad", "--loss", "pg-unsure", "--loss-option", "nonsense=1",
                        *TINY], capsys)  # the options listed are the user's, not the per-file count fit sets itself
    assert code == 2 and "hold_steps" in err and "groups" not in err and not (tmp_path / "bad").exists()
    code, out, err = run(["fit", data, "-o", tmp_path / "k", "--loss", "gr2r-poisson", "--noise", spec, "--json",
                          "--loss-option", "test_samples=7", *TINY], capsys)
    assert code == 0 and json.loads(out)["loss_options"]["test_samples"] == 7, err


@pytest.mark.parametrize("loss", ["pg-sure", "gr2r-poisson"])
def test_known_model_losses_take_correlated_signal_dependent_noise(loss, tmp_path, capsys):
    """Motion-corrected micrographs have shot noise correlated between neighbours (`corr:...,gain=...`): the two
    losses train, record the model, reconstruct and validate on it rather than refusing it."""
    from sslrecon.noise import Correlated

    model = Correlated(SIGMA, ((0.0, 0.5, 0.0), (0.5, 1.0, 0.5), (0.0, 0.5, 0.0)), gain=GAIN, offset=OFFSET)
    d = tmp_path / "corr"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        x = OFFSET + GAIN * torch.tensor(smooth_image(np.random.default_rng(i), 48, 48, level=40.0, amp=15.0))
        tifffile.imwrite(d / f"im{i}.tif", model.sample(x.float(), generator=g).numpy().astype(np.float32))
    spec = f"corr:sigma={SIGMA},size=3,gain={GAIN},offset={OFFSET}"
    code, out, err = run(["fit", d, "-o", tmp_path / loss, "--loss", loss, "--noise", spec, "--json", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["noise"]["name"] == "corr" and doc["noise"]["gain"] == GAIN
    if loss == "gr2r-poisson":
        assert doc["loss_options"]["alpha"] == 0.15
    code, out, err = run(["validate", tmp_path / loss, d, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    assert all(np.isfinite(f["estimated_mse"]) for f in json.loads(out)["files"])
    code, _, err = run(["reconstruct", tmp_path / loss, d, "-o", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 0, err
    assert tifffile.imread(tmp_path / "out" / "im1.tif").shape == (48, 48)
    if loss == "pg-sure":  # a photon-scale term forced on such noise: one line with the fix, nothing written
        code, _, err = run(["fit", d, "-o", tmp_path / "forced", "--loss", loss, "--noise", spec,
                            "--loss-option", "finite=true", *TINY], capsys)
        assert code == 2 and "finite=true" in err and "fix:" in err and err.count("\n") == 1
        assert str(d / "im0.tif") in err  # the file whose model refuses it
        assert not (tmp_path / "forced" / "model.pt").exists()


def test_validate_counts_the_noise_correlation_a_white_model_leaves_out(tmp_path, capsys, monkeypatch):
    """Poisson-Gaussian noise with lag-1 correlation 0.23: `--noise auto` keeps a white model (below 0.3 training
    measured best with it), and `validate` adds the divergence over the covariances between pixels that the white
    model leaves out, reporting the kernel; an explicit `--noise` is taken as it is. With `--noise auto` the kernel
    comes from the report that estimated the file's model: the file is analysed once."""
    from sslrecon import api
    from sslrecon.noise import Correlated

    d, ref = tmp_path / "corr", tmp_path / "corr_ref"
    d.mkdir()
    ref.mkdir()
    kernel = ((0.0, 0.12, 0.0), (0.12, 1.0, 0.12), (0.0, 0.12, 0.0))
    model = Correlated(sigma=4.0, kernel=kernel, gain=3.0, offset=100.0)
    rng, g = np.random.default_rng(1), torch.Generator().manual_seed(1)
    x = 100 + 3 * smooth_image(rng, 256, 256, level=40.0, amp=25.0)
    y = model.sample(torch.tensor(x)[None, None], generator=g)[0, 0].numpy()
    tifffile.imwrite(d / "im.tif", y.astype(np.float32))
    tifffile.imwrite(ref / "im.tif", x.astype(np.float32))
    code, out, err = run(["fit", d, "-o", tmp_path / "run", "--loss", "pg-sure", "--json", *TINY], capsys)
    assert code == 0, err
    white = json.loads(out)["noise"]
    assert white["name"] in ("poisson", "pg")
    docs, calls, analyse = {}, [], api.analyze_noise
    monkeypatch.setattr(api, "analyze_noise", lambda *a, **k: calls.append(1) or analyse(*a, **k))
    for name, extra in (("recorded", []), ("given", ["--noise", from_dict(white).spec()]),
                        ("auto", ["--noise", "auto"])):
        calls.clear()
        code, out, err = run(["validate", tmp_path / "run", d, "--reference", ref, "--json", "--device", "cpu",
                              "--no-blend", *extra], capsys)  # (the tiny run's blend: mostly the input, uncorrelated)
        assert code == 0, err
        docs[name] = json.loads(out)["files"][0]
        assert len(calls) == (0 if name == "given" else 1)
    assert "noise_correlation_kernel" in docs["recorded"] and "noise_correlation_kernel" not in docs["given"]
    assert docs["auto"]["noise_correlation_kernel"] == docs["recorded"]["noise_correlation_kernel"]
    k = np.array(docs["recorded"]["noise_correlation_kernel"])
    assert 0.15 < (k[1:] * k[:-1]).sum() / (k * k).sum() < 0.3  # the kernel's lag-1 correlation, near the noise's
    # the unbiasedness of the added term is tested in test_losses; here it must change the estimate
    assert docs["recorded"]["estimated_mse"] != pytest.approx(docs["given"]["estimated_mse"], rel=1e-3)


@pytest.mark.parametrize("loss", ["pg-unsure", "unsure"])
def test_photon_counts_end_to_end(tmp_path, capsys, loss):
    """Whole counts without read noise (a counting camera's frames, uint16): `--noise auto` reads them as counts
    (gain 1, dark level 0, no read noise), `pg-unsure` and `unsure` keep that model (nothing to learn) and report
    it, and `validate` estimates the error of the reconstruction."""
    d = tmp_path / "counts"
    d.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        lam = smooth_image(rng, 128, 128, level=2.0, amp=1.5).clip(0.2)
        tifffile.imwrite(d / f"c{i}.tif", rng.poisson(lam).astype(np.uint16))
    code, out, err = run(["fit", d, "-o", tmp_path / "run", "--loss", loss, "--json", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    start, learned = doc["noise_initial"], doc["noise_learned"]
    assert start["name"] == "poisson" and (start["gain"], start["offset"]) == pytest.approx((1.0, 0.0), abs=1e-6)
    assert (learned["gain"], learned["sigma"], learned["offset"]) == pytest.approx((1.0, 0.0, 0.0), abs=1e-6)
    code, out, err = run(["validate", tmp_path / "run", d, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    assert all(np.isfinite(f["estimated_mse"]) for f in json.loads(out)["files"])


def test_pg_unsure_refuses_whole_counts_beside_other_files(tmp_path, capsys):
    """A counting detector's files have no noise for pg-unsure to learn and the others do: one run cannot take both,
    and the refusal names the file and the fix, before anything is trained."""
    d = tmp_path / "mixed"
    d.mkdir()
    rng = np.random.default_rng(4)
    lam = smooth_image(rng, 128, 128, level=2.0, amp=1.5).clip(0.2)
    tifffile.imwrite(d / "a_counts.tif", rng.poisson(lam).astype(np.uint16))
    x = smooth_image(rng, 128, 128, level=20.0, amp=10.0).clip(2)
    tifffile.imwrite(d / "b_camera.tif", (3 * rng.poisson(x) + rng.normal(0, 2, x.shape)).astype(np.float32))
    code, _, err = run(["fit", d, "-o", tmp_path / "run", "--loss", "pg-unsure", *TINY], capsys)
    assert code == 2 and "b_camera.tif" in err and "a_counts.tif" in err and "fix:" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "run" / "model.pt").exists()


def test_fit_help_gives_the_photon_removal_defaults(capsys):
    """`--loss-option`'s help names `pg-sure`'s default `finite=auto` and what `pg-unsure` takes."""
    code, out, _ = run(["fit", "--help"], capsys)
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "default auto: the finite difference below 10 counts" in text
    assert "pg-unsure takes auto or false" in text
