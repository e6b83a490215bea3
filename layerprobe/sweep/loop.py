"""Layer-wise knockout sweep: the baseline plus a knockout at every decoder layer, per sample,
written as produced into ``results.jsonl``, then ``summary.csv`` and the masking curves.

    data = load_benchmark("organism")
    summary = run_sweep(loaded, data, "runs/organism", edges="image->text")

A rerun into the same directory resumes: rows already on disk are not recomputed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from layerprobe.sweep.conditions import Condition, sweep_conditions
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.data.batching import chunks, load_images
from layerprobe.errors import ConfigError
from layerprobe.data.metrics import score as score_answer
from layerprobe.plots.masking import plot_masking_curves
from layerprobe.plots.save import save_figure
from layerprobe.io.results import ResultsWriter, read_results, write_atomic
from layerprobe.core.generation import warm_up
from layerprobe.sweep.summary import summarise

log = logging.getLogger(__name__)


def make_engine(name: str, edges: str, **opts):
    if name == "naive":
        return NaiveEngine(edges)
    if name == "fast":
        from layerprobe.sweep.engines.fast import FastEngine, fast_engine_reason

        reason = fast_engine_reason(edges)
        if reason is None:
            return FastEngine(edges, **opts)
        log.warning("engine=fast falls back to naive: %s", reason)
        return NaiveEngine(edges)
    raise ConfigError(f"engine={name!r}: choose 'fast' or 'naive'")


def _row(bench, sample, cond: Condition, edges, **fields):
    return {"benchmark": bench, "sample_id": str(sample.sample_id), "condition": cond.name,
            "layer": cond.layer, "edges": edges, **fields}


def run_sweep(loaded, data, run_dir, layers=None, edges: str = "image->text", window: int = 1,
              batch_size: int = 8, engine: str = "fast", header: dict | None = None,
              on_error: str = "raise", progress: bool = True, title: str | None = None,
              engine_opts: dict | None = None, timing_samples: int = 8) -> pd.DataFrame:
    """Sweep ``data`` on ``loaded``; see the module docstring. With the fast engine, the latency
    curve comes from standalone masked generations on ``timing_samples`` samples (timing.csv)."""
    run_dir = Path(run_dir)
    conditions = sweep_conditions(loaded.num_layers, layers, window)
    runner = make_engine(engine, edges, **(engine_opts or {}))
    bench = data.name
    writer = ResultsWriter(run_dir / "results.jsonl", header)
    with writer:
        done = writer.done_keys()
        writer.append_many(
            _row(bench, _Missing(sid), c, edges, prediction=None, score=None, skipped=reason)
            for sid, reason in data.skipped for c in conditions
        )
        total = len(data.samples) * len(conditions)
        bar = tqdm(total=total, desc=f"sweep {bench}", unit="gen", disable=not progress)
        warmed = False
        for batch in chunks(data.samples, batch_size):
            todo = [c for c in conditions if any((bench, str(s.sample_id), *c.key) not in done for s in batch)]
            if not todo:
                bar.update(len(batch) * len(conditions))
                continue
            n_batch = len(batch)
            batch, images, failed = load_images(batch, on_error)
            writer.append_many(_row(bench, s, c, edges, prediction=None, score=None, skipped=reason)
                               for s, reason in failed for c in todo)
            if batch:
                inputs = loaded.encode(images, [data.prompt(s) for s in batch])
                if not warmed:
                    warm_up(loaded, inputs)
                    warmed = True
                answers = runner.run_batch(loaded, inputs, todo, data.max_new_tokens)
                writer.append_many(
                    _row(bench, s, c, edges, prediction=a.text,
                         score=score_answer(data.metric, a.text, s.answers), skipped=None,
                         prefill_s=a.prefill_s, total_s=a.total_s, n_tokens=a.n_tokens, batch_size=len(batch))
                    for c in todo for s, a in zip(batch, answers[c.key])
                )
            bar.update(n_batch * len(conditions))
        bar.close()
    if runner.name == "fast" and timing_samples > 0:
        from layerprobe.sweep.timing import measure_condition_latency, read_timing, write_timing

        if read_timing(run_dir) is None:
            log.info("timing each condition standalone on %d samples", timing_samples)
            write_timing(run_dir, measure_condition_latency(
                loaded, data, conditions, edges, n_samples=timing_samples, batch_size=batch_size))
    return write_summary(run_dir, title=title)


class _Missing:
    def __init__(self, sample_id):
        self.sample_id = sample_id




def write_summary(run_dir, title: str | None = None) -> pd.DataFrame:
    """summary.csv and the masking curves, from the results table (and timing.csv if present)."""
    from layerprobe.sweep.timing import apply_timing, read_timing

    run_dir = Path(run_dir)
    summary = summarise(read_results(run_dir / "results.jsonl"))
    timing = read_timing(run_dir)
    if timing is not None and len(timing):
        summary = apply_timing(summary, timing)
        t = timing.iloc[0]
        repeats = int(t["repeats"]) if "repeats" in timing else 1
        latency_note = (f"latency: standalone masked generation, {int(t['n_samples'])} samples in batches of "
                        f"{int(t['batch_size'])}, mean of {repeats} interleaved repeats, warm-up excluded")
    else:
        latency_note = "latency: per sweep batch, warm-up excluded"
    write_atomic(run_dir / "summary.csv", summary.to_csv(index=False))
    if (summary["condition"] != "baseline").any():
        fig = plot_masking_curves(summary, title=title, latency_note=latency_note)
        save_figure(fig, run_dir / "masking_curves")
    return summary
