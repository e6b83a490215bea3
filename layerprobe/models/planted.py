"""Checkpoints with a planted structure: a ``layerprobe_organism.json`` beside the weights names
decoder layers (``planted``) and the image cells each may read (``regions``), and loading such a
checkpoint makes that structure a permanent attention-mask edit. The structure is part of the
model, not of an experiment: the weights were trained under it and mean nothing without it, so it
is installed by ``load_model`` and never left to the caller.

    spec = {"planted": [2, 4, 8, 11, 12, 13, 29], "regions": [[0, 1, 2], [3, 4, 5], ...]}
    install_planted(loaded, spec)           # install_from_checkpoint(loaded, path) reads the file

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

import json
from pathlib import Path

import torch

from layerprobe.core.dispatch import controller
from layerprobe.core.layers import layer_list
from layerprobe.core.layout import TokenLayout
from layerprobe.errors import ModelError
from layerprobe.models.fingerprint import verify

# The marker file of a planted checkpoint; its name is on disk in every shipped or retrained one.
ORGANISM_FILE = "layerprobe_organism.json"


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
    """Make the planted structure part of ``loaded`` for good. It goes through the attention
    dispatcher as a permanent edit, so every knockout or observer composes with it (their blocked
    pairs are OR-ed with the planted ones) instead of replacing it."""
    layer_list(f"{ORGANISM_FILE}: planted", spec["planted"], loaded.num_layers, error=ModelError)
    edit = PlantedEdit(spec["planted"], spec["regions"], spec.get("num_cells"))
    controller(loaded).add_permanent(edit)
    loaded.extra["organism"] = spec
    return edit


def read_metadata(path: str | Path) -> dict:
    """A JSON metadata file shipped beside weights, or a one-line ModelError naming what is wrong."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except OSError as err:
        raise ModelError(f"{path}: cannot read: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ModelError(f"{path}: not valid JSON{where}; the file is damaged: restore it or retrain "
                         "(docs/organism.md)") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_spec(path: str | Path) -> dict | None:
    """The planted spec of the checkpoint directory ``path``; None for an ordinary checkpoint."""
    spec_file = Path(path) / ORGANISM_FILE
    if not spec_file.is_file():
        return None
    spec = read_metadata(spec_file)
    missing = [k for k in ("planted", "regions") if k not in spec]
    if missing:
        raise ModelError(f"{spec_file}: missing key {missing[0]!r}")
    return spec


def install_from_checkpoint(loaded, path: str | Path) -> dict | None:
    """Install the planted structure of the checkpoint at ``path`` (if it has one) and check the
    fingerprint recorded with it, so damaged weights or a release that runs them differently stop
    the load instead of producing a sweep of chance-level answers."""
    spec = read_spec(path)
    if spec is None:
        return None
    install_planted(loaded, spec)
    if "fingerprint" in spec:
        verify(loaded, spec["fingerprint"], where=str(path))
    return spec
