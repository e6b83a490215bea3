"""What a model family adapter owns: where the decoder layers are, which tokens are visual, and
how a question becomes a prompt. One subclass per family, looked up by HF architecture name.

    adapter = adapter_for(model.config)          # from layerprobe.models.registry
    layers = adapter.decoder_layers(model)       # the decoder's nn.ModuleList
    visual = adapter.visual_token_mask(model, input_ids)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from layerprobe.errors import ModelError


class ModelAdapter:
    family: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()
    # Used only when the processor ships no chat template; "{prompt}" is the user text.
    default_template: ClassVar[str] = "USER: <image>\n{prompt} ASSISTANT:"

    def language_model(self, model: nn.Module) -> nn.Module:
        inner = getattr(model, "model", model)
        lm = getattr(inner, "language_model", None)
        if lm is None:
            raise ModelError(f"{type(model).__name__}: no language_model found under .model")
        return lm

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        layers = getattr(self.language_model(model), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise ModelError(f"{type(model).__name__}: language model has no .layers ModuleList")
        return layers

    def attention_module(self, layer: nn.Module) -> nn.Module:
        attn = getattr(layer, "self_attn", None)
        if attn is None:
            raise ModelError(f"{type(layer).__name__}: decoder layer has no self_attn")
        return attn

    def text_config(self, model: nn.Module):
        return model.config.get_text_config()

    def image_token_id(self, model: nn.Module) -> int:
        cfg = model.config
        for name in ("image_token_id", "image_token_index"):
            value = getattr(cfg, name, None)
            if value is not None:
                return int(value)
        raise ModelError(f"{type(model).__name__}: config has no image_token_id")

    def visual_token_mask(self, model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids == self.image_token_id(model)

    def format_prompt(self, processor: Any, text: str, n_images: int = 1) -> str:
        template = getattr(processor, "chat_template", None)
        if template:
            content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
            return processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        image_tokens = "\n".join(["<image>"] * n_images)
        return self.default_template.replace("<image>", image_tokens).format(prompt=text)

    def processor_inputs(self, processor: Any, images: list, prompts: list[str]) -> dict:
        return processor(images=images, text=prompts, return_tensors="pt", padding=True)
