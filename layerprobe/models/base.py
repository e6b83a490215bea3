"""What a model family adapter owns: every component of the model that layerprobe touches, which
tokens are visual, and how a question becomes a prompt. One subclass per family, looked up by HF
architecture name; nothing outside ``layerprobe/models/`` reads a model's structure.

    adapter = adapter_for(model.config)          # from layerprobe.models.registry
    layers = adapter.decoder_layers(model)       # the decoder's nn.ModuleList
    attn = adapter.attention_module(layers[3])   # its attention module; scaling, projections:
    adapter.attention_scaling(attn), adapter.projection(attn, "value")
    adapter.final_norm(model), adapter.lm_head(model), adapter.vision_input_size(model)
    visual = adapter.visual_token_mask(model, input_ids)

The component map, ``component_paths``, says where each module lives as a dotted attribute path;
a family whose modules carry other names overrides the entries that differ (Idefics3's language
model is ``model.text_model``), and the contract test (``tests/test_components.py``) resolves every
component of every registered family on its tiny model and checks its shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from layerprobe.compat import cache_layers, rotary_embeddings
from layerprobe.errors import ConfigError, ModelError

GRID_FAMILIES = ("llava", "llava_next", "llava_onevision")


# Where each component is, as a dotted attribute path from its owner: the model (text_model,
# vision_input_size), the language model (decoder_layers, final_norm, rotary_embedding), a decoder
# layer (attention, mlp_output) or its attention module (the projections, scaling).
COMPONENT_PATHS: dict[str, str] = {
    "text_model": "model.language_model",
    "decoder_layers": "layers",
    "final_norm": "norm",
    "rotary_embedding": "rotary_emb",
    "attention": "self_attn",
    "mlp_output": "mlp.down_proj",
    "query": "q_proj",
    "key": "k_proj",
    "value": "v_proj",
    "output": "o_proj",
    "scaling": "scaling",
    "vision_input_size": "config.vision_config.image_size",
}
PROJECTIONS = ("query", "key", "value", "output")


class ModelAdapter:
    family: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()
    component_paths: ClassVar[dict[str, str]] = COMPONENT_PATHS
    # Used only when the processor ships no chat template; "{prompt}" is the user text.
    default_template: ClassVar[str] = "USER: <image>\n{prompt} ASSISTANT:"
    # Why the fast sweep engine is not exact for this family (it then falls back to naive).
    fast_sweep_reason: ClassVar[str | None] = None
    # Processors that want one list of images per prompt (Gemma 3, SmolVLM).
    nested_images: ClassVar[bool] = False

    # components ---------------------------------------------------------------------------
    def component(self, owner, name: str):
        """``owner``'s component ``name``, found along its path in ``component_paths``."""
        path = self.component_paths[name]
        value = owner
        for attr in path.split("."):
            value = getattr(value, attr, None)
            if value is None:
                raise ModelError(f"{type(owner).__name__}: no {name} at .{path} (the {self.family or 'model'} "
                                 f"adapter's component_paths)")
        return value

    def text_model(self, model: nn.Module) -> nn.Module:
        """The language model: decoder layers, final norm and rotary embedding(s)."""
        return self.component(model, "text_model")

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        layers = self.component(self.text_model(model), "decoder_layers")
        if not isinstance(layers, nn.ModuleList):
            raise ModelError(f"{type(model).__name__}: the language model's decoder layers are not an nn.ModuleList")
        return layers

    def attention_module(self, layer: nn.Module) -> nn.Module:
        return self.component(layer, "attention")

    def attention_scaling(self, attention: nn.Module) -> float:
        """The factor the attention module's query-key scores are multiplied by before the softmax."""
        return float(self.component(attention, "scaling"))

    def projection(self, attention: nn.Module, which: str) -> nn.Module:
        """The attention module's ``query``, ``key``, ``value`` or ``output`` projection."""
        if which not in PROJECTIONS:
            raise ValueError(f"projection {which!r}: one of {', '.join(PROJECTIONS)}")
        return self.component(attention, which)

    def mlp_output_projection(self, layer: nn.Module) -> nn.Module:
        """The projection that writes a decoder layer's MLP back into the residual stream."""
        return self.component(layer, "mlp_output")

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm between the last decoder layer and the LM head."""
        return self.component(self.text_model(model), "final_norm")

    def lm_head(self, model: nn.Module) -> nn.Module:
        head = model.get_output_embeddings()
        if head is None:
            raise ModelError(f"{type(model).__name__}: no LM head (get_output_embeddings() is None)")
        return head

    def token_embeddings(self, model: nn.Module) -> nn.Module:
        return model.get_input_embeddings()

    def position_embeddings(self, model: nn.Module, x: torch.Tensor, position_ids: torch.Tensor, layer: int):
        """The (cos, sin) that decoder layer ``layer`` is given, for callers running layers directly."""
        return rotary_embeddings(self.component(self.text_model(model), "rotary_embedding"), x, position_ids)

    def vision_input_size(self, model: nn.Module) -> int:
        """The side in pixels of the square image the vision tower takes (336 for LLaVA-1.5)."""
        try:
            size = self.component(model, "vision_input_size")
        except ModelError:
            raise ConfigError(f"model family {self.family!r}: its vision tower takes images of no fixed size") from None
        if isinstance(size, (list, tuple)) and len(set(size)) == 1:  # (height, width) of a square
            size = size[0]
        if isinstance(size, bool) or not isinstance(size, int):
            raise ModelError(f"{type(model).__name__}: vision input size {size!r} is not one side in pixels")
        return size

    def cached_keys_values(self, cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the (keys, values) a forward's key/value cache holds: (B, heads, T, head_dim)."""
        return cache_layers(cache)

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
