"""Poisson-Gaussian denoising: Set12 with synthetic detector noise at three photon levels, and the five real FMD
frames, for each Poisson-Gaussian loss beside a supervised oracle and a Gaussian SURE with the best single sigma.

Set12 (centre 256x256 crops of the 12 images): counts `y = offset + gain * Poisson(lam) + N(0, sigma^2)` with
`lam = photons * x / mean(x)` over the whole set (about `photons` photons at the mean), gain 2, read noise 3 (1.5
photons), offset 100, drawn once with seed 0. Every method trains the same U-Net (width 16, depth 3) for the same
budget (`--steps` steps of `--batch-size` 8 patches of 48x48, Adam at `--lr` 1e-3, cosine decay) on the 12 noisy images only (the oracle on
pairs with the clean images; a second supervised reference trains on the 68 BSD68 crops with the same noise and
never sees Set12, as a supervised model would in use: at 300 steps the two are within 0.2 dB, at 2000 steps and 1
photon the one that trained on the test images' clean versions is 0.5 dB ahead). PSNR against the clean counts, with the clean set's range. `pg-sure` runs with its
default (the photon removal by a finite difference below 10 counts per pixel, `finite=auto`, and the second-order
term from there to 100), with the Taylor terms at every count (`finite=false`; also with `--noise auto`) and with the
first-order term only. Gaussian `sure` is run at
0.6 and 1.0 times the root-mean-square noise level and the better one is reported (a choice no user could make).

FMD: the five real confocal frames with `--noise auto`, PSNR against clean_avg50 (range 255), their mean and each
frame's, `--fmd-steps` steps with the default network (as `benchmarks/denoise_fmd.py`).

With `--correlated`, only Set12 at 30 photons with the same level but correlated noise (a plus-shaped kernel:
lag-1 correlation 0.50 and 0.26), drawn from `corr:...,gain=...` with seed 0: `sure` and `gr2r-poisson` (its Gaussian
split) with the correlated model (known), `pg-sure` with the white model of the same level (known), `sure`, `pg-sure`
and `gr2r-poisson` with `--noise auto`, and `pg-unsure` (which keeps a correlated estimate's kernel and learns the
level).

With `--gaussian-control`, only the Set12 counts at 1 photon with white Gaussian noise of the same root-mean-square
level (sigma 3.61): the oracle, and `sure` and `r2r` with the exact sigma, over `--seeds`: what the SURE family
reaches at that noise where nothing about photons is in the way.

With `--unsure`, only the Set12 crops with white Gaussian noise (10 and 25 grey levels): `unsure` with its multiplier
held for the first half of the run (the default), learning it from the first step, and `sure --noise auto`.

    python benchmarks/denoise_pg.py [--steps 300] [--photons 1 5 30] [--fmd-steps 300] [--skip-fmd] [--device cuda]
        [--seeds 0 1 2]  (Set12 figures averaged over seeds: at 1 photon gr2r-poisson scored 15.47-17.20 over three)
    python benchmarks/denoise_pg.py --skip-set12 --fmd-losses pg-unsure --fmd-steps 2000 [--json ...]
        (only the FMD table; for a loss that learns the noise, each frame's learned and estimated variance over
        that of the frame against its 50-frame average, at the flatter half of its places: `agreement`)
    python benchmarks/denoise_pg.py --correlated [--json benchmarks/results/denoise_pg_correlated.json]
    python benchmarks/denoise_pg.py --unsure [--json benchmarks/results/denoise_unsure.json]
    python benchmarks/denoise_pg.py --methods "oracle (supervised)" "pg-sure (model known)" --photons 1 --seeds 0 1 2
        --batch-size 32 --skip-fmd --json ...  (every Set12 method with 32 patches per step; --lr likewise)
    python benchmarks/denoise_pg.py --gaussian-control --seeds 0 1 2 [--json benchmarks/results/denoise_gaussian_control.json]
    python benchmarks/denoise_pg.py --json benchmarks/results/denoise_pg_cpu.json --only "pg-unsure" [...]
        [--only-fmd pg-unsure [...]]
        (rerun only the named Set12 methods and FMD entries and update their figures in that JSON)
    python benchmarks/denoise_pg.py --methods "oracle (supervised)" "pg-unsure" [...] --fmd-losses pg-sure:finite=auto
        (a whole run of just these Set12 methods; an FMD entry LOSS:key=value,... runs LOSS with those options)
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from sslrecon import api
from sslrecon.config import RunConfig
from sslrecon.data import Normalization
from sslrecon.engine.metrics import psnr
from sslrecon.engine.tta import DIHEDRAL, IDENTITY, averaged
from sslrecon.engine.train import cosine_lr
from sslrecon.errors import ConfigError
from sslrecon.losses import parse_options
from sslrecon.models import UNet, UNetConfig
from sslrecon.noise.estimate import analyze

from noise_estimation import fitted_span, reference_variance_ratio

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEVICE = "cpu"
GAIN, READ, OFFSET = 2.0, 3.0, 100.0
NET = {"width": 16, "depth": 3, "patch_size": 48, "batch_size": 8, "lr": 1e-3}  # every method's (--batch-size, --lr)
TTA = True  # every method's reconstruction (the oracle's too) averaged over the eight symmetries; --no-tta: one pass
BLEND = True  # every reconstruction blended with its measurement: the runs' own weights, the oracle's best (--no-blend)
SEEDS = (0,)  # Set12 figures are means over these seeds (--seeds): at 1 photon three seeds spread a method over 1.7 dB


def set12_clean(folder: str = "Set12") -> list[np.ndarray]:
    """The centre 256x256 crops of a folder of natural images, grey levels in [0, 1]."""
    out = []
    for p in sorted((DATA / "natural" / folder).glob("*.png")):
        x = np.asarray(Image.open(p).convert("L"), dtype=np.float64) / 255
        h, w = x.shape
        out.append(x[(h - 256) // 2:(h + 256) // 2, (w - 256) // 2:(w + 256) // 2])
    return out


def set_range(images: list[np.ndarray]) -> float:
    """The PSNR range of a set: from its lowest value to its highest, over every image."""
    return float(max(x.max() for x in images) - min(x.min() for x in images))


def noisy_set(clean: list[np.ndarray], photons: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Clean and noisy counts (offset, gain, read noise as in the module docstring), one draw with seed 0."""
    rng = np.random.default_rng(0)
    mean = float(np.mean([x.mean() for x in clean]))
    lams = [photons * x / mean for x in clean]
    noisy = [OFFSET + GAIN * rng.poisson(lam) + rng.normal(0, READ, lam.shape) for lam in lams]
    return [OFFSET + GAIN * lam for lam in lams], noisy


def bsd68_set(photons: float, like: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Clean and noisy counts of the 68 BSD68 images' centre 256x256 crops at the photon scale of the Set12 crops
    `like` (the same `photons / mean` map, the same detector), drawn once with seed 1: the held-out oracle's
    training set."""
    scale = photons / float(np.mean([x.mean() for x in like]))
    rng = np.random.default_rng(1)
    lams = [scale * x for x in set12_clean("BSD68")]
    return ([OFFSET + GAIN * lam for lam in lams],
            [OFFSET + GAIN * rng.poisson(lam) + rng.normal(0, READ, lam.shape) for lam in lams])


def oracle(noisy: list[np.ndarray], clean: list[np.ndarray], steps: int, seed: int = 0,
           apply_to: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The supervised reference: the same network and budget, trained on (noisy, clean) patch pairs, then applied
    to `noisy` (or to `apply_to`: images it did not train on)."""
    norm = Normalization.from_frames(noisy, count=len(noisy))
    ys = [torch.tensor(norm(n), dtype=torch.float32, device=DEVICE) for n in noisy]
    xs = [torch.tensor(norm(c), dtype=torch.float32, device=DEVICE) for c in clean]
    torch.manual_seed(seed)
    model = UNet(UNetConfig(width=NET["width"], depth=NET["depth"])).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=NET["lr"])
    g, p = torch.Generator().manual_seed(seed), NET["patch_size"]
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, NET["lr"])
        idx = torch.randint(0, len(ys), (NET["batch_size"],), generator=g).tolist()
        ij = torch.randint(0, 256 - p, (NET["batch_size"], 2), generator=g).tolist()
        yb = torch.stack([ys[k][i:i + p, j:j + p] for k, (i, j) in zip(idx, ij)])[:, None]
        xb = torch.stack([xs[k][i:i + p, j:j + p] for k, (i, j) in zip(idx, ij)])[:, None]
        loss = ((model(yb) - xb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    group = DIHEDRAL if TTA else (IDENTITY,)

    def rule(y):
        return averaged(model, y[None, None], group)[0, 0]

    alpha = 1.0
    with torch.no_grad():
        if BLEND:  # its best weight against the measurement, from its (clean) training pairs, at most twelve
            pairs = [(y, x, rule(y) - y) for y, x in zip(ys[:12], xs[:12])]
            step = sum(float((d * d).sum()) for _, _, d in pairs)
            alpha = min(1.0, max(0.0, sum(float(((x - y) * d).sum()) for y, x, d in pairs) / step)) if step else 1.0
        if apply_to is not None:
            ys = [torch.tensor(norm(n), dtype=torch.float32, device=DEVICE) for n in apply_to]
        return [norm.denormalize((y + alpha * (rule(y) - y)).float().cpu().numpy()) for y in ys]


def self_supervised(folder: Path, run: Path, loss: str, noise: str, steps: int, options: dict | None = None,
                    net: dict | None = None, seed: int = 0) -> tuple[dict, list[Path]]:
    cfg = RunConfig(loss=loss, noise=noise, steps=steps, device=DEVICE, loss_options=options or {}, seed=seed,
                    **(NET if net is None else net))
    doc = api.fit([str(folder)], run, config=cfg)
    items = list(api.reconstruct(run, [str(folder)], run / "out", device=DEVICE, tta=TTA, blend=BLEND))
    return {**doc, "blend_applied": items[0]["blend"]}, [Path(o["output"]) for o in items]


KNOWN = f"pg:gain={GAIN},sigma={READ},offset={OFFSET}"
SET12_METHODS = (  # (name, loss, --noise, loss options)
    ("pg-sure (model known)", "pg-sure", KNOWN, {}),
    ("pg-sure Taylor terms (model known)", "pg-sure", KNOWN, {"finite": False}),
    ("pg-sure first-order only (model known)", "pg-sure", KNOWN, {"second_order": False}),
    ("pg-sure probes=2 (model known)", "pg-sure", KNOWN, {"probes": 2}),
    ("pg-sure --noise auto", "pg-sure", "auto", {}),
    ("pg-sure Taylor terms --noise auto", "pg-sure", "auto", {"finite": False}),
    ("pg-unsure", "pg-unsure", "auto", {}),
    ("gr2r-poisson (model known)", "gr2r-poisson", KNOWN, {}),
    ("gr2r-poisson shifted split (model known)", "gr2r-poisson", KNOWN, {"split": "shifted"}),
)


ORACLE, GAUSSIAN_SURE = "oracle (supervised)", "gaussian sure (best single sigma)"
HELD_OUT_ORACLE = "supervised on BSD68 (held out)"


def write_folder(folder: Path, images: list[np.ndarray]) -> Path:
    """The images as numbered float32 TIFFs in a new folder (what the self-supervised runs train on)."""
    folder.mkdir()
    for i, n in enumerate(images):
        tifffile.imwrite(folder / f"{i:02d}.tif", n.astype(np.float32))
    return folder


def mean_psnr(clean: list[np.ndarray], images: list, data_range: float) -> float:
    """Mean PSNR against the clean images of `images`: arrays, or output files (taken in sorted order)."""
    if images and isinstance(images[0], Path):
        images = [tifffile.imread(o) for o in sorted(images)]
    return float(np.mean([psnr(c, np.asarray(e, np.float64), data_range) for c, e in zip(clean, images)]))


def over_seeds(row: dict, name: str, measure) -> None:
    """`row[name]`: the mean of `measure(seed)` over `SEEDS` (the network's initialisation and the patches drawn), and
    with more than one seed each seed's figure as `row[name + " seeds"]`."""
    values = [float(measure(seed)) for seed in SEEDS]
    row[name] = float(np.mean(values))
    if len(values) > 1:
        row[f"{name} seeds"] = values


def set12_table(photon_levels: list[float], steps: int, tmp: Path, only: list[str] | None = None) -> list[dict]:
    """Every method at every photon level; with `only`, just the named methods (the oracle and the Gaussian sure
    are among the names). Each figure is the mean over `SEEDS`; the blend, start and learned models shown are the
    last seed's."""
    rows = []
    clean_all = set12_clean()
    for photons in photon_levels:
        clean, noisy = noisy_set(clean_all, photons)
        rng_ = set_range(clean)
        folder = write_folder(tmp / f"set12_{photons:g}", noisy)
        row = {"photons": photons, "noisy": mean_psnr(clean, noisy, rng_)}
        t0 = time.perf_counter()
        if only is None or ORACLE in only:
            over_seeds(row, ORACLE, lambda seed: mean_psnr(clean, oracle(noisy, clean, steps, seed), rng_))
        if only is None or HELD_OUT_ORACLE in only:
            train_clean, train_noisy = bsd68_set(photons, clean_all)
            over_seeds(row, HELD_OUT_ORACLE, lambda seed: mean_psnr(
                clean, oracle(train_noisy, train_clean, steps, seed, apply_to=noisy), rng_))
        for name, loss, noise, opts in SET12_METHODS:
            if only is not None and name not in only:
                continue
            docs = []

            def measure(seed):
                doc, outs = self_supervised(folder, tmp / f"{name.replace(' ', '_')}_{photons:g}_{seed}", loss, noise,
                                            steps, opts, seed=seed)
                docs.append(doc)
                return mean_psnr(clean, outs, rng_)

            over_seeds(row, name, measure)
            doc = docs[-1]
            row[f"{name} blend"] = doc["blend_applied"]
            if loss == "pg-unsure":
                row["pg-unsure learned"] = doc["noise_learned"]
            if loss == "gr2r-poisson":
                row[f"{name} alpha"] = doc["loss_options"]["alpha"]  # as alpha=auto settled it
            if noise == "auto":
                row[f"{name} start model"] = doc.get("noise_initial", doc["noise"])
        if only is None or GAUSSIAN_SURE in only:
            rms = math.sqrt(GAIN * photons * GAIN + READ**2)  # the noise's root-mean-square level at the mean signal
            best = -math.inf
            for factor in (0.6, 1.0):
                trial = {}
                over_seeds(trial, GAUSSIAN_SURE, lambda seed: mean_psnr(clean, self_supervised(
                    folder, tmp / f"sure_{factor}_{photons:g}_{seed}", "sure", f"gaussian:sigma={factor * rms:.6g}",
                    steps, seed=seed)[1], rng_))
                if trial[GAUSSIAN_SURE] > best:
                    best, row["gaussian sure sigma"] = trial[GAUSSIAN_SURE], factor * rms
                    row.update(trial)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def correlated_table(steps: int, tmp: Path, photons: float = 30.0) -> list[dict]:
    from sslrecon.noise import Correlated

    clean_all = set12_clean()
    mean = float(np.mean([x.mean() for x in clean_all]))
    clean = [OFFSET + GAIN * photons * x / mean for x in clean_all]
    rng_ = set_range(clean)
    rows = []
    for arm in (0.5, 0.134):
        kernel = ((0.0, arm, 0.0), (arm, 1.0, arm), (0.0, arm, 0.0))
        truth = Correlated(READ, kernel, gain=GAIN, offset=OFFSET)
        g = torch.Generator().manual_seed(0)
        noisy = [truth.sample(torch.tensor(c)[None, None], generator=g)[0, 0].numpy() for c in clean]
        folder = write_folder(tmp / f"corr_{arm}", noisy)
        kfile = tmp / f"kernel_{arm}.npy"
        np.save(kfile, np.array(kernel))
        r = noisy[0] - clean[0]
        row = {"kernel_arm": arm, "lag1": float((r[:, 1:] * r[:, :-1]).mean() / r.var()),
               "noisy": mean_psnr(clean, noisy, rng_)}
        for name, loss, noise in (
                ("sure, correlated model known", "sure", f"corr:sigma={READ},gain={GAIN},offset={OFFSET},kernel={kfile}"),
                ("pg-sure, white model of the same level", "pg-sure", f"pg:gain={GAIN},sigma={READ},offset={OFFSET}"),
                ("gr2r-poisson, correlated model known", "gr2r-poisson",
                 f"corr:sigma={READ},gain={GAIN},offset={OFFSET},kernel={kfile}"),
                ("sure --noise auto", "sure", "auto"), ("pg-sure --noise auto", "pg-sure", "auto"),
                ("gr2r-poisson --noise auto", "gr2r-poisson", "auto"), ("pg-unsure", "pg-unsure", "auto")):
            try:
                doc, outs = self_supervised(folder, tmp / f"{loss}_{noise[:4]}_{arm}", loss, noise, steps)
                row[name] = mean_psnr(clean, outs, rng_)
                row[f"{name} model"] = doc["noise"]
            except ConfigError as e:  # e.g. pg-sure refusing an estimated correlated model: record why
                row[name] = None
                row[f"{name} refused"] = str(e)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def gaussian_control_table(steps: int, tmp: Path, photons: float = 1.0) -> list[dict]:
    """`--gaussian-control`: the Set12 counts at `photons` with white Gaussian noise of the Poisson-Gaussian set's
    root-mean-square level at the mean signal (seed 0), for the oracle, `sure` and `r2r` with the exact sigma, over
    `SEEDS`: what the SURE family reaches at that noise where nothing about photons is in the way."""
    clean, _ = noisy_set(set12_clean(), photons)
    sigma = math.sqrt(GAIN * GAIN * photons + READ**2)
    rng = np.random.default_rng(0)
    noisy = [c + rng.normal(0, sigma, c.shape) for c in clean]
    rng_ = set_range(clean)
    folder = write_folder(tmp / f"gaussian_{photons:g}", noisy)
    row = {"photons": photons, "sigma": sigma, "noisy": mean_psnr(clean, noisy, rng_)}
    over_seeds(row, ORACLE, lambda seed: mean_psnr(clean, oracle(noisy, clean, steps, seed), rng_))
    for loss in ("sure", "r2r"):
        over_seeds(row, f"{loss}, sigma known", lambda seed: mean_psnr(clean, self_supervised(
            folder, tmp / f"{loss}_{seed}", loss, f"gaussian:sigma={sigma:.6g}", steps, seed=seed)[1], rng_))
    print(json.dumps(row), flush=True)
    return [row]


def unsure_table(steps: int, tmp: Path) -> list[dict]:
    """`--unsure`: the twelve crops with white Gaussian noise of 10 and 25 grey levels (seed 0): `unsure` (multiplier
    held at the estimate for the first half of the run), `unsure` learning it from the first step (`hold_steps=0`),
    and `sure --noise auto`, PSNR against the clean crops (range 255)."""
    clean = [255 * c for c in set12_clean()]
    rows = []
    for sigma in (10.0, 25.0):
        rng = np.random.default_rng(0)
        noisy = [c + rng.normal(0, sigma, c.shape) for c in clean]
        folder = write_folder(tmp / f"gauss_{sigma:g}", noisy)
        row = {"sigma": sigma, "noisy": mean_psnr(clean, noisy, 255)}
        for name, loss, options in (("unsure", "unsure", {}), ("unsure, hold_steps=0", "unsure", {"hold_steps": 0}),
                                    ("sure --noise auto", "sure", {})):
            doc, outs = self_supervised(folder, tmp / f"{name.replace(' ', '_')}_{sigma:g}", loss, "auto", steps, options)
            row[name] = mean_psnr(clean, outs, 255)
            if "noise_learned" in doc:
                row[f"{name} learned sigma"] = doc["noise_learned"]["sigma"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def fmd_table(losses: list[str], steps: int, tmp: Path) -> dict:
    """Each loss with `--noise auto`; an entry `LOSS:key=value,...` runs LOSS with those options (as --loss-option)."""
    fmd = DATA / "fluorescence" / "fmd"
    frames = sorted((fmd / "noisy_raw").glob("*.tif"))
    clean = {p.name: tifffile.imread(fmd / "clean_avg50" / p.name).astype(np.float64) for p in frames}
    out = {"noisy input": float(np.mean([psnr(clean[p.name], tifffile.imread(p), 255) for p in frames]))}
    for i, entry in enumerate(losses):
        loss, _, given = entry.partition(":")
        options = parse_options([o for o in given.split(",") if o])
        t0 = time.perf_counter()
        doc, outs = self_supervised(fmd / "noisy_raw", tmp / f"fmd_{i}_{loss}", loss, "auto", steps, options, net={})
        scores = {o.stem: float(psnr(clean[o.name], tifffile.imread(o), 255)) for o in outs}
        out[entry], out[f"{entry} per frame"] = float(np.mean(list(scores.values()))), scores
        out[f"{entry} blend"] = doc["blend_applied"]
        if "noise_learned" in doc:
            out[f"{entry} learned"] = doc["noise_learned"]
            out[f"{entry} variance / reference"] = agreement(fmd, tmp / f"fmd_{i}_{loss}")
        print(json.dumps({entry: out[entry], "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return out


def agreement(fmd: Path, run: Path) -> dict:
    """Per frame, the learned and the starting (estimated) noise model's variance over that of the frame against its
    50-frame average (`noise_estimation.reference_variance_ratio`, over the estimator's fitted span): the check
    that a learned noise agrees with an independent estimate of it."""
    cfg = json.loads((run / "config.json").read_text())
    out = {}
    for path, learned in cfg["noise_per_file"].items():
        p = Path(path)
        noisy, clean = tifffile.imread(p), tifffile.imread(fmd / "clean_avg50" / p.name)
        lo, hi = fitted_span(analyze([noisy]))
        out[p.stem] = {k: reference_variance_ratio(noisy, clean, m["gain"], m.get("sigma", 0.0), m["offset"], lo, hi)
                       for k, m in (("learned", learned), ("estimate", cfg["noise_initial_per_file"][path]))}
    return out


def main() -> None:
    global DATA, DEVICE, TTA, BLEND, SEEDS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--photons", type=float, nargs="+", default=[1.0, 5.0, 30.0])
    ap.add_argument("--fmd-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=NET["batch_size"], help="Set12: every method's patches per step")
    ap.add_argument("--lr", type=float, default=NET["lr"], help="Set12: every method's learning rate")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                    help="Set12 figures are means over these seeds (each seed's figure beside it in the JSON)")
    ap.add_argument("--fmd-losses", nargs="+", default=["pg-sure", "pg-unsure", "gr2r-poisson", "sure", "unsure"])
    ap.add_argument("--skip-fmd", action="store_true")
    ap.add_argument("--skip-set12", action="store_true", help="only the FMD table")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--no-tta", action="store_true",
                    help="one pass per reconstruction, the oracle's too (default: each averaged over eight symmetries)")
    ap.add_argument("--no-blend", action="store_true",
                    help="the networks' reconstructions alone (default: blended with the measurement, the oracle by "
                         "its best weight on its training pairs)")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (natural/Set12, fluorescence/fmd)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/denoise_pg.json"))
    ap.add_argument("--correlated", action="store_true", help="only the correlated-noise comparison (see above)")
    ap.add_argument("--unsure", action="store_true", help="only Gaussian unsure with and without its hold (see above)")
    ap.add_argument("--gaussian-control", action="store_true",
                    help="only Gaussian noise of the 1-photon set's level: oracle, sure and r2r (see above)")
    ap.add_argument("--only", nargs="+", choices=[ORACLE, HELD_OUT_ORACLE, *(m[0] for m in SET12_METHODS)],
                    metavar="METHOD",
                    help="rerun just these Set12 methods (no FMD) and update their figures in the existing --json")
    ap.add_argument("--only-fmd", nargs="+", metavar="LOSS",
                    help="rerun just these FMD entries (as in --fmd-losses) and update them in the existing --json")
    ap.add_argument("--methods", nargs="+", choices=[ORACLE, HELD_OUT_ORACLE, *(m[0] for m in SET12_METHODS),
                                                     GAUSSIAN_SURE],
                    metavar="METHOD", help="a whole run (new --json) of just these Set12 methods")
    args = ap.parse_args()
    DATA, DEVICE, TTA, BLEND, SEEDS = args.data, args.device, not args.no_tta, not args.no_blend, tuple(args.seeds)
    NET.update(batch_size=args.batch_size, lr=args.lr)
    if args.correlated:
        with tempfile.TemporaryDirectory() as tmp:
            rows = correlated_table(args.steps, Path(tmp))
        print(f"\nSet12, 30 photons, Poisson-Gaussian level with correlated noise, {args.steps} steps, PSNR (dB)")
        names = [k for k in rows[0] if k not in ("kernel_arm", "lag1") and not k.endswith(("model", "refused"))]
        print("| method | " + " | ".join(f"lag-1 {r['lag1']:.2f}" for r in rows) + " |\n|---|" + "---|" * len(rows))
        for k in names:
            print(f"| {k} | " + " | ".join("refused" if r[k] is None else f"{r[k]:.2f}" for r in rows) + " |")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": DEVICE, "steps": args.steps, "rows": rows}, indent=2) + "\n")
        return
    if args.gaussian_control:
        with tempfile.TemporaryDirectory() as tmp:
            rows = gaussian_control_table(args.steps, Path(tmp))
        print(f"\nSet12 counts at 1 photon's level, white Gaussian noise (sigma {rows[0]['sigma']:.3g}), {args.steps} "
              f"steps, seeds {list(SEEDS)}, PSNR (dB)")
        for k in ("noisy", ORACLE, "sure, sigma known", "r2r, sigma known"):
            print(f"| {k} | {rows[0][k]:.2f} |")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": DEVICE, "steps": args.steps, "seeds": list(SEEDS), "rows": rows},
                                        indent=2) + "\n")
        return
    if args.unsure:
        with tempfile.TemporaryDirectory() as tmp:
            rows = unsure_table(args.steps, Path(tmp))
        print(f"\nSet12 crops, white Gaussian noise, {args.steps} steps, PSNR (dB)")
        names = [k for k in rows[0] if k not in ("sigma",) and not k.endswith("sigma")]
        print("| method | " + " | ".join(f"sigma {r['sigma']:g}" for r in rows) + " |\n|---|" + "---|" * len(rows))
        for k in names:
            learned = [r.get(f"{k} learned sigma") for r in rows]
            note = "" if learned[0] is None else " (learned sigma " + " / ".join(f"{v:.1f}" for v in learned) + ")"
            print(f"| {k}{note} | " + " | ".join(f"{r[k]:.2f}" for r in rows) + " |")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": DEVICE, "steps": args.steps, "rows": rows}, indent=2) + "\n")
        return
    if args.only or args.only_fmd:
        update_rows(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = [] if args.skip_set12 else set12_table(args.photons, args.steps, Path(tmp), only=args.methods)
        fmd = None if args.skip_fmd else fmd_table(args.fmd_losses, args.fmd_steps, Path(tmp))
    if rows:
        methods = [k for k in rows[0]
                   if not k.endswith(("model", "learned", "sigma", "alpha", "blend", "seeds"))
                   and k not in ("photons", "seconds")]
        print(f"\nSet12, Poisson-Gaussian (gain {GAIN:g}, read noise {READ:g}, offset {OFFSET:g}), {args.steps} steps, "
              "PSNR (dB)")
        print("| method | " + " | ".join(f"{r['photons']:g} photons" for r in rows) + " |")
        print("|---|" + "---|" * len(rows))
        for m in methods:
            print(f"| {m} | " + " | ".join(f"{r[m]:.2f}" for r in rows) + " |")
    if fmd:
        print(f"\nFMD, 5 real frames, --noise auto, {args.fmd_steps} steps, PSNR vs clean_avg50 (dB)")
        print("| method | PSNR |\n|---|---|")
        for k, v in fmd.items():
            if not isinstance(v, dict) and not k.endswith("blend"):
                print(f"| {k} | {v:.2f}" + (f" (blend {fmd[k + ' blend']:.3f})" if k + " blend" in fmd else "") + " |")
        for k, v in fmd.items():
            if k.endswith("per frame"):
                print(f"{k}: " + ", ".join(f"{name.removeprefix('Confocal_')} {d:.2f}" for name, d in v.items()))
            if k.endswith("variance / reference"):
                print(f"\n{k} (per frame, learned / estimate): " + ", ".join(
                    f"{name.removeprefix('Confocal_')} {r['learned']:.2f} / {r['estimate']:.2f}" for name, r in v.items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"device": DEVICE, "steps": args.steps, "tta": TTA, "blend": BLEND,
                                     "seeds": list(SEEDS), "network": NET,
                                     "noise": {"gain": GAIN, "read": READ, "offset": OFFSET}, "set12": rows,
                                     "fmd_steps": args.fmd_steps, "fmd": fmd,
                                     "command": shlex.join(["python", *sys.argv])}, indent=2) + "\n")


def update_rows(args) -> None:
    """`--only`: rerun the named methods at each photon level and replace their entries (figure, start model,
    learned model) in the rows of the existing JSON, leaving every other figure as it was measured; `--only-fmd`: the
    same for the named FMD entries."""
    doc = json.loads(args.json.read_text())
    if (doc["device"] != DEVICE or doc["steps"] != args.steps or doc.get("tta", False) != TTA
            or doc.get("blend", False) != BLEND or doc.get("seeds", [0]) != list(SEEDS)
            or {"lr": 1e-3, **doc.get("network", NET)} != NET
            or (args.only_fmd and doc["fmd_steps"] != args.fmd_steps)):
        raise SystemExit(f"{args.json} was measured with device {doc['device']}, {doc['steps']} steps, "
                         f"tta {doc.get('tta', False)}, blend {doc.get('blend', False)}, "
                         f"seeds {doc.get('seeds', [0])}, network {doc.get('network')}: rerun it whole")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = set12_table(args.photons, args.steps, Path(tmp), only=args.only) if args.only else []
        fmd = fmd_table(args.only_fmd, args.fmd_steps, Path(tmp)) if args.only_fmd else {}
    for k, v in fmd.items():
        if k != "noisy input":
            doc["fmd"][k] = v
    if fmd:
        doc["fmd_updated"] = sorted(set(doc.get("fmd_updated", [])) | set(args.only_fmd))
    for new in fresh:
        row = next((r for r in doc["set12"] if r["photons"] == new["photons"]), None)
        if row is None:
            raise SystemExit(f"{args.json} has no row at {new['photons']:g} photons: rerun it whole")
        row.update({k: v for k, v in new.items() if k not in ("photons", "noisy", "seconds")})
        row["updated"] = sorted(set(row.get("updated", [])) | set(args.only))
        print(f"{new['photons']:g} photons: " + ", ".join(f"{m} {new[m]:.2f}" for m in args.only))
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
