"""ViCrop and the method registry: ViCrop's formulas against direct computations and its crops,
every method on a padded batch, one-line option errors. DoLa's own tests are in test_dola.py."""

from __future__ import annotations

import numpy as np
import pytest

from layerprobe.errors import ConfigError
from layerprobe.methods.vicrop import _window_sums, crop_box, relative_attention
from layerprobe.methods.registry import METHODS, make_method
from layerprobe_testing import LLAVA_FAMILIES, QUESTIONS, make_images, make_samples

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers

PROFILE = {"fusion_layers": [2, 4, 8], "review_layer": 29, "post_integrated_layer": 28}


def test_window_sums_match_brute_force():
    att = np.random.default_rng(1).random((7, 9))
    sums = _window_sums(att, 3, 4)
    brute = np.array([[att[y:y + 3, x:x + 4].sum() for x in range(6)] for y in range(5)])
    assert np.allclose(sums, brute)


def test_crop_box_centres_on_the_attention_peak():
    att = np.full((24, 24), 0.01)
    att[18:21, 3:6] = 1.0  # peak around grid (row 19, col 4)
    x1, y1, x2, y2 = crop_box(att, (1344, 1344), bbox_size=336)
    cx, cy = 4.5 * 56, 19.5 * 56  # peak centre in pixels (56 px per grid block)
    assert x1 <= cx <= x2 and y1 <= cy <= y2
    assert 336 <= x2 - x1 <= 672 and 0 <= x1 and x2 <= 1344 and y2 <= 1344
    assert crop_box(att, (300, 300), bbox_size=336) == (0, 0, 300, 300)  # no bigger than one input


@pytest.mark.parametrize("family", LLAVA_FAMILIES)
def test_relative_attention_and_vicrop_answers(tiny_models, family):
    loaded = tiny_models(family)
    images = make_images(3)
    maps = relative_attention(loaded, images, QUESTIONS[:3], layer=14)
    assert maps.shape == (3, 4, 4) and np.isfinite(maps).all() and (maps > 0).all()
    method = make_method("vicrop", profile=PROFILE, layer=None, bbox_size=20)
    method.check(loaded)
    assert method.resolve_layer(loaded) == 8  # layer=null: the profile's deepest fusion layer
    records = method.answer_batch(loaded, make_samples(images, QUESTIONS[:3]), images, QUESTIONS[:3], max_new_tokens=2)
    for image, rec in zip(images, records):
        x1, y1, x2, y2 = rec["crop_box"]
        assert 0 <= x1 < x2 <= image.size[0] and 0 <= y1 < y2 <= image.size[1]
        assert rec["total_s"] >= rec["prefill_s"] > 0 and isinstance(rec["prediction"], str)


REQUIRED_OPTIONS = {"knockout": {"layers": [1, 2]}}  # a knockout has no default layers


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_answers_a_padded_batch(tiny_models, name):
    loaded = tiny_models("llava_next")
    method = make_method(name, profile=PROFILE, **REQUIRED_OPTIONS.get(name, {}))
    method.check(loaded)
    images = make_images(3)
    records = method.answer_batch(loaded, make_samples(images, QUESTIONS[:3]), images, QUESTIONS[:3], max_new_tokens=2)
    assert len(records) == 3
    assert all({"prediction", "prefill_s", "total_s", "n_tokens"} <= set(r) for r in records)


def test_vanilla_equals_contrastive_at_scale_one(tiny_models):
    loaded = tiny_models("llava")
    images = make_images(4)
    args = (loaded, make_samples(images, QUESTIONS), images, QUESTIONS, 4)
    vanilla = make_method("vanilla").answer_batch(*args)
    same = make_method("contrastive", profile=PROFILE, scale=1.0).answer_batch(*args)
    assert [r["prediction"] for r in vanilla] == [r["prediction"] for r in same]


@pytest.mark.parametrize("name, options, message", [
    ("beam", {}, "method='beam': unknown"),
    ("dola", {"gamma": 1}, "method dola: .*gamma"),
    ("contrastive", {}, "needs a layer profile"),
    ("contrastive", {"scale": 2.0}, "scale=2.0"),
])
def test_method_errors_are_one_line(name, options, message):
    profile = None if message == "needs a layer profile" else PROFILE
    with pytest.raises(ConfigError, match=message) as err:
        make_method(name, profile=profile, **options)
    assert "\n" not in str(err.value)


def test_vicrop_refuses_families_without_a_base_grid():
    import layerprobe

    loaded = layerprobe.load_model("tiny:qwen2_vl:8", device="cpu")
    with pytest.raises(ConfigError, match="qwen2_vl.*no square base grid"):
        make_method("vicrop", profile=PROFILE, layer=3).check(loaded)
