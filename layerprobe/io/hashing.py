"""The one content hash of a configuration: run headers (which configs may share a results file)
and model identities (which checkpoints may be merged) both use it."""

from __future__ import annotations

import hashlib
import json


def config_hash(value) -> str:
    """16 hex digits of SHA-256 over ``value`` as sorted-key JSON (non-JSON values by ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
