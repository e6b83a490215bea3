"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP tower, projector, Llama/Vicuna decoder;
visual tokens are the ``<image>`` placeholders the processor expands (576 at 336 px)."""

from layerprobe.models.base import ModelAdapter, square_grid_side


class LlavaAdapter(ModelAdapter):
    family = "llava"
    architectures = ("LlavaForConditionalGeneration",)
    default_template = (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions. "
        "USER: <image>\n{prompt} ASSISTANT:"
    )

    def base_grid_side(self, model) -> int:
        return square_grid_side(model)

    def grid_region(self, image) -> tuple[int, int, int, int]:
        # CLIP's processor resizes the short side and crops the centre square
        width, height = image.size
        s = min(width, height)
        return (width - s) // 2, (height - s) // 2, s, s
