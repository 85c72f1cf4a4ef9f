"""One exception hierarchy: user mistakes are `SslreconError`s, mapped by the CLI to exit status 2.

Every error names the file (when there is one) and the fix, so the CLI can print it as one line.
"""
from __future__ import annotations

from pathlib import Path


class SslreconError(Exception):
    """A mistake in the user's input or configuration (exit status 2)."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        parts = [f"{self.path}: {self.message}" if self.path else self.message]
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return " -- ".join(parts)


class InputError(SslreconError):
    """Missing, empty or inconsistent inputs."""


class FormatError(SslreconError):
    """A file that cannot be read as the format it claims (truncated, unsupported mode, not an image)."""


class NoiseSpecError(SslreconError):
    """A `--noise` specification that cannot be parsed or is out of range."""


class ConfigError(SslreconError):
    """Options that conflict or are out of range, or a run folder that cannot be used."""


class OutputError(SslreconError):
    """An output that would overwrite an input or an existing file."""


class SslreconNote(UserWarning):
    """Something done on the user's behalf that they should hear of (the CLI prints it as one `note` line on stderr)."""
