"""InternVL 2.5 / 3 in transformers' native class (``InternVLForConditionalGeneration``, the
``-hf`` checkpoints): dynamic 448 px tiles plus a thumbnail, each pixel-shuffled to 256 tokens;
the prompt holds ``<img> <IMG_CONTEXT> x (256 * tiles) </img>``.

    loaded = load_model("OpenGVLab/InternVL3-8B-hf")

The config names only the ``<IMG_CONTEXT>`` id, so the image document is that run widened by
the ``<img>`` / ``</img>`` markers around it (one position each side, as the processor writes).
The original remote-code checkpoints (``InternVLChatModel``) are not supported.
"""

import torch

from layerprobe.models.base import ModelAdapter, around_runs


class InternVLAdapter(ModelAdapter):
    family = "internvl"
    architectures = ("InternVLForConditionalGeneration",)
    default_template = "<|im_start|>user\n<IMG_CONTEXT>\n{prompt}<|im_end|>\n<|im_start|>assistant\n"

    def visual_token_mask(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        return around_runs(input_ids == self.image_token_id(model), before=1, after=1)
