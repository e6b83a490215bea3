"""Random-weight models of a real checkpoint's shape, built directly on the device: what a benchmark
needs to time a 7B sweep without the checkpoint.

    loaded = build_real_shape("llava15_7b", device="cuda", dtype="bfloat16")   # 7.06 B parameters, ~14 GB
    loaded = build_real_shape("llava16_vicuna7b", device="cpu", smoke=True)     # same structure, tiny sizes

``SHAPES`` holds the sizes of each checkpoint's ``config.json`` (llava-hf/llava-1.5-7b-hf and
llava-hf/llava-v1.6-vicuna-7b-hf): a Vicuna-7B decoder (32 layers, hidden 4096, 32 heads, MLP
11008, vocabulary 32064, RMS-norm eps 1e-5), CLIP ViT-L/14 at 336 px (24 layers, hidden 1024, 16
heads, MLP 4096; features from its second-to-last layer, 576 per view) and the two-layer GELU
projector; LLaVA-1.6 adds its any-resolution grid. The tokenizer is the tiny models' word-level one
padded to the real vocabulary, so the embedding and LM head have their real size. ``smoke=True``
keeps the structure and the 32 layers (so layer profiles still apply) at the tiny models' sizes
and 56-pixel views, for CPU runs of the same code.
"""

from __future__ import annotations

import torch

from layerprobe.models.loading import LoadedModel
from layerprobe.models.registry import adapter_for
from layerprobe.models.tiny_llava import LLAVA15_TEMPLATE, llava_kwargs, llava_processor
from layerprobe.models.tiny_parts import build_tokenizer, finish, lm_kwargs

VICUNA_7B = dict(num_layers=32, hidden=4096, heads=32, kv_heads=32, intermediate=11008, vocab=32064)
CLIP_L14_336 = dict(hidden=1024, intermediate=4096, num_layers=24, heads=16, image_size=336, patch=14)
SMOKE_TEXT = dict(num_layers=32, hidden=64, heads=4, kv_heads=4, intermediate=128, vocab=32064)
SMOKE_VISION = dict(hidden=32, intermediate=64, num_layers=2, heads=2, image_size=56, patch=14)
# family, and for LLaVA-1.6 the any-resolution grid in units of the view size (336: 1x2, 2x1, 2x2, 3x1, 1x3)
SHAPES = {
    "llava15_7b": ("llava", None),
    "llava16_vicuna7b": ("llava_next", [[1, 2], [2, 1], [2, 2], [3, 1], [1, 3]]),
}


def _tokenizer(vocab: int):
    """The word-level tokenizer with filler words up to ``vocab`` entries."""
    short = vocab - len(build_tokenizer())
    return build_tokenizer([f"w{i}" for i in range(short)])


def _configs(family: str, grid, text: dict, vision: dict):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaNextConfig

    tok = _tokenizer(text["vocab"])
    lm = LlamaConfig(**lm_kwargs(tok, text["num_layers"], text["hidden"], text["heads"], text["kv_heads"],
                                 intermediate=text["intermediate"], max_positions=4096), rms_norm_eps=1e-5)
    clip = CLIPVisionConfig(hidden_size=vision["hidden"], intermediate_size=vision["intermediate"],
                            num_hidden_layers=vision["num_layers"], num_attention_heads=vision["heads"],
                            image_size=vision["image_size"], patch_size=vision["patch"], projection_dim=768)
    common = llava_kwargs(lm, clip, tok, vision_feature_layer=-2)
    side = vision["image_size"]
    pinpoints = [[side * h, side * w] for h, w in grid] if grid else None
    config = LlavaNextConfig(**common, image_grid_pinpoints=pinpoints) if pinpoints else LlavaConfig(**common)
    processor = llava_processor(tok, side, vision["patch"], LLAVA15_TEMPLATE, next_pinpoints=pinpoints)
    return config, processor


def build_real_shape(name: str, device="cpu", dtype="bfloat16", smoke: bool = False, seed: int = 0) -> LoadedModel:
    """A LoadedModel of checkpoint ``name``'s shape (a key of ``SHAPES``) with random weights,
    allocated and initialised on ``device`` in ``dtype``."""
    from transformers import AutoModelForImageTextToText

    if name not in SHAPES:
        raise ValueError(f"real shape {name!r}: known are {', '.join(SHAPES)}")
    family, grid = SHAPES[name]
    text, vision = (SMOKE_TEXT, SMOKE_VISION) if smoke else (VICUNA_7B, CLIP_L14_336)
    config, processor = _configs(family, grid, text, vision)
    torch.manual_seed(seed)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model = finish(model, processor.tokenizer)
    return LoadedModel(model, processor, adapter_for(model.config), f"{name}-shaped" + ("-smoke" if smoke else ""))
