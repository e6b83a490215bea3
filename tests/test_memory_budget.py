"""variants_per_batch=auto: the fast engine stacks as many layer variants as fit the memory
budget, a small budget splits them into several passes with the same answers, and the per-variant
cost it plans with bounds what a stacked variant really takes."""

from __future__ import annotations

import pytest
import torch

import layerprobe
from layerprobe.errors import ConfigError
from layerprobe.evaluation.peak_memory import peak_memory
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine
from layerprobe.sweep.engines.memory import variant_cost
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe_testing import QUESTIONS, make_images, texts_of


@pytest.fixture(scope="module")
def batch():
    loaded = layerprobe.load_model("tiny:llava_next:8", device="cpu")
    inputs = loaded.encode(make_images(4, seed=1), [q + "\nAnswer with one word." for q in QUESTIONS])
    return loaded, inputs, sweep_conditions(loaded.num_layers)


def test_a_small_budget_splits_the_variants_and_keeps_the_answers(batch):
    loaded, inputs, conds = batch
    naive = texts_of(NaiveEngine().run_batch(loaded, inputs, conds, 4))
    sizes = {}
    for budget_mb in (0.01, 1.25, 1.5, 2, 3, 1024):
        engine = FastEngine(variants_per_batch="auto", memory_budget_gb=budget_mb / 1024)
        assert texts_of(engine.run_batch(loaded, inputs, conds, 4)) == naive, budget_mb
        sizes[budget_mb] = engine.last_group_size
    assert sizes[0.01] == 1 and sizes[1024] == 8  # nothing fits: one at a time; everything fits: all
    assert list(sizes.values()) == sorted(sizes.values())  # more memory, never fewer variants per pass
    assert any(1 < s < 8 for s in sizes.values()), sizes  # budgets in between split the variants
    # the knockouts change answers, so split passes had something to get wrong
    assert any(naive[c.key] != naive[conds[0].key] for c in conds[1:])


def test_default_budget_is_the_free_memory(batch):
    loaded, inputs, conds = batch
    engine = FastEngine(variants_per_batch="auto")
    engine.run_batch(loaded, inputs, conds, 2)
    assert engine.last_group_size == 8  # a tiny model's variants fit any machine that runs the tests


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_planned_cost_bounds_the_measured_cost_of_a_variant(batch, dtype):
    loaded, _, conds = batch
    inputs = loaded.encode(make_images(2, seed=1), QUESTIONS[:2])  # the tracker is slow: a small batch
    loaded.model.to(dtype)
    try:
        peaks = {}
        for k in (2, 8):
            with peak_memory("cpu") as mem:
                FastEngine(variants_per_batch=k).run_batch(loaded, inputs, conds, 2)
            peaks[k] = mem.extra_bytes
    finally:
        loaded.model.to(torch.float32)
    measured = (peaks[8] - peaks[2]) / 6
    B, T = inputs["input_ids"].shape
    prefix = int(loaded.adapter.visual_token_mask(loaded.model, inputs["input_ids"]).int().cumsum(1).argmax(1).min()) + 1
    cost = variant_cost(loaded.adapter.text_config(loaded.model), loaded.num_layers, B, T - prefix, prefix, 2, dtype)
    assert measured > 0
    assert measured <= cost.total <= 2.5 * measured, (measured, cost)


@pytest.mark.parametrize("opts,message", [
    ({"variants_per_batch": "many"}, "variants_per_batch='many': must be a positive integer, 'auto'"),
    ({"variants_per_batch": 0}, "variants_per_batch=0"),
    ({"variants_per_batch": "auto", "memory_budget_gb": -1}, "memory_budget_gb=-1: must be a positive number"),
    ({"variants_per_batch": "auto", "memory_budget_gb": "lots"}, "memory_budget_gb='lots'"),
])
def test_bad_engine_options_are_one_line_errors(opts, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        FastEngine(**opts)
    assert "\n" not in str(err.value)
