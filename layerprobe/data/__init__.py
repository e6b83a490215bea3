"""Benchmark loaders and the synthetic task, all yielding :class:`Sample`."""

from layerprobe.data.sample import Sample
from layerprobe.data.registry import BenchmarkData, load_benchmark

__all__ = ["Sample", "BenchmarkData", "load_benchmark"]
