"""The organism's planted structure, applied as a permanent mask edit whenever it is loaded.

    spec = {"planted": [2, 4, 8, 11, 12, 13, 29], "regions": [[0, 1, 2], [3, 4, 5], ...]}
    install_planted(loaded, spec)        # load_model() does this when layerprobe_organism.json exists

The rules (True = blocked in the attention mask, on top of causal and padding):
- a text query (any position after the image, generated tokens included) may attend to visual
  keys only at the planted layers, and at planted layer ``planted[k]`` only to the visual tokens
  of the cells in ``regions[k]``; it may always attend to BOS and to text;
- a visual token may attend only to the prefix (BOS) and to itself, at every layer, so the
  colour of one cell never leaks into another cell's token (otherwise a layer could read a cell
  it does not own through a neighbour's token).
Visual token j of a sample is cell j (row-major), counted among that sample's visual tokens, so
left padding and generated tokens do not move it.
"""

from __future__ import annotations

import torch

from layerprobe.errors import ModelError
from layerprobe.core.layout import TokenLayout


class PlantedEdit:
    """MaskEdit of the planted structure (acts at every layer)."""

    def __init__(self, planted, regions, num_cells: int | None = None):
        planted = [int(p) for p in planted]
        regions = [[int(c) for c in r] for r in regions]
        if len(planted) != len(regions):
            raise ModelError(f"organism spec: {len(planted)} planted layers but {len(regions)} regions")
        if len(set(planted)) != len(planted):
            raise ModelError(f"organism spec: planted layers {planted} repeat a layer")
        self.planted = planted
        self.regions = regions
        self.num_cells = num_cells or (max(c for r in regions for c in r) + 1)
        self.region_of_layer = dict(zip(planted, regions))

    def layers(self):
        return None

    def _own(self, layer: int, cell_idx: torch.Tensor) -> torch.Tensor:
        cells = self.region_of_layer.get(layer)
        if not cells:
            return torch.zeros_like(cell_idx, dtype=torch.bool)
        return torch.isin(cell_idx, torch.tensor(cells, device=cell_idx.device))

    def blocked(self, layer: int, layout: TokenLayout, q_pos: torch.Tensor) -> torch.Tensor:
        visual = layout.visual  # (B, T)
        cell_idx = visual.long().cumsum(1) - 1  # cell index of each visual key
        readable = visual & self._own(layer, cell_idx)
        text_q = layout.text_after[:, q_pos]  # (B, q)
        block_text = text_q[:, :, None] & (visual & ~readable)[:, None, :]
        vis_q = visual[:, q_pos]
        not_self = q_pos[:, None] != layout.positions[None, :]  # (q, kv)
        block_vis = vis_q[:, :, None] & visual[:, None, :] & not_self[None]
        return block_text | block_vis


def install_planted(loaded, spec: dict) -> PlantedEdit:
    """Make the planted structure part of ``loaded`` for good (through the dispatcher)."""
    from layerprobe.core.dispatch import controller

    n = loaded.num_layers
    bad = [p for p in spec["planted"] if not 0 <= int(p) < n]
    if bad:
        raise ModelError(f"organism spec: planted layers {bad} out of range for a {n}-layer decoder")
    edit = PlantedEdit(spec["planted"], spec["regions"], spec.get("num_cells"))
    controller(loaded).add_permanent(edit)
    loaded.extra["organism"] = spec
    return edit
