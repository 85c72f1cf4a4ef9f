"""PSNR on the five real FMD confocal frames (vs clean_avg50, data range 255) for each loss, beside
the peers' figures measured on the same data (../shared/benchmarks/ANCHORS.md).

Trained on the 5 noisy frames only, batch 8 of 64x64 patches, `--noise auto`, default U-Net.

    python benchmarks/denoise_fmd.py [--steps 300] [--losses sure r2r n2s] [--no-tta] [--no-blend]

Reconstructions use `reconstruct`'s defaults, the averaging over the eight symmetries and the blend with the
measurement, unless `--no-tta` / `--no-blend` (the peers' figures are single passes, not blended).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from sslrecon import api
from sslrecon.config import RunConfig
from sslrecon.engine.metrics import psnr

FMD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fluorescence" / "fmd"
ANCHORS_300 = {"noisy input": 29.64, "BM3D, sigma estimated": 33.70, "deepinv SURE": 29.01, "deepinv R2R": 29.40,
               "deepinv splitting (J-invariant)": 34.95, "deepinv Neighbor2Neighbor": 34.67}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--losses", nargs="+", default=["sure", "r2r", "n2s"])
    ap.add_argument("--no-tta", action="store_true", help="reconstruct in one pass (default: reconstruct's averaging)")
    ap.add_argument("--no-blend", action="store_true", help="the network's reconstruction, not blended with the input")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/denoise_fmd.json"))
    args = ap.parse_args()
    noisy = sorted((FMD / "noisy_raw").glob("*.tif"))
    clean = {p.name: tifffile.imread(FMD / "clean_avg50" / p.name).astype(np.float64) for p in noisy}
    results = {"noisy input": float(np.mean([psnr(clean[p.name], tifffile.imread(p), 255) for p in noisy]))}
    seconds, blends = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for loss in args.losses:
            t0 = time.perf_counter()
            run = Path(tmp) / loss
            api.fit([str(FMD / "noisy_raw")], run, config=RunConfig(loss=loss, steps=args.steps, device="cpu"))
            items = list(api.reconstruct(run, [str(FMD / "noisy_raw")], Path(tmp) / f"out_{loss}", device="cpu",
                                         tta=not args.no_tta, blend=not args.no_blend))
            blends[loss], outs = items[0]["blend"], [Path(o["output"]) for o in items]
            results[f"sslrecon {loss}"] = float(np.mean([psnr(clean[o.name], tifffile.imread(o), 255) for o in outs]))
            seconds[loss] = round(time.perf_counter() - t0, 1)
    print(f"| method ({args.steps} steps) | PSNR (dB) |\n|---|---|")
    for name, value in {**results, **{f"peer: {k}": v for k, v in ANCHORS_300.items() if k != "noisy input"}}.items():
        blend = blends.get(name.removeprefix("sslrecon "))
        print(f"| {name} | {value:.2f}" + ("" if blend is None else f" (blend {blend:.3f})") + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"steps": args.steps, "tta": not args.no_tta, "blend": not args.no_blend,
                                     "psnr": results, "blend_weights": blends, "seconds": seconds,
                                     "anchors_300_steps": ANCHORS_300}, indent=2) + "\n")


if __name__ == "__main__":
    main()
