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
from layerprobe.models.tiny import build_tokenizer

# The chat template of the organism: image, then the question; the cell code is the last prompt
# token, so its query is the one that must fetch the colour. The answer follows directly.
TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% else %} {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
)

DEFAULTS = dict(hidden=128, heads=4, kv_heads=4, intermediate=192, vision_hidden=64)


def build_processor():
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tok = build_tokenizer(synthetic.CELL_WORDS + synthetic.COLORS)
    px = synthetic.IMAGE_PX
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": px}, crop_size={"height": px, "width": px},
        image_mean=list(synthetic.CLIP_MEAN), image_std=list(synthetic.CLIP_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=synthetic.CELL_PX,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=TEMPLATE,
    )


def build_config(processor, num_layers: int, hidden: int = 128, heads: int = 4, kv_heads: int = 4,
                 intermediate: int = 192, vision_hidden: int = 64):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    tok = processor.tokenizer
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=64, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_hidden_layers=1,
        num_attention_heads=2, image_size=synthetic.IMAGE_PX, patch_size=synthetic.CELL_PX,
    )
    config = LlavaConfig(
        text_config=text, vision_config=vision, image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    return config


def build_model(processor, num_layers: int, seed: int = 0, **sizes):
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(processor, num_layers, **{**DEFAULTS, **sizes}))
    tower = model.model.vision_tower
    pos = getattr(tower, "vision_model", tower).embeddings.position_embedding
    with torch.no_grad():
        pos.weight.normal_(0.0, 0.2)
    tok = processor.tokenizer
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.do_sample = False
    return model


def grow(shallow, planted: list[int], num_layers: int, seed: int = 0):
    """A ``num_layers`` decoder where layer ``planted[k]`` is shallow layer ``k`` and every other
    layer is fresh with ``o_proj`` and ``down_proj`` zeroed: each fresh layer adds exactly zero to
    the residual stream, so the grown model computes the shallow model's function exactly."""
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
    sd = shallow.state_dict()
    deep_sd = deep.state_dict()
    prefix = "model.language_model.layers."
    for key, value in sd.items():
        if key.startswith(prefix):
            k, rest = key[len(prefix):].split(".", 1)
            deep_sd[f"{prefix}{planted[int(k)]}.{rest}"] = value.clone()
        else:
            deep_sd[key] = value.clone()
    deep.load_state_dict(deep_sd)
    planted_set = set(planted)
    with torch.no_grad():
        for i, layer in enumerate(deep.model.language_model.layers):
            if i not in planted_set:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
    deep.generation_config = copy.deepcopy(shallow.generation_config)
    return deep
