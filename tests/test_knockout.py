"""Knockout is exact: a no-op when inactive, local to its layer, equal to an independent
hand-edited-mask reference, applied in decode steps, and batch-invariant."""

from __future__ import annotations

import pytest
import torch

import layerprobe
from layerprobe.errors import ConfigError
from layerprobe.core.dispatch import controller
from layerprobe.core.generation import generate_answers
from layerprobe_testing import (
    EDGE_SETS, LLAVA_FAMILIES, QUESTIONS, SUFFIX, check_against_hand_mask, check_batch_answers_equal_single_answers,
    check_knockout_is_local, check_no_op_is_bit_identical, forward, reference_blocked,
)

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_registered_backend_without_knockout_is_bit_identical(tiny_models, images, family, attn):
    loaded = tiny_models(family, attn)
    check_no_op_is_bit_identical(loaded, loaded.encode(images, QUESTIONS), attn)


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_knockout_is_local_to_its_layer(tiny_models, images, family):
    loaded = tiny_models(family)
    inputs = loaded.encode(images, QUESTIONS)
    check_knockout_is_local(loaded, inputs, inputs["input_ids"] == loaded.model.config.image_token_id)


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
@pytest.mark.parametrize("edges", EDGE_SETS)
def test_knockout_matches_hand_edited_eager_mask(tiny_models, images, family, edges):
    loaded = tiny_models(family, "eager")
    # left-padded: the prompts differ in length; the instruction after the question is not question
    inputs = loaded.encode(images, [q + SUFFIX for q in QUESTIONS], questions=QUESTIONS)
    assert (inputs["attention_mask"] == 0).any()
    check_against_hand_mask(loaded, inputs, edges, label=family, questions=QUESTIONS)


def test_question_edges_block_the_question_only(tiny_models, images):
    """image->question's queries are the question's tokens: a strict subset of image->prompt's."""
    loaded = tiny_models("llava", "eager")
    inputs = loaded.encode(images, [q + SUFFIX for q in QUESTIONS], questions=QUESTIONS)
    question = reference_blocked(loaded, inputs, "image->question", questions=QUESTIONS).any(-1)
    prompt = reference_blocked(loaded, inputs, "image->prompt").any(-1)
    assert (question <= prompt).all() and (prompt & ~question).any()
    unannotated = loaded.encode(images, QUESTIONS)
    with pytest.raises(ConfigError, match="edges='image->question'.*questions="):
        with layerprobe.knockout(loaded, layers=[3], edges="image->question"):
            forward(loaded, unannotated)


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_knockout_blocks_generated_tokens_queries(tiny_models, images, family):
    loaded = tiny_models(family, "eager")
    inputs = loaded.encode(images[:2], QUESTIONS[:2])
    visual = inputs["input_ids"] == loaded.model.config.image_token_id
    layer = 5
    with layerprobe.knockout(loaded, layers=[layer]), torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=4, do_sample=False, output_attentions=True,
                                    return_dict_in_generate=True, pad_token_id=3)
    assert len(out.attentions) == 4
    for step in out.attentions[1:]:  # decode steps: one query, the newly generated token
        assert step[layer].shape[2] == 1
        on_image = step[layer][..., : visual.shape[1]][visual[:, None, None, :].expand_as(step[layer][..., : visual.shape[1]])]
        assert torch.count_nonzero(on_image) == 0
        other = step[layer + 1][..., : visual.shape[1]][visual[:, None, None, :].expand_as(step[layer + 1][..., : visual.shape[1]])]
        assert other.abs().sum() > 0  # the next layer still reads the image


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_left_padded_batch_answers_equal_single_answers(tiny_models, family):
    check_batch_answers_equal_single_answers(tiny_models(family))


def test_knockout_restores_on_exception(tiny_models, images):
    loaded = tiny_models("llava")
    with pytest.raises(RuntimeError, match="boom"):
        with layerprobe.knockout(loaded, layers=[1]):
            raise RuntimeError("boom")
    assert loaded.model.config.get_text_config()._attn_implementation == "sdpa"
    assert not controller(loaded).busy


def test_bad_layers_and_edges_name_the_value(tiny_models):
    loaded = tiny_models("llava")
    with pytest.raises(ConfigError, match=r"layers\[1\]=32: out of range for a 32-layer decoder"):
        with layerprobe.knockout(loaded, layers=[0, 32]):
            pass
    with pytest.raises(ConfigError, match="edges='image->all': unknown edge set"):
        with layerprobe.knockout(loaded, layers=[0], edges="image->all"):
            pass


def test_knockout_method_answers_as_the_knockout_context(tiny_models, images):
    """``method=knockout`` (layerprobe-eval, the lmms-eval plugin) gives the answers of generating
    inside ``knockout(...)``, with the layers and edges in its records; bad options name the field."""
    from layerprobe.data.sample import Sample
    from layerprobe.methods.registry import make_method

    loaded = tiny_models("llava")
    samples = [Sample(str(i), im, q, []) for i, (im, q) in enumerate(zip(images[:2], QUESTIONS[:2]))]
    texts = [q + SUFFIX for q in QUESTIONS[:2]]
    method = make_method("knockout", layers=[9, 3], edges="image->question")
    method.check(loaded)
    records = method.answer_batch(loaded, samples, images[:2], texts, 4)
    inputs = loaded.encode(images[:2], texts, questions=QUESTIONS[:2])
    with layerprobe.knockout(loaded, layers=[3, 9], edges="image->question"):
        expected = [a.text for a in generate_answers(loaded, inputs, 4)]
    assert [r["prediction"] for r in records] == expected
    assert all(r["knockout_layers"] == [3, 9] and r["edges"] == "image->question" for r in records)
    with pytest.raises(ConfigError, match=r"^method knockout: give layers"):
        make_method("knockout")
    with pytest.raises(ConfigError, match=r"^method.layers\[0\]=32: out of range for a 32-layer decoder"):
        make_method("knockout", layers=[32]).check(loaded)
    with pytest.raises(ConfigError, match="every sample needs its question text"):
        make_method("knockout", layers=[1], edges="image->question").answer_batch(
            loaded, [Sample("0", images[0], None, [])], images[:1], texts[:1], 2)
