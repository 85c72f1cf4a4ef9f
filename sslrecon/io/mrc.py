"""MRC reading (memory-mapped) and writing that mirrors the source header.

Every section of a file is one 2-D image: `.mrc` single images and volumes, `.mrcs` stacks, `.map`.
Supported modes: 0 (int8), 1 (int16), 2 (float32), 6 (uint16) and 12 (float16).
"""
from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import mrcfile
import numpy as np

from .. import __version__
from ..errors import FormatError
from .base import ImageFile, atomic_output, cast_frame, output_dtype

SUFFIXES = (".mrc", ".mrcs", ".map", ".st", ".ali", ".rec")
SUPPORTED_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
MAGIC_OFFSET, MAGIC = 208, b"MAP "


def sniff(head: bytes) -> bool:
    return head[MAGIC_OFFSET : MAGIC_OFFSET + 4] == MAGIC


def sniff_legacy(head: bytes, size: int) -> bool:
    """An MRC file without the map ID string ("MAP " at byte 208), as older programs and some particle
    stack writers leave it: accepted only when its dimensions, a supported mode and the extended
    header's length account for the file's size to the byte (in either byte order)."""
    if len(head) < 96:
        return False
    for order in "<>":
        nx, ny, nz, mode = np.frombuffer(head[:16], f"{order}i4").tolist()
        nsymbt = int(np.frombuffer(head[92:96], f"{order}i4")[0])
        if min(nx, ny, nz) > 0 and mode in SUPPORTED_MODES and nsymbt >= 0 and \
                size == 1024 + nsymbt + nx * ny * nz * np.dtype(SUPPORTED_MODES[mode]).itemsize:
            return True
    return False


class MrcImage(ImageFile):
    """An MRC file opened read-only and memory-mapped."""

    format = "mrc"

    def __init__(self, path: Path, *, permissive: bool = False):
        self.path = Path(path)
        if self.path.stat().st_size < 1024:
            raise FormatError("file is smaller than an MRC header (1024 bytes)", path=path,
                              fix="the file is truncated or not an MRC file; re-export or re-copy it")
        raw = _read(self.path, 12, 4)
        modes = {int(np.frombuffer(raw, "<i4")[0]), int(np.frombuffer(raw, ">i4")[0])}
        mode = min(modes, key=abs)
        if not modes & SUPPORTED_MODES.keys():
            raise FormatError(f"unsupported MRC mode {mode} (supported: 0, 1, 2, 6, 12)", path=path,
                              fix="convert it to mode 2 (float32), e.g. with `e2proc2d.py --outmode float`")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error" if not permissive else "ignore", RuntimeWarning)
                self._mrc = mrcfile.mmap(self.path, mode="r", permissive=permissive)
        except (ValueError, RuntimeWarning, OSError) as e:
            raise FormatError(f"cannot read as MRC ({e})", path=path,
                              fix="the file is truncated or damaged; re-export or re-copy it") from None
        data = self._mrc.data
        if data is None:
            raise FormatError("MRC data block is unreadable", path=path, fix="re-export or re-copy the file")
        if data.ndim == 2:
            data = data[None]
        self._data = data
        self.n_frames = data.shape[0]
        self.shape = (int(data.shape[1]), int(data.shape[2]))
        self.dtype = data.dtype.newbyteorder("=")
        if data.dtype.kind == "c":
            raise FormatError("complex MRC data is not supported", path=path, fix="write real-valued images")

    def frame(self, i: int) -> np.ndarray:
        return self._data[i]

    @property
    def header(self):
        return self._mrc.header

    @property
    def voxel_size(self):
        return self._mrc.voxel_size

    @property
    def extended_header(self) -> np.ndarray:
        return self._mrc.extended_header

    def close(self) -> None:
        self._mrc.close()


def _read(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def write_like(dest: Path, frames: Iterator[np.ndarray], like: MrcImage, *, dtype: str = "auto",
               overwrite: bool = False, label: str = "") -> Path:
    """Write `frames` (float arrays of `like.shape`) to `dest`, mirroring `like`'s header.

    Keeps the voxel size, origin, start indices, labels (plus one saying sslrecon produced the file),
    the extended header and its type, and whether the file is a stack or a volume. Integer inputs become
    float32 unless `dtype` says otherwise; float16 stays float16. Header statistics are recomputed.
    Written to a temporary file and renamed, so an interrupted write leaves nothing behind.
    """
    out_dtype = output_dtype(like.dtype, dtype)
    src_data = like._mrc.data
    shape = src_data.shape
    mode = mrcfile.utils.mode_from_dtype(out_dtype)
    with atomic_output(dest, overwrite=overwrite, inputs=(like.path,)) as tmp:
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=mode, overwrite=True,
                              extended_header=like.extended_header if like.extended_header.size else None,
                              exttyp=like.header.exttyp if like.extended_header.size else None) as out:
            data = out.data if out.data.ndim == 3 else out.data[None]
            for i, f in enumerate(frames):
                data[i] = cast_frame(np.asarray(f), out_dtype)
            _mirror_header(out, like, label)
            out.update_header_stats()
    return Path(dest)


def _mirror_header(out, like: MrcImage, label: str) -> None:
    src = like.header
    h = out.header
    if src.ispg == 0 and like.n_frames > 1 or like.path.suffix.lower() == ".mrcs":
        out.set_image_stack()
    for f in ("mx", "my", "mz", "nxstart", "nystart", "nzstart", "origin", "mapc", "mapr", "maps", "ispg"):
        h[f] = src[f]
    out.voxel_size = like.voxel_size  # after mx/my/mz: cella = voxel_size * m
    labels = [bytes(src.label[i]).rstrip(b"\0 ").decode("ascii", "replace") for i in range(int(src.nlabl))][:9]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    labels.append(f"sslrecon {__version__} {label} {stamp}".replace("  ", " ")[:80])
    h.label = [s.encode("ascii", "replace")[:80] for s in labels] + [b""] * (10 - len(labels))
    h.nlabl = len(labels)
