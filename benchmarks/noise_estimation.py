"""Noise estimation: true vs estimated parameters over a grid of synthetic settings, and the fits on
real data (the FMD confocal frames and the EPU cryo-EM micrograph in ../shared/data).

Synthetic noise is drawn once per setting with a fixed seed:
- Gaussian sigma in {5, 15, 25, 50}/255 on each Set12 image (and the first `--bsd68` BSD68 images) alone:
  relative error of `gaussian_sigma` (target <= 5 %), and which model `--noise auto` picks (`analyze`)
  with the error of its per-pixel sigma (fine texture taken for correlated noise inflates it); then the same
  noisy images rounded and clipped to 0..255 as an 8-bit file holds them (the floor and ceiling are detected
  and the patches near them left out).
- Correlated Gaussian noise (lag-1 0.38) at the same levels: which model `--noise auto` picks, and the error
  of its marginal sigma.
- Poisson-Gaussian `y = gain * Poisson(lambda) + N(0, read^2)` on a folder of six Set12 images whose
  grey levels are mapped linearly onto lambda in [lo, hi] photons, for several gains and read
  noises, also on a smooth synthetic scene, with an offset (given to the estimator; one setting's below 0, as
  offset-corrected data whose dark level was over-subtracted hold it), and as clipped 8-bit data: relative error of the fitted gain and read noise (target <= 10 %), largest and root mean square
  over `--draws` noise draws of each setting (one draw can flatter: clipped Set12 at 1-60 photons read the read
  noise 1.6 % off in the one draw earlier versions made, and 30 % off at worst over five), beside the Cramer-Rao
  bound of the white noise level (`read_bound`: what the data allow any estimator). For the settings
  with an offset, also what `--noise auto` does when the offset is not given: the dark level the third cumulant
  finds (`dark_level`) and the offset and read noise of the model it takes.
- Real data: the model fitted to the FMD frames (pooled and each alone) and to the raw EPU micrograph, with each FMD
  frame's gain measured independently from its residual against the 50-frame average over the same brightness
  span, at the flatter half of its places (`reference_gain`).
- A folder of twelve Set12 crops at 1, 5 and 30 photons (one detector, and half the files at another gain): each
  file's own gain, and the gain `--noise auto` gives it (the pooled model where `one_session` holds).
- `--bsd68-pg` (alone, about 3 min): Poisson-Gaussian noise at four settings of 1-1500 photons on each of the 68
  BSD68 images (481 x 321, full size) alone, and on eleven folders of six of them: how far single textured images
  take the gain, against a folder's pooled fit.

    python benchmarks/noise_estimation.py [--draws 5] [--json benchmarks/results/noise_estimation.json]
    python benchmarks/noise_estimation.py --bsd68-pg --json benchmarks/results/noise_estimation_bsd68_pg.json
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import mrcfile
import numpy as np
import tifffile
import torch
from PIL import Image

from sslrecon.noise.estimate import _box_mean_same, analyze, gaussian_sigma

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def grey(folder: str, n: int) -> list[np.ndarray]:
    paths = sorted((DATA / "natural" / folder).glob("*.png"))[:n]
    return [np.asarray(Image.open(p).convert("L"), dtype=np.float64) for p in paths]


def gaussian_table(images: dict[str, list[np.ndarray]], bits8: bool = False) -> list[dict]:
    """`gaussian_sigma` on each noisy image, and the model `--noise auto` picks for it (`analyze`): its
    kind, and the relative error of its per-pixel sigma (a correlated model's marginal sigma). Also the error
    against the white noise the noisy image holds, `sqrt(sigma^2 + grain^2)` with `grain` what `gaussian_sigma` reads
    on the clean image (Set12 12.png reads 2.14 grey levels: at 5/255 the data hold 8.8 % more noise than was
    added). `bits8`: the noisy images rounded and clipped to 0..255, as an 8-bit file holds them."""
    rows = []
    for name, imgs in images.items():
        grain = np.array([gaussian_sigma(x) for x in imgs])  # each clean image's own white noise (see white_read)
        name = f"{name} 8-bit" if bits8 else name
        for s in (5, 15, 25, 50):
            rng = np.random.default_rng(s)
            noisy = [x + rng.normal(0, s, x.shape) for x in imgs]
            if bits8:
                noisy = [np.clip(np.round(y), 0, 255).astype(np.uint8) for y in noisy]
            est = np.array([gaussian_sigma(y) for y in noisy])
            errs = est / s - 1
            white = est / np.sqrt(s**2 + grain**2) - 1
            models = [analyze([y]).model for y in noisy]
            auto = [float(np.sqrt(m.variance(torch.tensor([128.0]))[0])) / s - 1 for m in models]
            rows.append({"set": name, "sigma_255": s, "max_abs_rel_error": float(np.max(np.abs(errs))),
                         "over_5_percent": int(np.sum(np.abs(errs) > 0.05)),
                         "mean_abs_rel_error": float(np.mean(np.abs(errs))), "errors": errs.tolist(),
                         "grain": grain.tolist(), "white_errors": white.tolist(),
                         "white_max_abs_rel_error": float(np.max(np.abs(white))),
                         "auto_kinds": [m.name for m in models], "auto_errors": auto,
                         "auto_gaussian_share": float(np.mean([m.name == "gaussian" for m in models])),
                         "auto_max_abs_rel_error": float(np.max(np.abs(auto)))})
    return rows


CORRELATED_KERNEL = ((0.05, 0.2, 0.05), (0.2, 1.0, 0.2), (0.05, 0.2, 0.05))  # lag-1 correlation 0.38


def correlated_table(images: dict[str, list[np.ndarray]]) -> list[dict]:
    """Stationary correlated Gaussian noise (`CORRELATED_KERNEL`) of marginal sigma in {5, 15, 25, 50}/255 on each
    image alone: the share of images `--noise auto` calls correlated, and the relative error of its marginal sigma."""
    from sslrecon.noise.models import Correlated

    rows = []
    for name, imgs in images.items():
        for s in (5, 15, 25, 50):
            truth = Correlated(sigma=float(s), kernel=CORRELATED_KERNEL)
            gen = torch.Generator().manual_seed(s)
            noisy = [truth.sample(torch.tensor(x)[None, None], generator=gen)[0, 0].numpy() for x in imgs]
            models = [analyze([y]).model for y in noisy]
            errs = [float(np.sqrt(m.variance(torch.tensor([128.0]))[0])) / s - 1 for m in models]
            rows.append({"set": name, "sigma_255": s, "kinds": [m.name for m in models],
                         "correlated_share": float(np.mean([m.name == "corr" for m in models])), "errors": errs,
                         "max_abs_rel_error": float(np.max(np.abs(errs))),
                         "mean_abs_rel_error": float(np.mean(np.abs(errs)))})
    return rows


def smooth_scene(n: int = 384, seed: int = 0) -> np.ndarray:
    """A [0, 1] scene of broad blobs and ramps: no fine texture."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:n, 0:n] / n
    x = 0.5 * c + 0.2 * r
    for _ in range(8):
        cy, cx, w, a = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2), rng.uniform(-0.5, 0.5)
        x += a * np.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * w**2))
    return (x - x.min()) / (x.max() - x.min())


def pg_frames(scenes, lo, hi, gain, read, offset, rng, bits8=False):
    out = []
    for x in scenes:
        u = x / max(float(x.max()), 1e-12)
        lam = lo + u * (hi - lo)
        y = gain * rng.poisson(lam) + offset + rng.normal(0, read, x.shape)
        out.append(np.clip(np.round(y), 0, 255).astype(np.uint8) if bits8 else y)
    return out


def scene_grain(scenes: list[np.ndarray]) -> float:
    """The clean scenes' own white noise, as a share of their range: the root mean square of `gaussian_sigma`
    of each scene mapped onto 0-255 (the smallest fixed point: its flattest patches)."""
    return float(np.sqrt(np.mean([gaussian_sigma(255 * x / max(float(x.max()), 1e-12)) ** 2 for x in scenes])) / 255)


def white_read(read: float, gain: float, lo: float, hi: float, grain: float, bits8: bool) -> float:
    """The white, signal-independent noise sd of a setting: read noise, scene grain (`scene_grain`, mapped onto
    gain * photons like the scene) and 8-bit rounding (variance 1/12)."""
    return float(np.sqrt(read**2 + (gain * (hi - lo) * grain) ** 2 + (1 / 12 if bits8 else 0.0)))


def read_bound(scenes: list[np.ndarray], lo: float, hi: float, gain: float, white: float, bits8: bool) -> float:
    """Cramer-Rao bound on the relative sd of the white noise level `white` (read noise, grain, rounding) estimated
    jointly with the gain from one draw of the folder, for an ideal estimator that knows every pixel's mean and sees
    its squared deviation (variance `gain * mean + white^2`, Gaussian to second order). No estimator from single
    noisy images does better; one that must also estimate the means does worse. 8-bit: pixels within three sd of
    0 or 255 left out (the clipping hides their variance)."""
    info = np.zeros((2, 2))
    for x in scenes:
        mu = gain * (lo + x / max(float(x.max()), 1e-12) * (hi - lo))
        var = gain * mu + white**2
        if bits8:
            sd = np.sqrt(var)
            keep = (mu - 3 * sd > 0) & (mu + 3 * sd < 255)
            mu, var = mu[keep], var[keep]
        w = 0.5 / var**2
        info += np.array([[w.sum(), (w * mu).sum()], [(w * mu).sum(), (w * mu * mu).sum()]])
    return float(np.sqrt(np.linalg.inv(info)[0, 0]) / (2 * white**2))


def pg_table(scenes: dict[str, list[np.ndarray]], draws: int = 5) -> list[dict]:
    """Each setting drawn `draws` times (different Poisson and read-noise draws of the same scenes): the errors'
    largest magnitude and root mean square over the draws. The model, kind and R2 shown are those of draw 0."""
    grain = {name: scene_grain(xs) for name, xs in scenes.items()}
    settings = []
    for scene in scenes:
        for lo, hi in ((1, 1000), (1, 100), (10, 1000)):
            for gain, read in ((0.5, 1.0), (2.0, 4.0), (8.0, 24.0)):
                settings.append((scene, lo, hi, gain, read, 0.0, False))
        settings.append((scene, 1, 300, 2.0, 6.0, 100.0, False))  # offset, given to the estimator
        settings.append((scene, 1, 20, 2.0, 3.0, 100.0, False))  # the same at low counts
        settings.append((scene, 1, 100, 2.0, 4.0, 500.0, False))  # a larger offset
        settings.append((scene, 0.2, 3, 2.0, 3.0, 100.0, False))  # very low counts: read noise dominates
        settings.append((scene, 5, 200, 1.5, 2.0, 0.0, False))  # offset-free at low counts, not told so
        settings.append((scene, 1, 300, 2.0, 3.0, -50.0, False))  # offset-corrected data, the dark over-subtracted
        for lo, hi, gain, read in ((2, 100, 2.0, 3.0), (1, 60, 4.0, 4.0), (5, 200, 1.5, 2.0)):
            settings.append((scene, lo, hi, gain, read, 0.0, True))  # 8-bit, clipped at 0 and 255
    rows = []
    for i, (scene, lo, hi, gain, read, offset, bits8) in enumerate(settings):
        white = white_read(read, gain, lo, hi, grain[scene], bits8)
        gain_err, read_err, read_z, white_z, seconds, dark, blind_read, blind_offset, first = \
            [], [], [], [], [], [], [], [], None
        for draw in range(draws):
            # seeded by the setting itself, so that adding a setting leaves the others' draws as they were
            rng = np.random.default_rng([zlib.crc32(repr(settings[i]).encode()), draw])
            frames = pg_frames(scenes[scene], lo, hi, gain, read, offset, rng, bits8)
            t0 = time.perf_counter()
            rep = analyze(frames, offset=offset if offset else None)
            seconds.append(time.perf_counter() - t0)
            m = rep.model
            est_read = getattr(m, "sigma", 0.0)
            gain_err.append(getattr(m, "gain", float("nan")) / gain - 1)
            read_err.append(est_read / read - 1)
            # the read variance's error in standard errors the fit reports (the intercept's)
            # (and against the white noise the data hold: read noise, grain, rounding)
            se = rep.fit.intercept_se if rep.fit is not None else float("nan")
            read_z.append((est_read**2 - read**2) / se)
            white_z.append((est_read**2 - white**2) / se)
            if offset:  # without being told the offset: the third cumulant's dark level, and the model auto takes
                blind = analyze(frames)
                dark.append(blind.dark.to_dict() if blind.dark is not None else None)
                blind_read.append(getattr(blind.model, "sigma", 0.0) / read - 1)
                blind_offset.append(float(getattr(blind.model, "offset", 0.0)))
            first = first or rep
        gain_err, read_err = np.array(gain_err), np.array(read_err)
        white_err = (1 + read_err) * read / white - 1
        rows.append({"scene": scene, "photons": [lo, hi], "gain": gain, "read": read, "offset": offset,
                     "clipped_8bit": bits8, "kind": first.kind, "model": first.model.spec(),
                     "gain_rel_errors": gain_err.tolist(), "read_rel_errors": read_err.tolist(),
                     "gain_max_abs": float(np.abs(gain_err).max()), "gain_rms": float(np.sqrt(np.mean(gain_err**2))),
                     "read_max_abs": float(np.abs(read_err).max()), "read_rms": float(np.sqrt(np.mean(read_err**2))),
                     "read_bias": float(read_err.mean()), "read_error_in_reported_se": read_z,
                     "scene_grain": grain[scene], "white_read": white, "white_read_rel_errors": white_err.tolist(),
                     "white_read_max_abs": float(np.abs(white_err).max()), "white_read_error_in_reported_se": white_z,
                     "white_read_rms": float(np.sqrt(np.mean(white_err**2))),
                     "white_read_bound": read_bound(scenes[scene], lo, hi, gain, white, bits8),
                     "dark_level_third_cumulant": dark, "offset_not_given_read_rel_errors": blind_read,
                     "offset_not_given_model_offsets": blind_offset, "r2_heldout": first.r2,
                     "clipping_detected": first.clipping.detected,
                     "seconds": round(float(np.mean(seconds)), 2)})
    return rows


def counting_table(scenes: dict[str, list[np.ndarray]], draws: int = 5) -> list[dict]:
    """Photon counting (integer counts, gain 1, no read noise or offset, as electron-counting cameras deliver them)
    at 0.001-0.01 to 1-10 photons per pixel: most pixels read 0 at the lowest rates, the start of the counts and no
    clipping floor. Each setting drawn `draws` times; the model and kind shown are those of draw 0. The model's gain
    is the lattice's step where `analyze` takes the data as whole counts or sparse counts (`counted`); the
    mean-variance line's own slope (`line_gain_rel_errors`, NaN where there is no line) is what whole counts were
    read from, the dispersion index (`sparse`: the draws read that way) what sparse counts were."""
    rows = []
    for scene, xs in scenes.items():
        for lo, hi in ((0.001, 0.01), (0.005, 0.05), (0.05, 0.6), (0.2, 2), (0.5, 5), (1, 10)):
            gain_err, line_err, counted, sparse, read, clipped, first = [], [], [], [], [], [], None
            for draw in range(draws):
                rng = np.random.default_rng([zlib.crc32(repr((scene, lo, hi)).encode()), draw])
                frames = [f.astype(np.uint16) for f in pg_frames(xs, lo, hi, 1.0, 0.0, 0.0, rng)]
                rep = analyze(frames, evidence=False)
                gain_err.append(getattr(rep.model, "gain", float("nan")) - 1)
                line_err.append(rep.fit.slope - 1 if rep.fit is not None else float("nan"))
                sparse.append(any(n.startswith("sparse counts") for n in rep.notes))
                counted.append(sparse[-1] or any(n.startswith("whole counts") for n in rep.notes))
                read.append(float(getattr(rep.model, "sigma", 0.0)))
                clipped.append(rep.clipping.detected)
                first = first or rep
            gain_err = np.array(gain_err)
            rows.append({"scene": scene, "photons": [lo, hi], "kind": first.kind, "model": first.model.spec(),
                         "gain_rel_errors": gain_err.tolist(), "gain_max_abs": float(np.nanmax(np.abs(gain_err))),
                         "line_gain_rel_errors": line_err,
                         "line_gain_max_abs": float(np.max(np.abs(line_err), initial=0, where=~np.isnan(line_err))),
                         "lines": int(np.sum(~np.isnan(line_err))), "counted": counted, "sparse": sparse,
                         "read_estimates": read, "clipping_detected": clipped})
    return rows


#: (lo, hi photons, gain, read noise, offset given): `bsd68_pg_table`'s settings
BSD68_PG = ((1, 100, 2.0, 4.0, 0.0), (10, 1000, 0.5, 1.0, 0.0), (1, 1000, 8.0, 24.0, 0.0), (5, 1500, 4.0, 12.0, 1000.0))


def bsd68_pg_table(group: int = 6) -> list[dict]:
    """Each BSD68 image alone, and the images in folders of `group` (the last two left out), with Poisson-Gaussian
    noise at each `BSD68_PG` setting, one draw: the gain's and read noise's relative errors (nan where the model read
    has none: Gaussian noise has no gain, a Poisson model no read noise) and the kinds read."""
    images = grey("BSD68", 68)
    rows = []
    for k, (lo, hi, gain, read, offset) in enumerate(BSD68_PG):
        noisy = []
        for i, x in enumerate(images):
            rng = np.random.default_rng([k, i])
            noisy.append(offset + gain * rng.poisson(lo + x / x.max() * (hi - lo)) + rng.normal(0, read, x.shape))

        def errors(frames):
            rep = analyze(frames, offset=offset or None, evidence=False)
            m = rep.model
            return getattr(m, "gain", np.nan) / gain - 1, getattr(m, "sigma", np.nan) / read - 1, rep.kind

        alone = [errors([y]) for y in noisy]
        pooled = [errors(noisy[i:i + group]) for i in range(0, len(noisy) - group + 1, group)]
        rows.append({"photons": [lo, hi], "gain": gain, "read": read, "offset": offset,
                     **{f"{name}_{key}": [e[j] for e in es] for name, es in (("alone", alone), (f"folders_of_{group}", pooled))
                        for j, key in enumerate(("gain_rel_errors", "read_rel_errors", "kinds"))}})
    return rows


def real_table() -> list[dict]:
    rows = []
    fmd = sorted((DATA / "fluorescence" / "fmd" / "noisy_raw").glob("*.tif"))
    frames = [tifffile.imread(p) for p in fmd]
    rows.append({"data": "FMD (5 frames pooled)", **_summary(analyze(frames))})
    for p, f in zip(fmd, frames):
        rep = analyze([f])
        lo, hi = fitted_span(rep)
        rows.append({"data": f"FMD {p.stem}", **_summary(rep), "fitted_span": [lo, hi],
                     "reference_gain": reference_gain(f, tifffile.imread(p.parent.parent / "clean_avg50" / p.name),
                                                      lo, hi)})
    with mrcfile.open(DATA / "cryoem" / "micrographs" / "epu2.9_example_center1536.mrc", permissive=True) as m:
        epu = np.asarray(m.data, dtype=np.float64)
    rep = analyze([epu])
    rows.append({"data": "EPU micrograph (raw counts)", **_summary(rep),
                 "observed_mean": float(epu.mean()), "observed_variance": float(epu.var())})
    return rows


def fitted_span(rep) -> tuple[float, float]:
    """The brightness span of the mean-variance bins a noise report's line was fitted to."""
    span = rep.fit.bin_mean[rep.fit.bin_used]
    return float(span.min()), float(span.max())


def reference_places(noisy: np.ndarray, clean: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Where a frame's noise is read against its average `clean`: clean grey levels in [lo, hi] (the brightness span
    the estimator fitted: these frames' variance is not one line over the whole range), away from the 8-bit floor
    and saturation, and only the flatter half of the clean image's places (3 x 3 mean's gradient against the
    shot-noise sd): the single frame and the average are not perfectly registered, and at edges the residual
    carries structure (over every place, BPAE_R's residual has lag-1 correlation 0.27 and its slope reads 5.99;
    over the flatter half 0.09)."""
    y, c = noisy.astype(np.float64), clean.astype(np.float64)
    gy, gx = np.gradient(_box_mean_same(c, 3))
    rough = np.hypot(gx, gy) / np.sqrt(np.maximum(c, 1.0))
    ok = (y > y.min()) & (y < 255) & (c > c.min()) & (c >= lo) & (c <= hi)
    return ok & (rough <= np.median(rough[ok]))


def reference_gain(noisy: np.ndarray, clean: np.ndarray, lo: float, hi: float, frames: int = 50) -> float:
    """An independent gain: the slope of the variance of `noisy - clean` (the clean image an average of `frames`
    frames, whose own noise adds 1/frames of the variance) against the clean value at the `reference_places`, over
    the grey levels with at least 20 pixels (weighted by their counts)."""
    y, c = noisy.astype(np.float64), clean.astype(np.float64)
    ok = reference_places(y, c, lo, hi)
    r = y - c
    levels = [v for v in np.unique(c[ok]) if (ok & (c == v)).sum() >= 20]
    var = [r[ok & (c == v)].var() for v in levels]
    n = [(ok & (c == v)).sum() for v in levels]
    return float(np.polyfit(levels, var, 1, w=np.sqrt(n))[0] / (1 + 1 / frames))


def reference_variance_ratio(noisy: np.ndarray, clean: np.ndarray, gain: float, sigma: float, offset: float,
                             lo: float, hi: float, frames: int = 50) -> float:
    """A Poisson-Gaussian model's mean variance at the `reference_places` (`gain * (clean - offset) + sigma^2`)
    over the mean square of `noisy - clean` there (less the average's own 1/frames): 1 where the model agrees
    with the frame's noise."""
    y, c = noisy.astype(np.float64), clean.astype(np.float64)
    ok = reference_places(y, c, lo, hi)
    model = gain * np.maximum(c[ok] - offset, 0) + sigma**2
    return float(model.mean() / (((y - c)[ok] ** 2).mean() / (1 + 1 / frames)))


def _summary(rep) -> dict:
    d = rep.to_dict()
    return {"model": d["spec"], "kind": d["kind"], "r2_heldout": d["r2_heldout"],
            "clipping": d["clipping"], "lag1": [d["correlation"]["lag_h"], d["correlation"]["lag_v"]],
            "notes": d["notes"]}


def percent_table(title: str, rows: list[dict], columns: dict[str, str]) -> None:
    """A markdown table of `rows` by set and sigma, with `columns` (header: key) shown as percentages (counts as
    they are)."""
    print(title + "\n")
    print("| set | sigma (/255) | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for r in rows:
        print(f"| {r['set']} | {r['sigma_255']} | " + " | ".join(str(r[k]) if isinstance(r[k], int) else f"{100 * r[k]:.1f} %"
                                                               for k in columns.values()) + " |")


def folder_table() -> list[dict]:
    """The twelve 256 x 256 Set12 crops as one folder at 1, 5 and 30 photons per pixel at the mean (gain 2, read noise
    3, offset 100; as benchmarks/denoise_pg.py), and the same with half the files at gain 4: each file's own gain,
    and the gain of the model `--noise auto` gives each file (the pooled one where `one_session` holds)."""
    from denoise_pg import set12_clean

    crops = set12_clean()
    mean = float(np.mean([x.mean() for x in crops]))
    rows = []
    for photons in (1, 5, 30):
        for gains in ([2.0] * 12, [2.0] * 6 + [4.0] * 6):
            rng = np.random.default_rng(0)
            frames = [100 + g * rng.poisson(photons * x / mean) + rng.normal(0, 3, x.shape) for x, g in zip(crops, gains)]
            rows.append({"photons": photons, "gains": sorted(set(gains)), **folder_fits(frames, np.array(gains))})
    return rows + bright_folder_rows()


def folder_fits(frames: list[np.ndarray], gains: np.ndarray) -> dict:
    """`frames` as one folder: whether `--noise auto` takes them for one detector's, the pooled model, each file's
    own kind, and each file's gain error alone and as `--noise auto` takes it (a Gaussian model counts as gain 0)."""
    from sslrecon.noise.estimate import one_session

    files = [analyze([f], evidence=False) for f in frames]
    pooled = analyze(frames, evidence=False)
    pooling = one_session(files, pooled)
    own = np.array([getattr(f.model, "gain", 0.0) for f in files]) / gains - 1
    used = np.array([getattr((pooled if pooling else f).model, "gain", 0.0) for f in files]) / gains - 1
    return {"one_session": pooling, "pooled": pooled.model.spec(), "own_kinds": [f.kind for f in files],
            "own_gain_rel_errors": own.tolist(), "auto_gain_rel_errors": used.tolist()}


def bright_folder_rows() -> list[dict]:
    """The eight 128 x 128 BSD68 crops of benchmarks/robustness.py at its 300 and 3000 photons (gain 1; read noise 2
    / 3, offset 0 / 100), as one folder: at 3000 photons texture hides most crops' shot noise (their own reports read
    Gaussian noise, gain 0 here), and the pooled fit is the evidence `--noise auto` goes by."""
    from robustness import ALL_SCENARIOS, crops

    clean01, rows = crops(), []
    mean01 = np.mean([c.mean() for c in clean01])
    for name in ("bright-300", "bright-3000"):
        photons, gain, read, offset, _ = ALL_SCENARIOS[name]
        rng = np.random.default_rng(0)
        frames = [np.round(offset + gain * rng.poisson(photons * c / mean01) + rng.normal(0, read, c.shape))
                  for c in clean01]
        rows.append({"photons": photons, "gains": [gain], "scene": "BSD68 crops 128x128", "read": read,
                     "offset": offset, **folder_fits(frames, np.full(len(frames), gain))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/noise_estimation.json"))
    ap.add_argument("--draws", type=int, default=5, help="noise draws per Poisson-Gaussian setting")
    ap.add_argument("--bsd68", type=int, default=12, help="BSD68 images in the Gaussian tables (68: all)")
    ap.add_argument("--bsd68-pg", action="store_true", help="only the table of BSD68 images alone and in folders")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.bsd68_pg:
        rows = bsd68_pg_table()
        print("## Poisson-Gaussian on BSD68 (481 x 321), each image alone and in folders of six (one draw)\n")
        print("| photons | gain | read | offset (given) | alone: gain error median, over 10 / 30 % (Gaussian) | "
              "read error median | folders of six: gain error max | read error median |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            g = np.abs(np.nan_to_num(r["alone_gain_rel_errors"], nan=1.0))  # read as Gaussian: no gain, 100 % off
            f = np.abs(np.nan_to_num(r["folders_of_6_gain_rel_errors"], nan=1.0))
            print(f"| {r['photons'][0]}-{r['photons'][1]} | {r['gain']} | {r['read']} | {r['offset']:g} | "
                  f"{100 * np.median(g):.1f} %, {(g > 0.1).sum()} / {(g > 0.3).sum()} of {len(g)} "
                  f"({r['alone_kinds'].count('gaussian')}) | {100 * np.nanmedian(np.abs(r['alone_read_rel_errors'])):.0f} % | "
                  f"{100 * f.max():.1f} % | {100 * np.nanmedian(np.abs(r['folders_of_6_read_rel_errors'])):.0f} % |")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bsd68_pg": rows, "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
        return
    natural = {"Set12": grey("Set12", 12), f"BSD68[:{args.bsd68}]": grey("BSD68", args.bsd68)}
    gauss = gaussian_table(natural) + gaussian_table(natural, bits8=True)
    percent_table("## Gaussian sigma (relative error, per image alone)", gauss,
                  {"max abs error": "max_abs_rel_error", "mean abs error": "mean_abs_rel_error",
                   "against added + own noise: max abs error": "white_max_abs_rel_error",
                   "--noise auto: called Gaussian": "auto_gaussian_share", "auto max abs error": "auto_max_abs_rel_error",
                   "images over 5 %": "over_5_percent"})
    corr = correlated_table(natural)
    percent_table("\n## Correlated Gaussian noise (lag-1 0.38; --noise auto, per image alone)", corr,
                  {"called correlated": "correlated_share", "marginal sigma: max abs error": "max_abs_rel_error",
                   "mean abs error": "mean_abs_rel_error"})
    scenes = {"Set12 x6": [x / 255 for x in grey("Set12", 6)], "smooth": [smooth_scene(384, s) for s in range(4)]}
    pg = pg_table(scenes, args.draws)
    print(f"\n## Poisson-Gaussian (one folder per setting, {args.draws} noise draws each)\n")
    print("| scene | photons | gain | read | offset | 8-bit | chosen | gain error: max (rms) | read error: max (rms) "
          "| read bias | read + grain + rounding: sd, error max (rms) | its Cramer-Rao bound (rms / bound) "
          "| R2 held-out |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in pg:
        print(f"| {r['scene']} | {r['photons'][0]}-{r['photons'][1]} | {r['gain']} | {r['read']} | {r['offset']:g} | "
              f"{'yes' if r['clipped_8bit'] else ''} | {r['kind']} | {100 * r['gain_max_abs']:.1f} % "
              f"({100 * r['gain_rms']:.1f}) | {100 * r['read_max_abs']:.1f} % ({100 * r['read_rms']:.1f}) | "
              f"{100 * r['read_bias']:+.1f} % | {r['white_read']:.3g}: {100 * r['white_read_max_abs']:.1f} % "
              f"({100 * r['white_read_rms']:.1f}) | {100 * r['white_read_bound']:.1f} % "
              f"({r['white_read_rms'] / r['white_read_bound']:.1f}) | {r['r2_heldout']:.3f} |")
    print("\nOffset not given (settings with an offset; per draw): the third cumulant's dark level +- se (* where the "
          "brightness bins disagree), and the offset and read-noise error of the model --noise auto takes\n")
    for r in pg:
        if r["offset"]:
            cells = ", ".join(("none" if d is None else
                               f"{d['offset']:.1f} +- {d['se']:.1f}{'' if d['consistent'] else '*'}")
                              + f" -> {o:.1f}, {100 * e:+.0f} %" for d, o, e in
                              zip(r["dark_level_third_cumulant"], r["offset_not_given_model_offsets"],
                                  r["offset_not_given_read_rel_errors"]))
            print(f"- {r['scene']}, {r['photons'][0]}-{r['photons'][1]} photons, offset {r['offset']:g}: {cells}")
    counting = counting_table(scenes, args.draws)
    print(f"\n## Photon counting (integer counts, gain 1, no read noise or offset; {args.draws} draws each)\n")
    print("| scene | photons | chosen (draw 0) | gain error: max | the line's gain error: max (lines) | taken as counts "
          "(sparse) | read noise found: max (counts) | clipping reported |\n|---|---|---|---|---|---|---|---|")
    for r in counting:
        n = len(r["counted"])
        print(f"| {r['scene']} | {r['photons'][0]}-{r['photons'][1]} | {r['model']} | {100 * r['gain_max_abs']:.1f} % | "
              f"{100 * r['line_gain_max_abs']:.1f} % ({r['lines']}) | {sum(r['counted'])} of {n} ({sum(r['sparse'])}) | "
              f"{max(r['read_estimates']):.2f} | {sum(r['clipping_detected'])} of {len(r['clipping_detected'])} |")
    folder = folder_table()
    print("\n## A folder of files (Set12 crops, gain 2, read noise 3, offset 100; BSD68 crops 128x128 at 300 and 3000 "
          "photons, gain 1): gain error per file, alone and as --noise auto takes it (the pooled model where the files "
          "are one detector's; a file read as Gaussian counts as gain 0)\n")
    print("| scene | photons | gains | one detector | own: median (range) | --noise auto: median (range) |\n"
          "|---|---|---|---|---|---|")
    for r in folder:
        own, used = np.array(r["own_gain_rel_errors"]), np.array(r["auto_gain_rel_errors"])
        print(f"| {r.get('scene', 'Set12 crops 256x256')} | {r['photons']} | {', '.join(f'{g:g}' for g in r['gains'])} | "
              f"{'yes' if r['one_session'] else 'no'} | "
              f"{100 * np.median(own):+.1f} % ({100 * own.min():+.0f} to {100 * own.max():+.0f}) | "
              f"{100 * np.median(used):+.1f} % ({100 * used.min():+.0f} to {100 * used.max():+.0f}) |")
    real = real_table()
    print("\n## Real data\n")
    print("| data | model | R2 held-out | clipping | lag-1 correlation (h, v) | gain from noisy - clean_avg50 |\n"
          "|---|---|---|---|---|---|")
    for r in real:
        clip = r["clipping"]
        ends = ", ".join(f"{k} {clip[k]:g}" for k in ("low", "high") if clip[k] is not None) or "none"
        ref = f"{r['reference_gain']:.2f}" if "reference_gain" in r else ""
        print(f"| {r['data']} | {r['model']} | {r['r2_heldout']:.3f} | {ends} | {r['lag1'][0]:.2f}, {r['lag1'][1]:.2f} | {ref} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"gaussian": gauss, "correlated": corr, "poisson_gaussian": pg,
                                     "counting": counting, "folder": folder, "real": real,
                                     "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
