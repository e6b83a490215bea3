"""Edge sets are registered definitions: conf/mask/ is what the registry says, and an edge set
registered here, in the test module, without touching the library, runs through both sweep
engines with the fast engine's answers equal to the naive engine's: one on the question's first
token, one whose keys are chosen per sample with a seed (through ``run_sweep``), a soft one (a
weight instead of a block) that the fast engine hands to the naive one, and one that claims the
fast engine wrongly."""

from __future__ import annotations

import math
from operator import attrgetter

import pytest
import torch

import layerprobe
from layerprobe.core.dispatch import controller
from layerprobe.core.edges import (
    QUESTION, SAMPLE, EdgeSet, MaskPreset, edge_set, edge_sets, mask_config_text, register, sample_generator,
    unregister,
)
from layerprobe.errors import ConfigError
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine, fast_engine_reason
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.sweep.loop import run_sweep
from layerprobe_testing import QUESTIONS, ROOT, SUFFIX, forward, make_images, make_samples, texts_of

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers


def first_question_token(layout):
    """(B, T): the first token of each question."""
    question = layout.question
    return question & (question.long().cumsum(1) == 1)


def seeded_half_of_the_image(layout, seed: int = 0):
    """(B, T): half of each sample's visual tokens, drawn with the sample's own generator."""
    keys = torch.zeros_like(layout.visual)
    for b in range(keys.shape[0]):
        positions = layout.visual[b].nonzero().flatten()
        pick = torch.randperm(positions.numel(), generator=sample_generator(layout, b, seed))
        keys[b, positions[pick[: positions.numel() // 2]]] = True
    return keys


FIRST_QUESTION = EdgeSet("image->first-question", "The question's first token loses the visual keys.",
                         queries=first_question_token, needs=(QUESTION,))
HALF_IMAGE = EdgeSet("half-image->text", "Every text query loses a seeded half of the visual keys.",
                     queries=attrgetter("text_after"), keys=seeded_half_of_the_image, needs=(SAMPLE,))
SOFT = EdgeSet("image->text-at-half", "Text queries give the visual keys half their attention weight.",
               queries=attrgetter("text_after"), weight=0.5, fast=False)
WRONGLY_FAST = EdgeSet("image->image", "Visual queries lose the visual keys (not after the image).",
                       queries=attrgetter("visual"))


@pytest.fixture(scope="module", autouse=True)
def registered():
    for edges in (FIRST_QUESTION, HALF_IMAGE, SOFT, WRONGLY_FAST):
        register(edges)
    yield
    for edges in (FIRST_QUESTION, HALF_IMAGE, SOFT, WRONGLY_FAST):
        unregister(edges.name)


def test_mask_configs_are_the_registrys():
    """Every preset of a registered edge set has its conf/mask YAML, as the registry writes it,
    and every conf/mask YAML is a preset (the edge sets registered by this module have none)."""
    expected = {p.name: mask_config_text(e, p) for e in edge_sets() for p in e.presets}
    on_disk = {path.stem: path.read_text() for path in (ROOT / "conf" / "mask").glob("*.yaml")}
    fix = "python -c \"from layerprobe.core.edges import write_mask_configs; write_mask_configs('conf/mask')\""
    assert set(on_disk) == set(expected), f"conf/mask differs from the registry's presets; {fix}"
    for name, text in expected.items():
        assert on_disk[name] == text, f"conf/mask/{name}.yaml differs from its definition; {fix}"
    assert {"image_text", "image_last", "image_question", "image_prompt", "window9", "window9_last"} <= set(on_disk)


def test_registry_refuses_what_it_cannot_run():
    with pytest.raises(ConfigError, match="edge set 'image->text': already registered"):
        register(EdgeSet("image->text", "again", queries=attrgetter("text_after")))
    with pytest.raises(ConfigError, match="mask preset 'image_text' already belongs"):
        register(EdgeSet("image->text2", "again", queries=attrgetter("text_after"), presets=(MaskPreset("image_text"),)))
    with pytest.raises(ConfigError, match="the fast engine applies no soft weight"):
        EdgeSet("soft", "x", queries=attrgetter("text_after"), weight=0.5)
    with pytest.raises(ConfigError, match="weight=1.5: must be in"):
        EdgeSet("soft", "x", queries=attrgetter("text_after"), weight=1.5, fast=False)
    with pytest.raises(ConfigError, match="needs='seed': one of question, sample"):
        EdgeSet("seeded", "x", queries=attrgetter("text_after"), needs=("seed",))
    with pytest.raises(ConfigError, match="window=2: must be odd"):
        EdgeSet("windowed", "x", queries=attrgetter("text_after"), presets=(MaskPreset("w2", 2),))
    with pytest.raises(ConfigError, match="edges='image->all': unknown edge set; choose one of image->text, "):
        edge_set("image->all")


def test_an_edge_set_registered_here_runs_fast_equal_to_naive():
    loaded = layerprobe.load_model("tiny:llava_next:6")
    images = make_images(4, seed=1)
    samples = make_samples(images, QUESTIONS)
    inputs = FIRST_QUESTION.encode(loaded, samples, images, [q + SUFFIX for q in QUESTIONS])
    assert (inputs["attention_mask"] == 0).any()  # left-padded: the first question tokens differ in place
    layout = controller(loaded).layout_of(inputs["input_ids"], inputs["attention_mask"])
    queries = first_question_token(layout)
    assert queries.sum(1).tolist() == [1, 1, 1, 1]
    first_ids = inputs["input_ids"][queries].tolist()
    assert first_ids == [loaded.tokenizer.convert_tokens_to_ids(q.split()[0]) for q in QUESTIONS]
    conds = sweep_conditions(loaded.num_layers)
    naive = texts_of(NaiveEngine(FIRST_QUESTION.name).run_batch(loaded, inputs, conds, 4))
    fast = texts_of(FastEngine(FIRST_QUESTION.name, variants_per_batch=4).run_batch(loaded, inputs, conds, 4))
    assert fast == naive
    # the edit reaches the model: one query row fewer sees the image, and the logits move
    with layerprobe.knockout(loaded, layers=[1, 2], edges=FIRST_QUESTION.name):
        edited = forward(loaded, inputs).logits
    assert (edited - forward(loaded, inputs).logits).abs().max() > 1e-4


def test_keys_chosen_per_sample_with_a_seed_run_through_the_sweep(tmp_path):
    """``needs=(SAMPLE,)``: each sample's keys come from its own id, so they are the same in any
    batch at any padding, and ``run_sweep`` gives both engines the same rows."""
    from layerprobe.data.registry import load_benchmark
    from layerprobe.io.results import read_results

    loaded = layerprobe.load_model("tiny:llava_next:6")
    images = make_images(3, seed=2)
    samples = make_samples(images, QUESTIONS[:3])
    batched = HALF_IMAGE.encode(loaded, samples, images, QUESTIONS[:3])
    alone = HALF_IMAGE.encode(loaded, samples[2:], images[2:], QUESTIONS[2:3])
    ctrl = controller(loaded)
    keys_batched = seeded_half_of_the_image(ctrl.layout_of(batched["input_ids"], batched["attention_mask"]))
    keys_alone = seeded_half_of_the_image(ctrl.layout_of(alone["input_ids"], alone["attention_mask"]))
    visual = loaded.adapter.visual_token_mask(loaded.model, batched["input_ids"])
    visual_alone = loaded.adapter.visual_token_mask(loaded.model, alone["input_ids"])
    assert torch.equal(keys_batched[2][visual[2]], keys_alone[0][visual_alone[0]])  # padding moves nothing
    assert keys_batched[visual].float().mean().item() == pytest.approx(0.5, abs=0.05)

    data = load_benchmark("organism", limit=6)
    rows = {}
    for engine in ("naive", "fast"):
        run_sweep(loaded, data, tmp_path / engine, layers=[0, 2, 5], edges=HALF_IMAGE.name, batch_size=3,
                  engine=engine, progress=False, timing_samples=0)
        table = read_results(tmp_path / engine)
        assert set(table["edges"]) == {HALF_IMAGE.name} and len(table) == 6 * 4
        rows[engine] = table.sort_values(["sample_id", "condition", "layer"])[["sample_id", "layer", "prediction"]]
    assert rows["fast"].values.tolist() == rows["naive"].values.tolist()
    knocked = rows["naive"].dropna(subset=["layer"]).groupby("layer")["prediction"].apply(list)
    base = rows["naive"][rows["naive"]["layer"].isna()]["prediction"].tolist()
    assert any(answers != base for answers in knocked)  # the knockouts change answers


def test_a_soft_edge_set_weights_keys_and_the_fast_engine_hands_it_over(tiny_models, caplog):
    loaded = tiny_models("llava", "eager")
    inputs = loaded.encode(make_images(2), QUESTIONS[:2])
    visual = inputs["input_ids"] == loaded.model.config.image_token_id
    pos = torch.arange(visual.shape[1])
    after = (pos[None] > torch.stack([pos[v].max() for v in visual])[:, None]) & inputs["attention_mask"].bool()
    pairs = after[:, :, None] & visual[:, None, :]

    def add_log_half(module, args, kwargs):
        mask = kwargs["attention_mask"].clone()
        mask[pairs[:, None]] += math.log(0.5)
        kwargs["attention_mask"] = mask
        return args, kwargs

    handle = loaded.decoder_layers[4].self_attn.register_forward_pre_hook(add_log_half, with_kwargs=True)
    try:
        reference = forward(loaded, inputs).logits
    finally:
        handle.remove()
    with layerprobe.knockout(loaded, layers=[4], edges=SOFT.name):
        ours = forward(loaded, inputs).logits
    assert (ours - reference).abs().max() < 1e-5
    with layerprobe.knockout(loaded, layers=[4]):
        assert (ours - forward(loaded, inputs).logits).abs().max() > 1e-4  # not a block
    assert "soft" in fast_engine_reason(SOFT.name)
    conds = sweep_conditions(loaded.num_layers, layers=[4, 20])
    naive = texts_of(NaiveEngine(SOFT.name).run_batch(loaded, inputs, conds, 2))
    assert texts_of(FastEngine(SOFT.name).run_batch(loaded, inputs, conds, 2)) == naive
    assert "engine=fast falls back to naive: edges='image->text-at-half'" in caplog.text


def test_an_edge_set_wrongly_registered_as_fast_is_refused_by_the_fast_engine():
    loaded = layerprobe.load_model("tiny:llava:4")
    inputs = loaded.encode(make_images(2), QUESTIONS[:2])
    conds = sweep_conditions(loaded.num_layers)
    with pytest.raises(ConfigError, match="edges='image->image' is registered as fast, but it edits a position "
                                          "before the first post-image text token"):
        FastEngine(WRONGLY_FAST.name).run_batch(loaded, inputs, conds, 2)
    NaiveEngine(WRONGLY_FAST.name).run_batch(loaded, inputs, conds, 2)  # the reference runs it
