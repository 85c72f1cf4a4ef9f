"""The headline on real micrographs: `sslrecon fit MICROGRAPHS --loss pg-unsure` with no noise flag, and how close the
noise it learns comes to what `sslrecon noise` estimates on the same files.

For each file: the estimated model (`--noise auto`, which starts the run), the learned one, and the ratio of their
variances at the file's mean value (the level the data mostly sit at), at every validation step and at the end.
The default is the README's command: the default network and 2000 steps (16 minutes on a 2-core CPU).

    python benchmarks/headline_epu.py [--data ../shared/data/cryoem/micrographs] [--steps 2000] [--device auto]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sslrecon import api
from sslrecon.config import RunConfig
from sslrecon.io import open_image
from sslrecon.noise.models import from_dict


def _variance_at(model: dict, x: float) -> float:
    return float(from_dict(model).variance(torch.tensor([x], dtype=torch.float64))[0])


def _level(model: dict) -> dict:
    return {k: model.get(k, 0.0) for k in ("gain", "sigma", "offset")} | {"name": model["name"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/cryoem/micrographs"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results/headline_epu.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        doc = api.fit([args.data], Path(tmp) / "run", config=RunConfig(loss="pg-unsure", steps=args.steps,
                                                                       device=args.device))
        seconds = time.time() - t0
        history = [json.loads(ln) for ln in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    files = []
    for path, start in doc["noise_initial_per_file"].items():
        with open_image(Path(path)) as img:
            mean = float(np.mean([img.frame(i).astype(np.float64).mean() for i in range(img.n_frames)]))
        learned = doc["noise_per_file"][path]
        ref = _variance_at(start, mean)
        trajectory = [(r["step"], _variance_at(r["noise_learned_per_file"][path], mean) / ref)
                      for r in history if "noise_learned_per_file" in r]
        files.append({"file": Path(path).name, "mean": mean, "estimated": _level(start), "learned": _level(learned),
                      "variance_ratio_at_mean": _variance_at(learned, mean) / ref, "trajectory": trajectory})
    print(f"pg-unsure, {args.steps} steps on {doc['device']} ({seconds:.0f} s)")
    print(f"{'file':38s} {'estimated gain / sigma':>24s} {'learned gain / sigma':>22s} {'var ratio':>9s}")
    for f in files:
        e, lrn = f["estimated"], f["learned"]
        print(f"{f['file']:38s} {e['gain']:10.4g} / {e['sigma']:9.4g}   {lrn['gain']:9.4g} / {lrn['sigma']:9.4g}"
              f" {f['variance_ratio_at_mean']:9.3f}")
    out = {"command": f"python benchmarks/headline_epu.py --steps {args.steps} --device {args.device}",
           "device": doc["device"], "steps": args.steps, "seconds": seconds, "files": files}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
