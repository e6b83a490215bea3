"""The one resumable batch loop behind ``layerprobe-sweep`` and ``layerprobe-eval``: batches of
samples, their images decoded (a bad one skipped or fatal), every condition still missing from
the results file answered, each answer scored with the benchmark's metric and appended at once.

    run_batches(data, run_dir / "results.jsonl", header, conditions, answer, batch_size=16)

``conditions`` are objects with ``name`` and ``layer`` (a sweep's baseline and knockouts, an eval's
single method). ``answer(samples, images, texts, todo)`` returns, per condition key
``(name, layer)`` in ``todo``, one record per sample (``prediction`` plus timings and the
condition's own fields). ``prepare`` runs once, untimed, on the first batch before its answers
(warm-up, a memory pass). Batches are the same on every run: a rerun skips each batch whose rows
are all on disk and recomputes the conditions of a partly written batch, whose rows already on disk
are not written twice, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from layerprobe.data.batching import chunks, load_images
from layerprobe.data.metrics import score
from layerprobe.io.results import ResultsWriter

log = logging.getLogger(__name__)


def run_batches(data, path, header: dict | None, conditions: list, answer: Callable,
                batch_size: int = 8, on_error: str = "raise", progress: bool = True, desc: str = "",
                fields: dict | None = None, prepare: Callable | None = None) -> Path:
    """Answer every (sample, condition) of ``data`` not yet in ``path``; ``fields`` are written
    into every row (the sweep's edge set, for example)."""
    bench, fields = data.name, fields or {}

    def row(sample_id, cond, **values) -> dict:
        return {"benchmark": bench, "sample_id": str(sample_id), "condition": cond.name, "layer": cond.layer,
                **fields, **values}

    path = Path(path)
    with ResultsWriter(path, header) as writer:
        done = writer.done_keys()
        if done:   # a resumed run says how much it keeps: a finished one computes nothing again
            ids = [str(s.sample_id) for s in data.samples] + [str(sid) for sid, _ in data.skipped]
            wanted = {(bench, sid, c.name, c.layer) for sid in ids for c in conditions}
            log.info("%s: resuming, %d of %d answers already on disk", path, len(done & wanted), len(wanted))
        writer.append_many(row(sid, c, prediction=None, score=None, skipped=reason)
                           for sid, reason in data.skipped for c in conditions)
        bar = tqdm(total=len(data.samples) * len(conditions), desc=desc or bench, unit="answer",
                   disable=not progress)
        first = True
        for batch in chunks(data.samples, batch_size):
            todo = [c for c in conditions if any((bench, str(s.sample_id), c.name, c.layer) not in done for s in batch)]
            if todo:
                kept, images, failed = load_images(batch, on_error)
                writer.append_many(row(s.sample_id, c, prediction=None, score=None, skipped=reason)
                                   for s, reason in failed for c in todo)
                if kept:
                    texts = [data.prompt(s) for s in kept]
                    if first and prepare is not None:
                        prepare(kept, images, texts, todo)
                    first = False
                    records = answer(kept, images, texts, todo)
                    writer.append_many(
                        row(s.sample_id, c, **rec, score=score(data.metric, rec["prediction"], s.answers),
                            skipped=None, batch_size=len(kept))
                        for c in todo for s, rec in zip(kept, records[(c.name, c.layer)]))
            bar.update(len(batch) * len(conditions))
        bar.close()
    return path
