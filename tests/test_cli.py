"""End to end through the command line on tiny data, and one test per bad input (exit 2, nothing written)."""
import json
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import tifffile

from sslrecon.cli import main
from sslrecon.engine import checkpoint

from .conftest import TINY


def run(args, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trained(tiny_data, tmp_path, capsys):
    data, ref = tiny_data
    code, out, err = run(["fit", data, "-o", tmp_path / "run", "--loss", "sure", "--json", *TINY], capsys)
    assert code == 0, err
    return tmp_path / "run", json.loads(out)


def test_fit_writes_run_folder(trained):
    run_dir, doc = trained
    for name in ("model.pt", "last.pt", "config.json", "metrics.jsonl"):
        assert (run_dir / name).is_file()
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [2, 4] and all(ln["val_mse"] is not None for ln in lines)
    assert doc["noise"]["name"] in ("gaussian", "pg", "poisson") and doc["normalization"]["scale"] > 0
    assert doc["total_seconds"] > doc["seconds"] > 0  # the whole run, and its training steps
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["loss"] == "sure" and cfg["noise_normalized"]


def test_reconstruct_mirrors_formats(trained, tiny_data, tmp_path, capsys):
    run_dir, _ = trained
    data, _ = tiny_data
    code, out, err = run(["reconstruct", run_dir, data, "-o", tmp_path / "out", "--json", "--device", "cpu",
                          "--tile-size", "32"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(f["output"].rsplit("/", 1)[1] for f in doc["files"]) == ["cells.tif", "img0.mrc", "img1.mrc"]
    assert all(f["shape"] == [1, 48, 48] and f["seconds"] >= 0 for f in doc["files"])
    # each file's noise model as validate reports it (the trained files' own)
    recorded = json.loads((run_dir / "config.json").read_text())["noise_per_file"]
    assert all(f["noise"] == recorded[f["path"]] for f in doc["files"])
    with mrcfile.open(tmp_path / "out" / "img0.mrc") as m:
        assert m.data.dtype == np.float32 and np.isclose(m.voxel_size.x, 1.5)
    assert tifffile.imread(tmp_path / "out" / "cells.tif").dtype == np.float32
    # refuses to overwrite without --overwrite, and writes nothing new
    before = (tmp_path / "out" / "img0.mrc").read_bytes()
    code, _, err = run(["reconstruct", run_dir, data, "-o", tmp_path / "out"], capsys)
    assert code == 2 and "--overwrite" in err and (tmp_path / "out" / "img0.mrc").read_bytes() == before


def test_reconstruct_reads_paths_from_stdin(trained, tiny_data, tmp_path, capsys, monkeypatch):
    run_dir, _ = trained
    data, _ = tiny_data
    code, out, err = run(["reconstruct", run_dir / "model.pt", "-", "-o", tmp_path / "o2", "--device", "cpu"], capsys,
                         stdin=f"{data / 'img1.mrc'}\n", monkeypatch=monkeypatch)
    assert code == 0, err
    assert out.strip().endswith("img1.mrc")
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == [".sslrecon-outputs", "img1.mrc"]


@pytest.mark.parametrize("loss", ["r2r", "n2s"])
def test_other_losses_end_to_end(loss, tiny_data, tmp_path, capsys):
    data, ref = tiny_data
    code, _, err = run(["fit", data, "-o", tmp_path / loss, "--loss", loss, *TINY], capsys)
    assert code == 0, err
    code, out, err = run(["validate", tmp_path / loss, data, "--reference", ref, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert {"estimated_psnr", "psnr", "ssim", "files"} <= doc.keys() and len(doc["files"]) == 3


def test_validate_json(trained, tiny_data, capsys):
    run_dir, _ = trained
    data, ref = tiny_data
    code, out, err = run(["validate", run_dir, data, "--reference", ref, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert np.isclose(doc["psnr"], np.mean([f["psnr"] for f in doc["files"]]))
    assert all({"path", "estimated_psnr", "estimated_mse", "psnr", "ssim"} <= f.keys() for f in doc["files"])
    # float data: both PSNRs on the reference's range (the estimate took the noisy measurement's, which is wider)
    f = next(f for f in doc["files"] if f["path"].endswith("img0.mrc"))
    with mrcfile.open(ref / "img0.mrc") as m:
        span = float(m.data.max()) - float(m.data.min())
    assert np.isclose(f["data_range"], span)
    assert np.isclose(f["estimated_psnr"], 10 * np.log10(span**2 / f["estimated_mse"]))
    code, out, _ = run(["validate", run_dir, data, "--device", "cpu"], capsys)
    assert code == 0 and "estimated_psnr" in out and "ssim" not in out


def test_no_tta_is_the_single_pass_and_validate_scores_what_reconstruct_makes(trained, tiny_data, tmp_path, capsys):
    run_dir, _ = trained
    data, ref = tiny_data
    outs = {}
    for flag in ("--tta", "--no-tta"):
        code, _, err = run(["reconstruct", run_dir, data / "cells.tif", "-o", tmp_path / flag, "--device", "cpu", flag,
                            "--no-blend"], capsys)  # (the tiny run's blend may be all input, where both agree)
        assert code == 0, err
        outs[flag] = tifffile.imread(tmp_path / flag / "cells.tif")
        code, out, err = run(["validate", run_dir, data / "cells.tif", "--reference", ref, "--json", "--device", "cpu",
                              flag, "--no-blend"], capsys)
        doc = json.loads(out)
        assert code == 0 and doc["tta"] == (flag == "--tta"), err
        clean = tifffile.imread(ref / "cells.tif").astype(np.float64)  # uint16: PSNR's range is 65535
        true_mse = float(np.mean((outs[flag] - clean) ** 2))
        assert abs(doc["files"][0]["psnr"] - 10 * np.log10(65535.0**2 / true_mse)) < 1e-3  # the same reconstruction
    assert np.abs(outs["--tta"] - outs["--no-tta"]).max() > 0


def test_resume_continues_and_finetune_starts_from_weights(trained, tiny_data, tmp_path, capsys):
    run_dir, _ = trained
    data, _ = tiny_data
    code, _, err = run(["fit", data, "-o", run_dir, "--resume", *TINY[:1], "6", *TINY[2:]], capsys)
    assert code == 0, err
    steps = [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    code, out, err = run(["finetune", run_dir, data, "-o", tmp_path / "ft", "--steps", "2", "--loss", "n2s",
                          "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["loss"] == "n2s" and doc["finetuned_from"] == str(run_dir)
    # the finetuned model's own blend, found anew (a blind-spot rule's is below one), in the run it reconstructs with
    assert 0 < doc["blend"]["tta"] < 1 and checkpoint.load(tmp_path / "ft")["blend"] == doc["blend"]
    assert checkpoint.load(run_dir)["blend"]["frames"] == 3  # the resumed run's, found at its new end


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "sslrecon", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("sslrecon ")


# ---- bad inputs: one line on stderr naming the file and the fix, exit 2, nothing written ----

def _assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sslrecon: error:") and "fix:" in lines[0], err
    for n in needles:
        assert n in lines[0]


def test_empty_input_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(["fit", tmp_path / "empty", "-o", tmp_path / "run", *TINY], capsys)
    _assert_user_error(code, err, "no input images")
    assert not (tmp_path / "run").exists()


def test_truncated_mrc(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    raw = (data / "img0.mrc").read_bytes()
    (data / "img0.mrc").write_bytes(raw[:2000])
    code, _, err = run(["fit", data, "-o", tmp_path / "run", *TINY], capsys)
    _assert_user_error(code, err, "img0.mrc")
    assert not (tmp_path / "run").exists()


def test_unsupported_mrc_mode(tmp_path, capsys):
    with mrcfile.new(tmp_path / "c.mrc") as m:
        m.set_data(np.zeros((16, 16), np.complex64))
    code, _, err = run(["fit", tmp_path / "c.mrc", "-o", tmp_path / "run", *TINY], capsys)
    _assert_user_error(code, err, "c.mrc", "mode 4")


def test_text_file_named_tif(tmp_path, capsys):
    (tmp_path / "fake.tif").write_text("hello\n")
    code, _, err = run(["fit", tmp_path / "fake.tif", "-o", tmp_path / "run", *TINY], capsys)
    _assert_user_error(code, err, "fake.tif")
    assert not (tmp_path / "run").exists()


def test_nan_in_data(tiny_data, tmp_path, capsys, trained):
    run_dir, _ = trained
    data, _ = tiny_data
    bad = np.ones((48, 48), np.float32)
    bad[3, 4] = np.nan
    with mrcfile.new(data / "nan.mrc") as m:
        m.set_data(bad)
    code, _, err = run(["fit", data, "-o", tmp_path / "run2", *TINY], capsys)
    _assert_user_error(code, err, "nan.mrc", "NaN")
    assert not (tmp_path / "run2").exists()
    code, _, err = run(["reconstruct", run_dir, data, "-o", tmp_path / "out", "--device", "cpu"], capsys)
    _assert_user_error(code, err, "nan.mrc")
    assert not (tmp_path / "out").exists()


def test_bad_noise_spec(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    code, _, err = run(["fit", data, "-o", tmp_path / "run", "--noise", "gaussian:sigma=-2", *TINY], capsys)
    _assert_user_error(code, err, "sigma")
    assert not (tmp_path / "run").exists()


def test_reference_names_must_match(trained, tiny_data, tmp_path, capsys):
    run_dir, _ = trained
    data, ref = tiny_data
    (ref / "cells.tif").rename(ref / "other.tif")
    code, out, err = run(["validate", run_dir, data, "--reference", ref, "--json", "--device", "cpu"], capsys)
    _assert_user_error(code, err, "cells.tif")
    assert out == ""


def test_existing_run_folder_needs_resume_or_overwrite(trained, tiny_data, capsys):
    run_dir, _ = trained
    data, _ = tiny_data
    before = (run_dir / "model.pt").read_bytes()
    code, _, err = run(["fit", data, "-o", run_dir, *TINY], capsys)
    _assert_user_error(code, err, "--resume")
    assert (run_dir / "model.pt").read_bytes() == before


def test_resume_refuses_other_files_another_loss_and_a_total_already_done(trained, tiny_data, capsys):
    """--resume continues the run as it was started: other inputs (which its noise models and normalisation do not
    describe), another loss (it went on with the run's, silently), or a total of steps already done are one error
    line each, and the run is left as it was."""
    run_dir, _ = trained
    data, _ = tiny_data
    before = {n: (run_dir / n).read_bytes() for n in ("last.pt", "config.json", "metrics.jsonl")}
    more = [*TINY[:1], "8", *TINY[2:]]
    for args, needles in (([data / "img0.mrc", data / "img1.mrc", "-o", run_dir, "--resume", *more], ("finetune",)),
                          ([data, "-o", run_dir, "--resume", "--loss", "n2s", *more], ("--loss n2s", "finetune")),
                          ([data, "-o", run_dir, "--resume", *TINY], ("--steps above 4",))):
        code, _, err = run(["fit", *map(str, args)], capsys)
        _assert_user_error(code, err, *needles)
    assert all((run_dir / n).read_bytes() == b for n, b in before.items())


def test_reconstruct_refuses_inputs_sharing_a_name(trained, tiny_data, tmp_path, capsys):
    """Outputs go side by side under -o, so two inputs of one name clash. Nothing is written."""
    run_dir, _ = trained
    data, _ = tiny_data
    (data / "session2").mkdir()
    (data / "session2" / "img0.mrc").write_bytes((data / "img0.mrc").read_bytes())
    code, _, err = run(["reconstruct", run_dir, data, "-o", tmp_path / "again", "--device", "cpu"], capsys)
    _assert_user_error(code, err, "share the name", "separate output folders")
    assert not (tmp_path / "again").exists()


def test_earlier_outputs_kept_inside_an_input_folder_are_left_out(trained, tiny_data, tmp_path, capsys):
    """A folder walk leaves out what `reconstruct` wrote to a folder below the one named (they are reconstructions,
    not measurements: trained on, they would teach a denoiser its own output), and says so on stderr; the output
    folder named itself is read like any other."""
    run_dir, _ = trained
    data, _ = tiny_data
    code, out, err = run(["reconstruct", run_dir, data, "-o", data / "den", "--device", "cpu"], capsys)
    assert code == 0 and "note" not in err, err
    assert sorted((data / "den" / ".sslrecon-outputs").read_text().split()) == ["cells.tif", "img0.mrc", "img1.mrc"]
    code, out, err = run(["reconstruct", run_dir, data, "-o", tmp_path / "again", "--device", "cpu", "--json"],
                         capsys)
    assert code == 0, err
    assert sorted(f["path"] for f in json.loads(out)["files"]) == sorted(str(data / n) for n in
                                                                          ("cells.tif", "img0.mrc", "img1.mrc"))
    assert err.count("sslrecon: note: left out 3 file(s) that sslrecon wrote") == 1 and str(data / "den") in err
    code, out, err = run(["fit", data, "-o", tmp_path / "run2", "--json", *TINY], capsys)
    assert code == 0 and len(json.loads(out)["inputs"]) == 3 and "left out 3" in err, err
    code, out, err = run(["noise", data / "den", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["files"]) == 3 and "note" not in err, err


def test_bad_noise_override_on_reconstruct_writes_nothing(trained, tiny_data, tmp_path, capsys):
    run_dir, _ = trained
    data, _ = tiny_data
    code, _, err = run(["reconstruct", run_dir, data, "-o", tmp_path / "out", "--noise", "pg:gain=1"], capsys)
    _assert_user_error(code, err, "sigma")
    assert not (tmp_path / "out").exists()


def test_reference_of_another_size(trained, tiny_data, capsys):
    run_dir, _ = trained
    data, ref = tiny_data
    tifffile.imwrite(ref / "cells.tif", np.zeros((40, 48), np.uint16))
    code, _, err = run(["validate", run_dir, data, "--reference", ref, "--device", "cpu"], capsys)
    _assert_user_error(code, err, "cells.tif")


def test_real_epu_micrograph_through_the_cli(tmp_path, capsys):
    """The headline: `fit MICROGRAPHS --loss pg-unsure` with no noise flag on the real micrographs, then reconstruct."""
    from .conftest import EPU

    code, out, err = run(["fit", EPU.parent, "-o", tmp_path / "run", "--loss", "pg-unsure", "--json", *TINY], capsys)
    assert code == 0, err
    doc = json.loads(out)
    learned = doc["noise_per_file"][str(EPU)]  # each micrograph's own gain and read noise, in counts
    assert learned["gain"] > 0 and len(doc["noise_per_file"]) == 2
    start = doc["noise_initial_per_file"][str(EPU)]  # started from `sslrecon noise`'s estimate: counts whose
    assert start["name"] == "corr" and start["gain"] > 0  # level follows the signal, correlated (lag-1 0.47)
    # the level is learned under the estimate's correlation, which is kept
    assert learned["name"] == "corr" and np.allclose(learned["kernel"], start["kernel"], atol=1e-6)
    code, _, err = run(["reconstruct", tmp_path / "run", EPU, "-o", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 0, err
    with mrcfile.open(EPU, permissive=True) as src, mrcfile.open(tmp_path / "out" / EPU.name) as out:
        assert out.data.dtype == np.float32 and out.data.shape == src.data.shape
        assert np.isclose(out.voxel_size.x, 0.667, atol=1e-3)
        assert out.header.exttyp.item() == b"FEI2"
        assert out.extended_header.tobytes() == src.extended_header.tobytes()
        assert tuple(out.header.origin.item()) == tuple(src.header.origin.item())
        assert np.isfinite(out.data).all()
        # a 4-step network is far from trained, but its residual output still follows the micrograph
        assert np.corrcoef(out.data[::8, ::8].ravel(), src.data[::8, ::8].ravel())[0, 1] > 0.3


def test_same_seed_reproduces_the_run(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    lines = []
    for name in ("a", "b"):
        code, _, err = run(["fit", data, "-o", tmp_path / name, "--loss", "r2r", *TINY], capsys)
        assert code == 0, err
        lines.append([json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    assert [(r["loss"], r["val_mse"]) for r in lines[0]] == [(r["loss"], r["val_mse"]) for r in lines[1]]


def test_unavailable_cuda_device_is_a_user_error(tiny_data, tmp_path, capsys):
    data, _ = tiny_data
    code, _, err = run(["fit", data, "-o", tmp_path / "run", *TINY[:-2], "--device", "cuda:99"], capsys)
    _assert_user_error(code, err, "--device")
    assert not (tmp_path / "run").exists()
