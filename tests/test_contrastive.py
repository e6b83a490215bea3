"""Contrastive attention: exact last-row attention without output_attentions, the selection rules
against direct formulas, bit-identity at scale=1, and suppression exactly where and when promised."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import layerprobe
from layerprobe.errors import ConfigError, ProfileError
from layerprobe.core.attention_rows import LastRowRecorder, last_row_probs, visual_distribution
from layerprobe.methods.contrastive import (
    choose_pre_layer, contrastive_attention, hellinger, low_contrast, profile_layers,
)
from layerprobe.core.dispatch import controller
from layerprobe.core.generation import generate_answers
from layerprobe_testing import LLAVA_FAMILIES, QUESTIONS, make_images

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers

PROFILE = {"fusion_layers": [2, 4, 8, 11], "review_layer": 29, "post_integrated_layer": 28}


def _inputs(loaded, n=4):
    return loaded.encode(make_images(n), QUESTIONS[:n])


def _record(loaded, inputs, layers):
    with torch.no_grad(), controller(loaded).observe(LastRowRecorder(layers)) as rec:
        loaded.model(**inputs)
    return rec


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_last_row_attention_equals_eager_output_attentions(tiny_models, family):
    sdpa, eager = tiny_models(family, "sdpa"), tiny_models(family, "eager")
    inputs = _inputs(sdpa)
    assert not inputs["attention_mask"].all() or family == "llava"  # LLaVA-1.6 batch is padded
    with torch.no_grad():
        ref = eager.model(**inputs, output_attentions=True).attentions
    rec = _record(sdpa, inputs, {0, 2, 28, 31})
    visual = rec.layout.visual
    for layer in (0, 2, 28, 31):
        row = ref[layer][:, :, -1].float()
        probs = last_row_probs(rec.scores[layer], rec.layout.valid)
        err = (probs - row).abs().max().item()
        print(f"{family} layer {layer}: max |recomputed - eager| = {err:.2e}")
        assert err < 1e-5
        # a softmax restricted to the visual keys = the eager row renormalised over them, per head
        renorm = row * visual[:, None] / (row * visual[:, None]).sum(-1, keepdim=True)
        per_head = visual_distribution(rec.scores[layer], visual, "mean")
        assert (per_head - renorm.mean(1)).abs().max() < 1e-5
        mass = visual_distribution(rec.scores[layer], visual, "mass", rec.layout.valid)
        head_mean = row.mean(1) * visual
        assert (mass - head_mean / head_mean.sum(-1, keepdim=True)).abs().max() < 1e-5


def test_padded_batch_rows_equal_single_sample_rows(tiny_models):
    loaded = tiny_models("llava_next")
    images = make_images(3)
    batch = _record(loaded, loaded.encode(images, QUESTIONS[:3]), {8})
    for i in range(3):
        one = _record(loaded, loaded.encode([images[i]], [QUESTIONS[i]]), {8})
        d_batch = visual_distribution(batch.scores[8][i:i + 1], batch.layout.visual[i:i + 1])
        d_one = visual_distribution(one.scores[8], one.layout.visual)
        assert torch.allclose(d_batch[batch.layout.visual[i:i + 1]], d_one[one.layout.visual], atol=1e-5)


def test_distribution_stays_defined_where_the_mask_hides_the_image(tiny_models):
    """A knocked-out layer (like the organism's non-planted post-integrated layer) masks every
    visual key: renormalising the model's attention there is 0/0; the raw-score distribution is the
    same as without the mask, since the mask does not change that layer's queries and keys."""
    loaded = tiny_models("llava")
    inputs = _inputs(loaded)
    free = _record(loaded, inputs, {28})
    with layerprobe.knockout(loaded, layers=[28]):
        masked = _record(loaded, inputs, {28})
    visual = masked.layout.visual
    blocked = controller(loaded).blocked  # nothing active any more: check the mass view directly
    assert blocked(28, masked.layout, torch.tensor([visual.shape[1] - 1])) is None
    allowed = masked.layout.valid & ~visual
    assert (last_row_probs(masked.scores[28], allowed) * visual[:, None]).sum() == 0
    dist = visual_distribution(masked.scores[28], visual, "mean")
    assert torch.allclose(dist.sum(-1), torch.ones(dist.shape[0]))
    assert torch.equal(dist, visual_distribution(free.scores[28], visual, "mean"))
    fallback = visual_distribution(masked.scores[28], visual, "mass", allowed)
    assert torch.allclose(fallback, dist)


def test_hellinger_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(50), size=3), rng.dirichlet(np.ones(50), size=3)
    direct = np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(-1))
    assert np.allclose(hellinger(torch.tensor(p), torch.tensor(q)).numpy(), direct, atol=1e-12)
    assert hellinger(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(1.0)
    assert hellinger(torch.tensor(p[0]), torch.tensor(p[0])).item() == pytest.approx(0.0, abs=1e-12)
    # 1 - Bhattacharyya coefficient identity
    bc = np.sqrt(p * q).sum(-1)
    assert np.allclose(direct ** 2, 1 - bc)


def test_pre_layer_is_the_farthest_fusion_layer_ties_to_the_lowest():
    post = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    fusion = torch.tensor([
        [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]],   # layer a: sample 0 identical, sample 1 far
        [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],   # layer b: sample 0 far, sample 1 ties with a
        [[0.4, 0.6, 0.0], [0.2, 0.3, 0.5]],
    ])
    choice, distances = choose_pre_layer(fusion, post)
    assert choice.tolist() == [1, 0]  # sample 1: a tie between 0 and 1 goes to the first
    assert distances[1, 0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("percentile", [5, 20, 37.5, 80])
def test_percentile_selection_matches_numpy(percentile):
    gen = torch.Generator().manual_seed(1)
    contrast = torch.rand(3, 40, generator=gen)
    visual = torch.zeros(3, 40, dtype=torch.bool)
    visual[0, 5:30], visual[1, :], visual[2, 10:13] = True, True, True
    mask, thresholds = low_contrast(contrast, visual, percentile)
    for b in range(3):
        values = contrast[b, visual[b]].double().numpy()
        threshold = np.percentile(values, percentile)
        assert thresholds[b].item() == pytest.approx(threshold, abs=1e-12)
        expected = visual[b].numpy() & (contrast[b].double().numpy() < threshold)
        assert np.array_equal(mask[b].numpy(), expected)
    assert not mask[~visual].any()


def test_percentile_ties_keep_tokens_equal_to_the_threshold():
    contrast = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    visual = torch.ones_like(contrast, dtype=torch.bool)
    mask, _ = low_contrast(contrast, visual, 20)
    assert mask.sum().item() == 0  # threshold 0 (first sample) and 3 (second): nothing strictly below


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("target", ["attention", "values", "hidden"])
def test_scale_one_is_bit_identical_to_plain_generation(tiny_models, family, attn, target):
    loaded = tiny_models(family, attn)
    inputs = _inputs(loaded)
    with torch.no_grad():
        plain_logits = loaded.model(**inputs).logits
        plain = loaded.model.generate(**inputs, max_new_tokens=5, do_sample=False)
        with contrastive_attention(loaded, PROFILE, scale=1.0, target=target) as ca:
            logits = loaded.model(**inputs).logits
            out = loaded.model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert torch.equal(plain_logits, logits)
    assert torch.equal(plain, out)
    assert len(ca.records) == 8  # one record per sample per prefill; decode steps add none
    assert all(r["n_suppressed"] > 0 for r in ca.records)


def _review_inputs(loaded, inputs, **kw):
    """Inputs of the review layer at every forward call, as the layer receives them (the hidden
    target unless another is asked for)."""
    seen = []
    if kw:
        kw.setdefault("target", "hidden")
    ctx = contrastive_attention(loaded, PROFILE, **kw) if kw else contextlib.nullcontext()
    with torch.no_grad(), ctx as ca:
        # registered after the method's own hook, so it sees the suppressed states
        hook = loaded.decoder_layers[29].register_forward_pre_hook(lambda m, a, k: seen.append(
            (a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
        try:
            loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        finally:
            hook.remove()
    return seen, ca


def test_suppression_scales_exactly_the_low_contrast_tokens_in_prefill_only(tiny_models):
    loaded = tiny_models("llava_next")
    inputs = _inputs(loaded)
    plain, _ = _review_inputs(loaded, inputs)
    seen, ca = _review_inputs(loaded, inputs, scale=0.25, keep_maps=True)
    ratio = seen[0] / plain[0]
    touched = (ratio - 1).abs().amax(-1) > 1e-6
    assert torch.allclose(ratio[touched], torch.full_like(ratio[touched], 0.25), atol=1e-5)
    visual = inputs["input_ids"] == loaded.model.config.image_token_id
    assert not touched[~visual].any()
    for b, rec in enumerate(ca.records):
        assert touched[b].sum().item() == rec["n_suppressed"]
        n_visual = int(visual[b].sum())
        assert rec["n_visual"] == n_visual
        assert abs(rec["n_suppressed"] - 0.2 * n_visual) <= 1 + 0.05 * n_visual
        assert rec["pre_layer"] == int(max(rec["hellinger"], key=rec["hellinger"].get))
        assert sum(rec["maps"]["suppressed"]) == rec["n_suppressed"]
    assert all(s.shape[1] == 1 for s in seen[1:])  # decode steps: one token, untouched by us


def _review_attention(loaded, inputs, **kw):
    got = {}
    attn = loaded.decoder_layers[29].self_attn
    with torch.no_grad(), contrastive_attention(loaded, PROFILE, **kw) as ca:
        hook = attn.register_forward_hook(lambda m, a, o: got.update(out=o[0].clone()))
        try:
            logits = loaded.model(**inputs).logits
        finally:
            hook.remove()
    return got["out"], logits, ca


def test_hidden_scaling_passes_the_review_norm_values_scaling_does_not(tiny_models):
    """Pre-norm layers normalise each token before its keys and values: scaling its hidden state by
    s > 0 leaves the review layer's attention as it was (to RMSNorm's eps); target='values' acts there."""
    loaded = tiny_models("llava")
    inputs = _inputs(loaded)
    plain, plain_logits, _ = _review_attention(loaded, inputs, scale=1.0)
    hidden, hidden_logits, _ = _review_attention(loaded, inputs, scale=0.5, target="hidden")
    values, values_logits, ca = _review_attention(loaded, inputs, scale=0.5, target="values")
    same, same_logits, _ = _review_attention(loaded, inputs, scale=1.0, target="values")
    print(f"review attention change: hidden {(hidden - plain).abs().max():.2e}, values {(values - plain).abs().max():.2e}")
    assert (hidden - plain).abs().max() < 1e-4
    assert (hidden_logits - plain_logits).abs().max() > 1e-4  # the residual stream carries it on
    assert (values - plain).abs().max() > 1e-3
    assert torch.equal(same, plain) and torch.equal(same_logits, plain_logits)
    assert [r["n_suppressed"] for r in ca.records] == [r["n_suppressed"] for r in _review_attention(loaded, inputs)[2].records]


def test_random_control_and_fixed_pre_layer(tiny_models):
    loaded = tiny_models("llava")
    inputs = _inputs(loaded)
    _, rule = _review_inputs(loaded, inputs, scale=0.0, keep_maps=True)
    _, rand = _review_inputs(loaded, inputs, scale=0.0, keep_maps=True, control="random", seed=3)
    assert [r["n_suppressed"] for r in rand.records] == [r["n_suppressed"] for r in rule.records]
    assert any(a["maps"]["suppressed"] != b["maps"]["suppressed"] for a, b in zip(rule.records, rand.records))
    _, fixed = _review_inputs(loaded, inputs, scale=0.0, pre_layer=4)
    assert {r["pre_layer"] for r in fixed.records} == {4}
    assert all(list(r["hellinger"]) == ["4"] for r in fixed.records)


def test_answers_change_when_suppressing(tiny_models):
    loaded = tiny_models("llava")
    inputs = _inputs(loaded)
    with torch.no_grad():
        base = loaded.model(**inputs).logits
        with contrastive_attention(loaded, PROFILE, scale=0.0):
            edited = loaded.model(**inputs).logits
    assert (base - edited).abs().max() > 1e-3
    answers = generate_answers(loaded, inputs, max_new_tokens=2)
    assert len(answers) == 4


@pytest.mark.parametrize("profile, message", [
    ({"fusion_layers": [2], "review_layer": 28, "post_integrated_layer": 28}, "review_layer=28 must be >"),
    ({"fusion_layers": [2], "review_layer": 40, "post_integrated_layer": 28}, "review_layer=40: out of range"),
    ({"fusion_layers": [], "review_layer": 29}, "fusion_layers is empty"),
    ({"fusion_layers": [2, 30], "review_layer": 31, "post_integrated_layer": 29}, "must be < post_integrated_layer"),
    ({"fusion_layers": [-1], "review_layer": 29}, "fusion_layers[0]=-1"),
    ({"num_layers": 40, "fusion_layers": [2], "review_layer": 29}, "num_layers=40 but the model has 32"),
])
def test_profile_errors_name_the_field(tiny_models, profile, message):
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        profile_layers(profile, 32)


@pytest.mark.parametrize("kw, message", [
    ({"percentile": 0}, "percentile=0"), ({"percentile": 100}, "percentile=100"),
    ({"scale": 1.5}, "scale=1.5"), ({"scale": -0.1}, "scale=-0.1"), ({"heads": "sum"}, "heads='sum'"),
    ({"control": "shuffle"}, "control='shuffle'"), ({"pre_layer": 28}, "pre_layer=28"),
    ({"target": "keys"}, "target='keys'"),
])
def test_option_errors_are_one_line(tiny_models, kw, message):
    loaded = tiny_models("llava")
    with pytest.raises(ConfigError, match=message) as err:
        with contrastive_attention(loaded, PROFILE, **kw):
            pass
    assert "\n" not in str(err.value)
    assert not loaded.decoder_layers[29]._forward_pre_hooks  # nothing left behind


def test_layer_profile_object_and_preset_are_accepted():
    from layerprobe.analysis.profiles import LayerProfile

    profile = LayerProfile(model="x", num_layers=32, fusion_layers=[2, 4], review_layer=29)
    assert profile_layers(profile, 32) == ([2, 4], 28, 29)
    assert profile_layers("llava15_7b", 32) == ([2, 4, 8, 11, 12, 13], 28, 29)
    with pytest.raises(ProfileError):
        profile_layers("llava15_7b", 24)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_on_cuda_scale_one_is_identical_and_rows_match_eager(dtype):
    loaded = layerprobe.load_model("tiny:llava_next:32", device="cuda", dtype=dtype)
    eager = layerprobe.load_model("tiny:llava_next:32", device="cuda", dtype="float32", attn_implementation="eager")
    inputs = _inputs(loaded)
    with torch.no_grad():
        plain = loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False)
        with contrastive_attention(loaded, PROFILE, scale=1.0):
            same = loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(plain, same)
    if dtype == "float32":
        with torch.no_grad():
            ref = eager.model(**_inputs(eager), output_attentions=True).attentions
        rec = _record(loaded, inputs, {4})
        assert (last_row_probs(rec.scores[4], rec.layout.valid) - ref[4][:, :, -1].float()).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl", "internvl", "idefics3", "gemma3"])
def test_other_families_scale_one_identical_and_suppression_acts(family):
    loaded = layerprobe.load_model(f"tiny:{family}:8", device="cpu")
    inputs = _inputs(loaded, 2)
    profile = {"fusion_layers": [1, 2], "review_layer": 6, "post_integrated_layer": 5}
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with contrastive_attention(loaded, profile, scale=1.0):
            same = loaded.model(**inputs).logits
        with contrastive_attention(loaded, profile, scale=0.0) as ca:
            cut = loaded.model(**inputs).logits
    assert torch.equal(plain, same)
    assert (plain - cut).abs().max() > 0
    assert all(0 < r["n_suppressed"] < r["n_visual"] for r in ca.records)
