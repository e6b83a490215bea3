"""The one registry of model family adapters, keyed by HF architecture name.

    adapter = adapter_for(model.config)   # ModelError listing the supported ones otherwise
"""

from __future__ import annotations

from layerprobe.errors import ModelError
from layerprobe.models.base import ModelAdapter
from layerprobe.models.llava import LlavaAdapter
from layerprobe.models.llava_next import LlavaNextAdapter

ADAPTERS: dict[str, type[ModelAdapter]] = {
    arch: cls for cls in (LlavaAdapter, LlavaNextAdapter) for arch in cls.architectures
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
