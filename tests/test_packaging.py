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


# -- dependencies: floors past known vulnerabilities, pins within them, every install constrained --

def _requirements() -> dict:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(Requirement(d).name): Requirement(d).specifier for d in deps}


def _pins() -> dict:
    """name -> pinned version; names as pip compares them (huggingface_hub is huggingface-hub)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        spec = line.split("#")[0].strip()
        if spec:
            name, version = spec.split("==")
            pins[canonicalize_name(name)] = version
    return pins


# the first release past the vulnerability each floor must exclude (what layerprobe feeds untrusted input)
FIXED_IN = {
    "torch": "2.6.0",       # CVE-2025-32434: torch.load(weights_only=True) runs code; transformers' own floor
    "pillow": "10.3.0",     # CVE-2023-4863 (bundled libwebp, fixed in 10.0.1), CVE-2024-28219
    "pyarrow": "14.0.1",    # CVE-2023-47248: reading an untrusted parquet file runs code
    "jinja2": "3.1.6",      # CVE-2025-27516: sandbox escape; checkpoints ship chat templates
}


def test_dependency_floors_exclude_known_vulnerable_releases():
    from packaging.version import Version

    required = _requirements()
    for name, fixed in FIXED_IN.items():
        assert name in required, f"{name} is used but not declared in pyproject.toml"
        floor = Version(fixed)
        below = Version(f"{floor.major}.{floor.minor}.{floor.micro - 1}" if floor.micro else
                        f"{floor.major}.{floor.minor - 1}.99" if floor.minor else f"{floor.major - 1}.99")
        assert floor in required[name] and below not in required[name], f"{name}{required[name]} admits {below}"


def test_constraints_pin_every_direct_dependency_within_its_range():
    pins = _pins()
    for name, specifier in _requirements().items():
        assert name in pins, f"constraints.txt does not pin {name}"
        assert pins[name] in specifier, f"constraints.txt pins {name}=={pins[name]}, outside {specifier}"


def test_every_install_command_of_ci_and_docs_uses_the_constraints():
    """A pip install without -c in CI or the docs installs whatever the registry has that day."""
    import re

    files = [ROOT / ".ci" / "run", ROOT / ".ci" / "gpu_user_env.sh", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    unconstrained = []
    for path in files:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for command in re.findall(r"pip\"?\)?\}? install[^&|;`]*", line):
                if "-c " not in command and "(no -c" not in line:   # the one documented exception
                    unconstrained.append(f"{path.relative_to(ROOT)}:{lineno}: {command.strip()}")
    assert not unconstrained, "\n".join(unconstrained)
