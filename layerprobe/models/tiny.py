"""Tiny random multimodal models built from the real transformers config classes, with their
own word-level tokenizer and a real processor: the stand-ins for 7B checkpoints in tests and
in ``model=tiny_<family>`` configs. Accuracy is meaningless; shapes and plumbing are real.

    model, processor = build_tiny("llava", num_layers=32)
    save_tiny("llava_next", "/tmp/tiny-llava16")       # then load_model("/tmp/tiny-llava16")

``BUILDERS`` is the one table of families: a new tiny family is one entry here, and
``load_model("tiny:<family>")``, ``build_tiny`` and ``save_tiny`` all reach it through this table.
A builder takes the decoder sizes (plus its own keyword options, such as the LLaVA image size)
and returns an unseeded, unfinished (model, processor); seeding and finishing happen here, once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from layerprobe.models import tiny_families as families
from layerprobe.models.tiny_llava import build_llava, build_llava_next
from layerprobe.models.tiny_parts import finish

BUILDERS = {
    "llava": build_llava,
    "llava_next": build_llava_next,
    "qwen2_vl": families.build_qwen2_vl,
    "qwen2_5_vl": families.build_qwen2_5_vl,
    "llava_onevision": families.build_llava_onevision,
    "internvl": families.build_internvl,
    "idefics3": families.build_idefics3,
    "smolvlm": families.build_smolvlm,
    "gemma3": families.build_gemma3,
}


def build_tiny(family: str = "llava", num_layers: int = 32, hidden: int = 64, heads: int = 4,
               kv_heads: int = 2, seed: int = 0, **options):
    """(model, processor) of a tiny ``family`` model. The same seed gives the same weights, so
    two processes (or a test and its reference) can build the identical model independently."""
    if family not in BUILDERS:
        raise ValueError(f"family={family!r}: tiny models exist for {', '.join(BUILDERS)}")
    torch.manual_seed(seed)
    model, processor = BUILDERS[family](num_layers=num_layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                                        **options)
    return finish(model, processor.tokenizer), processor


def save_tiny(family: str, path: str | Path, **kwargs) -> Path:
    """A tiny model saved as a checkpoint directory, to test the ``load_model(path)`` route."""
    model, processor = build_tiny(family, **kwargs)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
