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

from layerprobe.compat import rotary_embeddings
from layerprobe.errors import ConfigError, ModelError

GRID_FAMILIES = ("llava", "llava_next", "llava_onevision")


class ModelAdapter:
    family: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()
    # Used only when the processor ships no chat template; "{prompt}" is the user text.
    default_template: ClassVar[str] = "USER: <image>\n{prompt} ASSISTANT:"
    # Why the fast sweep engine is not exact for this family (it then falls back to naive).
    fast_sweep_reason: ClassVar[str | None] = None
    # Processors that want one list of images per prompt (Gemma 3, SmolVLM).
    nested_images: ClassVar[bool] = False

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

    def rotary_embeddings(self, lm: nn.Module, x: torch.Tensor, position_ids: torch.Tensor, layer: int):
        """The (cos, sin) that decoder layer ``layer`` is given, for callers running layers directly."""
        return rotary_embeddings(lm.rotary_emb, x, position_ids)

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

    def question_tokens(self, processor: Any, prompts: list[str], questions: list[str],
                        input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: each question's own tokens in the encoded, left-padded batch. The question
        is found as text in its formatted prompt (after the image placeholder); the prompt's tail
        from there is tokenized alone and must equal the end of the row, since text after an
        image placeholder is tokenized on its own. Tokenizers whose first token takes in the
        preceding space or newline get up to three characters of context."""
        tok = getattr(processor, "tokenizer", processor)
        out = torch.zeros_like(input_ids, dtype=torch.bool)
        for b, (prompt, question) in enumerate(zip(prompts, questions)):
            start = prompt.rfind(question) if question else -1
            if start < 0:
                raise ConfigError(f"question {question!r}: not found in its formatted prompt, so its tokens "
                                  "cannot be located (use edges='image->prompt')")
            row = input_ids[b].tolist()
            for lead in range(4):
                s0 = max(0, start - lead)
                try:
                    enc = tok(prompt[s0:], add_special_tokens=False, return_offsets_mapping=True)
                except NotImplementedError:
                    raise ConfigError(f"{type(tok).__name__}: locating the question needs a fast tokenizer "
                                      "(character offsets); use edges='image->prompt'") from None
                ids = enc["input_ids"]
                if 0 < len(ids) <= len(row) and row[len(row) - len(ids):] == ids:
                    first, q_end = len(row) - len(ids), start - s0 + len(question)
                    for i, (a, e) in enumerate(enc["offset_mapping"]):
                        out[b, first + i] = e > start - s0 and a < q_end and e > a
                    break
                if s0 == 0:
                    break
            if not out[b].any():  # no context length made the tail's tokens match the row
                raise ConfigError(f"question {question!r}: its tokens do not match the end of the encoded "
                                  f"prompt for {type(tok).__name__}; use edges='image->prompt'")
        return out

    # image geometry -----------------------------------------------------------------------
    def base_grid_side(self, model: nn.Module) -> int:
        """Side of the square patch grid of one base image, whose tokens are a sample's first
        side**2 visual tokens in row-major order (what ViCrop and the attention heatmaps read)."""
        raise ConfigError(f"model family {self.family!r}: its visual tokens form no square base grid known to "
                          f"layerprobe (ViCrop and attention heatmaps support {', '.join(GRID_FAMILIES)})")

    def grid_region(self, image) -> tuple[int, int, int, int]:
        """(x0, y0, width, height): the part of ``image`` the base grid covers."""
        return 0, 0, *image.size

    def processor_inputs(self, processor: Any, images: list, prompts: list[str]) -> dict:
        if self.nested_images and images:
            per = len(images) // len(prompts)
            images = [images[i * per:(i + 1) * per] for i in range(len(prompts))]
        return processor(images=images, text=prompts, return_tensors="pt", padding=True)


def marked_spans(input_ids: torch.Tensor, start_id: int, end_id: int) -> torch.Tensor:
    """(B, T) bool: every position from a ``start_id`` token through its ``end_id`` token."""
    start, end = input_ids == start_id, input_ids == end_id
    depth = start.long().cumsum(-1) - end.long().cumsum(-1)
    return (depth > 0) | end


def around_runs(image: torch.Tensor, before: int = 0, after: int = 0, max_gap: int = 0) -> torch.Tensor:
    """(B, T) bool: each run of ``image`` positions (runs at most ``max_gap`` tokens apart merged)
    widened by ``before``/``after`` positions, for layouts whose image markers have no config id."""
    out = image.clone()
    for b in range(image.shape[0]):
        idx = image[b].nonzero().flatten()
        if idx.numel() == 0:
            continue
        breaks = (idx[1:] - idx[:-1] - 1) > max_gap
        starts = torch.cat([idx[:1], idx[1:][breaks]]).tolist()
        ends = torch.cat([idx[:-1][breaks], idx[-1:]]).tolist()
        for s, e in zip(starts, ends):
            out[b, max(0, s - before): e + after + 1] = True
    return out


def square_grid_side(model: nn.Module) -> int:
    """image_size // patch_size of the vision tower (24 for LLaVA at 336 px, patch 14)."""
    vision = getattr(model.config, "vision_config", None)
    size, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    if not isinstance(size, int) or not isinstance(patch, int):
        raise ConfigError(f"{type(model).__name__}: vision_config has no integer image_size/patch_size")
    return size // patch
