"""A knockout as an inference method: greedy answers with ``edges`` blocked at ``layers``, so one
condition of a sweep can be scored wherever methods are (``layerprobe-eval``, the lmms-eval plugin).

    method = make_method("knockout", layers=[8, 9], edges="image->text")
    method.check(loaded)                    # the layers exist in this model
    records = method.answer_batch(loaded, samples, images, texts, max_new_tokens=16)

Records: ``prediction, prefill_s, total_s, n_tokens`` plus ``knockout_layers`` and ``edges``.
``edges`` is any registered edge set (``layerprobe.core.edges``); the batch is encoded as the edge
set needs (``image->question``: each sample's ``question``, to find its tokens).
"""

from __future__ import annotations

from layerprobe.core.edges import edge_set
from layerprobe.core.generation import generate_answers
from layerprobe.core.knockout import knockout
from layerprobe.core.layers import layer_list
from layerprobe.errors import ConfigError
from layerprobe.methods.base import Method, answer_records


class Knockout(Method):
    name = "knockout"

    def __init__(self, layers=None, edges: str = "image->text"):
        if layers is None or layers == []:
            raise ConfigError("method knockout: give layers (0-based decoder layers, e.g. layers=[8,9])")
        self.layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
        self.edges = edge_set(edges)

    def check(self, loaded) -> None:
        self.layers = layer_list("method.layers", self.layers, loaded.num_layers)

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        inputs = self.edges.encode(loaded, samples, images, texts)
        with knockout(loaded, self.layers, self.edges):
            answers = generate_answers(loaded, inputs, max_new_tokens)
        return [{**r, "knockout_layers": list(self.layers), "edges": self.edges.name} for r in answer_records(answers)]
