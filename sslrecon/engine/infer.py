"""Tiled inference with overlap and smooth blending, tiles sized from available memory.

Tiles start on multiples of the network's down-sampling factor and are cut from the image padded
exactly as a whole-image pass pads it, and each tile's weight is zero within `margin` (at least the
receptive radius) of an interior tile edge, then ramps linearly to one. So the blended result equals
the untiled result up to float rounding, without seams, while only a tile's activations are in memory.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

Fn = Callable[[torch.Tensor], torch.Tensor]


def available_memory(device: torch.device) -> int:
    """Bytes that inference may use on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
        avail = info.get("MemAvailable", 4 << 30)
    except OSError:
        avail = 4 << 30
    return int(min(avail * 0.25, 768 << 20))


def auto_tile_size(width: int, multiple: int, device: torch.device, passes_in_memory: int = 1) -> int:
    """Largest tile side whose activations fit the memory budget (about 32 bytes x width per pixel)."""
    bytes_per_px = 32 * width * passes_in_memory
    side = int(math.sqrt(available_memory(device) / bytes_per_px))
    return int(min(4096, max(8 * multiple, side // multiple * multiple)))


def _starts(n: int, tile: int, margin: int, multiple: int) -> tuple[list[int], int]:
    """Tile starts along one axis of padded length `n` (a multiple of `multiple`) and the tile length."""
    if n <= tile:
        return [0], n
    stride = (tile - 2 * margin - multiple) // multiple * multiple
    if stride <= 0:
        raise ValueError(f"tile size {tile} too small for margin {margin}")
    starts = list(range(0, n - tile, stride)) + [n - tile]
    return sorted(set(starts)), tile


def _weights(start: int, tile: int, n: int, margin: int, ramp: int) -> torch.Tensor:
    """1-D blending weight of a tile: zero in the margin at interior edges, a linear ramp, then one."""
    w = torch.ones(tile, dtype=torch.float64)
    r = torch.arange(tile, dtype=torch.float64)
    up = ((r - margin + 0.5) / ramp).clamp(0, 1)
    if start > 0:
        w = torch.minimum(w, up)
    if start + tile < n:
        w = torch.minimum(w, up.flip(0))
    return w


def tiled_apply(fn: Fn, image: np.ndarray, *, tile: int, margin: int, multiple: int,
                device: torch.device, batch: int = 1) -> np.ndarray:
    """Apply `fn` ((B,1,h,w) -> (B,C,h,w)) to a 2-D float32 `image` tile by tile; returns float32 (H, W) for one
    output channel, else (C, H, W)."""
    h, w = image.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    H, W = x.shape[-2:]
    smallest = -(-(2 * margin + 2 * multiple) // multiple) * multiple  # a tile must outgrow its margins
    tile = max(smallest, tile // multiple * multiple)
    rows, th = _starts(H, tile, margin, multiple)
    cols, tw = _starts(W, tile, margin, multiple)
    ramp = multiple
    wy = {r: _weights(r, th, H, margin, ramp) for r in rows}
    wx = {c: _weights(c, tw, W, margin, ramp) for c in cols}
    wsum_y = torch.zeros(H, dtype=torch.float64)
    wsum_x = torch.zeros(W, dtype=torch.float64)
    for r in rows:
        wsum_y[r : r + th] += wy[r]
    for c in cols:
        wsum_x[c : c + tw] += wx[c]
    out = None
    coords = [(r, c) for r in rows for c in cols]
    for i in range(0, len(coords), batch):
        group = coords[i : i + batch]
        tiles = torch.cat([x[..., r : r + th, c : c + tw] for r, c in group]).to(device)
        with torch.no_grad():
            pred = fn(tiles).float().cpu()
        if out is None:
            out = torch.zeros(pred.shape[1], H, W, dtype=torch.float32)
        for (r, c), p in zip(group, pred):
            out[:, r : r + th, c : c + tw] += p * (wy[r][:, None] * wx[c][None, :]).float()
    out /= (wsum_y[:, None] * wsum_x[None, :]).float()
    out = out[:, :h, :w].numpy()
    return out[0] if out.shape[0] == 1 else out

