"""The inference methods ``layerprobe-eval`` compares, registered in one place.

    method = make_method("contrastive", profile="llava15_7b", scale=0.5)
    records = method.answer_batch(loaded, samples, images, questions, max_new_tokens=16)
    records[0]["prediction"], records[0]["total_s"], records[0]["pre_layer"]

Each method answers a batch greedily and returns one dict per sample: ``prediction, prefill_s,
total_s, n_tokens`` plus its own fields (contrastive: ``pre_layer, hellinger, n_suppressed``;
dola: ``premature_layers``; vicrop: ``crop_box``). Timings cover everything the method does for
the batch (ViCrop's two attention passes included); ``prefill_s`` is the time to the first token.
"""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessorList

from layerprobe.errors import ConfigError
from layerprobe.core.attention_rows import base_grid_side
from layerprobe.methods.contrastive import DEFAULT_SCALE, check_options, contrastive_attention, profile_layers
from layerprobe.methods.dola import candidate_layers, dola
from layerprobe.methods.vicrop import GENERIC_PROMPT, crops_for, relative_attention
from layerprobe.core.generation import _PrefillClock, _sync, decode_new_tokens, generate_answers, greedy_kwargs


def _records(answers) -> list[dict]:
    return [{"prediction": a.text, "prefill_s": a.prefill_s, "total_s": a.total_s, "n_tokens": a.n_tokens}
            for a in answers]


class Vanilla:
    name = "vanilla"

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        return _records(generate_answers(loaded, loaded.encode(images, texts), max_new_tokens))

    def check(self, loaded) -> None:
        pass


class Contrastive:
    name = "contrastive"

    def __init__(self, profile=None, percentile: float = 20, scale: float = DEFAULT_SCALE, heads: str = "mean",
                 pre_layer: int | None = None, control: str | None = None, seed: int = 0, keep_maps: bool = False,
                 target: str = "hidden"):
        if profile is None:
            raise ConfigError("method contrastive needs a layer profile (profile=<preset name or YAML path>)")
        check_options(percentile, scale, heads, control, target)
        self.profile, self.keep_maps = profile, keep_maps
        self.options = dict(percentile=percentile, scale=scale, heads=heads, pre_layer=pre_layer,
                            control=control, seed=seed, target=target)

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        inputs = loaded.encode(images, texts)
        with contrastive_attention(loaded, self.profile, keep_maps=self.keep_maps, **self.options) as ca:
            answers = generate_answers(loaded, inputs, max_new_tokens)
        return [{**r, **rec} for r, rec in zip(_records(answers), ca.records)]

    def check(self, loaded) -> None:
        profile_layers(self.profile, loaded.num_layers)


class DoLa:
    name = "dola"

    def __init__(self, layers="low", alpha: float = 0.1, apply_norm: bool = True, profile=None):
        self.layers, self.alpha, self.apply_norm = layers, alpha, apply_norm

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        inputs = loaded.encode(images, texts)
        with dola(loaded, self.layers, self.alpha, self.apply_norm) as proc:
            gen = greedy_kwargs(loaded, max_new_tokens)
            answers = _timed_generate(loaded, inputs, gen, logits_processor=LogitsProcessorList([proc]))
        return [{**r, "premature_layers": layers} for r, layers in zip(answers, proc.chosen)]

    def check(self, loaded) -> None:
        candidate_layers(self.layers, loaded.num_layers)


class ViCrop:
    name = "vicrop"

    def __init__(self, layer: int | None = 14, generic_prompt: str = GENERIC_PROMPT, bbox_size: int | None = None,
                 profile=None):
        self.layer, self.generic, self.bbox_size, self.profile = layer, generic_prompt, bbox_size, profile

    def resolve_layer(self, loaded) -> int:
        if self.layer is not None:
            return int(self.layer)
        if self.profile is None:
            raise ConfigError("vicrop layer=null takes the profile's deepest fusion layer: give a profile")
        return profile_layers(self.profile, loaded.num_layers)[0][-1]

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        _sync(loaded.device)
        start = time.perf_counter()
        maps = relative_attention(loaded, images, texts, self.resolve_layer(loaded), self.generic)
        crops, boxes = crops_for(loaded, images, maps, self.bbox_size)
        pairs = [img for pair in zip(images, crops) for img in pair]
        inputs = loaded.encode(pairs, texts, n_images=2)
        _sync(loaded.device)
        spent = time.perf_counter() - start
        answers = generate_answers(loaded, inputs, max_new_tokens)
        return [{**r, "prefill_s": r["prefill_s"] + spent, "total_s": r["total_s"] + spent, "crop_box": list(box)}
                for r, box in zip(_records(answers), boxes)]

    def check(self, loaded) -> None:
        base_grid_side(loaded)  # refuses families without a square base grid, before any work
        layer = self.resolve_layer(loaded)
        if not 0 <= layer < loaded.num_layers:
            raise ConfigError(f"vicrop layer={layer}: out of range for a {loaded.num_layers}-layer decoder")


@torch.no_grad()
def _timed_generate(loaded, inputs, gen, logits_processor) -> list[dict]:
    _sync(loaded.device)
    start = time.perf_counter()
    clock = _PrefillClock(loaded.model, start)
    try:
        out = loaded.model.generate(**inputs, **gen, logits_processor=logits_processor)
    finally:
        clock.close()
    _sync(loaded.device)
    total = time.perf_counter() - start
    texts, counts = decode_new_tokens(loaded, out[:, inputs["input_ids"].shape[1]:])
    return [{"prediction": t, "prefill_s": clock.prefill_s or total, "total_s": total, "n_tokens": n}
            for t, n in zip(texts, counts)]


METHODS = {cls.name: cls for cls in (Vanilla, Contrastive, DoLa, ViCrop)}


def make_method(name: str, profile=None, **options):
    """The method ``name`` configured by ``options`` (its YAML keys); ``profile`` for those using one."""
    cls = METHODS.get(name)
    if cls is None:
        raise ConfigError(f"method={name!r}: unknown; choose one of {', '.join(METHODS)}")
    if cls is not Vanilla:
        options["profile"] = profile
    try:
        return cls(**options)
    except TypeError as err:
        raise ConfigError(f"method {name}: {err}".splitlines()[0]) from None
