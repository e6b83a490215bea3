"""What identifies a loaded model in run headers and profiles, cheaply.

    model_config_hash(model.config)     # 16 hex digits: family and sizes, not dtype, path or release
    weights_fingerprint(loaded)         # 16 hex digits: the checkpoint's files, sampled

``model_config_hash`` hashes the fields that make one architecture another (model type, depth,
widths, heads, vocabulary, image geometry, the image token), read as attributes so that a
transformers release that renames or adds a ``to_dict`` key, the dtype a model was loaded in and
the folder it sits in do not change it. Fine-tunes of one base share it (their checkpoints differ
in ``weights_fingerprint``).

``weights_fingerprint`` reads, per weight file, its size, its safetensors header (tensor names,
shapes, dtypes, offsets) and 16 blocks of 4 KiB spread over its data, plus the small JSON files
(config, index): milliseconds for a 14 GB checkpoint, and a checkpoint retrained in place, with
the same shapes, still changes it. Built-in tiny models (``tiny:<family>:<n>``) are identified by
that name: they are built from a fixed seed.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from layerprobe.io.hashing import config_hash

STRUCTURE = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size", "image_size", "patch_size", "num_channels")
TOP = ("model_type", "architectures", "image_token_id", "vision_feature_layer", "vision_feature_select_strategy")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
BLOCKS, BLOCK = 16, 4096


def _fields(config, names) -> dict:
    out = {}
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            out[name] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def model_config_hash(config) -> str:
    """16 hex digits of the architecture ``config`` describes (see the module docstring)."""
    parts = {"top": _fields(config, TOP + STRUCTURE)}
    for sub in ("text_config", "vision_config"):
        sub_config = getattr(config, sub, None)
        if sub_config is not None:
            parts[sub] = _fields(sub_config, STRUCTURE)
    return config_hash(parts)


def _file_digest(path: Path, digest) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as fh:
        start = 0
        if path.suffix == ".safetensors" and size >= 8:
            (n,) = struct.unpack("<Q", fh.read(8))
            start = 8 + min(n, size - 8)
            fh.seek(0)
            digest.update(fh.read(start))   # the header: every tensor's name, dtype, shape, offsets
        span = max(size - start - BLOCK, 0)
        for i in range(BLOCKS):
            fh.seek(start + span * i // max(BLOCKS - 1, 1))
            digest.update(fh.read(BLOCK))


def checkpoint_fingerprint(folder: str | Path) -> str:
    """16 hex digits over a checkpoint folder's weight files and JSON files (sampled, see above)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and (path.suffix in WEIGHT_SUFFIXES or path.suffix == ".json"):
            if path.suffix == ".json":
                digest.update(path.name.encode() + path.read_bytes())
            else:
                _file_digest(path, digest)
    return digest.hexdigest()[:16]


def weights_fingerprint(loaded) -> str:
    """The fingerprint of ``loaded``'s checkpoint folder, or its name for a built-in tiny model."""
    folder = loaded.extra.get("checkpoint")
    return checkpoint_fingerprint(folder) if folder else str(loaded.name)
