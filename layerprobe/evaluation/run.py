"""Evaluate one inference method on one benchmark: one results row per sample.

    method = make_method("contrastive", profile="llava15_7b")
    run_method(loaded, data, method, "runs/eval/llava/textvqa/contrastive")

Rows: ``benchmark, sample_id, condition`` (= the method's label), ``layer`` (None), ``prediction,
score, skipped, prefill_s, total_s, n_tokens, batch_size, peak_mem_bytes`` plus the method's own
fields. Peak memory is measured on every batch on CUDA (allocator statistics, free) and, on CPU,
in one extra untimed pass over the first batch (``memory_pass``), since the CPU tracker slows
what it watches. A rerun into the same directory resumes.
"""

from __future__ import annotations

from pathlib import Path

from layerprobe.errors import ConfigError
from layerprobe.evaluation.peak_memory import peak_memory
from layerprobe.io.batch_loop import run_batches
from layerprobe.sweep.conditions import Condition


def run_method(loaded, data, method, run_dir, header: dict | None = None, batch_size: int = 8,
               on_error: str = "raise", memory_pass: bool = True, maps_samples: int = 0,
               progress: bool = True, label: str | None = None, writer_opts: dict | None = None) -> Path:
    """Answer every sample of ``data`` with ``method``; rows go to ``run_dir/results.jsonl`` with
    ``condition`` = ``label`` (the method's name unless a variant is being compared).
    ``writer_opts``: options of the results writer (``layerprobe.io.results.ResultsWriter``)."""
    if isinstance(maps_samples, bool) or not isinstance(maps_samples, int) or maps_samples < 0:
        raise ConfigError(f"maps_samples={maps_samples!r}: must be an integer >= 0")
    condition = Condition(label or method.name, None)
    on_cuda = loaded.device.type == "cuda"
    first_peak: list = []
    method.keep_maps_for(maps_samples)

    def prepare(samples, images, texts, todo):
        method.answer_batch(loaded, samples, images, texts, data.max_new_tokens)  # warm-up, untimed
        if memory_pass and not on_cuda:
            with peak_memory(loaded.device, loaded.model) as mem:
                method.answer_batch(loaded, samples, images, texts, data.max_new_tokens)
            first_peak.append(mem.peak_bytes)

    def answer(samples, images, texts, todo):
        if on_cuda:
            with peak_memory(loaded.device) as mem:
                records = method.answer_batch(loaded, samples, images, texts, data.max_new_tokens)
            peak = mem.peak_bytes
        else:
            records = method.answer_batch(loaded, samples, images, texts, data.max_new_tokens)
            peak = first_peak.pop() if first_peak else None
        return {condition.key: [{**r, "peak_mem_bytes": peak} for r in records]}

    return run_batches(data, Path(run_dir) / "results.jsonl", header, [condition], answer,
                       batch_size=batch_size, on_error=on_error, progress=progress,
                       desc=f"{condition.name} on {data.name}", prepare=prepare, writer_opts=writer_opts)
