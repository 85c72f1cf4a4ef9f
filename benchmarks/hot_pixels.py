"""Hot pixels in training data: the twelve Set12 centre crops at 30 photons per pixel (gain 2, read noise 3, offset 100:
`denoise_pg.py`'s data), as they are and with one pixel in a thousand set to 60000 (a defective pixel or a cosmic-ray
hit); `n2s` (300 steps, width 16) trained and reconstructed on each through the CLI's code path (`api.fit`,
`api.reconstruct`). PSNR against the clean counts, away from the hot pixels (each one's 5 x 5 neighbourhood left
out), with and without the blend; the hot pixels each file was found to hold.

    python benchmarks/hot_pixels.py [--json benchmarks/results/hot_pixels.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from denoise_pg import GAIN, noisy_set, set12_clean, set_range
from sslrecon import api
from sslrecon.config import RunConfig

PHOTONS, EVERY, HOT = 30, 1000, 60000.0


def psnr_away(out: Path, clean: list[np.ndarray], masks: list[np.ndarray], peak: float) -> float:
    scores = []
    for i, (c, m) in enumerate(zip(clean, masks)):
        near = np.zeros_like(m)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near |= np.roll(np.roll(m, dy, 0), dx, 1)
        r = tifffile.imread(out / f"{i:02d}.tif").astype(np.float64)
        scores.append(10 * np.log10(peak**2 / np.mean((r - c)[~near] ** 2)))
    return float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/hot_pixels.json"))
    args = ap.parse_args()
    clean, noisy = noisy_set(set12_clean(), PHOTONS)
    rng = np.random.default_rng(1)
    masks = [rng.random(y.shape) < 1 / EVERY for y in noisy]
    peak = set_range(clean)
    cfg = RunConfig(loss="n2s", steps=300, width=16, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, hot in (("as measured", False), ("one pixel in 1000 hot", True)):
            d = Path(tmp) / name.replace(" ", "_")
            inputs = d / "in"
            inputs.mkdir(parents=True)
            for i, (y, m) in enumerate(zip(noisy, masks)):
                tifffile.imwrite(inputs / f"{i:02d}.tif", np.where(m, HOT, y).astype(np.float32) if hot else y.astype(np.float32))
            t0 = time.perf_counter()
            run = api.fit([str(inputs)], d / "run", config=cfg)
            row = {"data": name, "hot_pixels": sum(run.get("hot_pixels", {}).values()),
                   "true_hot": int(sum(m.sum() for m in masks)) if hot else 0}
            for blend in (True, False):
                out = d / f"out_{blend}"
                list(api.reconstruct(d / "run", [str(inputs)], out, blend=blend, device="cpu"))
                row["psnr" if blend else "psnr_no_blend"] = psnr_away(out, clean, masks, peak)
            row["noisy_psnr"] = float(np.mean([10 * np.log10(peak**2 / np.mean((np.asarray(y) - c)[~m] ** 2))
                                               for y, c, m in zip(noisy, clean, masks)]))
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
    print(f"## n2s on Set12 at {PHOTONS} photons (gain {GAIN}), PSNR away from the hot pixels\n")
    print("| data | hot pixels found (placed) | noisy | reconstruction | without the blend |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['hot_pixels']} ({r['true_hot']}) | {r['noisy_psnr']:.2f} | {r['psnr']:.2f} | "
              f"{r['psnr_no_blend']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
