"""Where layerprobe's shipped configs live: ``layerprobe/conf/`` in an installed package (the
wheel maps the repository's top-level ``conf/`` there), ``conf/`` beside the package in a
checkout or an editable install. Library code reads presets (profiles, models) from here
without Hydra; the Hydra apps compose from the same directory."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = next((d for d in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf") if d.is_dir()), PACKAGE_DIR / "conf")
