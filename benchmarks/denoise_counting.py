"""Photon counting: whole counts at about one and ten photons per pixel without read noise (a counting detector's
raw frames: cryo-EM movie frames, single-photon imaging), for each Poisson loss beside a supervised oracle.

Three 256x256 scenes (`smooth_scene` of benchmarks/noise_estimation.py plus 40 Gaussian blobs of sd 4 pixels and
height 0.8, particles on a smooth background), each mapped to `lam = lo + (hi - lo) * (x - min) / (max - min)` and
drawn once (seed 0) as `Poisson(lam)` whole counts, stored as float32 MRC like a counting camera's frames: 0.3-2.5
photons (about 1 at the mean) and 3-25 (about 10). Every method trains the same U-Net for the same budget as
`benchmarks/denoise_pg.py` (width 16, depth 3, `--steps` steps of 8 patches of 48x48) on the three noisy frames
(the oracle on pairs with the clean ones), all with `--noise auto`, which reads such data as counts
(`poisson:gain=1`). PSNR against `lam` with the range `hi - lo`; `validate`'s estimate (no reference) beside it; for
`pg-unsure` the gain and read noise it ends with.

On whole counts a network sees any probe off the count lattice, so the default `pg-sure` (and `sure`, and the held
`pg-unsure`) take the photon removal by a finite difference there; `pg-sure finite=false` keeps the Taylor terms, to
show what they cost on such data.

With `--gaussian SIGMA`, the same scenes (by default the 10-photon ones, 3-25) instead carry white Gaussian noise of
sd SIGMA (continuous values, seed 5; no lattice), for the Gaussian losses with SIGMA given: whether a gap between the
SURE family and the splitting losses on these smooth scenes belongs to photon counting or to SURE itself.

    python benchmarks/denoise_counting.py [--steps 300] [--levels 1 10] [--json benchmarks/results/denoise_counting.json]
    python benchmarks/denoise_counting.py --gaussian 3.3 --steps 1000 \
        --json benchmarks/results/denoise_smooth_gaussian.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np

from sslrecon import api
from sslrecon.engine.metrics import psnr

from denoise_pg import NET, oracle, self_supervised
from noise_estimation import smooth_scene

LEVELS = {1.0: (0.3, 2.5), 10.0: (3.0, 25.0)}  # photons at the mean: (lo, hi) photons per pixel
METHODS = (  # (name, loss, loss options)
    ("pg-sure", "pg-sure", {}),
    ("pg-sure finite=false (Taylor terms)", "pg-sure", {"finite": False}),
    ("pg-unsure", "pg-unsure", {}),
    ("gr2r-poisson", "gr2r-poisson", {}),
    ("n2s", "n2s", {}),
)
GAUSSIAN_METHODS = (  # (name, loss, loss options), with --noise gaussian:sigma=SIGMA
    ("sure", "sure", {}),
    ("sure probes=4", "sure", {"probes": 4}),
    ("r2r", "r2r", {}),
    ("n2s", "n2s", {}),
)
ORACLE = "oracle (supervised)"


def scenes(n: int = 3, side: int = 256) -> list[np.ndarray]:
    """Particles on a smooth background, each scaled to [0, 1]."""
    rng = np.random.default_rng(0)
    r, c = np.mgrid[0:side, 0:side]
    out = []
    for i in range(n):
        x = smooth_scene(side, 10 + i)
        for _ in range(40):
            cy, cx = rng.uniform(0, side, 2)
            x = x + 0.8 * np.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * 4.0**2))
        out.append((x - x.min()) / (x.max() - x.min()))
    return out


def counts(level: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Clean `lam` and whole-count frames at `level` photons at the mean, drawn once with seed 0."""
    lo, hi = LEVELS[level]
    lams = [lo + (hi - lo) * x for x in scenes()]
    rng = np.random.default_rng(0)
    return lams, [rng.poisson(lam).astype(np.float64) for lam in lams]


def write_mrc(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir()
    for i, a in enumerate(images):
        with mrcfile.new(folder / f"frame_{i}.mrc") as m:
            m.set_data(a.astype(np.float32))
    return folder


def mean_psnr(clean: list[np.ndarray], images: list[np.ndarray], data_range: float) -> float:
    return float(np.mean([psnr(c, np.asarray(e, np.float64), data_range) for c, e in zip(clean, images)]))


def level_row(level: float, steps: int, tmp: Path, sigma: float | None = None) -> dict:
    """One row: the count level's scenes, as whole counts or (`sigma`) with Gaussian noise of that sd instead."""
    clean, noisy = counts(level)
    lo, hi = LEVELS[level]
    if sigma is not None:
        rng = np.random.default_rng(5)
        noisy = [c + rng.normal(0, sigma, c.shape) for c in clean]
    folder = write_mrc(tmp / f"noisy_{level:g}", noisy)
    report = api.noise([str(folder)])
    row = {"photons": level, "range": [lo, hi], "noisy input": mean_psnr(clean, noisy, hi - lo),
           "noise auto": report["spec"], "methods": {}}
    if sigma is not None:
        row["gaussian sigma"] = sigma
    t0 = time.perf_counter()
    row["methods"][ORACLE] = {"psnr": mean_psnr(clean, oracle(noisy, clean, steps), hi - lo),
                              "seconds": round(time.perf_counter() - t0, 1)}
    noise = "auto" if sigma is None else f"gaussian:sigma={sigma:g}"
    for name, loss, options in METHODS if sigma is None else GAUSSIAN_METHODS:
        t0 = time.perf_counter()
        run = tmp / f"{loss}_{len(row['methods'])}_{level:g}"
        doc, outs = self_supervised(folder, run, loss, noise, steps, options)
        seconds = round(time.perf_counter() - t0, 1)
        est = api.validate(run, [str(folder)], data_range=hi - lo, device="cpu")
        entry = {"psnr": mean_psnr(clean, [mrcfile.read(o) for o in sorted(outs)], hi - lo),
                 "estimated_psnr": est["estimated_psnr"], "blend": est["blend"], "seconds": seconds}
        if doc.get("noise_learned"):
            entry["noise_learned"] = doc["noise_learned"]
        row["methods"][name] = entry
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--levels", type=float, nargs="+", choices=list(LEVELS),
                    help="count levels (default: all; with --gaussian, 10: whose scenes carry the Gaussian noise)")
    ap.add_argument("--gaussian", type=float, metavar="SIGMA",
                    help="the scenes with white Gaussian noise of this sd instead of counts")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/denoise_counting.json"))
    args = ap.parse_args()
    levels = args.levels or (list(LEVELS) if args.gaussian is None else [10.0])
    with tempfile.TemporaryDirectory() as tmp:
        rows = [level_row(level, args.steps, Path(tmp), args.gaussian) for level in levels]
    level = "photon(s)" if args.gaussian is None else f"photons' scenes, Gaussian sd {args.gaussian:g}"
    print(f"| method ({args.steps} steps) | " + " | ".join(f"{r['photons']:g} {level}: PSNR / validate's estimate"
                                                          for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    print("| noisy input | " + " | ".join(f"{r['noisy input']:.2f}" for r in rows) + " |")
    for name in rows[0]["methods"]:
        cells = []
        for r in rows:
            m = r["methods"][name]
            est = m.get("estimated_psnr")
            cells.append(f"{m['psnr']:.2f}" + ("" if name == ORACLE else (f" / {est:.2f}" if est else " / none")
                                                + f" (blend {m['blend']:.2f})"))
        print(f"| {name} | " + " | ".join(cells) + " |")
    for r in rows if args.gaussian is None else []:
        learned = r["methods"]["pg-unsure"].get("noise_learned", {})
        print(f"{r['photons']:g} photon(s): --noise auto reads {r['noise auto']}; pg-unsure ends at "
              f"gain {learned.get('gain', float('nan')):.3g}, read noise {learned.get('sigma', float('nan')):.3g}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"steps": args.steps, "net": NET, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
