"""Peak memory and time of `sslrecon reconstruct` on a 4096x4096 float32 MRC (CPU unless --device).

Target: peak RSS <= 1.5 GB (the image alone is 64 MB; tiles keep activations bounded).

    python benchmarks/reconstruct_memory.py [--size 4096] [--loss sure] [--no-tta] [--json out.json]

`reconstruct`'s default test-time augmentation (eight passes per tile) unless `--no-tta`.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np

from sslrecon import api
from sslrecon.config import RunConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--loss", default="sure")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--no-tta", action="store_true", help="one pass per tile (reconstruct --no-tta)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/reconstruct_memory.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        big = tmp / "big.mrc"
        with mrcfile.new_mmap(big, shape=(args.size, args.size), mrc_mode=2) as m:
            for r in range(0, args.size, 512):
                m.data[r : r + 512] = rng.normal(100, 10, (min(512, args.size - r), args.size)).astype(np.float32)
            m.voxel_size = 1.0
        small = tmp / "train"
        small.mkdir()
        with mrcfile.new(small / "crop.mrc") as m:
            m.set_data(mrcfile.mmap(big).data[:256, :256].copy())
        api.fit([str(small)], tmp / "run", config=RunConfig(loss=args.loss, steps=2, val_every=2, device=args.device))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sslrecon", "reconstruct", str(tmp / "run"), str(big), "-o",
                        str(tmp / "out"), "--device", args.device, "--no-tta" if args.no_tta else "--tta"], check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {"device": args.device, "size": args.size, "loss": args.loss, "tta": not args.no_tta, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1),
              "target_peak_rss_mb": 1536, "meets_target": peak_mb <= 1536}
    print(f"| image | loss | tta | seconds | peak RSS (MB) | target |\n|---|---|---|---|---|---|\n"
          f"| {args.size}x{args.size} float32 MRC | {args.loss} | {not args.no_tta} | {seconds:.1f} | {peak_mb:.0f} | <= 1536 |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
