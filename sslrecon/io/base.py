"""The reader/writer contract shared by every format.

An `ImageFile` is an open file seen as a stack of 2-D frames (a single image is a stack of one).
Frames are read lazily (memory-mapped where the format allows), so a folder larger than RAM can be
sampled and streamed. Writers take an iterator of frames and mirror the source's metadata.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import FormatError, OutputError

#: Output dtype choices for writers. "auto": integer inputs become float32 (denoised values are not
#: integers), float inputs keep their dtype; "input": the input's dtype (rounded and clipped).
OUTPUT_DTYPES = ("auto", "float32", "float16", "input")


class ImageFile:
    """An open image file viewed as `n_frames` frames of shape `(height, width)`."""

    format: str = ""
    path: Path
    n_frames: int
    shape: tuple[int, int]
    dtype: np.dtype

    def frame(self, i: int) -> np.ndarray:
        """Frame `i` as a 2-D array in the file's dtype (a memory-mapped view where possible)."""
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self.frame(i)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_finite(self, chunk_rows: int = 512) -> None:
        """Raise `FormatError` if any frame holds NaN or Inf (streamed, constant memory)."""
        if self.dtype.kind != "f":
            return
        for i in range(self.n_frames):
            f = self.frame(i)
            for r in range(0, f.shape[0], chunk_rows):
                if not np.isfinite(f[r : r + chunk_rows]).all():
                    where = f"frame {i}" if self.n_frames > 1 else "the image"
                    raise FormatError(
                        f"{where} contains NaN or Inf values",
                        path=self.path,
                        fix="replace non-finite pixels (e.g. with the image median) before running sslrecon",
                    )


def output_dtype(in_dtype: np.dtype, choice: str) -> np.dtype:
    """The dtype written for an input of `in_dtype` under the `--dtype` choice (see OUTPUT_DTYPES)."""
    in_dtype = np.dtype(in_dtype)
    if choice == "auto":
        return in_dtype if in_dtype.kind == "f" else np.dtype(np.float32)
    if choice == "input":
        return in_dtype
    return np.dtype(choice)


def cast_frame(frame: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float frame to `dtype`, rounding and clipping to the range of integer dtypes."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(frame), info.min, info.max).astype(dtype)
    if dtype == np.float16:
        info = np.finfo(np.float16)
        return np.clip(frame, info.min, info.max).astype(dtype)
    return frame.astype(dtype, copy=False)


@contextmanager
def atomic_output(dest: Path, *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it onto `dest`, on failure remove it.

    Refuses to write over any of `inputs`, and over an existing `dest` unless `overwrite`.
    """
    dest = Path(dest)
    check_output(dest, overwrite=overwrite, inputs=inputs)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_output(dest: Path, *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Raise `OutputError` if writing `dest` would overwrite an input, or an existing file without `overwrite`."""
    dest = Path(dest)
    for src in inputs:
        same = dest.resolve() == Path(src).resolve() or (dest.exists() and os.path.samefile(dest, src))
        if same:
            raise OutputError("output would overwrite an input file", path=dest, fix="choose another output folder with -o")
    if dest.exists() and not overwrite:
        raise OutputError("output exists", path=dest, fix="pass --overwrite to replace it, or choose another -o")
