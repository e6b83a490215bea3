"""layerprobe: find where a multimodal LLM reads its image, layer by layer.

    import layerprobe
    loaded = layerprobe.load_model("tiny:llava")
    with layerprobe.knockout(loaded, layers=[2], edges="image->text"):
        out = loaded.model.generate(**loaded.encode([image], ["What color?"]), max_new_tokens=4)
"""

__version__ = "0.1.0"

from layerprobe.core.generation import generate_answers  # noqa: E402
from layerprobe.core.knockout import knockout  # noqa: E402
from layerprobe.methods.contrastive import contrastive_attention  # noqa: E402
from layerprobe.models.loading import LoadedModel, load_model  # noqa: E402

__all__ = ["__version__", "contrastive_attention", "generate_answers", "knockout", "load_model", "LoadedModel"]
