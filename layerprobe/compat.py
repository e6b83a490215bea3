"""Every transformers internal layerprobe relies on, behind one small surface, so that an
upstream rename is fixed here and nowhere else. Public transformers API (``from_pretrained``,
``generate``, ``LogitsProcessor``, config classes) is used directly; what follows is not public,
or changed shape inside the supported range (``transformers>=5.18,<6``, see ``pyproject.toml``).

Shielded here, and the releases where each form appears:

* The cache keyword of model and decoder-layer ``forward``: ``past_key_values`` up to 5.23,
  ``cache`` from 5.24 (the old name stays a deprecated alias until 5.40). Read off the
  module's own signature (``cache_keyword``), never assumed.
* The cache attribute of model outputs: ``past_key_values`` up to 5.23, ``cache`` from 5.24
  (``output_cache``).
* ``DynamicCache`` storage: per-layer ``cache.layers[i].keys`` / ``.values`` (5.18+;
  ``cache_layer``, ``cache_layers``; the model adapters hand them on as a component). A
  cache-like object handed to a decoder layer needs ``update(key, value, layer_idx, *args)``
  and ``get_seq_length``; the extra arguments (``cache_kwargs`` with ``cache_position`` before
  5.24) are ignored.
* ``position_ids`` as the language model's forward keyword (5.18+; ``captured_kwargs``).
* ``PreTrainedModel.set_attn_implementation`` with its dict form ``{"text_config": name}``
  and ``config._attn_implementation`` (5.18+; ``set_text_attention``, ``text_attention``).
* ``AttentionInterface`` / ``AttentionMaskInterface``: ``register`` and the stock functions in
  ``_global_mapping``; the attention-function call ``fn(module, query, key, value,
  attention_mask, **kwargs)`` with key/value after RoPE and cache update (5.18+;
  ``register_attention``, ``stock_attention``).
* ``sdpa_attention_forward`` from ``transformers.integrations.sdpa_attention`` and each
  family's ``eager_attention_forward`` in its modeling module (5.18+; ``eager_attention_for``).
* Rotary embeddings: ``rotary_emb(x, position_ids=...)``, and Gemma 3's per-layer-type
  ``rotary_emb(x, position_ids, layer_type)`` (5.18+; ``rotary_embeddings``).
* Processor internals the tiny builders use: ``ProcessorMixin.get_attributes`` (to build a
  processor without its torchvision-only video processor) and ``PreTrainedTokenizerFast
  ._tokenizer`` (to install a BOS post-processor) (5.18+; ``processor_without_video``,
  ``set_post_processor``).

One torch internal sits here too, for the same reason: ``attention_with_lse`` calls
``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu``, the CPU kernel behind
``scaled_dot_product_attention``, for the log-sum-exp of each row that the public function keeps
to itself (where the op is missing it answers None and the caller takes its fallback).

How many positions a forward call already has cached is deliberately *not* read from any
keyword: the attention call itself shows it (key length minus query length), see
``layerprobe.core.dispatch``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from typing import Callable

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

__all__ = [
    "cache_keyword", "output_cache", "cache_layer", "cache_layers", "captured_kwargs", "call_decoder_layer",
    "set_text_attention", "text_attention", "register_attention", "stock_attention",
    "sdpa_attention_forward", "eager_attention_for", "rotary_embeddings", "processor_without_video",
    "set_post_processor", "attention_with_lse",
]


# caches -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _cache_keyword_of(forward) -> str:
    params = inspect.signature(forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise TypeError(f"{forward.__qualname__} takes neither 'cache' nor 'past_key_values'")


def cache_keyword(module: torch.nn.Module) -> str:
    """The name under which ``module.forward`` takes its key/value cache."""
    return _cache_keyword_of(type(module).forward)


def output_cache(output):
    """The key/value cache a model output carries (``use_cache=True``)."""
    fields = getattr(output, "__dataclass_fields__", {})
    return output.cache if "cache" in fields else output.past_key_values


def cache_layer(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values) that ``cache`` holds for decoder layer ``layer``: (B, heads, T, head_dim)."""
    entry = cache.layers[layer]
    return entry.keys, entry.values


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of every decoder layer ``cache`` holds."""
    return [(entry.keys, entry.values) for entry in cache.layers]


# forward calls ----------------------------------------------------------------------------
@contextlib.contextmanager
def captured_kwargs(module: torch.nn.Module, *names: str):
    """Records the named keyword arguments of ``module``'s next forward calls into a dict."""
    seen: dict = {}

    def grab(_module, _args, kwargs):
        seen.update({n: kwargs.get(n) for n in names})

    handle = module.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def call_decoder_layer(layer: torch.nn.Module, hidden, *, attention_mask, position_embeddings,
                       position_ids, cache) -> torch.Tensor:
    """One decoder layer on ``hidden`` with ``cache`` under the layer's own keyword name."""
    out = layer(hidden, attention_mask=attention_mask, position_embeddings=position_embeddings,
                position_ids=position_ids, use_cache=True, **{cache_keyword(layer): cache})
    return out[0] if isinstance(out, tuple) else out


def rotary_embeddings(rotary: torch.nn.Module, x, position_ids, layer_type: str | None = None):
    """(cos, sin) for ``position_ids``; ``layer_type`` for families with per-type rotary tables."""
    if layer_type is None:
        return rotary(x, position_ids=position_ids)
    return rotary(x, position_ids, layer_type)


# attention backends -----------------------------------------------------------------------
def text_attention(config) -> str | None:
    """The attention implementation a (text) config is set to."""
    return config._attn_implementation


def set_text_attention(model, name: str) -> None:
    """Switch the language model's attention implementation, leaving the vision tower's alone."""
    model.set_attn_implementation({"text_config": name})


def register_attention(name: str, fn: Callable, like: str) -> None:
    """Register ``fn`` as attention implementation ``name``, with the mask function of ``like``
    (without one under the same name, transformers silently passes no mask at all)."""
    AttentionInterface.register(name, fn)
    AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping[like])


def stock_attention(name: str) -> Callable:
    """transformers' own attention function registered under ``name``."""
    return AttentionInterface._global_mapping[name]


def eager_attention_for(module: torch.nn.Module) -> Callable:
    """The eager attention function of ``module``'s own modeling file: what "eager" means for
    that family (some scale, soft-cap or add sinks differently)."""
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        from transformers.models.llama.modeling_llama import eager_attention_forward as fn
    return fn


def attention_with_lse(query, key, value, mask, scale: float):
    """(output, log-sum-exp of each row's scaled scores) of softmax attention, or None where no
    kernel gives the second: ``query`` (B, H, q, d), ``key``/``value`` (B, H, k, d), ``mask`` None
    or additive in the query's dtype, broadcast to (B, H, q, k). The log-sum-exp is float32, and
    undefined (the kernel writes 0) for a row that the mask blocks entirely."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or query.device.type != "cpu" or query.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    out, lse = op(query, key, value, 0.0, False, attn_mask=mask, scale=scale)
    return out, lse


# processors -------------------------------------------------------------------------------
def processor_without_video(processor_cls, **kwargs):
    """``processor_cls`` built without its video processor, whose class needs torchvision."""

    class ImagesOnly(processor_cls):
        @classmethod
        def get_attributes(cls):
            return [a for a in super().get_attributes() if a != "video_processor"]

    ImagesOnly.__name__ = processor_cls.__name__
    processor = ImagesOnly(video_processor=None, **kwargs)
    processor.video_processor = None
    return processor


def set_post_processor(tokenizer, post_processor) -> None:
    """Install a ``tokenizers`` post-processor (e.g. BOS insertion) on a fast tokenizer."""
    tokenizer._tokenizer.post_processor = post_processor
