"""Every model family beyond LLaVA, on tiny random models built from its real transformers config
classes: the image document is where the processor put it, and the foundation's knockout
guarantees hold (no-op bit-identical, local to its layer, equal to a hand-edited eager mask, in
decode steps, batch-invariant); the fast sweep equals naive (with M-RoPE and Gemma 3's
per-layer-type rotary embeddings) or falls back with the adapter's reason;
contrastive attention reads exact rows; ``layerprobe-sweep`` runs end to end."""

from __future__ import annotations

import logging

import pytest
import torch

import layerprobe
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine, fast_engine_reason
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.core.attention_rows import LastRowRecorder, last_row_probs
from layerprobe.methods.contrastive import contrastive_attention
from layerprobe.core.dispatch import controller
from layerprobe.models.registry import adapter_for
from layerprobe.core.generation import generate_answers
from layerprobe_testing import (
    DOCUMENT, EDGE_SETS, FIXTURES, LLAVA_FAMILIES, QUESTIONS, SUFFIX, check_against_hand_mask,
    check_batch_answers_equal_single_answers, check_knockout_is_local, check_no_op_is_bit_identical,
    check_two_layer_run, forward, make_images, reference_visual, run_multirun, texts_of,
)

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers

FAMILIES_BEYOND_LLAVA = [f for f in DOCUMENT if f not in LLAVA_FAMILIES]
FIXED_COUNT = {"gemma3"}  # 256 soft tokens per image whatever its size (no pan-and-scan)


def _encode(loaded, n=4, seed=0):
    """A left-padded batch whose prompts carry an instruction after the question, with the
    questions located (for image->question)."""
    return loaded.encode(make_images(n, seed=seed), [q + SUFFIX for q in QUESTIONS[:n]], questions=QUESTIONS[:n])


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
def test_image_document_and_first_text_token(tiny_models, family):
    loaded = tiny_models(family)
    assert loaded.adapter.family == family and loaded.num_layers == 32
    assert type(adapter_for(loaded.model.config)) is type(loaded.adapter)
    inputs = _encode(loaded)
    ids = inputs["input_ids"]
    layout = controller(loaded).layout_of(ids, inputs["attention_mask"])
    expected = reference_visual(loaded, family, ids)
    assert torch.equal(layout.visual, expected)
    image_id = loaded.adapter.image_token_id(loaded.model)
    assert layout.visual[ids == image_id].all()
    end = loaded.tokenizer.convert_tokens_to_ids(DOCUMENT[family][1])
    for b in range(ids.shape[0]):
        assert ids[b, layout.first_text[b] - 1] == end  # the first text token follows the document
        assert ids[b, layout.first_text[b]] != image_id
    counts = (ids == image_id).sum(1)
    print(f"{family}: visual tokens per sample {counts.tolist()}, document {layout.visual.sum(1).tolist()}")
    assert (len(set(counts.tolist())) > 1) == (family not in FIXED_COUNT)


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_registered_backend_without_knockout_is_bit_identical(tiny_models, family, attn):
    loaded = tiny_models(family, attn)
    check_no_op_is_bit_identical(loaded, loaded.encode(make_images(4), QUESTIONS), attn)


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
def test_knockout_is_local_to_its_layer(tiny_models, family):
    loaded = tiny_models(family)
    inputs = _encode(loaded)
    check_knockout_is_local(loaded, inputs, reference_visual(loaded, family, inputs["input_ids"]))


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
@pytest.mark.parametrize("edges", EDGE_SETS)
def test_knockout_matches_hand_edited_eager_mask(tiny_models, family, edges):
    loaded = tiny_models(family, "eager")
    inputs = _encode(loaded)
    assert (inputs["attention_mask"] == 0).any()  # left-padded: the questions differ in length
    visual = reference_visual(loaded, family, inputs["input_ids"])
    check_against_hand_mask(loaded, inputs, edges, visual=visual, label=family, questions=QUESTIONS[:4])


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
def test_knockout_blocks_generated_tokens_queries(tiny_models, family):
    loaded = tiny_models(family, "eager")
    inputs = _encode(loaded, 2)
    visual = reference_visual(loaded, family, inputs["input_ids"])
    layer = 5
    with layerprobe.knockout(loaded, layers=[layer]), torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False, output_attentions=True,
                                    return_dict_in_generate=True, min_new_tokens=4)
    T = visual.shape[1]
    steps = out.attentions[1:]
    assert len(steps) == 3
    for step in steps:
        assert step[layer].shape[2] == 1
        on_image = step[layer][..., :T].permute(0, 3, 1, 2)[visual]
        assert torch.count_nonzero(on_image) == 0
        assert step[layer + 1][..., :T].permute(0, 3, 1, 2)[visual].abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
def test_left_padded_batch_answers_equal_single_answers(tiny_models, family):
    check_batch_answers_equal_single_answers(tiny_models(family))


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
def test_fast_sweep_equals_naive(family):
    loaded = layerprobe.load_model(f"tiny:{family}:6")
    inputs = _encode(loaded, 4, seed=1)
    conds = sweep_conditions(loaded.num_layers)
    assert fast_engine_reason("image->text", loaded.adapter) is None
    naive = texts_of(NaiveEngine().run_batch(loaded, inputs, conds, 4))
    assert texts_of(FastEngine(variants_per_batch=4).run_batch(loaded, inputs, conds, 4)) == naive
    assert any(naive[c.key] != naive[conds[0].key] for c in conds[1:])


def test_fast_sweep_falls_back_to_naive_with_the_adapters_reason(caplog, monkeypatch):
    loaded = layerprobe.load_model("tiny:gemma3:3")
    monkeypatch.setattr(loaded.adapter, "fast_sweep_reason", "no direct layer calls", raising=False)
    inputs = _encode(loaded, 2)
    conds = sweep_conditions(loaded.num_layers)
    naive = texts_of(NaiveEngine().run_batch(loaded, inputs, conds, 2))
    with caplog.at_level(logging.WARNING, logger="layerprobe.sweep.engines.fast"):
        fast = texts_of(FastEngine().run_batch(loaded, inputs, conds, 2))
    assert fast == naive
    assert "engine=fast falls back to naive: gemma3: no direct layer calls" in caplog.text


def test_generated_marker_tokens_are_text(tiny_models):
    """A decode step that generates an image token or marker adds a text position, not a visual one."""
    loaded = tiny_models("qwen2_vl")
    inputs = _encode(loaded, 2)
    ctrl = controller(loaded)
    prompt = ctrl.set_sequence(inputs["input_ids"], inputs["attention_mask"])
    cfg = loaded.model.config
    for i, token in enumerate((cfg.vision_start_token_id, cfg.image_token_id, cfg.vision_end_token_id)):
        step = ctrl.set_sequence(torch.full((2, 1), token), None, past=prompt.length + i)
        assert not step.visual[:, -1].any()
    assert torch.equal(step.visual[:, :prompt.length], prompt.visual)
    assert torch.equal(step.text_after[:, prompt.length:], torch.ones(2, 3, dtype=torch.bool))


def test_fast_sweep_with_mrope_for_every_edge_set():
    loaded = layerprobe.load_model("tiny:qwen2_vl:5")
    inputs = _encode(loaded, 3, seed=2)
    conds = sweep_conditions(loaded.num_layers, window=3)
    for edges in ("image->last", "image->question"):
        naive = texts_of(NaiveEngine(edges).run_batch(loaded, inputs, conds, 3))
        assert texts_of(FastEngine(edges, variants_per_batch=2).run_batch(loaded, inputs, conds, 3)) == naive


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "gemma3"])
def test_contrastive_attention_through_the_adapter(tiny_models, family):
    sdpa, eager = tiny_models(family, "sdpa"), tiny_models(family, "eager")
    inputs = _encode(sdpa)
    with torch.no_grad():
        ref = eager.model(**inputs, output_attentions=True).attentions
    with torch.no_grad(), controller(sdpa).observe(LastRowRecorder({2, 28})) as rec:
        sdpa.model(**inputs)
    assert torch.equal(rec.layout.visual, reference_visual(sdpa, family, inputs["input_ids"]))
    for layer in (2, 28):
        err = (last_row_probs(rec.scores[layer], rec.layout.valid) - ref[layer][:, :, -1]).abs().max().item()
        print(f"{family} layer {layer}: max |recomputed - eager| = {err:.2e}")
        assert err < 1e-5
    profile = {"fusion_layers": [2, 4, 8], "review_layer": 29, "post_integrated_layer": 28}
    plain = [a.text for a in generate_answers(sdpa, inputs, 4)]
    with contrastive_attention(sdpa, profile, scale=1.0):
        assert [a.text for a in generate_answers(sdpa, inputs, 4)] == plain
    with contrastive_attention(sdpa, profile, percentile=50, scale=0.0, target="values") as ca:
        with torch.no_grad():
            changed = sdpa.model(**inputs).logits
    assert all(r["n_suppressed"] > 0 for r in ca.records)
    assert (changed - forward(sdpa, inputs).logits).abs().max() > 1e-4


@pytest.fixture(scope="module")
def family_sweeps(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps")
    run_multirun(out, f"model={','.join(f'tiny_{f}' for f in FAMILIES_BEYOND_LLAVA)}", "data=vqav2",
                 f"data.root={FIXTURES / 'vqav2' / 'official'}", "data.limit=2", "layers=[0,1]", "batch_size=2",
                 "engine=naive")
    return out


@pytest.mark.parametrize("family", FAMILIES_BEYOND_LLAVA)
def test_sweep_cli_runs_each_family(family_sweeps, family):
    check_two_layer_run(family_sweeps / f"tiny_{family}" / "vqav2" / "image_text" / "shard0of1", 2)
