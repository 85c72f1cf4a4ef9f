"""File formats: a registry that sniffs magic bytes first, then trusts the suffix.

`open_image(path)` returns an `ImageFile`; `write_like(dest, frames, like)` writes in `like`'s format.
`find_inputs(...)` expands files, folders (recursive) and `-` (paths on stdin) into a sorted list.
`record_output(dest)` lists a written output in its folder's `OUTPUTS_LIST`, so that folder walks leave it out.
"""
from __future__ import annotations

import fnmatch
import sys
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import FormatError, InputError, SslreconNote
from . import mrc, tiff
from .base import OUTPUT_DTYPES, ImageFile, atomic_output, check_output

#: format name -> (module with sniff/SUFFIXES/write_like, reader class)
READERS = {"mrc": (mrc, mrc.MrcImage), "tiff": (tiff, tiff.TiffImage)}
SUFFIXES = tuple(s for mod, _ in READERS.values() for s in mod.SUFFIXES)

__all__ = ["READERS", "SUFFIXES", "OUTPUT_DTYPES", "OUTPUTS_LIST", "ImageFile", "open_image", "write_like",
           "find_inputs", "record_output", "atomic_output", "check_output"]

#: The file in which `reconstruct` names the outputs it wrote to a folder (one name a line). A folder walk leaves
#: those files out of a subfolder below the folder named: earlier outputs kept inside an input folder are
#: reconstructions, not measurements. Named, or in the folder named itself, they are inputs like any other.
OUTPUTS_LIST = ".sslrecon-outputs"


def open_image(path: str | Path, *, permissive: bool = False) -> ImageFile:
    """Open `path` with the reader its content (magic bytes) names, else its suffix's reader."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path=path, fix="check the path")
    if path.is_dir():
        raise InputError("is a folder, not an image file", path=path, fix="pass files, or the folder as an input")
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        raise FormatError("file is empty", path=path, fix="re-export or re-copy the file")
    for name, (mod, cls) in READERS.items():
        if mod.sniff(head):
            return cls(path, permissive=permissive)
    suffix = path.suffix.lower()
    if suffix in mrc.SUFFIXES and mrc.sniff_legacy(head, path.stat().st_size):
        return mrc.MrcImage(path, permissive=True)  # no map ID, but a header that accounts for every byte
    for name, (mod, cls) in READERS.items():
        if suffix in mod.SUFFIXES:
            raise FormatError(f"not a valid {name.upper()} file (its signature bytes are missing)", path=path,
                              fix=f"check that this is really a {name.upper()} file; re-export it if it is damaged")
    raise FormatError(f"unsupported file type '{suffix or path.name}'", path=path,
                      fix=f"pass images in one of: {', '.join(SUFFIXES)}")


def write_like(dest: str | Path, frames: Iterable[np.ndarray], like: ImageFile, **kwargs) -> Path:
    """Write `frames` to `dest` in the format of `like`, mirroring its metadata (see each format's writer)."""
    mod, _ = READERS[like.format]
    return mod.write_like(Path(dest), iter(frames), like, **kwargs)


def find_inputs(inputs: Iterable[str], glob: str | None = None, stdin: Iterable[str] | None = None) -> list[Path]:
    """Expand files, folders (searched recursively) and `-` (one path per line on stdin) into image paths.

    Folders contribute files with a known image suffix (or matching `glob`), less those a subfolder's `OUTPUTS_LIST`
    names (an `SslreconNote` warning says how many); explicit files are kept as given (their content decides the
    reader) unless `glob` excludes them. Duplicates are dropped.
    """
    out: list[Path] = []
    for item in inputs:
        if item == "-":
            lines = [ln.strip() for ln in (stdin if stdin is not None else sys.stdin)]
            out.extend(find_inputs([ln for ln in lines if ln], glob))
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")
                           and (fnmatch.fnmatch(q.name, glob) if glob else q.suffix.lower() in SUFFIXES))
            listed = {d: _listed(d) for d in {q.parent for q in found} - {p}}
            ours = {q for q in found if q.name in listed.get(q.parent, ())}
            if ours:
                folders = ", ".join(sorted({str(q.parent) for q in ours}))
                warnings.warn(SslreconNote(f"left out {len(ours)} file(s) that sslrecon wrote under {p} ({folders}, "
                                           f"listed in {OUTPUTS_LIST}); name them, or that folder, to use them"),
                              stacklevel=2)
            out.extend(q for q in found if q not in ours)
        elif p.exists():
            if glob is None or fnmatch.fnmatch(p.name, glob):
                out.append(p)
        else:
            raise InputError("no such file or folder", path=p, fix="check the path")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    if not unique:
        where = ", ".join(inputs) or "(nothing)"
        raise InputError(f"no input images found in {where}",
                         fix=f"pass image files ({', '.join(SUFFIXES)}) or folders holding them"
                             + (f", or change --glob '{glob}'" if glob else ""))
    return unique


def _listed(folder: Path) -> set[str]:
    try:
        return set(filter(None, (folder / OUTPUTS_LIST).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError):
        return set()


def record_output(dest: Path) -> None:
    """Name `dest` (just written) in its folder's `OUTPUTS_LIST`."""
    if dest.name not in _listed(dest.parent):
        with open(dest.parent / OUTPUTS_LIST, "a", encoding="utf-8") as f:
            f.write(dest.name + "\n")
