"""Denoising cryo-EM particles against a clean reference: every self-supervised loss with `--noise auto`.

`../shared/data/cryoem/simulated_pairs/10076_classD_32_sim.mrcs`: 576 projections (32 x 32) of an EMPIAR-10076 map
with CTF and white noise, SNR about 0.09; `..._clean.mrcs` holds the same projections without noise, in other units
and with the contrast inverted. The reference is the clean stack mapped into the noisy stack's units by the least-
squares line (the noise is independent of it, so the line is unbiased), and PSNR is taken with the reference's range;
its residual sd is the true noise level, beside which the estimate (`sslrecon noise`) and the levels `unsure` and
`pg-unsure` learn are given. Each loss trains the default network for `--steps` steps of 8 patches of 32 x 32 on the
noisy stack alone, then `reconstruct` (eight-fold symmetry average and the run's blend, the defaults) writes it.

    python benchmarks/denoise_particles.py [--steps 300] [--losses sure n2s ...] [--device cuda]
        [--json benchmarks/results/denoise_particles.json]

A loss given as LOSS:key=value,... runs LOSS with those options (`sure:probes=4`: four divergence probes a step).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sslrecon import api
from sslrecon.config import RunConfig
from sslrecon.engine.metrics import psnr
from sslrecon.io import open_image
from sslrecon.losses import parse_options

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cryoem" / "simulated_pairs"
STACK = "10076_classD_32_{}.mrcs"
LOSSES = ("sure", "sure:probes=4", "unsure", "pg-sure", "pg-unsure", "r2r", "gr2r-poisson", "n2s")


def load(path: Path) -> np.ndarray:
    with open_image(path) as f:
        return np.stack(list(f.frames())).astype(np.float64)


def reference(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """The clean stack in the noisy stack's units: the least-squares line from one to the other."""
    slope, intercept = np.polyfit(clean.ravel(), noisy.ravel(), 1)
    return slope * clean + intercept


def run_loss(entry: str, stack: Path, ref: np.ndarray, steps: int, device: str, tmp: Path) -> dict:
    loss, _, opts = entry.partition(":")
    cfg = RunConfig(loss=loss, noise="auto", steps=steps, patch_size=32, device=device,
                    loss_options=parse_options(opts.split(",")) if opts else {})
    run = tmp / entry.replace(":", "_").replace("=", "")
    t0 = time.perf_counter()
    doc = api.fit([str(stack)], run, config=cfg)
    (item,) = api.reconstruct(run, [str(stack)], run / "out", device=device)
    out = {"psnr": round(psnr(ref, load(Path(item["output"])), np.ptp(ref)), 2),
           "seconds": round(time.perf_counter() - t0, 1), "blend": item["blend"]}
    if "noise_learned" in doc:
        out["learned"] = doc["noise_learned"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--losses", nargs="+", default=list(LOSSES))
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--data", type=Path, default=DATA, help="the folder holding the two stacks")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/denoise_particles.json"))
    args = ap.parse_args()
    stack = args.data / STACK.format("sim")
    noisy = load(stack)
    ref = reference(load(args.data / STACK.format("clean")), noisy)
    estimate = api.noise([str(stack)])
    doc = {"steps": args.steps, "device": args.device, "noisy": round(psnr(ref, noisy, np.ptp(ref)), 2),
           "noise_sd": round(float(np.std(noisy - ref)), 4), "signal_sd": round(float(np.std(ref)), 4),
           "estimate": estimate["model"], "losses": {}}
    print(f"noisy {doc['noisy']:.2f} dB; noise sd {doc['noise_sd']:.3f} (signal sd {doc['signal_sd']:.3f}), "
          f"estimated {estimate['spec']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for entry in args.losses:
            doc["losses"][entry] = res = run_loss(entry, stack, ref, args.steps, args.device, Path(tmp))
            print(json.dumps({entry: res}), flush=True)
    print(f"\n| loss | PSNR (dB) | seconds |\n|---|---|---|\n| noisy input | {doc['noisy']:.2f} | |")
    for entry, res in doc["losses"].items():
        learned = f" (learned sigma {res['learned']['sigma']:.2f})" if "learned" in res else ""
        print(f"| `{entry}`{learned} | {res['psnr']:.2f} | {res['seconds']:.0f} |")
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
