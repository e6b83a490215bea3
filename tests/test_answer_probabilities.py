"""Answer probabilities at the first answer step: equal in both sweep engines, equal to a plain
masked forward pass, and scored on the right token for word-level, SentencePiece-style and
byte-level tokenizers."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import layerprobe
from layerprobe.core.first_step import choose_reference, most_frequent, reference_candidates, reference_ids
from layerprobe.core.knockout import knockout
from layerprobe.data.registry import load_benchmark
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe_testing import LLAVA_FAMILIES, QUESTIONS, make_images

pytestmark = pytest.mark.core

FIELDS = ("answer_logprob", "reference_logprob", "margin")
# float32: the fast engine's split attention sums in another order than the naive full forward;
# measured worst |difference| 2e-6 (organism) over every condition, so 1e-4 leaves ample room
# while a wrong token or a wrong step would differ by far more (log-probabilities move by >0.01)
TOLERANCE = 1e-4
REFERENCES = [["white"] * 3 + ["red"], ["two"], ["yes", "no", "yes"], ["cup"]]


def _fields(result, key):
    return [a.first_step for a in result[key]]


def _assert_close(naive, fast, conds):
    for c in conds:
        assert [a.text for a in naive[c.key]] == [a.text for a in fast[c.key]]
        for a, b in zip(_fields(naive, c.key), _fields(fast, c.key)):
            for k in FIELDS:
                if a[k] is None:
                    assert b[k] is None
                else:
                    assert abs(a[k] - b[k]) <= TOLERANCE, (c, k, a[k], b[k])


@pytest.fixture(scope="module")
def organism_batch():
    loaded = layerprobe.load_model("organism")
    data = load_benchmark("organism", limit=8)
    inputs = loaded.encode([s.load_image() for s in data.samples], [data.prompt(s) for s in data.samples])
    refs = reference_candidates(loaded.tokenizer, [s.answers for s in data.samples])
    return loaded, inputs, refs


def test_fast_equals_naive_on_the_organism(organism_batch):
    loaded, inputs, refs = organism_batch
    conds = sweep_conditions(loaded.num_layers)
    naive = NaiveEngine().run_batch(loaded, inputs, conds, 3, refs)
    fast = FastEngine().run_batch(loaded, inputs, conds, 3, refs)
    _assert_close(naive, fast, conds)
    base = _fields(naive, conds[0].key)
    # the organism answers every test sample right: the reference's token is the greedy one
    assert all(f["reference_logprob"] == f["answer_logprob"] for f in base)
    planted = set(loaded.extra["organism"]["planted"])
    for c in conds[1:]:
        moved = any(abs(a["answer_logprob"] - b["answer_logprob"]) > 0 for a, b in zip(_fields(naive, c.key), base))
        assert moved == (c.layer in planted), c   # blind layers: bit-identical logits


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_fast_equals_naive_on_tiny_llava_padded_batches(family):
    loaded = layerprobe.load_model(f"tiny:{family}:32", device="cpu")
    inputs = loaded.encode(make_images(4, seed=5), [q + "\nAnswer with one word." for q in QUESTIONS])
    refs = reference_candidates(loaded.tokenizer, REFERENCES)
    conds = sweep_conditions(loaded.num_layers, layers=[0, 3, 17, 31])
    naive = NaiveEngine().run_batch(loaded, inputs, conds, 3, refs)
    fast = FastEngine(variants_per_batch=2).run_batch(loaded, inputs, conds, 3, refs)
    _assert_close(naive, fast, conds)
    # the knockouts move the probabilities: the comparison is not between identical rows
    base = _fields(naive, conds[0].key)
    assert any(abs(a["answer_logprob"] - b["answer_logprob"]) > 1e-3
               for c in conds[1:] for a, b in zip(_fields(naive, c.key), base))


def test_fields_equal_a_plain_masked_forward(tiny_models):
    """Independent reference: log_softmax of one masked forward's last logits, by hand."""
    loaded = tiny_models("llava")
    inputs = loaded.encode(make_images(4, seed=6), QUESTIONS)
    refs = reference_candidates(loaded.tokenizer, REFERENCES)
    conds = sweep_conditions(loaded.num_layers, layers=[1, 9])
    fast = FastEngine().run_batch(loaded, inputs, conds, 2, refs)
    with torch.no_grad():
        base_logits = loaded.model(**inputs).logits[:, -1].float()
    base_token = base_logits.argmax(-1)
    for c in conds:
        with torch.no_grad(), knockout(loaded, c.knocked_out, "image->text"):
            logits = loaded.model(**inputs).logits[:, -1].float()
        logp = torch.log_softmax(logits, -1)
        top = logits.topk(2).values
        for i, f in enumerate(_fields(fast, c.key)):
            assert f["answer_logprob"] == pytest.approx(logp[i, base_token[i]].item(), abs=TOLERANCE)
            assert f["margin"] == pytest.approx((top[i, 0] - top[i, 1]).item(), abs=TOLERANCE)
            ref = max(refs[i], key=lambda t: base_logits[i, t].item())
            assert f["reference_logprob"] == pytest.approx(logp[i, ref].item(), abs=TOLERANCE)
    base = _fields(fast, conds[0].key)
    assert all(f["margin"] >= 0 and f["answer_logprob"] >= f["reference_logprob"] for f in base)


def test_timing_runs_skip_the_probabilities(organism_batch):
    loaded, inputs, refs = organism_batch
    conds = sweep_conditions(loaded.num_layers, layers=[2])
    for engine in (NaiveEngine(), FastEngine()):
        answers = engine.run_batch(loaded, inputs, conds, 2, refs, scores=False)
        assert all(a.first_step is None and "answer_logprob" not in a.record() for a in answers[conds[1].key])


def test_without_references_the_reference_field_is_null(organism_batch):
    loaded, inputs, _ = organism_batch
    conds = sweep_conditions(loaded.num_layers, layers=[2])
    fast = FastEngine().run_batch(loaded, inputs, conds, 2, None)
    row = fast[conds[1].key][0].record()
    assert row["reference_logprob"] is None and math.isfinite(row["answer_logprob"])


# ---- which token starts the reference -------------------------------------------------------

def sentencepiece_tokenizer():
    """Llama-style: Metaspace folds a leading space into the word (``▁Yes``)."""
    pieces = ["<unk>", "<s>", "</s>", "▁", "\n", "Yes", "▁Yes", "yes", "▁yes", "Y", "e", "s", "y", "▁red", "red",
              "r", "d", "ASSISTANT", ":"]
    backend = Tokenizer(models.Unigram([(p, -1.0 if len(p) > 1 else -5.0) for p in pieces], unk_id=0))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def byte_level_tokenizer():
    """GPT-2/Qwen-style: the space is a byte of the token (``ĠYes``)."""
    words = ["<unk>", "Ċ", "Yes", "ĠYes", "yes", "Ġyes"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


@pytest.mark.parametrize("make,expected", [
    (sentencepiece_tokenizer, ["yes", "▁yes", "Yes", "▁Yes"]),
    (byte_level_tokenizer, ["yes", "Ġyes", "Yes", "ĠYes"]),
])
def test_reference_forms_cover_both_spacings_and_cases(make, expected):
    tok = make()
    assert tok.convert_ids_to_tokens(reference_ids(tok, "yes")) == expected
    # the model decides: after "ASSISTANT:" a Llama writes "▁Yes", after "assistant\n" a Qwen "Yes"
    ids = reference_ids(tok, "yes")
    logits = torch.zeros(2, len(tok))
    logits[0, tok.convert_tokens_to_ids(expected[3])] = 5.0
    logits[1, tok.convert_tokens_to_ids(expected[2])] = 5.0
    chosen = tok.convert_ids_to_tokens(choose_reference(logits, [ids, ids]).tolist())
    assert chosen == [expected[3], expected[2]]


def test_word_level_reference_is_the_word_and_unknown_forms_are_dropped(organism_batch):
    tok = organism_batch[0].tokenizer
    assert tok.convert_ids_to_tokens(reference_ids(tok, "red")) == ["red"]   # "Red" is not in its vocabulary
    assert reference_ids(tok, "") == [] and reference_ids(tok, None) == []
    assert choose_reference(torch.zeros(1, len(tok)), [[]]).tolist() == [-1]


def test_most_frequent_reference():
    assert most_frequent(["no", "yes", "yes", " no ", "yes"]) == "yes"
    assert most_frequent(["a", "b"]) == "a"            # ties: the first given
    assert most_frequent(["", "  "]) is None and most_frequent([]) is None
