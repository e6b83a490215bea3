"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP tower, projector, Llama/Vicuna decoder;
visual tokens are the ``<image>`` placeholders the processor expands (576 at 336 px)."""

from layerprobe.models.base import ModelAdapter


class LlavaAdapter(ModelAdapter):
    family = "llava"
    architectures = ("LlavaForConditionalGeneration",)
    default_template = (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions. "
        "USER: <image>\n{prompt} ASSISTANT:"
    )
