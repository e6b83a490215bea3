"""Peak memory of a block of code: CUDA's allocator statistics on a GPU; on CPU, live tensor
storage counted at every aten op (CPU has no allocator statistics to ask).

    with peak_memory(loaded.device) as mem:
        generate_answers(loaded, inputs, 16)
    mem.peak_bytes        # weights and everything else alive, at the peak
    mem.extra_bytes       # the peak above what was allocated on entry: activations, KV cache

The CPU tracker sees every tensor an operator returns (views and in-place results share their
storage and count once) but not the scratch space inside fused kernels (SDPA's, for example); it
slows the block down, so never time under it. ``peak_bytes`` on CPU adds the parameters and
buffers of ``model`` (if given) to ``extra_bytes``, the counterpart of what CUDA reports.
"""

from __future__ import annotations

import contextlib

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveStorage(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


class PeakMemory:
    peak_bytes: int = 0
    extra_bytes: int = 0


def _model_bytes(model) -> int:
    if model is None:
        return 0
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


@contextlib.contextmanager
def peak_memory(device, model=None):
    device = torch.device(device)
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result.peak_bytes = torch.cuda.max_memory_allocated(device)
            result.extra_bytes = result.peak_bytes - start
        return
    mode = _LiveStorage()
    try:
        with mode:
            yield result
    finally:
        result.extra_bytes = mode.peak
        result.peak_bytes = mode.peak + _model_bytes(model)
