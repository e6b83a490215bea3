"""The reference engine: one full masked generation per condition and batch."""

from __future__ import annotations

from layerprobe.core.edges import EdgeSet, edge_set
from layerprobe.core.generation import Answer, generate_answers
from layerprobe.core.knockout import knockout
from layerprobe.sweep.conditions import Condition


class NaiveEngine:
    name = "naive"

    def __init__(self, edges: str | EdgeSet = "image->text", **_):
        self.edges = edge_set(edges)

    def run_batch(self, loaded, inputs: dict, conditions: list[Condition], max_new_tokens: int
                  ) -> dict[tuple, list[Answer]]:
        out = {}
        for cond in conditions:
            with knockout(loaded, cond.knocked_out, self.edges):
                out[cond.key] = generate_answers(loaded, inputs, max_new_tokens)
        return out
