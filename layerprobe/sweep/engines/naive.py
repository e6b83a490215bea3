"""The reference engine: one full masked generation per condition and batch."""

from __future__ import annotations

from layerprobe.sweep.conditions import Condition
from layerprobe.core.knockout import knockout
from layerprobe.core.generation import Answer, generate_answers


class NaiveEngine:
    name = "naive"

    def __init__(self, edges: str = "image->text", **_):
        self.edges = edges

    def run_batch(self, loaded, inputs: dict, conditions: list[Condition], max_new_tokens: int
                  ) -> dict[tuple, list[Answer]]:
        out = {}
        for cond in conditions:
            with knockout(loaded, cond.knocked_out, self.edges):
                out[cond.key] = generate_answers(loaded, inputs, max_new_tokens)
        return out
