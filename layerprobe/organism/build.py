"""Build the organism's parts from the real transformers classes: tokenizer, processor, a tiny
LLaVA (CLIP tower + projector + Llama decoder) of any depth, and growing a shallow decoder
into a deep one with exact identity layers in between.

    processor = build_processor()
    model = build_model(processor, num_layers=7, seed=0)
    deep = grow(model, planted=[2, 4, 8, 11, 12, 13, 29], num_layers=32, seed=0)

Choices that matter (see docs/organism.md): one visual token per grid cell (32 px image, 8 px
patches); ``vision_feature_layer=-2`` on a one-layer CLIP tower, so visual features are the patch
plus position embeddings after the pre-layernorm, with no mixing between cells; position
embeddings drawn with std 0.2 (at CLIP's 0.02 the colour drowns the cell's position).
"""

from __future__ import annotations

import copy

import torch

from layerprobe.data import synthetic
from layerprobe.models.registry import adapter_for
from layerprobe.models.tiny_llava import clip_embeddings, llava_kwargs, llava_processor
from layerprobe.models.tiny_parts import build_tokenizer, clip_tower_config, finish, lm_kwargs

# The chat template of the organism: image, then the question; the cell code is the last prompt
# token, so its query is the one that must fetch the colour. The answer follows directly.
TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% else %} {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
)

DEFAULTS = dict(hidden=128, heads=4, kv_heads=4, intermediate=192, vision_hidden=64)


def build_processor(words: list[str] | None = None, image_px: int = synthetic.IMAGE_PX,
                    cell_px: int = synthetic.CELL_PX):
    """The organism's processor; the natural organism passes its task's words and image size."""
    tok = build_tokenizer(synthetic.CELL_WORDS + synthetic.COLORS if words is None else words)
    return llava_processor(tok, image_px, cell_px, TEMPLATE,
                           image_mean=list(synthetic.CLIP_MEAN), image_std=list(synthetic.CLIP_STD))


def build_config(processor, num_layers: int, hidden: int = 128, heads: int = 4, kv_heads: int = 4,
                 intermediate: int = 192, vision_hidden: int = 64, max_positions: int = 64):
    from transformers import LlamaConfig, LlavaConfig

    tok = processor.tokenizer
    # 64 positions: the organism's sequences are 23 tokens plus the answer and </s>
    text = LlamaConfig(**lm_kwargs(tok, num_layers, hidden, heads, kv_heads, intermediate,
                                   max_positions=max_positions))
    # the image geometry is the processor's, so a model and its processor cannot disagree on it
    image_px = processor.image_processor.crop_size["height"]
    vision = clip_tower_config(image_px, processor.patch_size, hidden=vision_hidden, num_layers=1)
    return LlavaConfig(**llava_kwargs(text, vision, tok, vision_feature_layer=-2))


def build_model(processor, num_layers: int, seed: int = 0, **sizes):
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(processor, num_layers, **{**DEFAULTS, **sizes}))
    _, positions = clip_embeddings(model)
    with torch.no_grad():
        positions.weight.normal_(0.0, 0.2)
    tok = processor.tokenizer
    finish(model, tok)
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.do_sample = False
    return model


def residual_writers(adapter, layer) -> tuple:
    """The two projections through which a decoder layer writes into the residual stream: its
    attention's output projection and its MLP's (zeroed, the layer is an exact identity)."""
    return adapter.projection(adapter.attention_module(layer), "output"), adapter.mlp_output_projection(layer)


def grow(shallow, planted: list[int], num_layers: int, seed: int = 0):
    """A ``num_layers`` decoder where layer ``planted[k]`` is shallow layer ``k`` and every other
    layer is fresh with its output projections (attention and MLP) zeroed: each fresh layer adds
    exactly zero to the residual stream, so the grown model computes the shallow model's function
    exactly."""
    from transformers import LlavaForConditionalGeneration

    n_shallow = shallow.config.text_config.num_hidden_layers
    if len(planted) != n_shallow:
        raise ValueError(f"{len(planted)} planted layers for a {n_shallow}-layer shallow model")
    config = copy.deepcopy(shallow.config)
    config.text_config.num_hidden_layers = num_layers
    if hasattr(config.text_config, "layer_types") and config.text_config.layer_types is not None:
        config.text_config.layer_types = [config.text_config.layer_types[0]] * num_layers
    torch.manual_seed(seed + 1)
    deep = LlavaForConditionalGeneration(config)
    adapter = adapter_for(deep.config)
    sd = shallow.state_dict()
    deep_sd = deep.state_dict()
    names = {module: name for name, module in deep.named_modules()}
    prefix = names[adapter.decoder_layers(deep)] + "."  # the decoder layers' state-dict keys start so
    for key, value in sd.items():
        if key.startswith(prefix):
            k, rest = key[len(prefix):].split(".", 1)
            deep_sd[f"{prefix}{planted[int(k)]}.{rest}"] = value.clone()
        else:
            deep_sd[key] = value.clone()
    deep.load_state_dict(deep_sd)
    with torch.no_grad():
        for i, layer in enumerate(adapter.decoder_layers(deep)):
            if i not in planted:
                for proj in residual_writers(adapter, layer):
                    proj.weight.zero_()
    deep.generation_config = copy.deepcopy(shallow.generation_config)
    return deep
