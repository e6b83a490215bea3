"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): SigLIP tower, anyres-max-9
tiles plus a base image and one newline feature per row, Qwen2 decoder; the processor expands
``<image>`` into all of them, so every visual position carries the image token id and the
count varies with the image size (as in LLaVA-NeXT).

    loaded = load_model("llava-hf/llava-onevision-qwen2-7b-ov-hf")
"""

from layerprobe.models.base import ModelAdapter, square_grid_side


class LlavaOnevisionAdapter(ModelAdapter):
    family = "llava_onevision"
    architectures = ("LlavaOnevisionForConditionalGeneration",)
    default_template = "<|im_start|>user <image>\n{prompt}<|im_end|><|im_start|>assistant\n"

    def base_grid_side(self, model) -> int:
        # the base view is the whole image, squashed to a square, before the tiles
        return square_grid_side(model)
