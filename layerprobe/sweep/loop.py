"""Layer-wise knockout sweep: the baseline plus a knockout at every decoder layer, per sample,
written as produced into ``results.jsonl``, then ``summary.csv`` and the masking curves.

    data = load_benchmark("organism")
    summary = run_sweep(loaded, data, "runs/organism", edges="image->text")
    summary = run_sweep(loaded, data, "runs/adaptive", adaptive=Design())   # stage-wise (sweep/adaptive.py)
    summary = run_sweep(loaded, data, "runs/control", control="text_keys")  # + a control at every layer

A rerun into the same directory resumes: rows already on disk are not recomputed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from layerprobe.analysis.sequential import Design
from layerprobe.core.controls import control_edges
from layerprobe.core.edges import EdgeSet, edge_set, encode_for
from layerprobe.core.first_step import reference_candidates
from layerprobe.core.generation import warm_up
from layerprobe.errors import ConfigError
from layerprobe.io.batch_loop import run_batches
from layerprobe.sweep.adaptive import run_stages
from layerprobe.sweep.conditions import edge_sets_of, sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.sweep.report import write_summary
from layerprobe.sweep.timing import measure_condition_latency, read_timing, write_timing

log = logging.getLogger(__name__)
ENGINES = {"fast": FastEngine, "naive": NaiveEngine}


def make_engine(name: str, edges: str | EdgeSet, **opts):
    """The sweep engine ``name``; the fast one runs a batch naively where it would not be exact."""
    if name not in ENGINES:
        raise ConfigError(f"engine={name!r}: choose one of {', '.join(ENGINES)}")
    return ENGINES[name](edges, **opts)


def sweep_batches(loaded, data, path, conditions, runner, edges: EdgeSet, header: dict | None, batch_size: int,
                  on_error: str, progress: bool, fields: dict | None = None, writer_opts: dict | None = None) -> None:
    """Answer every (sample, condition) of ``data`` not yet in ``path`` with ``runner`` (an
    engine); ``fields`` go into every row besides the edge set; ``writer_opts``: options of the
    results writer (``layerprobe.io.results.ResultsWriter``)."""
    edge_sets = edge_sets_of(conditions, edges)

    def answer(samples, images, texts, todo):
        references = reference_candidates(loaded.tokenizer, [s.answers for s in samples])
        inputs = encode_for(edge_sets, loaded, samples, images, texts)
        answers = runner.run_batch(loaded, inputs, todo, data.max_new_tokens, references)
        return {key: [a.record() for a in batch] for key, batch in answers.items()}

    def prepare(samples, images, texts, todo):
        warm_up(loaded, encode_for(edge_sets, loaded, samples, images, texts))

    run_batches(data, path, header, conditions, answer, batch_size=batch_size, on_error=on_error,
                progress=progress, desc=f"sweep {data.name}", fields={"edges": edges.name, **(fields or {})},
                prepare=prepare, writer_opts=writer_opts)


def run_sweep(loaded, data, run_dir, layers=None, edges: str | EdgeSet = "image->text", window: int = 1,
              batch_size: int = 8, engine: str = "fast", header: dict | None = None,
              on_error: str = "raise", progress: bool = True, title: str | None = None,
              engine_opts: dict | None = None, timing_samples: int = 8, adaptive: Design | None = None,
              shard_runs=None, wait_s: float = 0.0, control: str | None = None, control_seed: int = 0,
              writer_opts: dict | None = None) -> pd.DataFrame | None:
    """Sweep ``data`` on ``loaded``; see the module docstring. With the fast engine, the latency
    curve comes from standalone masked generations on ``timing_samples`` samples (timing.csv).
    ``adaptive``: a Design, for the adaptive sweep (``layerprobe.sweep.adaptive``; ``shard_runs``
    and ``wait_s`` say where the other shards are and how long a look waits for them); it returns
    None while a look waits for other shards. ``control``: a specificity control
    (``layerprobe.core.controls``) run beside every knockout, rows ``condition="control"``.
    ``writer_opts``: options of the results writer (``layerprobe.io.results.ResultsWriter``). A
    shard without a sample to answer is a valid, empty run: its summary has no rows."""
    run_dir = Path(run_dir)
    edges = edge_set(edges)
    if isinstance(timing_samples, bool) or not isinstance(timing_samples, int) or timing_samples < 0:
        raise ConfigError(f"timing_samples={timing_samples!r}: must be an integer >= 0")
    controls = None if control is None else control_edges(edges, control, control_seed)
    conditions = sweep_conditions(loaded.num_layers, layers, window, controls)
    runner = make_engine(engine, edges, **(engine_opts or {}))

    def answer_stage(stage_data, stage_conditions, fields):
        sweep_batches(loaded, stage_data, run_dir / "results.jsonl", stage_conditions, runner, edges, header,
                      batch_size, on_error, progress, fields, writer_opts)

    if adaptive is None:
        answer_stage(data, conditions, None)
    elif not run_stages(data, run_dir, conditions, answer_stage, adaptive, shard_runs, wait_s)["complete"]:
        return None
    if not data.samples:
        log.warning("%s: no sample to answer in this run (%d skipped on load; a shard of fewer samples than "
                    "shards is empty): its results hold no answers", run_dir, len(data.skipped))
    elif runner.name == "fast" and timing_samples > 0 and read_timing(run_dir) is None:
        log.info("timing each condition standalone on %d samples", timing_samples)
        write_timing(run_dir, measure_condition_latency(
            loaded, data, conditions, edges, n_samples=timing_samples, batch_size=batch_size))
    return write_summary(run_dir, title=title)
