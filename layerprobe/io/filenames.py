"""File names built from data (sample ids, labels): one path component, whatever the data holds.

    safe_name("COCO_42")            # 'COCO_42': a safe name is kept as it is
    safe_name("1/../../x/owned")    # '1_.._.._x_owned-f8ecf3f2': no separator, so it stays in its folder
    run_dir / f"heatmap_{safe_name(sample_id)}"

Anything but letters, digits, ``.``, ``,``, ``+``, ``-`` and ``_`` becomes ``_`` (separators,
NUL, spaces, control characters) and a leading ``.`` gets a ``_`` before it (no ``..``, no
hidden files); a name that had to change, or is longer than ``max_len`` (cut there), ends in a
hash of the original, so two ids never share a file.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9.,+_-]")


def safe_name(text, max_len: int = 80) -> str:
    """``text`` as a single safe path component (see the module docstring)."""
    raw = str(text)
    name = _UNSAFE.sub("_", raw) or "_"
    if name.startswith("."):
        name = "_" + name
    if name == raw and len(name) <= max_len:
        return name
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[:max_len - 9]}-{digest}"
