"""A method's latency against vanilla's, measured side by side: after a warm-up of both, the two
alternate (method, vanilla, vanilla, method per repeat) on the same batches, so drift in machine
load falls on both, and each side's seconds are the median over its timed runs, so a burst of
another process's work moves few of them. The results rows time each eval job on its own, minutes
apart from vanilla's job; on a shared machine their ratio carries the load of the moment.

    timing = paired_latency(loaded, data, method, make_method("vanilla"), n_samples=8)
    timing["latency_ratio"]               # method seconds / vanilla seconds, per sample
    write_paired_latency(run_dir, timing)  # <run_dir>/timing.json, read back by read_paired_latency
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from layerprobe.data.batching import chunks, first_decodable
from layerprobe.io.results import write_atomic

TIMING_FILE = "timing.json"


def paired_latency(loaded, data, method, baseline, n_samples: int = 8, batch_size: int = 8,
                   repeats: int = 5) -> dict:
    """Seconds per sample of ``method`` and ``baseline`` (total and prefill) and their ratios, on
    the first ``n_samples`` decodable samples of ``data``; {} when none decodes."""
    samples, images = first_decodable(data.samples, n_samples)
    if not samples:
        return {}
    batches = [(s, images[i * batch_size:i * batch_size + len(s)], [data.prompt(x) for x in s])
               for i, s in enumerate(chunks(samples, batch_size))]
    method.keep_maps_for(0)  # time the method as it runs, not while it copies maps for figures
    seconds = {"method": [], "vanilla": []}  # (total, prefill) per sample, one pair per timed batch
    for who in (method, baseline):
        who.answer_batch(loaded, *batches[0], data.max_new_tokens)  # warm-up, untimed
    for _ in range(repeats):
        for key, who in (("method", method), ("vanilla", baseline), ("vanilla", baseline), ("method", method)):
            for batch in batches:
                record = who.answer_batch(loaded, *batch, data.max_new_tokens)[0]  # times are the batch's
                seconds[key].append((record["total_s"] / len(batch[0]), record["prefill_s"] / len(batch[0])))
    (m_total, m_prefill), (v_total, v_prefill) = (np.median(seconds[k], axis=0) for k in ("method", "vanilla"))
    return {"latency_s": float(m_total), "prefill_s": float(m_prefill), "vanilla_latency_s": float(v_total),
            "vanilla_prefill_s": float(v_prefill), "latency_ratio": float(m_total / v_total),
            "prefill_ratio": float(m_prefill / v_prefill), "n_samples": len(samples),
            "batch_size": min(batch_size, len(samples)), "repeats": repeats}


def write_paired_latency(run_dir, timing: dict) -> None:
    write_atomic(Path(run_dir) / TIMING_FILE, json.dumps(timing, indent=1) + "\n")


def read_paired_latency(run_dir) -> dict | None:
    path = Path(run_dir) / TIMING_FILE
    return json.loads(path.read_text()) if path.is_file() else None
