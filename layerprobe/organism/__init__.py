"""The shipped model organism: a tiny LLaVA (real transformers classes, 32-layer Llama decoder)
trained on the synthetic grid task so that text can read the image only at planted layers.

    import layerprobe.organism as organism
    loaded = organism.load()                 # = layerprobe.load_model("organism"); CPU, float32
    organism.spec()["planted"]               # [2, 4, 8, 11, 12, 13, 29]: fusion layers + review layer
    organism.spec()["regions"]               # the cells each planted layer may read

Loading applies the planted structure (a permanent attention-mask edit, see
``layerprobe.models.planted``) and checks the recorded fingerprint; without the structure the
weights are not the organism. The design, the training recipe and measured numbers are in
docs/organism.md.
"""

from __future__ import annotations

from pathlib import Path

from layerprobe.io.paths import SHIPPED_MODELS
from layerprobe.models.loading import load_model
from layerprobe.models.planted import ORGANISM_FILE, read_metadata

WEIGHTS_DIR = SHIPPED_MODELS["organism"]


def spec(path: str | Path | None = None) -> dict:
    """The organism's ``layerprobe_organism.json``: planted layers, regions, training metadata."""
    return read_metadata(Path(path or WEIGHTS_DIR) / ORGANISM_FILE)


def load(device: str | None = None, dtype=None, path: str | Path | None = None, attn_implementation: str = "sdpa"):
    """The shipped organism (or a retrained one at ``path``) as a ``LoadedModel``, on the CPU unless
    told otherwise (~4.5 M parameters: it runs everywhere, CI included)."""
    loaded = load_model(str(path or WEIGHTS_DIR), device=device or "cpu", dtype=dtype,
                        attn_implementation=attn_implementation)
    loaded.name = "organism" if path is None else str(path)
    return loaded
