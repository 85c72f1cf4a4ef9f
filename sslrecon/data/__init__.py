"""Patch sampling from memory-mapped files, normalisation and the held-out split."""
from .hot import HotRepaired
from .normalize import Normalization, strided_sample
from .patches import PatchSampler, Region, split_regions

__all__ = ["HotRepaired", "Normalization", "PatchSampler", "Region", "split_regions", "strided_sample"]
