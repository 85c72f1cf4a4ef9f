"""Checkpoints: plain data only (tensors, numbers, strings), written atomically, loaded with
`weights_only=True` so that a checkpoint from a stranger cannot run code."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError


def save(state: dict, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict:
    """Load a checkpoint file, or `model.pt` of a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ConfigError("no checkpoint here", path=path, fix="pass a run folder made by `sslrecon fit` or a .pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot load checkpoint ({e.__class__.__name__})", path=path,
                          fix="pass a checkpoint written by sslrecon") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ConfigError("not an sslrecon checkpoint", path=path, fix="pass a checkpoint written by sslrecon")
    return state
