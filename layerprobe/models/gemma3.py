"""Gemma 3 (``Gemma3ForConditionalGeneration``): SigLIP at 896 px average-pooled to 256 soft
tokens per image, framed as ``<start_of_image> <image_soft_token> x 256 <end_of_image>``; image
tokens attend to each other bidirectionally; the decoder interleaves five sliding-window
layers with one global layer.

    loaded = load_model("google/gemma-3-4b-it")

The ``<start_of_image> .. <end_of_image>`` span is the image document (its config names both
ids). Knockout (and so the fast sweep, whose masks ignore the window) needs every sequence
shorter than the sliding window (1024 tokens in the public checkpoints), so that each layer's
cache holds the whole sequence; a longer one fails loudly in the controller.
"""

import torch

from layerprobe.compat import rotary_embeddings
from layerprobe.models.base import ModelAdapter, marked_spans


class Gemma3Adapter(ModelAdapter):
    family = "gemma3"
    architectures = ("Gemma3ForConditionalGeneration",)
    default_template = "<start_of_turn>user\n<start_of_image>{prompt}<end_of_turn>\n<start_of_turn>model\n"
    nested_images = True

    def position_embeddings(self, model, x, position_ids, layer):
        # local (sliding) and global layers rotate with different bases
        rotary = self.component(self.text_model(model), "rotary_embedding")
        return rotary_embeddings(rotary, x, position_ids, self.text_config(model).layer_types[layer])

    def visual_token_mask(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        cfg = model.config
        return marked_spans(input_ids, cfg.boi_token_index, cfg.eoi_token_index)
