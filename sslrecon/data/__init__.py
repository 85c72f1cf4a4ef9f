"""Patch sampling from memory-mapped files, normalisation and the held-out split."""
from .normalize import Normalization, strided_sample
from .patches import PatchSampler, Region, split_regions

__all__ = ["Normalization", "PatchSampler", "Region", "split_regions", "strided_sample"]
