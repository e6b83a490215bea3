"""The conditions of a sweep: the baseline and one knockout per centre layer.

    conds = sweep_conditions(num_layers=32, layers=None, window=1)   # baseline + 32 knockouts
    conds[1].knocked_out                                            # (0,)
"""

from __future__ import annotations

from dataclasses import dataclass

from layerprobe.errors import ConfigError
from layerprobe.core.layers import layer_list


@dataclass(frozen=True)
class Condition:
    name: str  # "baseline" or "knockout"
    layer: int | None  # centre layer (0-based); None for the baseline
    knocked_out: tuple[int, ...] = ()

    @property
    def key(self) -> tuple:
        return (self.name, self.layer)


BASELINE = Condition("baseline", None, ())


def sweep_conditions(num_layers: int, layers=None, window: int = 1) -> list[Condition]:
    if window < 1 or window % 2 == 0:
        raise ConfigError(f"mask.window={window}: must be an odd number >= 1 (layers centred on l)")
    chosen = list(range(num_layers)) if layers is None else layer_list("layers", layers, num_layers)
    if layers is not None and not chosen:
        raise ConfigError("layers=[]: the sweep needs at least one layer (or layers=null for all)")
    half = window // 2
    conds = [BASELINE]
    for layer in chosen:
        span = tuple(range(max(0, layer - half), min(num_layers, layer + half + 1)))
        conds.append(Condition("knockout", layer, span))
    return conds
