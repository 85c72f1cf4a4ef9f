"""The run configuration: small, frozen, validated; stored as config.json in every run folder."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .errors import ConfigError

CONFIG_VERSION = 1


@dataclass(frozen=True)
class RunConfig:
    loss: str = "sure"
    noise: str = "auto"
    steps: int = 2000
    batch_size: int = 8
    patch_size: int = 64
    val_fraction: float = 0.1
    val_every: int = 100
    lr: float = 1e-3
    width: int = 32
    depth: int = 3
    seed: int = 0
    device: str = "auto"
    glob: str | None = None
    loss_options: dict = field(default_factory=dict)
    version: int = CONFIG_VERSION

    def __post_init__(self):
        checks = [
            (self.steps >= 1, "--steps must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.patch_size >= 8, "--patch-size must be at least 8"),
            (0 <= self.val_fraction < 1, "--val-fraction must be in [0, 1)"),
            (self.val_every >= 1, "--val-every must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.width >= 1 and 1 <= self.depth <= 6, "--width must be >= 1 and --depth in 1..6"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg, fix="change the option's value")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}", fix="use a config from this sslrecon version")
        return cls(**d)
