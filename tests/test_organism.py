"""The model organism: its task, its planted structure applied on load, its accuracy, and the
knockout ground truth (planted layers matter, every other layer cannot change an answer)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import layerprobe
import layerprobe.organism as organism
from layerprobe.data import synthetic
from layerprobe.core.dispatch import controller
from layerprobe.data.metrics import exact_match
from layerprobe.models.planted import PlantedEdit
from layerprobe.organism.build import build_model, build_processor, grow
from layerprobe.organism.train import Batches, TrainSpec, default_regions, knockout_profile, wrap
from layerprobe.core.generation import generate_answers

N_FAST = 128
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded():
    return organism.load()


@pytest.fixture(scope="module")
def test_samples():
    return synthetic.load(None, "test", n=N_FAST)[0]


def _answers(loaded, samples, batch=64):
    out = []
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        inputs = loaded.encode([s.load_image() for s in chunk], [synthetic.build_prompt(s) for s in chunk])
        out += [a.text for a in generate_answers(loaded, inputs, synthetic.MAX_NEW_TOKENS)]
    return out


def _accuracy(preds, samples):
    return float(np.mean([exact_match(p, s.answers) for p, s in zip(preds, samples)]))


# ---- the task ----------------------------------------------------------------------------

def test_task_is_deterministic_and_splits_differ():
    a, _ = synthetic.load(None, "test")
    b, _ = synthetic.load(None, "test")
    assert len(a) == 512
    assert [s.extra for s in a] == [s.extra for s in b]
    train, _ = synthetic.load(None, "train", n=512)
    assert {json.dumps(s.extra) for s in a}.isdisjoint({json.dumps(s.extra) for s in train})
    s = a[0]
    assert synthetic.build_prompt(s) == f"what color is at the cell{s.extra['cell']}"
    assert s.answers[0] == synthetic.COLORS[s.extra["colors"][s.extra["cell"]]]
    img = np.asarray(s.load_image())
    assert img.shape == (32, 32, 3)
    row, col = divmod(s.extra["cell"], 4)
    assert tuple(img[row * 8 + 3, col * 8 + 3]) == tuple(synthetic.RGB[s.extra["colors"][s.extra["cell"]]])


def test_task_is_a_registered_benchmark():
    from layerprobe.data.registry import get_benchmark, load_benchmark

    assert get_benchmark("organism") is synthetic
    data = load_benchmark("organism", limit=16)
    assert data.metric == "exact_match" and data.max_new_tokens == 2 and len(data.samples) == 16


def test_training_pixels_equal_the_processor():
    processor = build_processor()
    samples = synthetic.load(None, "val", n=8)[0]
    enc = processor(images=[s.load_image() for s in samples], text=["<image>x"] * 8, return_tensors="pt")
    colors = torch.tensor([s.extra["colors"] for s in samples])
    assert torch.equal(synthetic.pixel_tensor(colors), enc["pixel_values"])


# ---- building and growing ------------------------------------------------------------------

def test_growing_is_exact():
    processor = build_processor()
    regions = default_regions(3)
    shallow = build_model(processor, 3, seed=0)
    with torch.no_grad():  # random readers would be too weak to show a difference; scale them up
        for p in shallow.model.language_model.parameters():
            p.mul_(3)
    deep = grow(shallow, [1, 4, 6], 8, seed=0)
    controller(wrap(shallow, processor)).add_permanent(PlantedEdit([0, 1, 2], regions))
    controller(wrap(deep, processor)).add_permanent(PlantedEdit([1, 4, 6], regions))
    b = Batches(processor)
    colors = torch.randint(0, 8, (4, 16), generator=torch.Generator().manual_seed(0))
    cells = torch.tensor([0, 5, 9, 15])
    with torch.no_grad():
        a = shallow(input_ids=b.ids(cells, None), pixel_values=synthetic.pixel_tensor(colors)).logits
        d = deep(input_ids=b.ids(cells, None), pixel_values=synthetic.pixel_tensor(colors)).logits
    torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-5)


# ---- the shipped organism --------------------------------------------------------------------

def test_shipped_files_are_small_and_complete():
    names = {p.name for p in organism.WEIGHTS_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "layerprobe_organism.json", "tokenizer.json"} <= names
    size = sum(p.stat().st_size for p in organism.WEIGHTS_DIR.iterdir())
    assert size < 20 * 2**20
    spec = organism.spec()
    assert spec["planted"] == [2, 4, 8, 11, 12, 13, 29]
    assert sorted(c for r in spec["regions"] for c in r) == list(range(16))


def test_load_applies_the_planted_structure(loaded):
    assert loaded.num_layers == 32 and type(loaded.model).__name__ == "LlavaForConditionalGeneration"
    assert loaded.extra["organism"]["planted"] == [2, 4, 8, 11, 12, 13, 29]
    edits = [e for e in controller(loaded).permanent if isinstance(e, PlantedEdit)]
    assert len(edits) == 1 and edits[0].planted == [2, 4, 8, 11, 12, 13, 29]
    same = layerprobe.load_model("organism", device="cpu")
    assert same.extra["organism"] == loaded.extra["organism"]


def test_planted_mask_blocks_exactly_what_it_says(loaded, test_samples):
    ctrl = controller(loaded)
    inputs = loaded.encode([s.load_image() for s in test_samples[:2]], [s.question for s in test_samples[:2]])
    layout = ctrl.layout_of(inputs["input_ids"], inputs["attention_mask"])
    q = layout.positions
    edit = next(e for e in ctrl.permanent if isinstance(e, PlantedEdit))
    vis = layout.visual[0].nonzero().flatten()
    last = layout.length - 1
    for layer in range(32):
        blocked = edit.blocked(layer, layout, q)[0]
        readable = [int(c) for c, p in enumerate(vis) if not blocked[last, p]]
        expected = edit.region_of_layer.get(layer, [])
        assert readable == expected, layer
        assert not blocked[last, 0]  # BOS is always readable (the attention sink)
        # visual tokens see BOS and themselves only
        v = int(vis[3])
        assert [int(p) for p in vis if not blocked[v, p]] == [v]


def test_baseline_accuracy(loaded, test_samples):
    preds = _answers(loaded, test_samples)
    assert _accuracy(preds, test_samples) >= 0.9, preds[:10]
    assert all(p in synthetic.COLORS for p in preds)


def test_the_structure_is_what_makes_it_work(loaded, test_samples):
    """Lifting the permanent mask changes the model's answers: the weights alone are not the organism."""
    ctrl = controller(loaded)
    kept = list(ctrl.permanent)
    base = _answers(loaded, test_samples[:64])
    ctrl.permanent.clear()
    try:
        free = _answers(loaded, test_samples[:64])
    finally:
        ctrl.permanent.extend(kept)
    assert free != base


def test_non_planted_knockout_changes_no_answer(loaded, test_samples):
    base = _answers(loaded, test_samples)
    planted = set(organism.spec()["planted"])
    for layer in range(loaded.num_layers):
        if layer in planted:
            continue
        with layerprobe.knockout(loaded, [layer]):
            assert _answers(loaded, test_samples) == base, layer


def test_recorded_numbers_are_reproducible(loaded):
    """The held-out numbers in layerprobe_organism.json (first-token accuracy, 512 test samples)
    come back exactly at baseline and at every planted layer; the record has a drop of exactly 0
    at every other layer."""
    spec = organism.spec()
    rec = spec["test"]
    prof = knockout_profile(loaded, n=rec["n"], layers=spec["planted"])
    assert prof["baseline"] == pytest.approx(rec["accuracy"], abs=1e-4)
    for layer in spec["planted"]:
        assert prof["drops"][layer] == pytest.approx(rec["knockout_drop_points"][layer], abs=0.01)
        assert rec["knockout_drop_points"][layer] >= 8
    assert all(d == 0 for l, d in enumerate(rec["knockout_drop_points"]) if l not in spec["planted"])


# ---- the recipe ------------------------------------------------------------------------------

def test_train_spec_defaults_are_the_shipped_recipe():
    """``TrainSpec()`` retrains the shipped organism: every setting equals the one recorded in its
    ``layerprobe_organism.json`` (regions as resolved there)."""
    recorded = organism.spec()["training"]
    spec = TrainSpec()
    defaults = {**asdict(spec), "regions": spec.resolved_regions()}
    assert defaults == {k: recorded[k] for k in defaults}


def test_train_app_without_arguments_uses_the_train_spec_defaults():
    """The Hydra app adds only its own keys to TrainSpec's defaults, so its no-argument run is the
    shipped recipe too, and it measures the test numbers on as many samples as were recorded."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    app = importlib.util.spec_from_file_location("train_organism_app", ROOT / "experiments" / "train_organism.py")
    app.loader.exec_module(importlib.util.module_from_spec(app))  # registers the train_spec config
    with initialize_config_dir(str(ROOT / "conf" / "experiment"), version_base=None):
        cfg = OmegaConf.to_container(compose("train_organism"), resolve=True)
    assert {k: cfg.pop(k) for k in ("out", "test_n", "knockout_check")} == {
        "out": None, "test_n": organism.spec()["test"]["n"], "knockout_check": True}
    assert TrainSpec(**cfg) == TrainSpec()


# ---- retraining with another planted set ------------------------------------------------------

@pytest.mark.slow
def test_retrain_with_another_planted_set(tmp_path):
    from layerprobe.organism.train import TrainSpec, train_organism

    planted = [1, 5, 9, 20]
    meta = train_organism(TrainSpec(planted=planted, seed=1), out=tmp_path / "org")
    # stages stop at the 1800 s deadline; growing, the final eval and saving come after it
    assert meta["training"]["seconds"] <= 1800 + 120
    retrained = organism.load(path=tmp_path / "org")
    prof = knockout_profile(retrained, n=512)
    assert prof["baseline"] >= 0.9
    assert [l for l, d in enumerate(prof["drops"]) if d != 0] == planted
    assert all(prof["drops"][l] >= 8 for l in planted)
    check_adaptive_sweep_finds(retrained, planted, None, tmp_path / "adaptive")


def check_adaptive_sweep_finds(loaded, fusion, review, run_dir) -> None:
    """The adaptive sweep on the test split names exactly these layers from at most half of the
    full sweep's answers."""
    from layerprobe.analysis.discovery import discover
    from layerprobe.analysis.sequential import Design
    from layerprobe.data.registry import load_benchmark
    from layerprobe.io.runs import read_adaptive
    from layerprobe.sweep.loop import run_sweep

    run_sweep(loaded, load_benchmark("organism"), run_dir, adaptive=Design(), progress=False, timing_samples=0,
              header={"model": loaded.describe()})
    found = discover(run_dir)
    assert (found.fusion_layers, found.review_layer) == (fusion, review)
    answers = read_adaptive(run_dir)["answers"]
    assert answers["computed"] <= answers["full_sweep"] / 2, answers
