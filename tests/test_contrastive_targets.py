"""Each contrastive-attention target against a hand-written eager reference that edits the review
layer directly: the attention target adds log(scale) to text queries' scores on the suppressed keys
(prefill and decode), values scales their value states, hidden their input hidden states (both in
prefill). The suppressed set comes from the method's own record; the edit is what is checked."""

from __future__ import annotations

import math

import pytest
import torch

from layerprobe.compat import eager_attention_for, register_attention, set_text_attention
from layerprobe.methods.contrastive import contrastive_attention
from layerprobe_testing import QUESTIONS, make_images

pytestmark = pytest.mark.core

PROFILE = {"fusion_layers": [2, 4, 8, 11], "review_layer": 29, "post_integrated_layer": 28}
SCALE = 0.3
STEPS = 4
_REFERENCE: dict = {}


def _reference_attention(module, query, key, value, attention_mask, **kwargs):
    ref = _REFERENCE.get(module)
    if ref is not None:
        suppressed, last_visual, valid = ref
        kv, q = key.shape[2], query.shape[2]
        pos = torch.arange(kv - q, kv)
        padded_valid = torch.ones(valid.shape[0], kv, dtype=torch.bool)
        padded_valid[:, : valid.shape[1]] = valid
        text_query = (pos[None] > last_visual[:, None]) & padded_valid[:, kv - q:]
        keys = torch.zeros(valid.shape[0], kv, dtype=torch.bool)
        keys[:, : suppressed.shape[1]] = suppressed
        bias = torch.where(text_query[:, :, None] & keys[:, None, :], math.log(SCALE), 0.0)
        attention_mask = attention_mask + bias[:, None].to(attention_mask.dtype)
    return eager_attention_for(module)(module, query, key, value, attention_mask, **kwargs)


register_attention("layerprobe_test_reference", _reference_attention, like="eager")


def _suppressed(loaded, inputs, records) -> torch.Tensor:
    visual = loaded.adapter.visual_token_mask(loaded.model, inputs["input_ids"])
    mask = torch.zeros_like(visual)
    for b, rec in enumerate(records):
        mask[b, visual[b]] = torch.tensor(rec["maps"]["suppressed"])
    return mask


def _run(loaded, inputs):
    with torch.no_grad():
        logits = loaded.model(**inputs).logits
        out = loaded.model.generate(**inputs, max_new_tokens=STEPS, do_sample=False)
    return logits, out


def _reference(loaded, inputs, target, suppressed):
    T = inputs["input_ids"].shape[1]
    layer = loaded.decoder_layers[PROFILE["review_layer"]]
    handles = []

    def prefill_only(x):
        return x.shape[1] == T

    if target == "hidden":
        def pre(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if not prefill_only(hidden):
                return None
            hidden = hidden * torch.where(suppressed, SCALE, 1.0)[..., None]
            return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    elif target == "values":
        def post(module, args, output):
            return output * torch.where(suppressed, SCALE, 1.0)[..., None] if prefill_only(output) else None
        handles.append(layer.self_attn.v_proj.register_forward_hook(post))
    else:
        visual = loaded.adapter.visual_token_mask(loaded.model, inputs["input_ids"])
        positions = torch.arange(T)
        last_visual = torch.where(visual, positions, -1).max(1).values
        _REFERENCE[layer.self_attn] = (suppressed, last_visual, inputs["attention_mask"].bool())
        set_text_attention(loaded.model, "layerprobe_test_reference")
    try:
        return _run(loaded, inputs)
    finally:
        for h in handles:
            h.remove()
        _REFERENCE.clear()
        set_text_attention(loaded.model, "eager")


@pytest.mark.parametrize("family", ["llava", "llava_next"])
@pytest.mark.parametrize("target", ["attention", "values", "hidden"])
def test_target_equals_a_hand_edited_eager_review_layer(tiny_models, family, target):
    loaded = tiny_models(family, "eager")
    inputs = loaded.encode(make_images(3, seed=2), QUESTIONS[:3])
    plain_logits, plain = _run(loaded, inputs)
    with contrastive_attention(loaded, PROFILE, scale=SCALE, target=target, keep_maps=True) as ca:
        logits, out = _run(loaded, inputs)
    suppressed = _suppressed(loaded, inputs, ca.records[:3])
    assert suppressed.any()
    ref_logits, ref_out = _reference(loaded, inputs, target, suppressed)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(out, ref_out)
    assert (logits - plain_logits).abs().max() > 1e-4  # the edit did something to compare


def test_records_say_where_the_attention_went(tiny_models):
    """attention_mass: at the post-integrated and the review layer, the share of the last prompt
    token's attention on suppressed and kept visual tokens, and the suppressed share of the map."""
    loaded = tiny_models("llava", "eager")
    inputs = loaded.encode(make_images(2, seed=5), QUESTIONS[:2])
    with contrastive_attention(loaded, PROFILE, scale=0.0, target="attention") as ca:
        _run(loaded, inputs)
    record = ca.records[0]["attention_mass"]
    assert set(record) == {"post", "review"}
    for where in record.values():
        assert 0 <= where["suppressed"] <= where["suppressed"] + where["kept"] <= 1 + 1e-6
        assert 0 <= where["suppressed_share_mean"] <= 1 and 0 <= where["suppressed_share_mass"] <= 1
    # below the percentile of contrast, not of attention: the share can be anything, but it is a share
    assert record["post"]["suppressed_share_mean"] < 1
