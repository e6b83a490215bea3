"""ViCrop ("MLLMs know where to look", Zhang et al., ICLR 2025), relative-attention variant: the
question's last-token attention over the visual tokens at one layer, divided by that of a generic
description prompt; a crop around the peak at the window size where the peak is sharpest; then
the question is answered again with the image and the crop.

    maps = relative_attention(loaded, images, prompts, layer=14,      # (B, side, side) numpy
                              generic=generic_prompts(samples, prompts))
    box = crop_box(maps[0], images[0].size, bbox_size=336)            # (x1, y1, x2, y2) pixels

The map covers the base image grid (the first side**2 visual tokens: LLaVA-1.5's only grid,
LLaVA-1.6's downscaled full image before its tiles), which avoids ViCrop's broken LLaVA-1.6 boxes.
Attention comes from the last query row recomputed at that layer only (``attention_rows``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from layerprobe.core.generation import generate_answers, sync
from layerprobe.core.layers import layer_index
from layerprobe.errors import ConfigError
from layerprobe.methods.base import Method, answer_records
from layerprobe.methods.contrastive import profile_layers
from layerprobe.core.attention_rows import LastRowRecorder, visual_distribution
from layerprobe.core.dispatch import controller

GENERIC_PROMPT = "Write a general description of the image."
RATIOS = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)  # crop sides as multiples of the model's input resolution


def _last_row_maps(loaded, images, texts, layer: int, side: int) -> torch.Tensor:
    inputs = loaded.encode(images, texts)
    with torch.no_grad(), controller(loaded).observe(LastRowRecorder({layer})) as rec:
        loaded.model(**inputs)
    layout = rec.layout
    allowed = controller(loaded).last_row_allowed(layer, layout)
    dist = visual_distribution(rec.scores[layer], layout.visual, "mass", allowed)
    maps = []
    for b in range(dist.shape[0]):
        values = dist[b, layout.visual[b]][: side * side]
        if values.numel() < side * side:
            raise ConfigError(f"vicrop: sample {b} has {values.numel()} visual tokens, fewer than a "
                              f"{side}x{side} base grid")
        maps.append(values.reshape(side, side))
    return torch.stack(maps)


def generic_prompts(samples, texts, generic: str = GENERIC_PROMPT) -> list[str]:
    """Each prompt with its question replaced by ``generic``: the answer-format suffix (and any
    other lines of the benchmark's prompt) stay, as the reference implementation keeps its
    instruction after the generic question, so numerator and denominator differ by the question
    alone. Where the question is not in the prompt, ``generic`` itself."""
    out = []
    for sample, text in zip(samples, texts):
        question = sample.question
        out.append(text.replace(question, generic, 1) if question and question in text else generic)
    return out


def relative_attention(loaded, images, texts, layer: int, generic=GENERIC_PROMPT) -> np.ndarray:
    """(B, side, side): question attention / generic-prompt attention over the base grid;
    ``generic`` is one prompt for every sample or one per sample (``generic_prompts``)."""
    layer_index("vicrop layer", layer, loaded.num_layers)
    side = loaded.adapter.base_grid_side(loaded.model)
    question = _last_row_maps(loaded, images, texts, layer, side)
    generic = [generic] * len(images) if isinstance(generic, str) else list(generic)
    general = _last_row_maps(loaded, images, generic, layer, side)
    return (question / general.clamp_min(1e-12)).numpy()


def _window_sums(att: np.ndarray, h: int, w: int) -> np.ndarray:
    c = np.pad(att.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def crop_box(att: np.ndarray, image_size: tuple[int, int], bbox_size: int) -> tuple[int, int, int, int]:
    """ViCrop's adaptive crop: for each window (bbox_size * ratio pixels, in grid blocks) find the
    window of largest summed attention; keep the ratio whose peak stands out most from its four
    neighbouring windows (per block); centre a square of that size on it, inside the image."""
    width, height = image_size
    rows, cols = att.shape
    block_w, block_h = width / cols, height / rows
    best = None
    for ratio in RATIOS:
        bw, bh = min(int(bbox_size * ratio / block_w), cols), min(int(bbox_size * ratio / block_h), rows)
        if cols - bw < 1 and rows - bh < 1:
            if ratio == RATIOS[0]:
                return 0, 0, width, height  # the image is no larger than one model input
            continue
        bw, bh = max(bw, 1), max(bh, 1)
        sums = _window_sums(att, bh, bw)
        y, x = np.unravel_index(np.argmax(sums), sums.shape)
        neighbours = [sums[yy, xx] for yy, xx in ((y, x - 1), (y, x + 1), (y - 1, x), (y + 1, x))
                      if 0 <= yy < sums.shape[0] and 0 <= xx < sums.shape[1]]
        sharpness = (sums[y, x] - np.mean(neighbours)) / (bw * bh) if neighbours else 0.0
        if best is None or sharpness > best[0]:
            best = (sharpness, x, y, bw, bh, bbox_size * ratio)
    _, x, y, bw, bh, size = best
    half = size / 2
    cx = min(max((x + bw / 2) * block_w, half), width - half)
    cy = min(max((y + bh / 2) * block_h, half), height - half)
    return (int(max(0, cx - half)), int(max(0, cy - half)), int(min(width, cx + half)), int(min(height, cy + half)))


def crops_for(loaded, images, maps: np.ndarray, bbox_size: int | None = None) -> tuple[list, list]:
    """(crops, boxes in image pixels) for each image and its relative-attention map."""
    bbox_size = bbox_size or loaded.adapter.vision_input_size(loaded.model)
    crops, boxes = [], []
    for image, att in zip(images, maps):
        x0, y0, w, h = loaded.adapter.grid_region(image)
        x1, y1, x2, y2 = crop_box(att, (w, h), bbox_size)
        box = (x0 + x1, y0 + y1, x0 + x2, y0 + y2)
        crops.append(image.crop(box))
        boxes.append(box)
    return crops, boxes


class ViCrop(Method):
    name = "vicrop"

    def __init__(self, layer: int | None = 14, generic_prompt: str = GENERIC_PROMPT, bbox_size: int | None = None,
                 profile=None):
        self.layer, self.generic, self.bbox_size, self.profile = layer, generic_prompt, bbox_size, profile

    def resolve_layer(self, loaded) -> int:
        if self.layer is not None:
            return layer_index("vicrop layer", self.layer, loaded.num_layers)
        if self.profile is None:
            raise ConfigError("vicrop layer=null takes the profile's deepest fusion layer: give a profile")
        return profile_layers(self.profile, loaded.num_layers)[0][-1]

    def check(self, loaded) -> None:
        loaded.adapter.base_grid_side(loaded.model)  # refuses families without a square base grid
        self.resolve_layer(loaded)

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        sync(loaded.device)
        start = time.perf_counter()
        maps = relative_attention(loaded, images, texts, self.resolve_layer(loaded),
                                  generic_prompts(samples, texts, self.generic))
        crops, boxes = crops_for(loaded, images, maps, self.bbox_size)
        pairs = [img for pair in zip(images, crops) for img in pair]
        inputs = loaded.encode(pairs, texts, n_images=2)
        sync(loaded.device)
        spent = time.perf_counter() - start
        answers = generate_answers(loaded, inputs, max_new_tokens)
        return [{**r, "prefill_s": r["prefill_s"] + spent, "total_s": r["total_s"] + spent, "crop_box": list(box)}
                for r, box in zip(answer_records(answers), boxes)]
