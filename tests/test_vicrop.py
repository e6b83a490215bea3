"""ViCrop's relative attention against a hand computation from eager attention weights, with the
generic prompt carrying the question prompt's answer-format suffix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerprobe.data.sample import Sample
from layerprobe.methods.vicrop import GENERIC_PROMPT, generic_prompts, relative_attention
from layerprobe_testing import SUFFIX, make_images

pytestmark = pytest.mark.core


def _samples(questions):
    return [Sample(sample_id=str(i), question=q, answers=["x"], image=None) for i, q in enumerate(questions)]


def test_generic_prompt_keeps_the_prompt_around_the_question():
    questions = ["what color is the cat ?", "how many people are there ?"]
    prompts = [q + SUFFIX for q in questions]
    assert generic_prompts(_samples(questions), prompts) == [GENERIC_PROMPT + SUFFIX] * 2
    ocr = ["what is written ?\nReference OCR token: stop" + SUFFIX]
    assert generic_prompts(_samples(["what is written ?"]), ocr) == [
        GENERIC_PROMPT + "\nReference OCR token: stop" + SUFFIX]
    # a question its prompt does not hold (or none at all): the generic prompt alone
    assert generic_prompts(_samples(["what is absent ?", None]), prompts) == [GENERIC_PROMPT] * 2


def _hand_map(loaded, images, texts, layer, side):
    """Eager attention of the last prompt token at ``layer``, averaged over heads, restricted to the
    visual keys and renormalised there; the first side**2 of them as a grid."""
    inputs = loaded.encode(images, texts)
    with torch.no_grad():
        out = loaded.model(**inputs, output_attentions=True)
    row = out.attentions[layer][:, :, -1].mean(1)  # (B, kv)
    visual = loaded.adapter.visual_token_mask(loaded.model, inputs["input_ids"])
    maps = []
    for b in range(row.shape[0]):
        v = row[b, visual[b]]
        maps.append((v / v.sum())[: side * side].reshape(side, side))
    return torch.stack(maps)


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_relative_attention_equals_the_hand_ratio(tiny_models, family):
    loaded = tiny_models(family, attn="eager")
    images = make_images(2, seed=4)
    questions = ["what color is the cat ?", "is the sky blue ?"]
    prompts = [q + SUFFIX for q in questions]
    generic = generic_prompts(_samples(questions), prompts)
    side = loaded.adapter.base_grid_side(loaded.model)
    ours = relative_attention(loaded, images, prompts, layer=5, generic=generic)
    hand = (_hand_map(loaded, images, prompts, 5, side) / _hand_map(loaded, images, generic, 5, side)).numpy()
    np.testing.assert_allclose(ours, hand, rtol=2e-4, atol=1e-6)
    bare = relative_attention(loaded, images, prompts, layer=5, generic=GENERIC_PROMPT)
    assert not np.allclose(bare, ours)  # the suffix changes the denominator
