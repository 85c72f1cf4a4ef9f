"""Training steps per second of each loss, relative to a plain supervised step on the same batch.

Same network (U-Net width 32, depth 3), batch 8 of 64x64 patches, Adam; CPU unless --device.

    python benchmarks/train_speed.py [--steps 20] [--device cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sslrecon.losses import LOSSES, build_loss
from sslrecon.models import UNet, UNetConfig
from sslrecon.noise import Gaussian, PoissonGaussian
from sslrecon.physics import Denoising


def steps_per_second(step, steps: int) -> float:
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/train_speed.json"))
    args = ap.parse_args()
    dev = torch.device(args.device)
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(8, 1, 64, 64, device=dev)
    y = x + 0.1 * torch.randn(x.shape, device=dev)
    physics = Denoising(Gaussian(0.1))
    # Losses that need shot noise (gr2r-poisson) get a Poisson-Gaussian model instead
    pg_physics = Denoising(PoissonGaussian(gain=0.01, sigma=0.05))
    model = UNet(UNetConfig()).to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-4)

    def run(compute):
        def step():
            opt.zero_grad()
            compute().backward()
            opt.step()
        return step

    rates = {"supervised": steps_per_second(run(lambda: ((model(y) - x) ** 2).mean()), args.steps)}
    for name in LOSSES:
        loss = build_loss(name).to(dev)  # losses with state (unsure) keep buffers on the device
        ph = physics if loss.models is None or "gaussian" in loss.models else pg_physics
        rates[name] = steps_per_second(run(lambda: loss(model, y, ph, generator=g).value), args.steps)
    base = rates["supervised"]
    print("| loss | steps/s | cost vs supervised |\n|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {r:.2f} | {base / r:.2f}x |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"device": str(dev), "steps_per_second": rates,
                                     "cost_vs_supervised": {k: base / v for k, v in rates.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
