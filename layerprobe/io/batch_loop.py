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

A record flagged ``nonfinite_logits`` (the model's logits held NaN or inf:
``layerprobe.core.finite_logits``) stops the run in one line naming the condition, after the
batch's other rows are written, or with ``on_error="skip"`` becomes a skipped row.
``writer_opts`` are the ``ResultsWriter``'s options (``lock``, ``resume_check``, ``ways_out``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from layerprobe.data.batching import chunks, load_images
from layerprobe.data.metrics import score
from layerprobe.errors import ModelError
from layerprobe.io.results import ResultsWriter

log = logging.getLogger(__name__)


def run_batches(data, path, header: dict | None, conditions: list, answer: Callable,
                batch_size: int = 8, on_error: str = "raise", progress: bool = True, desc: str = "",
                fields: dict | None = None, prepare: Callable | None = None, writer_opts: dict | None = None) -> Path:
    """Answer every (sample, condition) of ``data`` not yet in ``path``; ``fields`` are written
    into every row (the sweep's edge set, for example)."""
    bench, fields = data.name, fields or {}

    def row(sample_id, cond, **values) -> dict:
        return {"benchmark": bench, "sample_id": str(sample_id), "condition": cond.name, "layer": cond.layer,
                **fields, **values}

    def scored(s, c, rec, size) -> dict:
        if rec.pop("nonfinite_logits", False):
            return row(s.sample_id, c, prediction=None, score=None, skipped=NONFINITE)
        return row(s.sample_id, c, **rec, score=score(data.metric, rec["prediction"], s.answers), skipped=None,
                   batch_size=size)

    path = Path(path)
    with ResultsWriter(path, header, **(writer_opts or {})) as writer:
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
                    _stop_on_nonfinite(writer, [scored(s, c, rec, len(kept)) for c in todo
                                                for s, rec in zip(kept, records[(c.name, c.layer)])], on_error)
            bar.update(len(batch) * len(conditions))
        bar.close()
    return path


NONFINITE = "the model's logits held NaN or inf (an overflow: float16?)"


def _stop_on_nonfinite(writer, rows: list[dict], on_error: str) -> None:
    """Write a batch's rows; rows whose logits were not finite stop the run (after the others are
    written) unless problems are skipped."""
    bad = [r for r in rows if r["skipped"] == NONFINITE]
    if bad and on_error != "skip":
        writer.append_many(r for r in rows if r["skipped"] != NONFINITE)
        first = bad[0]
        where = first["condition"] if first["layer"] is None else f"{first['condition']} at layer {first['layer']}"
        raise ModelError(f"{writer.path}: {where}, sample {first['sample_id']} (and {len(bad) - 1} more rows of this "
                         f"batch): {NONFINITE}; run in bfloat16 or float32 (model.dtype=...), or data.on_error=skip to "
                         "record such rows as skipped")
    writer.append_many(rows)
