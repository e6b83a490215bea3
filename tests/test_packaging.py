"""The wheel carries every package and every config group: a subpackage or conf/ group missing
from pyproject's explicit list would install a tool that cannot find its own code or presets."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_ships_every_config():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "layerprobe").rglob("*")
             if p.is_dir() and any(p.glob("*.py"))}
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert tool["package-dir"]["layerprobe.conf"] == "conf"
    assert "**/*.yaml" in tool["package-data"]["layerprobe.conf"]
    assert not list((ROOT / "conf").rglob("*.yml")), "configs must end in .yaml to ship"
