"""Every loss with `--noise auto` on detector noise in unusual units: does each improve on the noisy input?

Eight BSD68 crops (the centre 128x128 of the 11th to 18th image, sorted by name) made into counts at a few photons
per pixel at the mean and measured as `offset + gain * Poisson + N(0, read^2)`, one draw (seed 5, the scenarios in
order; a scenario named alone gets the same draw as in the full run), written as TIFF in the dtype a detector would
give. Each loss trains a width-16 U-Net for `--steps` steps on patches of 48 with `--noise auto` (as a user without
a model would run it); PSNR of `reconstruct`'s output against the clean counts (the clean set's range), beside the
noisy input's, and the model the run used or learned. A row below the noisy input is a failure a user would meet; a
refusal is printed with its reason.

    python benchmarks/robustness.py [--steps 200] [--scenarios tiny-units emccd ...] [--losses sure n2s ...]
        [--no-tta] [--no-blend] [--json benchmarks/results/robustness.json]

`reconstruct` averages over the eight symmetries and blends with the measurement by the run's weight (its defaults)
unless `--no-tta` / `--no-blend`; each row records the weight.

The high signal-to-noise scenarios (`HIGH_SNR`: 300 and 3000 photons per pixel) run only when named, drawn in their
own order from the same seed: `--scenarios bright-300 bright-3000 --json benchmarks/results/robustness_bright.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sslrecon import api  # noqa: E402
from sslrecon.config import RunConfig  # noqa: E402
from sslrecon.engine.metrics import psnr  # noqa: E402
from sslrecon.errors import SslreconError  # noqa: E402

from denoise_pg import set12_clean, set_range  # noqa: E402

#: name: (photons at the mean, gain, read noise, offset, dtype)
SCENARIOS = {
    "tiny-units": (20, 0.01, 0.02, 0.0, "float32"),  # data already scaled to about [0, 1]
    "emccd": (10, 50.0, 30.0, 1000.0, "float32"),  # large gain and dark level
    "read-dominated": (3, 1.0, 5.0, 0.0, "float32"),  # offset-corrected: negative values, read noise hides shot noise
    "clipped-8bit": (15, 4.0, 3.0, 10.0, "uint8"),
    "cryo-counts": (80, 70.0, 40.0, 0.0, "uint16"),  # a raw micrograph's scale
    "counting-1": (1, 1.0, 0.0, 0.0, "uint16"),  # whole counts of a counting camera
    "counting-5": (5, 1.0, 0.0, 0.0, "uint16"),
}
#: high signal-to-noise (a widefield camera's hundreds to thousands of photons), run on request (`--scenarios`)
HIGH_SNR = {
    "bright-300": (300, 1.0, 2.0, 0.0, "uint16"),
    "bright-3000": (3000, 1.0, 3.0, 100.0, "uint16"),
}
ALL_SCENARIOS = {**SCENARIOS, **HIGH_SNR}
LOSSES = ["auto", "sure", "pg-sure", "pg-unsure", "unsure", "gr2r-poisson", "r2r", "n2s"]


def crops() -> list[np.ndarray]:
    """The centre 128x128 of the 11th to 18th BSD68 image (the centre of `denoise_pg`'s 256x256 crops)."""
    return [c[64:192, 64:192] for c in set12_clean("BSD68")[10:18]]


def draw(clean01: list[np.ndarray], names: list[str]) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """(clean, noisy) images of each named scenario. Every scenario of its group (`SCENARIOS`, `HIGH_SNR`) is drawn in
    order from seed 5, named or not, so that a scenario run alone meets the noise of the full run."""
    out, mean01 = {}, np.mean([c.mean() for c in clean01])
    for group in (SCENARIOS, HIGH_SNR):
        if not any(n in group for n in names):
            continue
        rng = np.random.default_rng(5)
        for name, (photons, gain, read, offset, dtype) in group.items():
            lams = [photons * c / mean01 for c in clean01]
            noisy = [offset + gain * rng.poisson(lam) + (rng.normal(0, read, lam.shape) if read else 0) for lam in lams]
            if dtype != "float32":
                top = np.iinfo(dtype).max
                noisy = [np.clip(np.round(n), 0, top).astype(dtype) for n in noisy]
            out[name] = ([offset + gain * lam for lam in lams], noisy)
    return {n: out[n] for n in names}


def measure(clean: list[np.ndarray], noisy: list[np.ndarray], name: str, steps: int, losses: list[str], tmp: Path,
            tta: bool = True, blend: bool = True) -> dict:
    photons, gain, read, offset, dtype = ALL_SCENARIOS[name]
    folder = tmp / name / "in"
    folder.mkdir(parents=True)
    for i, n in enumerate(noisy):
        tifffile.imwrite(folder / f"im{i}.tif", np.asarray(n, dtype=dtype))
    span = set_range(clean)

    def mean_psnr(images) -> float:
        return float(np.mean([psnr(c, o, span) for o, c in zip(images, clean)]))

    row = {"photons": photons, "gain": gain, "read": read, "offset": offset, "dtype": dtype,
           "noisy": mean_psnr(noisy), "estimate": api.noise([str(folder)])["model"]}
    for loss in losses:
        t0, run = time.perf_counter(), tmp / name / f"run_{loss}"
        try:
            cfg = RunConfig(loss=loss, noise="auto", steps=steps, width=16, patch_size=48, device="cpu")
            doc = api.fit([str(folder)], run, config=cfg)
            outs = list(api.reconstruct(run, [str(folder)], run / "out", device="cpu", tta=tta, blend=blend))
            row[loss] = {"psnr": mean_psnr([tifffile.imread(o["output"]) for o in outs]), "loss": doc["loss"],
                         "noise": doc.get("noise_learned", doc["noise"]),
                         "blend": outs[0]["blend"]}
        except SslreconError as e:
            row[loss] = {"refused": e.line()}
        row[loss]["seconds"] = round(time.perf_counter() - t0, 1)
        entry = row[loss]
        shown = f"{entry['psnr']:.2f} (blend {entry['blend']:.3f})" if "psnr" in entry else entry["refused"]
        print(f"{name:15s} {loss:13s} {shown}  (noisy {row['noisy']:.2f})", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(ALL_SCENARIOS))
    ap.add_argument("--losses", nargs="+", default=LOSSES)
    ap.add_argument("--no-tta", action="store_true", help="reconstruct in one pass (default: reconstruct's averaging)")
    ap.add_argument("--no-blend", action="store_true", help="the network's reconstruction, not blended with the input")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (clean, noisy) in draw(crops(), args.scenarios).items():
            rows[name] = measure(clean, noisy, name, args.steps, args.losses, Path(tmp), not args.no_tta,
                                 not args.no_blend)
    failures = [f"{n} {loss}" for n, r in rows.items() for loss in args.losses
                if "psnr" not in r[loss] or r[loss]["psnr"] <= r["noisy"]]
    print("below the noisy input or refused: " + (", ".join(failures) or "none"))
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "device": "cpu", "tta": not args.no_tta,
                                         "blend": not args.no_blend, "scenarios": rows,
                                         "failures": failures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
