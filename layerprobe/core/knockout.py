"""Layer-wise knockout: at the chosen decoder layers, an edge set's queries may not attend to its
keys (for the built-in ones: the chosen text queries to any visual-token key), in prefill and in
every decode step.

    with knockout(loaded, layers=[8], edges="image->text"):
        out = loaded.model.generate(**inputs, max_new_tokens=8)

Edge sets are registered definitions (``layerprobe.core.edges``): ``image->text`` (every text
query after the image, generated tokens included), ``image->last`` (the last prompt token and
generated tokens), ``image->question`` (the question's own tokens: encode with
``loaded.encode(images, prompts, questions=...)`` so the layout knows them), ``image->prompt``
(all prompt text after the image except the last prompt token), and any registered since. A
window of layers, as in the cross-modal information-flow study, is just a list.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from layerprobe.core.dispatch import controller
from layerprobe.core.edges import EdgeSet, edge_set
from layerprobe.core.layers import layer_list
from layerprobe.core.layout import TokenLayout


class KnockoutEdit:
    def __init__(self, layers: Iterable[int], edges: str | EdgeSet = "image->text"):
        self._layers = set(layers)
        self.edges = edge_set(edges)

    def layers(self) -> set[int]:
        return self._layers

    def blocked(self, layer: int, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor | None:
        return self.edges.blocked(layout, q_pos)

    def bias(self, layer: int, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor | None:
        return self.edges.bias(layout, q_pos)


@contextlib.contextmanager
def knockout(loaded, layers: Iterable[int], edges: str | EdgeSet = "image->text"):
    """Block ``edges`` at ``layers`` (0-based decoder indices) while the context is active."""
    layers = layer_list("layers", layers, controller(loaded).num_layers)
    with controller(loaded).edit(KnockoutEdit(layers, edges)) as edit:
        yield edit
