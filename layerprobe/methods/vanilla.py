"""Plain greedy generation: the reference every other method is compared with."""

from __future__ import annotations

from layerprobe.core.generation import generate_answers
from layerprobe.methods.base import Method, answer_records


class Vanilla(Method):
    name = "vanilla"

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        return answer_records(generate_answers(loaded, loaded.encode(images, texts), max_new_tokens))
