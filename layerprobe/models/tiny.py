"""Tiny random multimodal models built from the real transformers config classes, with their
own word-level tokenizer and a real processor: the stand-ins for 7B checkpoints in tests and
in ``model=tiny_llava15`` configs. Accuracy is meaningless; shapes and plumbing are real.

    model, processor = build_tiny("llava", num_layers=32)
    save_tiny("llava_next", "/tmp/tiny-llava16")       # then load_model("/tmp/tiny-llava16")
"""

from __future__ import annotations

from pathlib import Path

import torch

from layerprobe.compat import set_post_processor

LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {{ message['content'][0]['text'] }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Enough words to make benchmark questions and answers tokenize to mostly known tokens.
_WORDS = """
a an the is are was what which who where when how many much color colour of in on at to and or
it this that there these those yes no not none one two three four five six seven eight nine ten
zero red green blue yellow black white orange purple pink brown gray grey cat dog man woman person
people car bus sky tree water table cup coffee rocket clock coin coins page text word number
left right top bottom middle center cell image picture photo answer question using single phrase
when provided information insufficient respond with unanswerable reference ocr token tokens do does
USER ASSISTANT INST system chat between curious human artificial intelligence assistant gives
helpful detailed polite answers humans questions describe shown kind type wearing holding
""".split()


def build_tokenizer(extra_words: list[str] | None = None, special_tokens: dict[str, str] | None = None):
    """``special_tokens`` maps tokenizer attributes to tokens (other families' image markers)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special_tokens = special_tokens or {"image_token": "<image>"}
    specials = list(dict.fromkeys(["<unk>", "<s>", "</s>", "<pad>", *special_tokens.values()]))
    words = list(dict.fromkeys(_WORDS + [str(d) for d in range(10)] + list(extra_words or [])))
    punct = list(".,?!:;'\"()[]/-_\n")
    vocab = {tok: i for i, tok in enumerate(specials + words + punct)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=special_tokens,
        padding_side="left",
    )
    from tokenizers import processors

    # LLaVA checkpoints prepend BOS; the visual tokens then never start the sequence.
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    set_post_processor(tok, backend.post_processor)
    return tok


def _text_config(num_layers: int, hidden: int, vocab_size: int, heads: int, kv_heads: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )


def _vision_config(image_size: int, patch: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=patch,
    )


def build_tiny(family: str = "llava", num_layers: int = 32, hidden: int = 64, heads: int = 4,
               kv_heads: int = 2, image_size: int = 56, patch: int = 14, seed: int = 0):
    """(model, processor) for ``family`` in {"llava", "llava_next"}, deterministic by seed."""
    from transformers import (
        CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
        LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor,
        LlavaProcessor,
    )

    tok = build_tokenizer()
    text = _text_config(num_layers, hidden, len(tok), heads, kv_heads)
    vision = _vision_config(image_size, patch)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    common = dict(
        text_config=text, vision_config=vision, image_token_id=image_token_id,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    torch.manual_seed(seed)
    if family == "llava":
        config = LlavaConfig(**common)
        model = LlavaForConditionalGeneration(config)
        image_processor = CLIPImageProcessorPil(size=size, crop_size=crop)
        processor = LlavaProcessor(
            image_processor=image_processor, tokenizer=tok, patch_size=patch,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=LLAVA15_TEMPLATE,
        )
    elif family == "llava_next":
        pinpoints = [[image_size, image_size * 2], [image_size * 2, image_size], [image_size * 2, image_size * 2]]
        config = LlavaNextConfig(**common, image_grid_pinpoints=pinpoints)
        model = LlavaNextForConditionalGeneration(config)
        image_processor = LlavaNextImageProcessorPil(size=size, crop_size=crop, image_grid_pinpoints=pinpoints)
        processor = LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tok, patch_size=patch,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=LLAVA15_TEMPLATE,
        )
    else:
        from layerprobe.models.tiny_families import build_family

        return build_family(family, num_layers=num_layers, hidden=hidden, heads=heads, kv_heads=kv_heads, seed=seed)
    model.config.architectures = [type(model).__name__]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.eval()
    return model, processor


def save_tiny(family: str, path: str | Path, **kwargs) -> Path:
    model, processor = build_tiny(family, **kwargs)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
