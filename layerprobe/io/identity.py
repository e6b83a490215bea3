"""A run's identity, recorded in its results header: what ran, not only the options as written.
A rerun into the same results file resumes only when every field agrees.

    header = {"config_hash": h, "identity": {"config_hash": h, "dtype": "float32", "device": "cpu",
              "weights": "3f0c...", "data": "9ab1..."}, "versions": versions()}
    check_resume("runs/x/results.jsonl", old_header, header)      # ConfigError naming the field
    check_resume(path, old_header, header, resume_check=False)    # resumes anyway; returns the fields

``dtype`` and ``device`` are the resolved ones (``dtype: null`` is bfloat16 on a GPU, float32 on a
CPU), ``weights`` a fingerprint of the checkpoint's files (``models.checkpoint_fingerprint``),
``data`` one of the samples and their files (``data.fingerprint``). The ``versions`` of
layerprobe, transformers and torch are recorded too, and a resume under other versions is only
warned about: a release may move a near-tie, it does not make another run.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from layerprobe.errors import ConfigError

log = logging.getLogger(__name__)

# identity field -> how a message names it
FIELDS = {"config_hash": "config (hash)", "dtype": "model dtype", "device": "device type",
          "weights": "checkpoint weights (fingerprint)", "data": "data (fingerprint of the samples and files)"}
OVERRIDE = "resume_check=false resumes it anyway"


def versions() -> dict[str, str]:
    """Installed versions of layerprobe, transformers and torch."""
    out = {}
    for name in ("layerprobe", "transformers", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Identity fields whose recorded and current values differ, in FIELDS order."""
    return [f for f in FIELDS if f in new and old.get(f) != new.get(f)]


def check_resume(path, old: dict[str, Any], new: dict[str, Any], resume_check: bool = True,
                 ways_out: str = "use a new run directory") -> list[str]:
    """Refuse (ConfigError) to resume ``path`` whose header ``old`` records another run than
    ``new``; with ``resume_check=False`` return the differing fields instead. Runs without an
    identity in ``new`` (library calls) are checked on their config hash only."""
    new_hash, old_hash = new.get("config_hash"), old.get("config_hash")
    if new_hash and old_hash and new_hash != old_hash and resume_check:
        raise ConfigError(f"{path}: was written with another config (hash {old_hash} != {new_hash}); "
                          f"refusing to mix results: {ways_out}")
    _warn_versions(path, old.get("versions") or {}, new.get("versions") or {})
    if "identity" not in new:
        return ["config_hash"] if new_hash and old_hash and new_hash != old_hash else []
    if "identity" not in old:
        if resume_check:
            raise ConfigError(f"{path}: written by a layerprobe that did not record what ran (no identity in its "
                              f"header: dtype, device, weights, data), so it cannot be checked to be this run: "
                              f"{ways_out}, or {OVERRIDE}")
        return ["identity"]
    fields = differing_fields(old["identity"], new["identity"])
    if fields and resume_check:
        f = fields[0]
        raise ConfigError(f"{path}: was written by another run: {FIELDS[f]} {old['identity'].get(f)} != "
                          f"{new['identity'][f]} now; refusing to mix results: {ways_out}, or {OVERRIDE}")
    return fields


def _warn_versions(path, old: dict, new: dict) -> None:
    changed = [f"{k} {old[k]} -> {new[k]}" for k in new if k in old and old[k] != new[k]]
    if changed:
        log.warning("%s: resuming under other versions (%s); answers of the two parts may differ at near-ties",
                    path, ", ".join(changed))
