"""The CPU heap policy a sweep runs under.

glibc gives a freed block above its mmap threshold straight back to the kernel and trims the free
top of the heap, so a tensor of a few MiB that a layer allocates and frees comes back as fresh
pages on the next layer, and each page faults on first touch. A sweep allocates such tensors per
layer and per variant stack, over and over; on the 2-core VM the README's benchmark runs on, the
faults made the fast engine 19-32% slower and the naive one 4-32% (README, Performance).
``keep_freed_memory`` tells glibc to serve every block from the heap and keep what is freed there,
so the process's resident memory stays at its peak instead.

    from layerprobe.sweep.heap import keep_freed_memory
    keep_freed_memory()          # True where set (Linux with glibc); False elsewhere, nothing changed
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def keep_freed_memory() -> bool:
    """Keep freed memory in this process's heap (glibc only); True if the allocator accepted it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt  # the soname is glibc's: musl or others keep their way
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
