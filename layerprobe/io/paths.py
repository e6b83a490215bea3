"""Where layerprobe's shipped files live. Configs: ``layerprobe/conf/`` in an installed package
(the wheel maps the repository's top-level ``conf/`` there), ``conf/`` beside the package in a
checkout or an editable install; library code reads presets (profiles, models) from here without
Hydra, and the Hydra apps compose from the same directory. Checkpoints shipped as package data,
by the name ``load_model`` takes: ``SHIPPED_MODELS`` (data directories, so nothing of
``layerprobe.organism`` is imported to load them)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = next((d for d in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf") if d.is_dir()), PACKAGE_DIR / "conf")
SHIPPED_MODELS = {
    "organism": PACKAGE_DIR / "organism" / "weights",
    "natural_organism": PACKAGE_DIR / "organism" / "natural_weights",
}
