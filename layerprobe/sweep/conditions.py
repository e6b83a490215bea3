"""The conditions of a sweep: the baseline, one knockout per centre layer and, with a control
edge set (``layerprobe.core.controls``), one control per centre layer, on the same layers.

    conds = sweep_conditions(num_layers=32, layers=None, window=1)   # baseline + 32 knockouts
    conds[1].knocked_out                                            # (0,)
    conds = sweep_conditions(32, control=control_edges("image->text", "text_keys"))   # + 32 controls
    conds[33].key, conds[33].edges.name    # ("control", 0), "image->text|control=text_keys"

A condition's ``edges`` is the edge set it applies; None (knockouts) means the sweep's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerprobe.core.edges import EdgeSet
from layerprobe.core.layers import layer_list
from layerprobe.errors import ConfigError


@dataclass(frozen=True)
class Condition:
    name: str  # "baseline", "knockout" or "control"
    layer: int | None  # centre layer (0-based); None for the baseline
    knocked_out: tuple[int, ...] = ()  # the layers its edge set edits
    edges: EdgeSet | None = None  # None: the sweep's edge set

    @property
    def key(self) -> tuple:
        return (self.name, self.layer)


BASELINE = Condition("baseline", None, ())


def sweep_conditions(num_layers: int, layers=None, window: int = 1, control: EdgeSet | None = None
                     ) -> list[Condition]:
    if window < 1 or window % 2 == 0:
        raise ConfigError(f"mask.window={window}: must be an odd number >= 1 (layers centred on l)")
    chosen = list(range(num_layers)) if layers is None else layer_list("layers", layers, num_layers)
    if layers is not None and not chosen:
        raise ConfigError("layers=[]: the sweep needs at least one layer (or layers=null for all)")
    half = window // 2
    spans = {layer: tuple(range(max(0, layer - half), min(num_layers, layer + half + 1))) for layer in chosen}
    conds = [BASELINE, *(Condition("knockout", layer, span) for layer, span in spans.items())]
    if control is not None:
        conds += [Condition("control", layer, span, control) for layer, span in spans.items()]
    return conds


def edge_sets_of(conditions, edges: EdgeSet) -> list[EdgeSet]:
    """The edge sets ``conditions`` apply: the sweep's ``edges``, then any a condition brings."""
    return list(dict.fromkeys([edges, *(c.edges for c in conditions if c.edges is not None)]))
