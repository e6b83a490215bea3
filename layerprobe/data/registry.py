"""The one place benchmarks are registered, and ``load_benchmark``: subsample, shard, prompt.

    data = load_benchmark("textvqa", root="/data/textvqa", limit=500, seed=0, num_shards=4, shard=1,
                          prompt={"ocr_tokens": True})
    data = load_benchmark("vqav2")   # no root: the split of its Hub mirror, fetched into the cache (data.hub)
    data.prompt(data.samples[0])     # user text; the model adapter adds the chat template and image
    data.metric, data.max_new_tokens # "vqa_accuracy", 16: the benchmark's own unless overridden
    load_benchmark("docvqa", root="/data/docvqa", metric="exact_match", max_new_tokens=64)
    data.skipped                     # [(sample id or record locator, one-line reason), ...]

A benchmark is a module (or object) with NAME, METRIC, MAX_NEW_TOKENS, DEFAULT_SPLIT,
``load(root, split, layout, on_error) -> (samples, skipped)`` and ``build_prompt(sample, **options)``.

Subsampling: ``limit`` draws a seeded random subset (``random.Random(seed)``), kept in file order.
Sharding happens after subsampling, by position: shard k of n takes samples k, k+n, k+2n, ...,
so the shards partition the subset, are balanced to within one sample, and do not depend on ids.
Skipped records are sharded the same way, so each is reported by exactly one shard.

``metric`` (a name in ``layerprobe.data.metrics.METRICS``) and ``max_new_tokens`` (the greedy
decoding budget) default to the benchmark's METRIC and MAX_NEW_TOKENS; a value given here
replaces them for the run and is checked here, so a typo fails before any model is loaded.
"""

from __future__ import annotations

import importlib
import inspect
import random
from dataclasses import dataclass, field
from typing import Any

from layerprobe.data import docvqa, gqa, okvqa, scenes, textvqa, vizwiz, vqav2
from layerprobe.data._io import LAYOUTS, ON_ERROR, check_choice
from layerprobe.data._parquet import materialize
from layerprobe.data.hub import fetch_benchmark, has_mirror
from layerprobe.data.metrics import METRICS
from layerprobe.data.sample import Sample
from layerprobe.errors import ConfigError, DataError

# what a benchmark module (or object) provides; docs/architecture.md states it
CONTRACT = ("NAME", "METRIC", "MAX_NEW_TOKENS", "DEFAULT_SPLIT", "load", "build_prompt")
BENCHMARKS: dict[str, Any] = {m.NAME: m for m in (vqav2, gqa, textvqa, okvqa, vizwiz, docvqa, scenes)}
# Registers itself on import ("organism"); optional, so the six benchmarks never need it.
_OPTIONAL = ("layerprobe.data.synthetic",)


@dataclass
class BenchmarkData:
    name: str
    metric: str
    max_new_tokens: int
    samples: list[Sample]
    skipped: list[tuple[str, str]]
    prompt_options: dict[str, Any] = field(default_factory=dict)
    benchmark: Any = field(default=None, repr=False, compare=False)
    # where each sample sits in the unsharded subset (sample id -> 0-based position), its size, and
    # this shard: the adaptive sweep's stages are defined on the subset, whatever the sharding
    positions: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    total: int | None = None
    shard: int = 0
    num_shards: int = 1

    def prompt(self, sample: Sample) -> str:
        """The user text for ``sample`` (no chat template, no image token)."""
        bench = self.benchmark or get_benchmark(self.name)
        return bench.build_prompt(sample, **self.prompt_options)


def register_benchmark(obj: Any) -> None:
    """Add (or replace) a benchmark under ``obj.NAME``."""
    missing = [a for a in CONTRACT if not hasattr(obj, a)]
    if missing:
        raise ConfigError(f"benchmark {getattr(obj, 'NAME', obj)!r} lacks {', '.join(missing)}")
    BENCHMARKS[obj.NAME] = obj


def _import_optional() -> None:
    for module in _OPTIONAL:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a missing dependency inside it is a real error
                raise


def get_benchmark(name: str) -> Any:
    if name not in BENCHMARKS:
        _import_optional()
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"benchmark {name!r} is unknown; known: {', '.join(sorted(BENCHMARKS))}") from None


def _check_prompt_options(bench: Any, options: dict[str, Any]) -> None:
    params = list(inspect.signature(bench.build_prompt).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params]
    for key in options:
        if key not in known:
            raise ConfigError(f"data.prompt.{key}: not an option of {bench.NAME}; "
                              f"known: {', '.join(known) or 'none'}")


def _check_selection(limit, num_shards, shard) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"data.limit={limit!r}: must be a positive integer or null (all samples)")
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ConfigError(f"data.num_shards={num_shards!r}: must be a positive integer")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ConfigError(f"data.shard={shard!r}: must be in 0..{num_shards - 1} (num_shards={num_shards})")


def _check_decoding(metric, max_new_tokens) -> None:
    if metric is not None and metric not in METRICS:
        raise ConfigError(f"data.metric={metric!r}: unknown metric; known: {', '.join(METRICS)} "
                          "(or null: the benchmark's own)")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                       or max_new_tokens < 1):
        raise ConfigError(f"data.max_new_tokens={max_new_tokens!r}: must be a positive integer "
                          "or null (the benchmark's own)")


def _check_unique(name: str, samples: list) -> None:
    """Results are keyed by sample id: a loader (a registered plugin's too) must not repeat one."""
    seen: set[str] = set()
    for s in samples:
        if str(s.sample_id) in seen:
            raise DataError(f"benchmark {name}: sample id {s.sample_id!r} occurs twice in what its loader returned; "
                            "results are keyed by the id, so each sample needs its own")
        seen.add(str(s.sample_id))


def subsample(samples: list, limit: int | None, seed: int) -> list:
    """A seeded random subset of size ``limit``, in the original (file) order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    keep = sorted(random.Random(seed).sample(range(len(samples)), limit))
    return [samples[i] for i in keep]


def load_benchmark(name: str, root=None, split: str | None = None, layout: str = "auto",
                   limit: int | None = None, seed: int = 0, num_shards: int = 1, shard: int = 0,
                   on_error: str = "raise", prompt: dict | None = None, metric: str | None = None,
                   max_new_tokens: int | None = None, repo: str | None = None, download: bool = True) -> BenchmarkData:
    bench = get_benchmark(name)
    check_choice("data.layout", layout, LAYOUTS)
    check_choice("data.on_error", on_error, ON_ERROR)
    _check_selection(limit, num_shards, shard)
    _check_decoding(metric, max_new_tokens)
    options = dict(prompt or {})
    _check_prompt_options(bench, options)
    if not isinstance(download, bool):
        raise ConfigError(f"data.download={download!r}: must be true or false")
    split = split or bench.DEFAULT_SPLIT
    if root is None and has_mirror(bench):  # data.root wins; without it, the mirror's split from the hub cache
        root = fetch_benchmark(bench, split, repo, download)
    samples, skipped = bench.load(root, split, layout, on_error)
    _check_unique(bench.NAME, samples)
    subset = subsample(samples, limit, seed)
    samples = subset[shard::num_shards]
    positions = {str(s.sample_id): shard + i * num_shards for i, s in enumerate(samples)}
    # Only now are parquet images read (as raw bytes), for the samples this run will use.
    samples, unreadable = materialize(samples, on_error)
    return BenchmarkData(bench.NAME, metric or bench.METRIC, max_new_tokens or bench.MAX_NEW_TOKENS, samples,
                         list(skipped)[shard::num_shards] + unreadable, options, bench, positions, len(subset),
                         shard, num_shards)
