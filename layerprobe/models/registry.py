"""The one registry of model family adapters, keyed by HF architecture name.

    adapter = adapter_for(model.config)   # ModelError listing the supported ones otherwise
"""

from __future__ import annotations

from layerprobe.errors import ModelError
from layerprobe.models.base import ModelAdapter
from layerprobe.models.gemma3 import Gemma3Adapter
from layerprobe.models.idefics3 import Idefics3Adapter, SmolVLMAdapter
from layerprobe.models.internvl import InternVLAdapter
from layerprobe.models.llava import LlavaAdapter
from layerprobe.models.llava_next import LlavaNextAdapter
from layerprobe.models.llava_onevision import LlavaOnevisionAdapter
from layerprobe.models.qwen2_vl import Qwen25VLAdapter, Qwen2VLAdapter

FAMILY_ADAPTERS: tuple[type[ModelAdapter], ...] = (
    LlavaAdapter, LlavaNextAdapter, LlavaOnevisionAdapter, Qwen2VLAdapter, Qwen25VLAdapter,
    InternVLAdapter, Idefics3Adapter, SmolVLMAdapter, Gemma3Adapter,
)
ADAPTERS: dict[str, type[ModelAdapter]] = {
    arch: cls for cls in FAMILY_ADAPTERS for arch in cls.architectures
}


def supported_architectures() -> list[str]:
    return sorted(ADAPTERS)


def adapter_for(config) -> ModelAdapter:
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        if arch in ADAPTERS:
            return ADAPTERS[arch]()
    raise ModelError(
        f"architecture {archs or '<none in config>'} is not supported; "
        f"supported: {', '.join(supported_architectures())}"
    )
