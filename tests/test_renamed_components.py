"""Model structure lives only in the adapters: a tiny LLaVA whose components carry other names
(``tests/renamed_model.py``: language model, decoder layers, final norm, rotary embedding,
attention, its projections and scale, the MLP's output projection), with an adapter that maps
them, runs the sweep (both engines, fast = naive), DoLa, contrastive attention (every target),
ViCrop and the knockout method, each answering exactly what the same weights answer under the
stock names. The old names raise AttributeError outside transformers' own code, so any reader
that guessed a name instead of asking the adapter fails here."""

from __future__ import annotations

import pytest
import torch

from layerprobe.methods.registry import make_method
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe_testing import QUESTIONS, SUFFIX, make_images, make_samples, texts_of
from renamed_model import llava_pair

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers

PROFILE = {"fusion_layers": [1, 2], "post_integrated_layer": 3, "review_layer": 4}
TIMES = ("prefill_s", "total_s")


@pytest.fixture(scope="module")
def pair():
    return llava_pair(num_layers=6)


@pytest.fixture(scope="module")
def batch():
    images = make_images(3, seed=5)
    texts = [q + SUFFIX for q in QUESTIONS[:3]]
    return make_samples(images, QUESTIONS[:3]), images, texts


def test_the_stock_names_are_gone(pair):
    _, renamed = pair
    model = renamed.model
    for read in (lambda: model.model.language_model, lambda: model.model.text_decoder.norm,
                 lambda: model.model.text_decoder.rotary_emb, lambda: model.model.text_decoder.layers,
                 lambda: model.model.text_decoder.blocks[0].self_attn,
                 lambda: model.model.text_decoder.blocks[0].attn.scaling,
                 lambda: model.model.text_decoder.blocks[0].attn.v_proj,
                 lambda: model.model.text_decoder.blocks[0].mlp.down_proj):
        with pytest.raises(AttributeError):
            read()


@pytest.mark.parametrize("edges", ["image->text", "image->question"])
def test_sweep_fast_equals_naive_equals_the_stock_names(pair, batch, edges):
    original, renamed = pair
    conds = sweep_conditions(renamed.num_layers)
    answers = {}
    for name, loaded in (("original", original), ("renamed", renamed)):
        inputs = loaded.encode(batch[1], batch[2], questions=QUESTIONS[:3])
        answers[name, "naive"] = texts_of(NaiveEngine(edges).run_batch(loaded, inputs, conds, 4))
        answers[name, "fast"] = texts_of(FastEngine(edges, variants_per_batch=3).run_batch(loaded, inputs, conds, 4))
    assert answers["renamed", "fast"] == answers["renamed", "naive"] == answers["original", "naive"]
    assert answers["original", "fast"] == answers["original", "naive"]
    naive = answers["original", "naive"]
    assert any(naive[c.key] != naive[conds[0].key] for c in conds[1:])  # the knockouts change answers


METHODS = [
    ("dola", {"layers": "low"}),
    ("dola", {"layers": [0, 2, 3], "apply_norm": True}),
    ("contrastive", {"target": "attention", "scale": 0.2}),
    ("contrastive", {"target": "values", "scale": 0.2}),
    ("contrastive", {"target": "hidden", "scale": 0.0}),
    ("contrastive", {"heads": "mass", "scale": 0.0}),
    ("vicrop", {"layer": 2, "bbox_size": 28}),
    ("knockout", {"layers": [1, 2], "edges": "image->question"}),
]


@pytest.mark.parametrize("name, options", METHODS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(METHODS)])
def test_every_method_answers_as_under_the_stock_names(pair, batch, name, options):
    records = {}
    for label, loaded in zip(("original", "renamed"), pair):
        method = make_method(name, profile=PROFILE, **options)
        method.check(loaded)
        method.keep_maps_for(3)
        with torch.no_grad():
            out = method.answer_batch(loaded, *batch, max_new_tokens=3)
        records[label] = [{k: v for k, v in r.items() if k not in TIMES} for r in out]
    assert records["renamed"] == records["original"]
    if name == "contrastive":  # the method did act: tokens were chosen and suppressed
        assert all(r["n_suppressed"] > 0 for r in records["renamed"])
