"""The one check of a decoder-layer index, for every option that names layers (sweep layers,
knockout layers, profile layers, DoLa buckets, ViCrop's layer, a fixed pre-integrated layer).

    layer_index("vicrop layer", 14, num_layers=32)             # 14
    layer_list("layers", [4, 2, 2], num_layers=32)             # [2, 4]
    layer_index("pre_layer", 28, 32, below=28)                 # ConfigError: pre_layer=28: must be < 28
"""

from __future__ import annotations

from numbers import Integral
from typing import Iterable

from layerprobe.errors import ConfigError


def layer_index(field: str, value, num_layers: int, below: int | None = None, error=ConfigError) -> int:
    """``value`` as a 0-based index into a ``num_layers``-layer decoder (and < ``below``), else
    ``error`` with one line naming ``field`` and the value."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise error(f"{field}={value!r}: must be a 0-based layer index")
    if not 0 <= value < num_layers:
        raise error(f"{field}={value}: out of range for a {num_layers}-layer decoder (0..{num_layers - 1})")
    if below is not None and value >= below:
        raise error(f"{field}={value}: must be < {below}")
    return int(value)


def layer_list(field: str, values: Iterable, num_layers: int, below: int | None = None,
               error=ConfigError) -> list[int]:
    """Sorted distinct layer indices; each entry checked as ``field[i]``."""
    return sorted({layer_index(f"{field}[{i}]", v, num_layers, below, error) for i, v in enumerate(values)})
