"""LLaVA-1.6 / LLaVA-NeXT (``LlavaNextForConditionalGeneration``): anyres tiles plus one
image-newline feature per row; the processor expands ``<image>`` into all of them, so every
visual position (tile or newline) carries the image token id and the count varies per sample."""

from layerprobe.models.base import ModelAdapter, square_grid_side


class LlavaNextAdapter(ModelAdapter):
    family = "llava_next"
    architectures = ("LlavaNextForConditionalGeneration",)
    default_template = "[INST] <image>\n{prompt} [/INST]"

    def base_grid_side(self, model) -> int:
        # the base view is the whole image, squashed to a square, before the tiles
        return square_grid_side(model)
