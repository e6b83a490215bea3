"""Tiny LLaVA-1.5 and LLaVA-1.6 (LLaVA-NeXT): a CLIP tower, the LLaVA projector and a Llama
decoder from the real transformers classes, registered in ``layerprobe.models.tiny``. The config
and processor pieces are also what the model organism is made of (``layerprobe.organism.build``),
so the organism is a LLaVA in exactly the sense the tiny LLaVA is.
"""

from __future__ import annotations

from layerprobe.models.tiny_parts import build_tokenizer, clip_tower_config, lm_kwargs

LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def clip_embeddings(model) -> tuple:
    """(patch embedding, position embedding) of a LLaVA's CLIP tower: what a builder
    re-initialises (the organisms draw the position embeddings larger than CLIP's init)."""
    tower = model.model.vision_tower
    embeddings = getattr(tower, "vision_model", tower).embeddings
    return embeddings.patch_embedding, embeddings.position_embedding


def llava_kwargs(text, vision, tok, vision_feature_layer: int = -1) -> dict:
    """Keyword arguments shared by ``LlavaConfig`` and ``LlavaNextConfig``."""
    return dict(
        text_config=text, vision_config=vision, image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=vision_feature_layer, vision_feature_select_strategy="default",
    )


def llava_processor(tok, image_size: int, patch: int, chat_template: str, next_pinpoints=None, **image_kwargs):
    """The processor class a real LLaVA checkpoint loads with, on the PIL image processor (no
    torchvision needed). CLIP's CLS token is one extra visual feature, dropped by "default"."""
    import transformers as tf

    sizes = dict(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    if next_pinpoints is None:
        image_processor = tf.CLIPImageProcessorPil(**sizes, **image_kwargs)
        cls = tf.LlavaProcessor
    else:
        image_processor = tf.LlavaNextImageProcessorPil(**sizes, image_grid_pinpoints=next_pinpoints,
                                                        **image_kwargs)
        cls = tf.LlavaNextProcessor
    return cls(
        image_processor=image_processor, tokenizer=tok, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=chat_template,
    )


def _parts(num_layers, hidden, heads, kv_heads, image_size, patch):
    from transformers import LlamaConfig

    tok = build_tokenizer()
    text = LlamaConfig(**lm_kwargs(tok, num_layers, hidden, heads, kv_heads))
    return tok, llava_kwargs(text, clip_tower_config(image_size, patch), tok)


def build_llava(num_layers, hidden, heads, kv_heads, image_size: int = 56, patch: int = 14):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tok, common = _parts(num_layers, hidden, heads, kv_heads, image_size, patch)
    model = LlavaForConditionalGeneration(LlavaConfig(**common))
    return model, llava_processor(tok, image_size, patch, LLAVA15_TEMPLATE)


def build_llava_next(num_layers, hidden, heads, kv_heads, image_size: int = 56, patch: int = 14):
    """Any-resolution tiles of 1x2, 2x1 and 2x2 base images, so the visual-token count varies with
    the image's aspect ratio as it does for LLaVA-1.6."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    tok, common = _parts(num_layers, hidden, heads, kv_heads, image_size, patch)
    pinpoints = [[image_size, image_size * 2], [image_size * 2, image_size], [image_size * 2, image_size * 2]]
    model = LlavaNextForConditionalGeneration(LlavaNextConfig(**common, image_grid_pinpoints=pinpoints))
    return model, llava_processor(tok, image_size, patch, LLAVA15_TEMPLATE, next_pinpoints=pinpoints)
