"""The adapters' component map, held against each family's real model: for every registered
adapter on its tiny model (and for the renamed-components LLaVA), every component resolves and
has the shape the text config says; the rotary embedding gives each decoder layer exactly the
(cos, sin) the model gives it, and the key/value cache holds each layer's keys and values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import layerprobe
from layerprobe.compat import captured_kwargs, output_cache
from layerprobe.errors import ConfigError, ModelError
from layerprobe.models.registry import FAMILY_ADAPTERS
from layerprobe.models.tiny import BUILDERS
from layerprobe_testing import QUESTIONS, make_images
from renamed_model import llava_pair

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers

REGISTERED_FAMILIES = [cls.family for cls in FAMILY_ADAPTERS]


def test_every_registered_family_has_a_tiny_model():
    assert sorted(REGISTERED_FAMILIES) == sorted(BUILDERS)


def _loaded(family):
    if family == "renamed_llava":
        return llava_pair(3)[1]
    return layerprobe.load_model(f"tiny:{family}:3", device="cpu")


def _sizes(config):
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.hidden_size, heads, getattr(config, "num_key_value_heads", None) or heads, head_dim


@pytest.mark.parametrize("family", REGISTERED_FAMILIES + ["renamed_llava"])
def test_every_component_resolves_with_its_shape(family):
    loaded = _loaded(family)
    model, adapter = loaded.model, loaded.adapter
    config = adapter.text_config(model)
    hidden, heads, kv_heads, head_dim = _sizes(config)
    text_model, layers = adapter.text_model(model), adapter.decoder_layers(model)
    assert isinstance(layers, nn.ModuleList) and len(layers) == config.num_hidden_layers == 3
    assert any(m is layers for m in text_model.modules())
    scale = (getattr(config, "query_pre_attn_scalar", None) or head_dim) ** -0.5
    for layer in layers:
        attention = adapter.attention_module(layer)
        assert any(m is attention for m in layer.modules())
        assert adapter.attention_scaling(attention) == pytest.approx(scale)
        shapes = {which: tuple(adapter.projection(attention, which).weight.shape)
                  for which in ("query", "key", "value", "output")}
        assert shapes == {"query": (heads * head_dim, hidden), "key": (kv_heads * head_dim, hidden),
                          "value": (kv_heads * head_dim, hidden), "output": (hidden, heads * head_dim)}
        assert adapter.mlp_output_projection(layer).weight.shape[0] == hidden
    x = torch.randn(2, hidden)
    normed = adapter.final_norm(model)(x)
    assert normed.shape == x.shape and not torch.allclose(normed, x)
    vocab = adapter.token_embeddings(model).weight.shape[0]
    assert tuple(adapter.lm_head(model).weight.shape) == (vocab, hidden) and vocab >= config.vocab_size - 64
    size = getattr(model.config.vision_config, "image_size", None)
    if size is None:  # Qwen2-VL's tower takes any size (a number of patches)
        with pytest.raises(ConfigError, match=f"^model family '{family}': its vision tower takes images of no fixed"):
            adapter.vision_input_size(model)
    else:
        assert adapter.vision_input_size(model) == (size[0] if isinstance(size, list) else size) > 0

    inputs = loaded.encode(make_images(2), QUESTIONS[:2])
    given = {}

    def record(j):
        def hook(module, args, kwargs):
            given[j] = kwargs["position_embeddings"]
        return hook

    handles = [layer.register_forward_pre_hook(record(j), with_kwargs=True) for j, layer in enumerate(layers)]
    try:
        with torch.no_grad(), captured_kwargs(text_model, "position_ids") as captured:
            out = model(**inputs, use_cache=True, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    B, T = inputs["input_ids"].shape
    positions = captured["position_ids"]
    if positions is None:  # the language model numbers the positions itself, as the fast engine does
        positions = torch.arange(T)[None].expand(B, T)
    for j in range(len(layers)):
        ours = adapter.position_embeddings(model, out.hidden_states[j], positions, j)
        for mine, theirs in zip(ours, given[j]):  # theirs may hold one row for the whole batch
            assert torch.equal(*torch.broadcast_tensors(mine, theirs)), f"layer {j}"
    kv = adapter.cached_keys_values(output_cache(out))
    assert len(kv) == len(layers)
    assert all(k.shape == v.shape == (B, kv_heads, T, head_dim) for k, v in kv)


def test_a_missing_component_names_where_it_was_looked_for():
    loaded = layerprobe.load_model("tiny:llava:2", device="cpu")
    with pytest.raises(ModelError, match=r"^LlamaAttention: no scaling at \.softmax_scale \(the renamed_llava "
                                         r"adapter's component_paths\)$"):
        llava_pair(2)[1].adapter.attention_scaling(loaded.adapter.attention_module(loaded.decoder_layers[0]))
