"""TIFF reading and writing (tifffile): 2-D images and multi-page stacks, any integer or float dtype.

Every 2-D plane of the first series is one image (`T`, `Z`, `C`, ... axes are flattened into frames).
The writer keeps the layout and the metadata that matters: ImageJ axes, spacing and unit, OME axes
and physical pixel size, and the resolution tags (pixel size).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile

from .. import __version__
from ..errors import FormatError
from .base import ImageFile, atomic_output, cast_frame, output_dtype

SUFFIXES = (".tif", ".tiff")
MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_IMAGEJ_KEYS = ("spacing", "unit", "finterval", "frames", "slices", "channels", "hyperstack", "mode", "loop")


def sniff(head: bytes) -> bool:
    return head[:4] in MAGICS


class TiffImage(ImageFile):
    """A TIFF file; memory-mapped when uncompressed and contiguous, else read one plane at a time."""

    format = "tiff"

    def __init__(self, path: Path, *, permissive: bool = False):
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            self.series_shape, self.axes = tuple(series.shape), series.axes
            self.dtype = np.dtype(series.dtype)
        except Exception as e:  # tifffile raises many types for damaged files
            raise FormatError(f"cannot read as TIFF ({e})", path=path,
                              fix="the file is truncated or damaged; re-export or re-copy it") from None
        if "S" in self.axes:
            raise FormatError(f"RGB/multi-sample TIFF (axes {self.axes}) is not supported", path=path,
                              fix="save each channel as a greyscale image or stack; a stack of 3 or 4 frames that "
                                  "tifffile tagged RGB reads as one when written with photometric='minisblack'")
        if self.dtype.kind not in "iuf" or len(self.series_shape) < 2:
            raise FormatError(f"unsupported TIFF data ({self.dtype}, shape {self.series_shape})", path=path,
                              fix="use greyscale integer or float images")
        self.shape = (int(self.series_shape[-2]), int(self.series_shape[-1]))
        self.n_frames = int(np.prod(self.series_shape[:-2], dtype=np.int64))
        try:
            self._mm = tifffile.memmap(self.path, series=0, mode="r").reshape(self.n_frames, *self.shape)
        except Exception:  # compressed, tiled or non-contiguous: read plane by plane
            self._mm = None
            try:  # decode the first plane now, so a truncated file fails at open, not mid-run
                self.frame(self.n_frames - 1)
            except Exception as e:
                raise FormatError(f"cannot decode TIFF image data ({e})", path=path,
                                  fix="the file is truncated or damaged; re-export or re-copy it") from None

    def frame(self, i: int) -> np.ndarray:
        if self._mm is not None:
            return self._mm[i]
        return self._tif.asarray(series=0, key=i).reshape(self.shape)

    def metadata(self) -> dict:
        """The metadata that the writer mirrors: kind, axes, resolution, ImageJ/OME fields."""
        page = self._tif.pages[0]
        md: dict = {"axes": self.axes, "shape": self.series_shape}
        tags = page.tags
        if "XResolution" in tags and "YResolution" in tags:
            md["resolution"] = (tags["XResolution"].value, tags["YResolution"].value)
            if "ResolutionUnit" in tags:
                md["resolutionunit"] = int(tags["ResolutionUnit"].value)
        if self._tif.is_imagej:
            ij = self._tif.imagej_metadata or {}
            md["imagej"] = {k: ij[k] for k in _IMAGEJ_KEYS if k in ij}
        elif self._tif.is_ome:
            xml = self._tif.ome_metadata or ""
            ome = {}
            for key in ("PhysicalSizeX", "PhysicalSizeY", "PhysicalSizeZ", "PhysicalSizeXUnit", "PhysicalSizeYUnit"):
                m = re.search(rf'{key}="([^"]+)"', xml)
                if m:
                    ome[key] = float(m.group(1)) if not key.endswith("Unit") else m.group(1)
            md["ome"] = ome
        return md

    def close(self) -> None:
        self._tif.close()


def write_like(dest: Path, frames: Iterator[np.ndarray], like: TiffImage, *, dtype: str = "auto",
               overwrite: bool = False, label: str = "") -> Path:
    """Write `frames` to `dest` with `like`'s layout and metadata, plane by plane, atomically."""
    md = like.metadata()
    out_dtype = output_dtype(like.dtype, dtype)
    kwargs: dict = {}
    if "resolution" in md:
        kwargs["resolution"] = md["resolution"]
        if "resolutionunit" in md:
            kwargs["resolutionunit"] = md["resolutionunit"]
    description = f"sslrecon {__version__} {label}".strip()
    if "imagej" in md and out_dtype in _IMAGEJ_DTYPES:
        kwargs["imagej"] = True
        kwargs["metadata"] = {"axes": md["axes"], **md["imagej"], "Info": description}
    elif "ome" in md:
        kwargs["ome"] = True
        kwargs["metadata"] = {"axes": md["axes"], **md["ome"]}
    else:
        kwargs["metadata"] = {"axes": md["axes"]} if len(md["shape"]) > 2 else None
        kwargs["description"] = description
    shape = md["shape"]
    planes = (cast_frame(np.asarray(f), out_dtype) for f in frames)
    with atomic_output(dest, overwrite=overwrite, inputs=(like.path,)) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=_needs_bigtiff(shape, out_dtype), ome=kwargs.pop("ome", None),
                                 imagej=kwargs.pop("imagej", False)) as tw:
            tw.write(planes, shape=shape, dtype=out_dtype, photometric="minisblack", **kwargs)
    return Path(dest)


def _needs_bigtiff(shape, dtype) -> bool:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > 2**32 - 2**25
