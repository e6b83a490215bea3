"""Knockout is exact: a no-op when inactive, local to its layer, equal to an independent
hand-edited-mask reference, applied in decode steps, and batch-invariant."""

from __future__ import annotations

import pytest
import torch

import layerprobe
from layerprobe.errors import ConfigError
from layerprobe.core.dispatch import controller
from layerprobe.core.generation import generate_answers
from tests.conftest import FAMILIES, QUESTIONS, make_images

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers


def _forward(loaded, inputs, **kw):
    with torch.no_grad():
        return loaded.model(**inputs, **kw)


SUFFIX = "\nAnswer the question using a single word or phrase."


def _question_positions(loaded, ids, questions):
    """(B, T): where each question's own token ids sit, found by searching the row for them (the
    tiny models' word-level tokenizer gives a question the same ids wherever it stands)."""
    out = torch.zeros_like(ids, dtype=torch.bool)
    for b, q in enumerate(questions):
        q_ids = loaded.tokenizer(q, add_special_tokens=False)["input_ids"]
        row = ids[b].tolist()
        starts = [i for i in range(len(row) - len(q_ids) + 1) if row[i:i + len(q_ids)] == q_ids]
        out[b, starts[-1]:starts[-1] + len(q_ids)] = True
    return out


def _reference_blocked(loaded, inputs, edges, visual=None, questions=None):
    """(B, T, T) pairs to block, from the input ids alone (independent of TokenLayout); other
    families pass their image-document positions as ``visual``."""
    ids, valid = inputs["input_ids"], inputs["attention_mask"].bool()
    visual = ids == loaded.model.config.image_token_id if visual is None else visual
    b, t = ids.shape
    pos = torch.arange(t)
    last_visual = torch.stack([pos[v].max() for v in visual])
    after = (pos[None] > last_visual[:, None]) & valid
    last = torch.zeros_like(after)
    last[:, -1] = True
    queries = {"image->text": after, "image->last": last, "image->prompt": after & ~last}
    queries = queries[edges] if edges in queries else _question_positions(loaded, ids, questions)
    return queries[:, :, None] & visual[:, None, :]


class _HandMask:
    """Reference: a pre-hook on one layer's self_attn that edits its eager float mask by hand."""

    def __init__(self, loaded, layer, blocked):
        attn = loaded.adapter.decoder_layers(loaded.model)[layer].self_attn
        self.blocked = blocked
        self.handle = attn.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        mask = kwargs["attention_mask"].clone()
        mask[self.blocked[:, None]] = torch.finfo(mask.dtype).min
        kwargs["attention_mask"] = mask
        return args, kwargs


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_registered_backend_without_knockout_is_bit_identical(tiny_models, images, family, attn):
    loaded = tiny_models(family, attn)
    inputs = loaded.encode(images, QUESTIONS)
    stock = _forward(loaded, inputs).logits
    with layerprobe.knockout(loaded, layers=[]):
        assert loaded.model.config.get_text_config()._attn_implementation == f"layerprobe_{attn}"
        empty = _forward(loaded, inputs).logits
    assert torch.equal(stock, empty)
    assert loaded.model.config.get_text_config()._attn_implementation == attn  # restored


@pytest.mark.parametrize("family", FAMILIES)
def test_knockout_is_local_to_its_layer(tiny_models, images, family):
    loaded = tiny_models(family)
    inputs = loaded.encode(images, QUESTIONS)
    check_knockout_is_local(loaded, inputs, inputs["input_ids"] == loaded.model.config.image_token_id)


def check_knockout_is_local(loaded, inputs, visual, layer=11):
    """Knockout at ``layer`` changes nothing below it nor before the first text token after ``visual``."""
    ref = _forward(loaded, inputs, output_hidden_states=True).hidden_states
    with layerprobe.knockout(loaded, layers=[layer]):
        ko = _forward(loaded, inputs, output_hidden_states=True).hidden_states
    # hidden_states[i] is the input of layer i: the outputs of layers < l are untouched
    for i in range(layer + 1):
        assert torch.equal(ref[i], ko[i]), f"layer {i - 1} output changed"
    pos = torch.arange(visual.shape[1])
    first_text = torch.stack([pos[v].max() + 1 for v in visual])
    before_text = pos[None] < first_text[:, None]
    for i in range(layer + 1, len(ref)):
        assert torch.equal(ref[i][before_text], ko[i][before_text]), f"prefix changed after layer {i - 1}"
    assert not torch.allclose(ref[layer + 1][~before_text], ko[layer + 1][~before_text])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("edges", ["image->text", "image->last", "image->question", "image->prompt"])
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
    question = _reference_blocked(loaded, inputs, "image->question", questions=QUESTIONS).any(-1)
    prompt = _reference_blocked(loaded, inputs, "image->prompt").any(-1)
    assert (question <= prompt).all() and (prompt & ~question).any()
    unannotated = loaded.encode(images, QUESTIONS)
    with pytest.raises(ConfigError, match="image->question.*questions="):
        with layerprobe.knockout(loaded, layers=[3], edges="image->question"):
            _forward(loaded, unannotated)


def check_against_hand_mask(loaded, inputs, edges, layers=(3, 17), visual=None, label="", questions=None):
    """Knockout at ``layers`` equals the hand-edited eager mask, and changes the logits."""
    with layerprobe.knockout(loaded, layers=layers, edges=edges):
        ours = _forward(loaded, inputs).logits
    blocked = _reference_blocked(loaded, inputs, edges, visual, questions)
    hooks = [_HandMask(loaded, layer, blocked) for layer in layers]
    try:
        reference = _forward(loaded, inputs).logits
    finally:
        for h in hooks:
            h.handle.remove()
    plain = _forward(loaded, inputs).logits
    diff = (ours - reference).abs().max().item()
    print(f"{label} {edges}: max |knockout - reference| = {diff:.2e}")
    assert diff < 1e-5
    assert (ours - plain).abs().max().item() > 1e-3  # the knockout did something


@pytest.mark.parametrize("family", FAMILIES)
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


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_answers_equal_single_answers(tiny_models, family):
    loaded = tiny_models(family)
    imgs = make_images(4, seed=3)
    with layerprobe.knockout(loaded, layers=[7]):
        batched = [a.text for a in generate_answers(loaded, loaded.encode(imgs, QUESTIONS), 5)]
        single = [generate_answers(loaded, loaded.encode([im], [q]), 5)[0].text for im, q in zip(imgs, QUESTIONS)]
    assert batched == single


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
