"""Qwen2-VL and Qwen2.5-VL (``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``):
a ViT with 2x2 patch merging, so the number of visual tokens follows the image size; the prompt
holds ``<|vision_start|> <|image_pad|> x n <|vision_end|>`` and positions are M-RoPE
(3 x B x T: temporal, height, width; text advances all three together).

    loaded = load_model("Qwen/Qwen2-VL-7B-Instruct")
    with knockout(loaded, layers=[14]):  # text cannot read the image document at layer 14
        ...

The image document is the whole ``vision_start .. vision_end`` span: the two markers are text
embeddings but sit inside the image and are what a text query could read the image through, so
they count as visual keys, and the first text token is the one after ``<|vision_end|>``.
"""

import torch

from layerprobe.models.base import ModelAdapter, marked_spans


class Qwen2VLAdapter(ModelAdapter):
    family = "qwen2_vl"
    architectures = ("Qwen2VLForConditionalGeneration",)
    default_template = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n"
    )

    def visual_token_mask(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        cfg = model.config
        spans = marked_spans(input_ids, cfg.vision_start_token_id, cfg.vision_end_token_id)
        return spans | (input_ids == self.image_token_id(model))


class Qwen25VLAdapter(Qwen2VLAdapter):
    family = "qwen2_5_vl"
    architectures = ("Qwen2_5_VLForConditionalGeneration",)
