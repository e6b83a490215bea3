"""The reference engine: one full masked generation per condition and batch.

With ``scores`` (the default) every answer also carries the first step's answer probabilities
(``layerprobe.core.first_step``) from the logits generate() computes anyway; the baseline runs
first, since every condition is scored on the baseline's first token (it is generated for that
even when the batch needs no baseline row)."""

from __future__ import annotations

from layerprobe.core.edges import EdgeSet, edge_set
from layerprobe.core.first_step import choose_reference, first_step_fields
from layerprobe.core.generation import Answer, generate_answers, generate_with_first_logits
from layerprobe.core.knockout import knockout
from layerprobe.sweep.conditions import BASELINE, Condition


class NaiveEngine:
    name = "naive"

    def __init__(self, edges: str | EdgeSet = "image->text", **_):
        self.edges = edge_set(edges)

    def run_batch(self, loaded, inputs: dict, conditions: list[Condition], max_new_tokens: int,
                  references=None, scores: bool = True) -> dict[tuple, list[Answer]]:
        """Answers per condition key; ``references``: per sample, the reference's candidate
        first-token ids (``first_step.reference_candidates``); ``scores=False`` skips the
        probabilities (latency measurements)."""
        if not scores:
            out = {}
            for cond in conditions:
                with knockout(loaded, cond.knocked_out, cond.edges or self.edges):
                    out[cond.key] = generate_answers(loaded, inputs, max_new_tokens)
            return out
        out, base_first, ref_ids = {}, None, None
        for cond in [BASELINE] + [c for c in conditions if c.key != BASELINE.key]:
            with knockout(loaded, cond.knocked_out, cond.edges or self.edges):
                answers, logits, first = generate_with_first_logits(loaded, inputs, max_new_tokens)
            if base_first is None:
                base_first, ref_ids = first, choose_reference(logits, references)
            for answer, fields in zip(answers, first_step_fields(logits, base_first, ref_ids)):
                answer.first_step = fields
            out[cond.key] = answers
        return {c.key: out[c.key] for c in conditions}
