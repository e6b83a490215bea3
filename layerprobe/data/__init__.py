"""Benchmark loaders and the synthetic task, all yielding :class:`Sample`."""

from layerprobe.data.sample import Sample

__all__ = ["Sample"]
