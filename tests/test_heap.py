"""The CPU heap policy ``layerprobe-sweep`` sets (``sweep.keep_heap``): accepted by glibc, a no-op
elsewhere."""

from __future__ import annotations

import platform
import sys

import pytest

from layerprobe.sweep import heap

pytestmark = pytest.mark.core


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt only")
def test_glibc_accepts_the_policy():
    assert heap.keep_freed_memory() is True


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(heap.sys, "platform", "darwin")
    assert heap.keep_freed_memory() is False
