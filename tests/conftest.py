"""Shared fixtures: tiny LLaVA-1.5 / LLaVA-1.6 models with 32 decoder layers built from the real
config classes, and small batches of images of different sizes (so LLaVA-1.6 layouts differ)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import layerprobe

FAMILIES = ["llava", "llava_next"]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models():
    cache = {}

    def get(family: str, attn: str = "sdpa"):
        key = (family, attn)
        if key not in cache:
            cache[key] = layerprobe.load_model(f"tiny:{family}:32", device="cpu", attn_implementation=attn)
        return cache[key]

    return get


def make_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    sizes = [(60, 80), (90, 40), (56, 56), (40, 100), (70, 70), (100, 50)]
    return [Image.fromarray(rng.randint(0, 255, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(n)]


QUESTIONS = [
    "what color is the cat ?",
    "how many people are there ?",
    "is the sky blue ?",
    "what is on the table ?",
]


@pytest.fixture
def images():
    return make_images(4)
