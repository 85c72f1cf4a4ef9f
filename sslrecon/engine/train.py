"""The training loop: one readable function, resumable, reproducible from its seed.

Adam with a cosine learning-rate schedule (a pure function of the step), autocast (bfloat16) on CUDA
only, gradient clipping, held-out evaluation every `val_every` steps under `no_grad` + `eval()` (so
it never changes loss state), `last.pt` at every evaluation for `--resume` and `model.pt` at every evaluation
unless the held-out risk estimate says clearly that the checkpoint it holds is better (`clearly_worse`; at every
evaluation while a loss learns the noise model, since its risk estimates move with it). One JSON line per
evaluation goes to `metrics.jsonl`.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import checkpoint


def cosine_lr(step: int, steps: int, lr: float, warmup: int = 20) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 1 % of `lr` at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def autocast_context(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: `clearly_worse`: how many standard errors of the paired difference a checkpoint's held-out risk must lie above that
#: of the checkpoint in `model.pt` for validation to keep the older one.
CLEAR = 2.0


def clearly_worse(risks: torch.Tensor, kept: torch.Tensor | None) -> bool:
    """Whether the held-out risks of a checkpoint (one per patch, `evaluate`) exceed those of the checkpoint kept in
    `model.pt` by more than `CLEAR` standard errors of their mean difference. Both are drawn with the same random
    draws on the same patches, so the difference is paired; the estimates are noisy where the noise is strong (at
    one photon per pixel with read noise one network's estimate moved by 0.1-0.6 of its value between evaluations),
    and a run that kept whichever read lowest kept its step-100 network of 300 (Set12, `pg-sure`: 15.23 dB against
    16.47 for its last). The later checkpoint, trained longer on a decaying learning rate, stands unless validation
    sees it clearly worse."""
    if kept is None:
        return False
    d = (risks - kept).double()
    return bool(d.mean() > CLEAR * d.std() / math.sqrt(d.numel())) if d.numel() > 1 else bool(d.mean() > 0)


def evaluate(model, loss, val_batch, physics_for, seed: int, chunk: int = 8) -> torch.Tensor | None:
    """Held-out risk estimates (normalised units), one per patch, with fixed random draws, in eval mode, no grad.

    `val_batch` is `(y, sources)` or None; `physics_for(sources)` gives the batch's physics."""
    if val_batch is None:
        return None
    val_batch, sources = val_batch
    was_training = model.training
    model.eval()
    try:
        g = torch.Generator(device=val_batch.device).manual_seed(seed)
        with torch.no_grad():
            risks = [loss.risk(model, val_batch[i : i + chunk], physics_for(sources[i : i + chunk]), generator=g)
                     for i in range(0, len(val_batch), chunk)]
        return torch.cat(risks).float().cpu()
    finally:
        model.train(was_training)


def train(*, model, loss, sampler, val_batch, physics_for, steps: int, batch_size: int, lr: float, val_every: int,
          seed: int, run_dir: Path, device: torch.device, make_state: Callable[[], dict],
          resume: dict | None = None, progress: bool = True, to_data_units: float = 1.0,
          report: Callable[[], dict] | None = None) -> dict:
    """Train `model` with `loss` on batches from `sampler`; returns a summary dict.

    `physics_for(sources)` returns the physics (with each patch's noise model) of a batch.
    `make_state()` returns the plain-data part of a checkpoint (config, normalisation, noise, ...);
    weights, optimiser, step and RNG state are added here. `to_data_units` converts a normalised MSE
    to the data's units (scale^2) for logging. `report()` adds fields to each line of `metrics.jsonl` (a loss's
    learned noise model in data units).
    """
    run_dir = Path(run_dir)
    model.to(device).train()
    loss.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g_data = torch.Generator().manual_seed(seed)
    g_loss = torch.Generator(device=device).manual_seed(seed + 1)
    start, kept = 0, None  # the held-out risks of model.pt's checkpoint, one per patch
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        g_data.set_state(resume["rng"]["data"])
        g_loss.set_state(resume["rng"]["loss"].to(g_loss.get_state().device))
        start = int(resume["step"])  # (a run from before `kept_val` compares afresh)
        kept = None if resume.get("kept_val") is None else torch.tensor(resume["kept_val"])
    ctx = autocast_context(device)
    metrics_path = run_dir / "metrics.jsonl"

    def save(name: str, step: int):
        state = make_state()
        state.update(model=model.state_dict(), loss_state=loss.state_dict(), optimizer=opt.state_dict(),
                     step=step, kept_val=None if kept is None else kept.tolist(),
                     rng={"data": g_data.get_state(), "loss": g_loss.get_state().cpu()})
        checkpoint.save(state, run_dir / name)

    bar = Progress(TextColumn("[bold]fit[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress, transient=False)
    t0, seen, last_val = time.perf_counter(), 0, None
    running = None
    with bar:
        task = bar.add_task("fit", total=steps, completed=start, info="")
        for step in range(start, steps):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, steps, lr)
            loss.pace(cosine_lr(step, steps, 1.0))
            y, sources = sampler.sample(batch_size, g_data)
            y = y.to(device, non_blocking=True)
            with ctx:
                out = loss(model, y, physics_for(sources), generator=g_loss)
            if not torch.isfinite(out.value):
                raise FloatingPointError(f"loss became {out.value.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            out.value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            seen += 1
            v = out.value.item()
            running = v if running is None else 0.95 * running + 0.05 * v
            done = step + 1
            if done % val_every == 0 or done == steps:
                risks = evaluate(model, loss, val_batch, physics_for, seed + 2)
                val = last_val = None if risks is None else float(risks.mean())
                # while a loss learns the noise, each evaluation is scored with that step's estimate of it, so
                # evaluations are not comparable: model.pt follows the latest, and comparisons start afresh after
                moving = loss.learning
                improved = risks is None or moving or not clearly_worse(risks, kept)
                if risks is not None and improved:
                    kept = None if moving else risks
                rec = {"step": done, "loss": v, "loss_avg": running, "lr": opt.param_groups[0]["lr"],
                       "val_mse": None if val is None else val * to_data_units,
                       "seconds": round(time.perf_counter() - t0, 3), **out.terms, **(report() if report else {})}
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                save("last.pt", done)
                if improved:
                    save("model.pt", done)
            rate = seen / max(1e-9, time.perf_counter() - t0)
            bar.update(task, completed=done, info=f"loss {running:.4g}  {rate:.1f} it/s")
    seconds = time.perf_counter() - t0
    return {"steps": steps, "seconds": round(seconds, 3), "steps_per_second": round(seen / max(seconds, 1e-9), 3),
            "best_val_mse": None if kept is None else float(kept.mean()) * to_data_units,
            "last_val_mse": None if last_val is None else last_val * to_data_units}
