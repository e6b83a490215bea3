"""The one check for logits that hold NaN or inf (float16 overflow, damaged weights): an argmax
over them picks an arbitrary token and a threshold computed from them is NaN, so such answers
are flagged per sample and never scored as if nothing happened.

    watch = LogitsWatch()
    tokens = watch.pick(logits, keys=["baseline", "knockout@3"])   # argmax; rows variant-major
    watch.flags("baseline", batch=4)                               # [False, True, False, False]
    with watch_model(loaded.model) as watch:                       # every forward's last logits
        loaded.model.generate(...)
    watch.flags(None, batch=4)

``layerprobe.core.generation.generate_answers`` (the naive engine and every method) and the fast
sweep engine use it; ``layerprobe.io.batch_loop`` turns a flagged answer into a one-line error
naming its condition, or a skipped row with ``on_error=skip``.
"""

from __future__ import annotations

import contextlib

import torch


def nonfinite_rows(logits: torch.Tensor) -> torch.Tensor:
    """(..., V) logits -> (...,) bool: the rows holding a NaN or an infinity."""
    return ~torch.isfinite(logits).all(-1)


class LogitsWatch:
    """Per key (a condition, or None), which samples of the batch met non-finite logits."""

    def __init__(self):
        self._bad: dict = {}

    def note(self, logits: torch.Tensor, keys, live: torch.Tensor | None = None) -> None:
        """Record the rows of ``logits`` (len(keys) blocks of the batch, variant-major) that are
        not finite; ``live`` (same rows) leaves out samples that already ended."""
        rows = nonfinite_rows(logits).reshape(len(keys), -1)
        if live is not None:
            rows = rows & live.reshape(len(keys), -1)
        if not bool(rows.any()):
            return
        for key, bad in zip(keys, rows.cpu()):
            self._bad[key] = self._bad[key] | bad if key in self._bad else bad

    def pick(self, logits: torch.Tensor, keys, live: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy tokens of ``logits`` (..., V), their non-finite rows noted under ``keys``."""
        self.note(logits, keys, live)
        return logits.argmax(-1)

    def flags(self, key, batch: int) -> list[bool]:
        bad = self._bad.get(key)
        return [False] * batch if bad is None else [bool(b) for b in bad]


@contextlib.contextmanager
def watch_model(model):
    """A LogitsWatch fed by every forward call of ``model`` (its last position's logits, key None)."""
    watch = LogitsWatch()

    def hook(module, args, output):
        logits = getattr(output, "logits", None)
        if logits is not None:
            watch.note(logits[:, -1], [None])

    handle = model.register_forward_hook(hook)
    try:
        yield watch
    finally:
        handle.remove()
