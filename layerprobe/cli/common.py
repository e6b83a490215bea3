"""Glue shared by the Hydra entry points: build library objects from composed configs.
Only ``layerprobe.cli`` imports Hydra; these helpers take plain dicts/DictConfigs."""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback

from layerprobe.errors import ConfigError, LayerprobeError

# data.* keys passed to load_benchmark, which checks them; a null value means its default.
DATA_ARGS = ("name", "root", "split", "layout", "limit", "seed", "num_shards", "shard", "on_error", "prompt",
             "metric", "max_new_tokens", "repo", "download")


def to_python(cfg) -> Any:
    from omegaconf import OmegaConf

    # scalars and None (layers=null: every layer) pass through; only config nodes are converted
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def identity(section) -> dict:
    """A model or data config as part of a run's identity: whether files may be downloaded is not
    what a run computes, and an unset mirror (``repo: null``) is left out, so a run resumes
    whichever way its files were fetched, and runs written before these keys existed still do."""
    values = to_python(section)
    return {k: v for k, v in values.items() if k != "download" and not (k == "repo" and v is None)}


def load_model_from(model_cfg):
    from layerprobe.models.loading import load_model

    m = to_python(model_cfg)
    return load_model(m.get("path") or m["name"], device=m.get("device"), dtype=m.get("dtype"),
                      attn_implementation=m.get("attn_implementation") or "sdpa", download=m.get("download", True))


def load_data_from(data_cfg):
    from layerprobe.data.registry import load_benchmark

    d = to_python(data_cfg)
    return load_benchmark(**{k: d[k] for k in DATA_ARGS if k in d and d[k] is not None})


def run_options(cfg, valid: set[str]) -> tuple[dict, list[str]]:
    """(options, run directories) of a command that reads sweep runs (plot, discover); an unknown
    option or a missing ``run`` is a ConfigError."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    unknown = set(cfg) - valid - {"run"}
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; valid: run, {', '.join(sorted(valid))}")
    runs = cfg.get("run")
    if not runs:
        raise ConfigError("run: give a sweep run directory, or a list: 'run=[a,b]'")
    # Hydra reads run=123 as a number: paths are strings whatever they look like
    return cfg, [str(r) for r in runs] if isinstance(runs, (list, tuple)) else [str(runs)]


def _error_exit(message: str) -> None:
    logging.getLogger("layerprobe").error("%s", message)
    print(f"layerprobe: error: {message}", file=sys.stderr)
    sys.exit(2)


def _make_dir_or_exit(path: str) -> None:
    from pathlib import Path

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _error_exit(f"{path}: cannot create output directory: {err.strerror}")


class CheckOutputDir(Callback):
    """Hydra callback (``hydra.callbacks``): an output directory that cannot be created ends in
    one line and exit code 2 before Hydra itself fails on it with a traceback."""

    def on_run_start(self, config, **kwargs) -> None:
        _make_dir_or_exit(str(config.hydra.run.dir))

    def on_multirun_start(self, config, **kwargs) -> None:
        _make_dir_or_exit(str(config.hydra.sweep.dir))


def run_cli(fn, *args) -> None:
    """Bad input ends in one line on stderr and exit code 2, not a traceback."""
    try:
        fn(*args)
    except LayerprobeError as err:
        _error_exit(str(err))
