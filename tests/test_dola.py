"""DoLa against its references: the layer-selection score, the buckets, the plausibility filter and
the repetition penalty as unit checks, and whole greedy generations against a step-by-step
re-implementation of transformers' former DoLa loop (no key/value cache: every step runs the full
model with ``output_hidden_states=True``) on tiny LLaVA-1.5 and Qwen2-VL."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon
from transformers import RepetitionPenaltyLogitsProcessor

import layerprobe
from layerprobe.errors import ConfigError
from layerprobe.methods.dola import (EMBEDDINGS, candidate_layers, contrast, dola, dola_scores, hidden_state_index,
                                     js_divergence, penalize_repeats, reference_divergence)
from layerprobe.methods.registry import make_method, takes_profile
from layerprobe_testing import LLAVA_FAMILIES, QUESTIONS, make_images, make_samples

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers

NEW_TOKENS = 6


# --- the references' loop, step by step ---------------------------------------------------------

def reference_candidates(model, dola_layers) -> list[int]:
    """transformers' candidate hidden-state indices for ``dola_layers``, from the model config."""
    n = model.config.get_text_config().num_hidden_layers
    if not model.config.tie_word_embeddings:
        start = 0
    else:
        start = 2 if n > 2 else (1 if n == 2 else 0)
    if dola_layers == "low":
        if start == n // 2:
            return [start]
        return list(range(start, n // 2 if n <= 40 else 20, 2))
    if dola_layers == "high":
        return list(range(n // 2 if n <= 40 else n - 20, n, 2))
    return [i for i in dola_layers if i < n]


def reference_step(candidates: list[int], premature: dict[int, torch.Tensor], final: torch.Tensor):
    """One step's contrasted logits and premature layer: the layer of largest batch-mean score
    0.5 * (KL(M||P_final) + KL(M||P_layer)) / V, then the relative-top filter (0.1) on the final
    log-probabilities (-inf) and on the premature ones (-1e-3), and their difference."""
    if len(candidates) == 1:
        layer = candidates[0]
    else:
        stacked = torch.stack([premature[i] for i in candidates])
        mean = 0.5 * (F.softmax(final, -1)[None] + F.softmax(stacked, -1))
        score = 0.5 * (F.kl_div(F.log_softmax(final, -1)[None], mean, reduction="none").mean(-1)
                       + F.kl_div(F.log_softmax(stacked, -1), mean, reduction="none").mean(-1))
        layer = candidates[int(score.mean(-1).argmax())]
    final_lp, base_lp = final.log_softmax(-1), premature[layer].log_softmax(-1)
    best = torch.sort(final_lp, descending=True).values[..., 0]
    thresh = torch.min(best, final_lp.max(-1).values + np.log(0.1)).unsqueeze(-1)
    drop = final_lp < thresh
    base_lp[drop] = -1e-3
    final_lp[drop] = float("-inf")
    return final_lp - base_lp, layer


@torch.no_grad()
def reference_generate(loaded, inputs, dola_layers, max_new_tokens, repetition_penalty=1.0):
    """Greedy DoLa at batch size 1: new tokens and the hidden-state index chosen at each step."""
    model = loaded.model
    candidates = reference_candidates(model, dola_layers)
    head = model.get_output_embeddings()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    penalty = RepetitionPenaltyLogitsProcessor(float(repetition_penalty)) if repetition_penalty != 1.0 else None
    tokens, chosen = [], []
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=mask, **extra, output_hidden_states=True, use_cache=False)
        final = out.logits[:, -1, :].float()
        premature = {i: head(out.hidden_states[i][:, -1, :]) for i in candidates}
        logits, layer = reference_step(candidates, premature, final)
        if penalty is not None:  # the logits processors run on the contrasted logits
            logits = penalty(ids, logits)
        token = int(logits.argmax(-1))
        tokens.append(token)
        chosen.append(layer)
        if token in eos:
            break
        # per-token inputs (Qwen2-VL's token types) grow with the sequence; a new token is text (0)
        extra = {k: torch.cat([v, v.new_zeros(1, 1)], 1) if v.shape == ids.shape else v for k, v in extra.items()}
        ids = torch.cat([ids, ids.new_tensor([[token]])], 1)
        mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
    return tokens, chosen


# --- models whose distributions are not flat ----------------------------------------------------

@pytest.fixture(scope="module")
def sharp_models():
    """16-layer tiny models with the LM head x 8 and the input embeddings x 30: random weights give
    near-uniform next-token distributions (every token plausible, one premature layer always
    chosen); sharper ones exercise the filter and the choice among candidates."""
    cache = {}

    def get(family):
        if family not in cache:
            loaded = layerprobe.load_model(f"tiny:{family}:16", device="cpu")
            with torch.no_grad():
                loaded.model.get_output_embeddings().weight.mul_(8.0)
                loaded.model.get_input_embeddings().weight.mul_(30.0)
            cache[family] = loaded
        return cache[family]

    return get


SETTINGS = [  # (our layers, transformers' dola_layers, repetition penalty)
    ("low", "low", 1.0),
    ("high", "high", 1.0),
    ([EMBEDDINGS, 2, 5, 9], [0, 3, 6, 10], 1.0),
    ("low", "low", 1.2),
]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("layers, reference_layers, penalty", SETTINGS)
def test_greedy_tokens_equal_the_reference_loop(sharp_models, family, layers, reference_layers, penalty):
    loaded = sharp_models(family)
    images = make_images(4)
    changed, used = 0, set()
    for image, question in zip(images, QUESTIONS):
        inputs = loaded.encode([image], [question])
        n = inputs["input_ids"].shape[1]
        with torch.no_grad(), dola(loaded, layers, repetition_penalty=penalty) as proc:
            ours = loaded.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                         **proc.generate_kwargs)[0, n:].tolist()
        expected, expected_layers = reference_generate(loaded, inputs, reference_layers, NEW_TOKENS, penalty)
        assert ours == expected
        assert [hidden_state_index(layer) for layer in proc.chosen[0]] == expected_layers
        with torch.no_grad():
            vanilla = loaded.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)[0, n:].tolist()
        changed += sum(a != b for a, b in zip(ours, vanilla)) + abs(len(ours) - len(vanilla))
        used |= set(expected_layers)
    # not vacuous: the contrast changes the greedy answer and the choice among candidates matters
    assert changed > 0 and len(used) > 1


def test_repetition_penalty_defaults_to_the_generation_config(sharp_models):
    """repetition_penalty=None uses the model's generation config, applied after the contrast
    only (generate gets 1.0), as generate(dola_layers=...) did."""
    loaded = sharp_models("qwen2_vl")
    inputs = loaded.encode(make_images(1, seed=3), QUESTIONS[1:2])
    n = inputs["input_ids"].shape[1]
    config = loaded.model.generation_config
    try:
        config.repetition_penalty = 1.5
        method = make_method("dola")
        images = make_images(1, seed=3)
        [record] = method.answer_batch(loaded, make_samples(images, QUESTIONS[1:2]), images, QUESTIONS[1:2], NEW_TOKENS)
        with torch.no_grad(), dola(loaded, "low") as proc:
            ours = loaded.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                         **proc.generate_kwargs)[0, n:].tolist()
    finally:
        config.repetition_penalty = 1.0
    expected, _ = reference_generate(loaded, inputs, "low", NEW_TOKENS, 1.5)
    assert ours == expected and proc.repetition_penalty == 1.5
    assert record["dola"]["repetition_penalty"] == 1.5 and record["dola"]["criterion"] == "reference"
    assert record["prediction"] == loaded.tokenizer.decode(ours, skip_special_tokens=True).strip()
    assert len(record["premature_layers"]) == record["n_tokens"]
    json.dumps(record)


# --- the pieces ---------------------------------------------------------------------------------

def test_js_divergence_matches_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(30), size=4), rng.dirichlet(np.ones(30), size=4)
    ours = js_divergence(torch.tensor(np.log(p)), torch.tensor(np.log(q))).numpy()
    assert np.allclose(ours, jensenshannon(p, q, axis=-1) ** 2, atol=1e-10)


def test_reference_divergence_is_kl_from_the_mean_averaged_over_the_vocabulary():
    rng = np.random.default_rng(1)
    final, early = rng.normal(size=(2, 30)), rng.normal(size=(3, 2, 30))
    p = np.exp(final) / np.exp(final).sum(-1, keepdims=True)
    q = np.exp(early) / np.exp(early).sum(-1, keepdims=True)
    m = 0.5 * (p[None] + q)
    expected = 0.5 * ((m * np.log(m / p[None])).mean(-1) + (m * np.log(m / q)).mean(-1))
    ours = reference_divergence(torch.tensor(final), torch.tensor(early)).numpy()
    assert ours.shape == (3, 2) and np.allclose(ours, expected, atol=1e-12)
    assert not np.allclose(ours * 30, js_divergence(torch.log_softmax(torch.tensor(final), -1)[None],
                                                    torch.log_softmax(torch.tensor(early), -1)).numpy())


@pytest.mark.parametrize("criterion", ["reference", "js"])
def test_dola_scores_choose_per_sample_and_respect_plausibility(criterion):
    final = torch.log(torch.tensor([[0.70, 0.25, 0.05], [0.1, 0.1, 0.8]]))
    near = final.clone()
    far = torch.log(torch.tensor([[0.50, 0.02, 0.48], [0.1, 0.1, 0.8]]))
    premature = torch.stack([near, far])
    premature[0, 1] = torch.log(torch.tensor([0.8, 0.1, 0.1]))  # sample 1: layer 0 is the far one
    scores, choice = dola_scores(final, premature, alpha=0.1, criterion=criterion)
    assert choice.tolist() == [1, 0]
    assert torch.isinf(scores[0, 2]) and scores[0, 2] < 0  # 0.05 < 0.1 * 0.70: implausible
    assert torch.isfinite(scores[0, :2]).all()
    assert scores[0, 1] > scores[0, 0]  # 0.25 vs 0.02 early beats 0.70 vs 0.50: the contrast flips greedy
    assert torch.allclose(scores[0, 0], torch.log(torch.tensor(0.70 / 0.50)))
    with pytest.raises(ConfigError, match="criterion='kl'"):
        dola_scores(final, premature, criterion="kl")


def test_contrast_filters_as_the_references():
    final = torch.log(torch.tensor([[0.5, 0.3, 0.04, 0.16]]))
    base = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25]]))
    out = contrast(final, base, alpha=0.1)
    assert torch.isneginf(out[0, 2]) and torch.isfinite(out[0, [0, 1, 3]]).all()
    assert torch.allclose(out[0, [0, 1, 3]], torch.log(torch.tensor([2.0, 1.2, 0.64])))
    only_top = contrast(final, base, alpha=1.0)  # alpha 1: the most probable token alone survives
    assert torch.isfinite(only_top).tolist() == [[True, False, False, False]]


def test_penalty_matches_transformers_processor_and_skips_left_padding():
    rng = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 11, generator=rng)
    ids = torch.tensor([[3, 3, 5, 1], [0, 0, 7, 2]])
    expected = RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())
    assert torch.equal(penalize_repeats(ids, scores, 1.3), expected)
    padded = penalize_repeats(ids, scores, 1.3, pad_lengths=torch.tensor([0, 2]))
    assert torch.equal(padded[0], expected[0]) and padded[1, 0] == scores[1, 0]
    assert torch.equal(padded[1, [2, 7]], expected[1, [2, 7]])


class _Config:
    def __init__(self, num_layers, tied):
        self.num_layers, self.tie_word_embeddings = num_layers, tied

    def get_text_config(self):
        return SimpleNamespace(num_hidden_layers=self.num_layers)


def test_candidate_buckets_are_transformers_dola_layers():
    # hidden-state index h is our layer h - 1; index 0 is the embedding output
    assert candidate_layers("low", 32) == [EMBEDDINGS] + list(range(1, 14, 2))
    assert candidate_layers("low", 32, tied=True) == list(range(1, 14, 2))
    assert candidate_layers("high", 32) == list(range(15, 30, 2))
    assert candidate_layers("low", 48) == [EMBEDDINGS] + list(range(1, 18, 2))
    assert candidate_layers("high", 48) == list(range(27, 46, 2))
    assert candidate_layers("low", 4, tied=True) == [1]  # start == N // 2: that layer alone
    assert candidate_layers("low", 2, tied=True) == [0]
    assert candidate_layers("low", 3) == [EMBEDDINGS]
    for n in (1, 2, 4, 5, 16, 32, 40, 41, 60, 80):
        for tied in (False, True):
            model = SimpleNamespace(config=_Config(n, tied))
            for spec in ("low", "high"):
                expected = reference_candidates(model, spec)
                if expected:
                    assert [hidden_state_index(x) for x in candidate_layers(spec, n, tied)] == expected
    assert candidate_layers([3, 1, 3], 32) == [1, 3]
    assert candidate_layers([5, EMBEDDINGS], 32) == [EMBEDDINGS, 5]
    assert candidate_layers([EMBEDDINGS], 32) == [EMBEDDINGS]
    with pytest.raises(ConfigError, match="31"):
        candidate_layers([31], 32)
    with pytest.raises(ConfigError, match="'mid'"):
        candidate_layers("mid", 32)
    with pytest.raises(ConfigError, match="no candidate"):
        candidate_layers("low", 3, tied=True)  # transformers' range(2, 1, 2): empty


def test_tied_embeddings_skip_the_embedding_output():
    loaded = layerprobe.load_model("tiny:llava:8", device="cpu")
    method = make_method("dola")
    with dola(loaded, "low") as proc:
        assert proc.layers == [EMBEDDINGS, 1]
    loaded.model.get_output_embeddings().weight = loaded.model.get_input_embeddings().weight
    with dola(loaded, "low") as proc:
        assert proc.layers == [1]  # hidden state 2: transformers' start for tied embeddings
    method.check(loaded)


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
@pytest.mark.parametrize("apply_norm", [False, True])
def test_padded_batch_first_token_equals_an_independent_computation(tiny_models, family, apply_norm):
    loaded = tiny_models(family)
    inputs = loaded.encode(make_images(3), QUESTIONS[:3])
    layers = [EMBEDDINGS, 1, 5, 9]
    with torch.no_grad():
        out = loaded.model(**inputs, output_hidden_states=True)
        hooks_before = [(len(layer._forward_hooks), len(layer._forward_pre_hooks))  # transformers' own
                        for layer in loaded.decoder_layers]
        norm = loaded.model.model.language_model.norm if apply_norm else (lambda x: x)
        premature = torch.stack([loaded.model.lm_head(norm(out.hidden_states[hidden_state_index(layer)][:, -1]))
                                 for layer in layers])
        expected, choice = dola_scores(out.logits[:, -1], premature, alpha=0.1)
        with dola(loaded, layers, alpha=0.1, apply_norm=apply_norm,
                  attention_mask=inputs["attention_mask"]) as proc:
            gen = loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False, **proc.generate_kwargs)
    first = gen[:, inputs["input_ids"].shape[1]]
    assert first.tolist() == expected.argmax(-1).tolist()
    assert [c[0] for c in proc.chosen] == [layers[i] for i in choice.tolist()]
    assert all(len(c) == 3 and set(c) <= set(layers) for c in proc.chosen)
    after = [(len(layer._forward_hooks), len(layer._forward_pre_hooks)) for layer in loaded.decoder_layers]
    assert after == hooks_before


def test_method_options_are_checked():
    with pytest.raises(ConfigError, match="criterion='kl'"):
        make_method("dola", criterion="kl")
    with pytest.raises(ConfigError, match="repetition_penalty=0"):
        make_method("dola", repetition_penalty=0)
    with pytest.raises(ConfigError, match="alpha=0"):
        make_method("dola", alpha=0)
    method = make_method("dola", profile={"anything": 1}, layers=[EMBEDDINGS, 3], criterion="js",
                         repetition_penalty=1.2, apply_norm=True)
    assert (method.layers, method.criterion, method.repetition_penalty) == ([EMBEDDINGS, 3], "js", 1.2)
    # DoLa reads no layer profile: a profile given to every method is not part of its run's identity
    assert not takes_profile("dola")


def test_records_name_the_settings_and_the_layers(tiny_models):
    loaded = tiny_models("llava")
    method = make_method("dola", layers="high", repetition_penalty=1.2)
    method.check(loaded)
    images = make_images(2)
    records = method.answer_batch(loaded, make_samples(images, QUESTIONS[:2]), images, QUESTIONS[:2], max_new_tokens=3)
    for r in records:
        assert r["dola"] == {"criterion": "reference", "repetition_penalty": 1.2, "alpha": 0.1,
                             "apply_norm": False, "candidates": list(range(15, 30, 2))}
        assert len(r["premature_layers"]) == r["n_tokens"] and set(r["premature_layers"]) <= set(range(15, 30, 2))
        json.dumps(r)
