"""Glue shared by the Hydra entry points: build library objects from composed configs.
Only ``layerprobe.cli`` imports Hydra; these helpers take plain dicts/DictConfigs."""

from __future__ import annotations

import difflib
import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback

from layerprobe.errors import ConfigError, LayerprobeError

# data.* keys passed to load_benchmark, which checks them; a null value means its default.
DATA_ARGS = ("name", "root", "split", "layout", "limit", "seed", "num_shards", "shard", "on_error", "prompt",
             "metric", "max_new_tokens", "repo", "download")
MODEL_ARGS = ("name", "path", "download", "device", "dtype", "attn_implementation", "check_keys")
MODEL_NOTES = ("decoder_layers", "chat_template")   # in some presets, for reading only


def refuse_unknown_keys(group: str, given, known) -> None:
    """A key nobody reads (``+data.limt=10``) is a typo, not an option: one line naming the nearest."""
    for key in given:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = f"; did you mean {group}.{near[0]}?" if near else ""
            raise ConfigError(f"{group}.{key}: no such option{hint} (options of {group}: {', '.join(known)})")


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
    refuse_unknown_keys("model", m, MODEL_ARGS + MODEL_NOTES)
    return load_model(m.get("path") or m["name"], device=m.get("device"), dtype=m.get("dtype"),
                      attn_implementation=m.get("attn_implementation") or "sdpa", download=m.get("download", True),
                      check_keys=m.get("check_keys", True) is not False)


def load_data_from(data_cfg):
    from layerprobe.data.registry import load_benchmark

    d = to_python(data_cfg)
    refuse_unknown_keys("data", d, DATA_ARGS)
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


def run_header(loaded, data, identity_hash: str) -> dict:
    """The part of a run's results header that says what ran (``layerprobe.io.identity``)."""
    from layerprobe.data.fingerprint import data_fingerprint
    from layerprobe.io.identity import versions
    from layerprobe.models.identity import weights_fingerprint

    identity = {"config_hash": identity_hash, "dtype": str(loaded.model.dtype).removeprefix("torch."),
                "device": loaded.device.type, "weights": weights_fingerprint(loaded), "data": data_fingerprint(data)}
    return {"config_hash": identity_hash, "identity": identity, "versions": versions()}


def writer_options(cfg, ways_out: str) -> dict:
    """What the results writer of a sweep or eval run is told (``ResultsWriter``'s options)."""
    return {"lock": cfg.get("file_lock", True) is not False, "resume_check": cfg.get("resume_check", True) is not False,
            "ways_out": ways_out}


def _log_to_files(message: str) -> None:
    """The error into the run's log file (sweep.log), not again onto the terminal: stderr has it."""
    logger = logging.getLogger("layerprobe")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers + logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def error_exit(message: str) -> None:
    """One line on stderr (and in the run's log file), exit code 2."""
    _log_to_files(message)
    print(f"layerprobe: error: {message}", file=sys.stderr)
    sys.exit(2)


def _make_dir_or_exit(path: str) -> None:
    from pathlib import Path

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        error_exit(f"{path}: cannot create output directory: {err.strerror}")


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
        error_exit(str(err))
