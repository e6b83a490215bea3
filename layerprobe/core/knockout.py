"""Layer-wise knockout: at the chosen decoder layers, the chosen text queries may not attend to
any visual-token key, in prefill and in every decode step.

    with knockout(loaded, layers=[8], edges="image->text"):
        out = loaded.model.generate(**inputs, max_new_tokens=8)

Edge sets: ``image->text`` (every text query after the image, generated tokens included),
``image->last`` (the last prompt token and generated tokens), ``image->question`` (the question
tokens only). A window of layers, as in the cross-modal information-flow study, is just a list.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from layerprobe.errors import ConfigError
from layerprobe.core.dispatch import controller
from layerprobe.core.layout import EDGE_SETS, TokenLayout


def check_layers(layers: Iterable[int], num_layers: int, field: str = "layers") -> list[int]:
    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise ConfigError(
                f"{field}[{i}]={layer!r}: out of range for a {num_layers}-layer decoder (0-based: 0..{num_layers - 1})"
            )
        out.append(int(layer))
    return sorted(set(out))


class KnockoutEdit:
    def __init__(self, layers: Iterable[int], edges: str = "image->text"):
        if edges not in EDGE_SETS:
            raise ConfigError(f"edges={edges!r}: unknown edge set; choose one of {', '.join(EDGE_SETS)}")
        self._layers = set(layers)
        self.edges = edges

    def layers(self) -> set[int]:
        return self._layers

    def blocked(self, layer: int, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor:
        queries = layout.queries(self.edges)[:, q_pos]
        return queries[:, :, None] & layout.visual[:, None, :]


@contextlib.contextmanager
def knockout(loaded, layers: Iterable[int], edges: str = "image->text"):
    """Block ``edges`` at ``layers`` (0-based decoder indices) while the context is active."""
    layers = check_layers(list(layers), controller(loaded).num_layers)
    with controller(loaded).edit(KnockoutEdit(layers, edges)) as edit:
        yield edit
