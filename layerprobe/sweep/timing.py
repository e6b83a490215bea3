"""Honest per-condition latency for sweeps whose engine shares work between conditions: each
condition is re-run as a standalone masked generation on a small subsample, after a warm-up.

    timing = measure_condition_latency(loaded, data, conditions, "image->text", n_samples=8)
    # DataFrame: condition, layer, latency_s, prefill_s (seconds per sample), n_samples, batch_size
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from layerprobe.core.edges import edge_set, encode_for
from layerprobe.core.generation import warm_up
from layerprobe.data.batching import first_decodable
from layerprobe.io.results import write_atomic
from layerprobe.sweep.conditions import edge_sets_of
from layerprobe.sweep.engines.naive import NaiveEngine

TIMING_FILE = "timing.csv"


def measure_condition_latency(loaded, data, conditions, edges: str, n_samples: int = 8,
                              batch_size: int = 8, repeats: int = 3) -> pd.DataFrame:
    samples, images = first_decodable(data.samples, n_samples)
    if not samples:
        return pd.DataFrame()
    edges = edge_set(edges)
    edge_sets = edge_sets_of(conditions, edges)
    batches = [encode_for(edge_sets, loaded, samples[i:i + batch_size], images[i:i + batch_size],
                          [data.prompt(s) for s in samples[i:i + batch_size]])
               for i in range(0, len(samples), batch_size)]
    warm_up(loaded, batches[0])
    engine = NaiveEngine(edges)
    prefill = {c.key: 0.0 for c in conditions}
    total = dict(prefill)
    # conditions interleaved within each repeat, so drift in machine load spreads over all of them
    for _ in range(repeats):
        for cond in conditions:
            for inputs in batches:
                answer = engine.run_batch(loaded, inputs, [cond], data.max_new_tokens, scores=False)[cond.key][0]
                size = inputs["input_ids"].shape[0]
                prefill[cond.key] += answer.prefill_s / size
                total[cond.key] += answer.total_s / size
    runs = repeats * len(batches)
    rows = [{"condition": c.name, "layer": c.layer, "latency_s": total[c.key] / runs,
             "prefill_s": prefill[c.key] / runs, "n_samples": len(samples),
             "batch_size": min(batch_size, len(samples)), "repeats": repeats} for c in conditions]
    return pd.DataFrame(rows)


def write_timing(run_dir, timing: pd.DataFrame) -> None:
    if len(timing):   # no decodable sample: nothing measured, nothing written
        write_atomic(Path(run_dir) / TIMING_FILE, timing.to_csv(index=False))


def read_timing(run_dir) -> pd.DataFrame | None:
    """The run's standalone timings; None without them (a file without rows, as an empty shard
    once wrote, counts as none)."""
    path = Path(run_dir) / TIMING_FILE
    if not path.is_file():
        return None
    try:
        timing = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    if not len(timing) or "layer" not in timing:
        return None
    timing["layer"] = timing["layer"].astype("Int64")
    return timing


def apply_timing(summary: pd.DataFrame, timing: pd.DataFrame) -> pd.DataFrame:
    """Replace the engine's shared-work latencies by the standalone measurements."""
    merged = summary.drop(columns=["latency_s", "prefill_s"]).merge(
        timing[["condition", "layer", "latency_s", "prefill_s"]], on=["condition", "layer"], how="left")
    return merged[summary.columns]
