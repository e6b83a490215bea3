"""A tiny LLaVA whose components carry other names, and the adapter that maps them: the proof
that layerprobe reads a model's structure only through its adapter.

    original, renamed = llava_pair(num_layers=6)   # the same weights; stock names / renamed ones

The renamed model is the tiny LLaVA re-classed in place: its language model is ``text_decoder``,
its decoder layers ``blocks``, the final norm ``final_ln``, the rotary embedding ``rope``, each
layer's attention ``attn`` with projections ``wq/wk/wv/wo`` and scale ``softmax_scale``, the MLP's
output projection ``w_out``. The old names stay readable by transformers' own code only (the
model's forward is transformers' code, so the model computes exactly what the original does);
read from anywhere else, they raise AttributeError, as an attribute that does not exist would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import transformers
from transformers.models.llama import modeling_llama
from transformers.models.llava import modeling_llava

import layerprobe
from layerprobe.models.base import COMPONENT_PATHS
from layerprobe.models.llava import LlavaAdapter
from layerprobe.models.loading import LoadedModel

TRANSFORMERS_DIR = str(Path(transformers.__file__).resolve().parent)

# (class, stock name -> new name) of every renamed component
RENAMES = {
    modeling_llava.LlavaModel: {"language_model": "text_decoder"},
    modeling_llama.LlamaModel: {"layers": "blocks", "norm": "final_ln", "rotary_emb": "rope"},
    modeling_llama.LlamaDecoderLayer: {"self_attn": "attn"},
    modeling_llama.LlamaAttention: {"q_proj": "wq", "k_proj": "wk", "v_proj": "wv", "o_proj": "wo",
                                    "scaling": "softmax_scale"},
    modeling_llama.LlamaMLP: {"down_proj": "w_out"},
}


class RenamedLlavaAdapter(LlavaAdapter):
    family = "renamed_llava"
    architectures = ()  # not in the registry: the test hands it to LoadedModel itself
    component_paths = {**COMPONENT_PATHS, "text_model": "model.text_decoder", "decoder_layers": "blocks",
                       "final_norm": "final_ln", "rotary_embedding": "rope", "attention": "attn",
                       "mlp_output": "mlp.w_out", "query": "wq", "key": "wk", "value": "wv", "output": "wo",
                       "scaling": "softmax_scale"}


def _for_transformers_only(old: str, new: str) -> property:
    def get(self):
        if sys._getframe(1).f_code.co_filename.startswith(TRANSFORMERS_DIR):
            return getattr(self, new)
        raise AttributeError(f"{type(self).__name__}: {old!r} is called {new!r} here")
    return property(get)


_RENAMED_CLASSES: dict[type, type] = {}


def _renamed_class(cls: type) -> type:
    if cls not in _RENAMED_CLASSES:
        props = {old: _for_transformers_only(old, new) for old, new in RENAMES[cls].items()}
        # the same class name: transformers finds the layers whose outputs it records by it
        _RENAMED_CLASSES[cls] = type(cls.__name__, (cls,), {**props, "__module__": cls.__module__})
    return _RENAMED_CLASSES[cls]


def rename(model) -> None:
    """Re-class every module of ``model`` that has renamed components and move them in place."""
    for module in list(model.modules()):
        cls = type(module)
        if cls not in RENAMES:
            continue
        for old, new in RENAMES[cls].items():
            store = module._modules if old in module._modules else module.__dict__
            store[new] = store.pop(old)
        module.__class__ = _renamed_class(cls)


def llava_pair(num_layers: int = 6, attn: str = "sdpa") -> tuple:
    """(original, renamed): two tiny LLaVAs with the same weights (the tiny builders are seeded)."""
    original = layerprobe.load_model(f"tiny:llava:{num_layers}", device="cpu", attn_implementation=attn)
    built = layerprobe.load_model(f"tiny:llava:{num_layers}", device="cpu", attn_implementation=attn)
    rename(built.model)
    return original, LoadedModel(built.model, built.processor, RenamedLlavaAdapter(), "renamed-llava")
