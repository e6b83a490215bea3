"""Who made a run: model, data, knockout or method, versions and the command, read from the
run's results header and from the files Hydra leaves in it.

    run_identity(Path("runs/sweep/organism/organism/image_text"), root=Path("runs"))
    # {"run": "sweep/organism/organism/image_text", "model": "organism", ..., "command": "layerprobe-sweep data.limit=64"}
    hydra_command(Path("runs/multirun/sweep"))   # "layerprobe-sweep -m data.shard=0,1" from multirun.yaml

The command of a job is rebuilt from ``.hydra/hydra.yaml`` (the app's name and the overrides it
was given); a multirun's from the ``multirun.yaml`` Hydra writes into its sweep folder.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import shlex
from pathlib import Path

import yaml

from layerprobe.io.results import read_header

# header fields shown in their own columns; any other field is shown as it is
KNOWN = {"schema", "config_hash", "model", "data", "edges", "window", "metric", "method", "profile",
         "layerprobe_version"}


def hydra_command(folder: Path) -> str | None:
    """The command line that made ``folder`` (a job's run directory or a multirun's sweep folder),
    or None when Hydra left no record of it."""
    for name, multirun in ((".hydra/hydra.yaml", False), ("multirun.yaml", True)):
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
            job = hydra["job"]["name"]
            overrides = hydra.get("overrides") or {}
        except (yaml.YAMLError, KeyError, TypeError, AttributeError):
            return None
        extra = [o for o in overrides.get("hydra") or [] if not str(o).startswith("hydra.mode=")]
        # a multirun's job is replayed alone by the same -m command with its own values
        multirun = multirun or hydra.get("mode") == "MULTIRUN"
        args = (["-m"] if multirun else []) + extra + list(overrides.get("task") or [])
        return " ".join([f"layerprobe-{job}", *(shlex.quote(str(a)) for a in args)])
    return None


def _what(header: dict) -> str:
    method = header.get("method")
    if isinstance(method, dict):
        options = ", ".join(f"{k}={v}" for k, v in method.items() if k != "name")
        return f"method {method.get('name')}" + (f" ({options})" if options else "")
    window = header.get("window", 1)
    return f"knockout {header.get('edges')}" + (f", window {window}" if window not in (None, 1) else "")


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def relative(path: Path, root: Path) -> str:
    """``path`` as shown on ``root``'s page: relative to it ("." for itself), else as given."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix() or "."
    except ValueError:
        return str(path)


def run_identity(run_dir: Path, root: Path) -> dict[str, str]:
    """One run's identity as display strings; ``run`` is its path relative to ``root``."""
    header = read_header(Path(run_dir) / "results.jsonl")
    model, data = header.get("model") or {}, header.get("data") or {}
    shards = data.get("num_shards") or 1
    out = {
        "run": relative(run_dir, root),
        "model": f"{model.get('name')} ({model.get('architecture')}, {model.get('num_layers')} layers, "
                 f"config {model.get('config_hash')})",
        "data": f"{data.get('name')} split {data.get('split')}, limit {data.get('limit')}, seed {data.get('seed')}"
                + (f", shard {data.get('shard')} of {shards}" if shards > 1 else "")
                + (f", root {data.get('root')}" if data.get("root") else ""),
        "what": _what(header),
        "metric": str(header.get("metric")),
        "layerprobe": str(header.get("layerprobe_version")),
        "run config": str(header.get("config_hash")),
    }
    if header.get("profile"):
        out["profile"] = _shown(header["profile"])
    out.update({k: _shown(v) for k, v in header.items() if k not in KNOWN})
    out["command"] = hydra_command(Path(run_dir)) or "(not recorded: no .hydra folder)"
    return out


def environment() -> str:
    """The versions that wrote the page (the runs' own versions are in their rows)."""
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return (f"written {stamp} by layerprobe {version('layerprobe')}, python {platform.python_version()}, "
            f"torch {version('torch')}, transformers {version('transformers')}")
