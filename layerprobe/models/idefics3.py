"""Idefics3 and SmolVLM (``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``):
the image is split into sub-images plus a downscaled global image, each pixel-shuffled to a
fixed number of ``<image>`` tokens and framed by markers::

    <fake_token_around_image><row_1_col_1><image>*n ... \\n ... <fake_token_around_image><global-img><image>*n<fake_token_around_image>

    loaded = load_model("HuggingFaceTB/SmolVLM-Instruct")

The whole framed block is the image document: text queries may read none of it, markers
included (they sit between sub-images and are attended like visual tokens). The config names
only the ``<image>`` id, so the block is the image runs merged across the short marker gaps
between sub-images and widened by the two markers before the first run and the one after the
last. The language model lives at ``model.model.text_model``.
"""

from typing import Any

import torch

from layerprobe.models.base import COMPONENT_PATHS, ModelAdapter, around_runs

# Longest marker gap between two sub-images: "\n\n<fake_token_around_image><global-img>".
SUBIMAGE_GAP = 4


class Idefics3Adapter(ModelAdapter):
    family = "idefics3"
    architectures = ("Idefics3ForConditionalGeneration",)
    default_template = "<|im_start|>User:<image>{prompt}<end_of_utterance>\nAssistant:"
    nested_images = True
    component_paths = {**COMPONENT_PATHS, "text_model": "model.text_model"}

    def visual_token_mask(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        image = input_ids == self.image_token_id(model)
        return around_runs(image, before=2, after=1, max_gap=SUBIMAGE_GAP)

    def format_prompt(self, processor: Any, text: str, n_images: int = 1) -> str:
        # SmolVLM's processor-level templating consults its video processor; the tokenizer
        # renders the same template without one.
        template = getattr(processor, "chat_template", None)
        if not template:
            return super().format_prompt(processor, text, n_images)
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        return processor.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], chat_template=template,
            add_generation_prompt=True, tokenize=False,
        )


class SmolVLMAdapter(Idefics3Adapter):
    family = "smolvlm"
    architectures = ("SmolVLMForConditionalGeneration",)
