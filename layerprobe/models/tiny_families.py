"""Tiny random models of the families beyond LLaVA (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision,
InternVL, Idefics3, SmolVLM, Gemma 3), built from their real transformers config, model and
image-processor classes with layerprobe's word-level tokenizer; registered in
``layerprobe.models.tiny``, which seeds and finishes them.

    model, processor = build_tiny("qwen2_vl", num_layers=32)
    loaded = load_model("tiny:idefics3:4")          # the same, wrapped with its adapter

Each processor is the class ``AutoProcessor.from_pretrained`` returns for a real checkpoint of the
family (Qwen2.5-VL's own ``Qwen2_5_VLProcessor`` included). Where that class also holds a video
processor (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, InternVL, SmolVLM), it gets the family's real
video processor class, sized like the tiny image processor, when torchvision is there (what a GPU
user has; the video classes need it). Without torchvision the processor is built with
``video_processor=None``: images only, which is all layerprobe uses; such a processor saves, but a
saved one loads back through ``AutoProcessor`` only where torchvision is installed.
"""

from __future__ import annotations

from layerprobe.compat import processor_without_video
from layerprobe.models.tiny_parts import build_tokenizer, lm_kwargs

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ image }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_WORDS = ["user", "model", "system"]
CHAT_TOKENS = {"im_start": "<|im_start|>", "im_end": "<|im_end|>"}


def _template(image_markup: str) -> str:
    return CHATML_TEMPLATE.replace("{{ image }}", image_markup)


def _processor(processor_cls, video_processor: str, video_kwargs: dict, **kwargs):
    """``processor_cls`` with its real video processor ``video_processor`` (a transformers class
    name, built with ``video_kwargs``) where torchvision is installed, else images only."""
    import transformers as tf

    if not tf.is_torchvision_available():
        return processor_without_video(processor_cls, **kwargs)
    return processor_cls(video_processor=getattr(tf, video_processor)(**video_kwargs), **kwargs)


def _qwen(version: str, num_layers, hidden, heads, kv_heads):
    import transformers as tf

    specials = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>", **CHAT_TOKENS}
    tok = build_tokenizer(CHAT_WORDS, specials)
    head_dim = hidden // heads
    third = head_dim // 2 // 4
    text = tf.Qwen2VLTextConfig(**lm_kwargs(tok, num_layers, hidden, heads, kv_heads), rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0,
        "mrope_section": [head_dim // 2 - 2 * third, third, third]})
    ids = {f"{k}_id": tok.convert_tokens_to_ids(specials[k])
           for k in ("image_token", "video_token", "vision_start_token", "vision_end_token")}
    if version == "2":
        vision = tf.Qwen2VLVisionConfig(depth=1, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2)
        config, cls = tf.Qwen2VLConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), **ids), \
            tf.Qwen2VLForConditionalGeneration
    else:
        vision = tf.Qwen2_5_VLVisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                           out_hidden_size=hidden, window_size=56, fullatt_block_indexes=[1])
        text = tf.Qwen2_5_VLTextConfig(**text.to_dict())
        config, cls = tf.Qwen2_5_VLConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), **ids), \
            tf.Qwen2_5_VLForConditionalGeneration
    # 28 px per merged visual token: 56..84 px images give 4 to 9 visual tokens, varying per image
    image_processor = tf.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=84 * 84)
    processor = _processor(
        tf.Qwen2VLProcessor if version == "2" else tf.Qwen2_5_VLProcessor,  # frames of 56..84 px, like the images
        "Qwen2VLVideoProcessor", dict(size={"shortest_edge": 56 * 56, "longest_edge": 84 * 84}),
        image_processor=image_processor, tokenizer=tok,
        chat_template=_template("<|vision_start|><|image_pad|><|vision_end|>"),
    )
    return cls(config), processor


def _siglip(image_size: int):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=image_size, patch_size=14)


def build_llava_onevision(num_layers, hidden, heads, kv_heads):
    import transformers as tf

    tok = build_tokenizer(CHAT_WORDS, {"image_token": "<image>", "video_token": "<video>", **CHAT_TOKENS})
    # 28 px tiles of 2x2 patches; anyres picks up to 2x2 tiles plus the base image, per image size
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    config = tf.LlavaOnevisionConfig(
        text_config=tf.Qwen2Config(**lm_kwargs(tok, num_layers, hidden, heads, kv_heads)).to_dict(),
        vision_config=_siglip(28).to_dict(), image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id, image_grid_pinpoints=pinpoints,
    )
    image_processor = tf.LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                                         image_grid_pinpoints=pinpoints)
    processor = _processor(
        tf.LlavaOnevisionProcessor, "LlavaOnevisionVideoProcessor", dict(size={"height": 28, "width": 28}),
        image_processor=image_processor, tokenizer=tok, num_image_tokens=4,
        vision_feature_select_strategy="full", chat_template=_template("<image>\n"),
    )
    return tf.LlavaOnevisionForConditionalGeneration(config), processor


def build_internvl(num_layers, hidden, heads, kv_heads):
    import transformers as tf

    tok = build_tokenizer(CHAT_WORDS, {
        "context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>", "end_image_token": "</img>",
        "video_token": "<video>", **CHAT_TOKENS})
    # 56 px tiles of 4x4 patches, pixel-shuffled by 0.5 to 4 visual tokens; up to 4 tiles + thumbnail
    vision = tf.InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=56, patch_size=14)
    config = tf.InternVLConfig(
        text_config=tf.Qwen2Config(**lm_kwargs(tok, num_layers, hidden, heads, kv_heads)).to_dict(),
        vision_config=vision.to_dict(), image_token_id=tok.context_image_token_id, image_seq_length=4,
        tie_word_embeddings=False,  # tied random embeddings answer the same token whatever the input
    )
    image_processor = tf.GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True,
                                                  min_patches=1, max_patches=4)
    processor = _processor(tf.InternVLProcessor, "InternVLVideoProcessor", dict(size={"height": 56, "width": 56}),
                           image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                           chat_template=_template("<IMG_CONTEXT>\n"))
    return tf.InternVLForConditionalGeneration(config), processor


IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _idefics3(smol: bool, num_layers, hidden, heads, kv_heads):
    import transformers as tf

    tok = build_tokenizer(CHAT_WORDS + ["User", "Assistant"], {"image_token": "<image>", **CHAT_TOKENS})
    tok.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
        *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]})
    # 56 px sub-images of 4x4 patches, pixel-shuffled by 2 to 4 visual tokens; images up to
    # 112 px are split into up to 2x2 sub-images plus the global image
    prefix = "SmolVLM" if smol else "Idefics3"
    image_processor = getattr(tf, f"{prefix}ImageProcessorPil")(
        do_image_splitting=True, size={"longest_edge": 112}, max_image_size={"longest_edge": 56})
    kwargs = dict(image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE)
    if smol:  # video frames of 56 px, like the sub-images
        size = {"longest_edge": 56}
        processor = _processor(tf.SmolVLMProcessor, "SmolVLMVideoProcessor",
                               dict(size=size, max_image_size=size), **kwargs)
    else:
        processor = tf.Idefics3Processor(**kwargs)
    vision = getattr(tf, f"{prefix}VisionConfig")(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=56, patch_size=14)
    config = getattr(tf, f"{prefix}Config")(
        text_config=tf.LlamaConfig(**lm_kwargs(tok, num_layers, hidden, heads, kv_heads)).to_dict(),
        vision_config=vision.to_dict(), image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    return getattr(tf, f"{prefix}ForConditionalGeneration")(config), processor


GEMMA3_TEMPLATE = (
    "{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma3(num_layers, hidden, heads, kv_heads):
    import transformers as tf

    tok = build_tokenizer(CHAT_WORDS, {
        "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
        "sot": "<start_of_turn>", "eot": "<end_of_turn>"})
    head_dim = hidden // heads
    # 56 px images of 4x4 patches, average-pooled to 2x2 = 4 soft tokens; Gemma 3's own
    # sliding-window / global layer pattern, with a window longer than any test prompt
    text = tf.Gemma3TextConfig(**lm_kwargs(tok, num_layers, hidden, heads, kv_heads), head_dim=head_dim,
                               query_pre_attn_scalar=head_dim, sliding_window=512)
    config = tf.Gemma3Config(
        text_config=text.to_dict(), vision_config=_siglip(56).to_dict(), mm_tokens_per_image=4,
        boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id, image_token_index=tok.image_token_id,
    )
    image_processor = tf.Gemma3ImageProcessorPil(size={"height": 56, "width": 56})
    processor = tf.Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                                   chat_template=GEMMA3_TEMPLATE)
    return tf.Gemma3ForConditionalGeneration(config), processor


def build_qwen2_vl(num_layers, hidden, heads, kv_heads):
    return _qwen("2", num_layers, hidden, heads, kv_heads)


def build_qwen2_5_vl(num_layers, hidden, heads, kv_heads):
    return _qwen("2.5", num_layers, hidden, heads, kv_heads)


def build_idefics3(num_layers, hidden, heads, kv_heads):
    return _idefics3(False, num_layers, hidden, heads, kv_heads)


def build_smolvlm(num_layers, hidden, heads, kv_heads):
    return _idefics3(True, num_layers, hidden, heads, kv_heads)
