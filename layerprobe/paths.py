"""Where layerprobe's shipped configs live: ``conf/`` beside the package in a checkout or an
editable install. Library code reads presets (profiles, models) from here without Hydra."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR.parent / "conf"
