"""Shared fixtures: tiny models with 32 decoder layers built from the real config classes, and
small batches of images of different sizes (so LLaVA-1.6 layouts differ). Helpers that test
modules import live in ``layerprobe_testing``, not here: ``tests.conftest`` is shadowed wherever
an installed distribution ships a top-level ``tests`` package."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

# Tiny models: synchronising two threads costs more than it saves (one CLI sweep on 2 cores: 16.0 s
# with one thread, 19.9 s with two), and the CLI tests' subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No test reaches the Hugging Face Hub: downloads are tested against tests/mock_hub.py on 127.0.0.1,
# in subprocesses that set HF_ENDPOINT to it (huggingface_hub reads both variables when imported).
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

import layerprobe
from layerprobe_testing import make_images

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


_PACKAGE = str(Path(layerprobe.__file__).parent)


def _called_from_layerprobe() -> bool:
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PACKAGE):
            return True
        frame = frame.f_back
    return False


class _DeprecationLog(logging.Handler):
    """transformers announces some deprecations through its logger, not ``warnings``."""

    def __init__(self, seen: list[str]):
        super().__init__(logging.WARNING)
        self.seen = seen

    def emit(self, record):
        message = record.getMessage()
        if "deprecat" in message.lower() and _called_from_layerprobe():
            self.seen.append(message)


@pytest.fixture(autouse=True)
def no_transformers_deprecations(monkeypatch):
    """A call layerprobe makes must not use anything transformers has deprecated. transformers
    attributes its deprecation warnings to its own frames (stacklevel inside its decorators), so
    a module filter cannot tell our calls apart: the whole stack is checked when one is raised."""
    seen: list[str] = []
    warn = warnings.warn

    def checked_warn(message, category=None, stacklevel=1, *args, **kwargs):
        kind = category or (type(message) if isinstance(message, Warning) else UserWarning)
        if issubclass(kind, (DeprecationWarning, FutureWarning)) and _called_from_layerprobe():
            seen.append(str(message))
        return warn(message, category, stacklevel + 1, *args, **kwargs)  # + this frame

    monkeypatch.setattr(warnings, "warn", checked_warn)
    handler = _DeprecationLog(seen)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if seen:
        pytest.fail(f"layerprobe called deprecated transformers API: {seen[0]}")


@pytest.fixture(autouse=True)
def restore_root_logging():
    """A CLI run in-process lets Hydra hang handlers on the root logger that write to the stream
    pytest captured for that test; once it is closed, any later test that logs would print
    "--- Logging error ---" into its own stderr. Each test gets the root logger it started with."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_models():
    cache = {}

    def get(family: str, attn: str = "sdpa"):
        key = (family, attn)
        if key not in cache:
            cache[key] = layerprobe.load_model(f"tiny:{family}:32", device="cpu", attn_implementation=attn)
        return cache[key]

    return get


@pytest.fixture
def images():
    return make_images(4)
