"""A fingerprint of the samples a run answers, for its identity (``layerprobe.io.identity``): an
annotation file edited or an image folder replaced under the same ``data.root`` gives another run.

    data_fingerprint(load_benchmark("vqav2", root="/data/vqav2"))   # 16 hex digits

It covers every sample's id, question, answers and extra fields, its image (a file's path and
size, embedded bytes by their hash, a generated image by its fields) and every skipped record,
in order. Image files are not read: a stat per sample.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def _image_ref(image):
    if isinstance(image, (str, Path)):
        try:
            return [str(image), Path(image).stat().st_size]
        except OSError:
            return [str(image), None]
    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(image).hexdigest()[:16]
    return type(image).__name__   # generated from the sample's fields, which are hashed too


def data_fingerprint(data) -> str:
    """16 hex digits over ``data``'s samples and skipped records (a ``BenchmarkData``)."""
    digest = hashlib.sha256(f"{data.name}|{data.metric}|{data.max_new_tokens}".encode())
    for s in data.samples:
        item = [str(s.sample_id), s.question, s.answers, _image_ref(s.image), s.extra]
        digest.update(json.dumps(item, sort_keys=True, default=str).encode() + b"\n")
    for locator, reason in data.skipped:
        digest.update(f"skipped {locator}: {reason}\n".encode())
    return digest.hexdigest()[:16]
