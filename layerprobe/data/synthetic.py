"""The organism's synthetic grounded-VQA task: a 4x4 grid of coloured cells, one question about
the colour of a named cell. Deterministic by seed; the benchmark ``data=organism``.

    samples, skipped = load(None, "test", "auto", "raise")       # 512 full grids, fixed
    build_prompt(samples[0])                                    # "what color is at the cell5"
    pixels, cells, colors = training_batch(64, torch.Generator().manual_seed(0))

Why this shape: a 32x32 px image with 8 px patches gives exactly one visual token per cell (16
visual tokens), so "which visual token holds the answer" is known exactly and the organism's
planted layers can be given regions of cells to read. The cell code is the last prompt token,
the one whose query must fetch the colour; the answer is one colour word.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from PIL import Image

from layerprobe.data._grid import CELL_PX, GRID, IMAGE_PX, NUM_CELLS
from layerprobe.data._io import generated_split
from layerprobe.data.sample import Sample

NAME = "organism"
METRIC = "exact_match"
MAX_NEW_TOKENS = 2  # the colour word, then </s>
DEFAULT_SPLIT = "test"

COLORS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
RGB = np.array(
    [[220, 30, 30], [30, 180, 40], [30, 60, 220], [240, 220, 30],
     [10, 10, 10], [245, 245, 245], [250, 140, 20], [140, 40, 170]],
    dtype=np.uint8,
)
EMPTY_RGB = np.array([64, 64, 64], dtype=np.uint8)  # curriculum grids: uncoloured cells
CELL_WORDS = [f"cell{i}" for i in range(NUM_CELLS)]
QUESTION = "what color is at the {cell}"
# Split seeds are far apart so train and test grids never come from the same stream.
SPLITS = {"test": (10_000, 512), "val": (20_000, 512), "train": (30_000, 8192)}
# CLIP normalisation as CLIPImageProcessor applies it (rescale 1/255, then mean/std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def grid_image(colors: np.ndarray) -> Image.Image:
    """(16,) colour indices (-1 = empty) in row-major cell order -> 32x32 RGB image."""
    rgb = np.where(np.asarray(colors)[:, None] >= 0, RGB[np.clip(colors, 0, None)], EMPTY_RGB)
    cells = rgb.reshape(GRID, GRID, 3)
    return Image.fromarray(np.repeat(np.repeat(cells, CELL_PX, 0), CELL_PX, 1))


def make_samples(n: int, seed: int, prefix: str = "org") -> list[Sample]:
    """``n`` full-grid questions, uniform over cells and colours, deterministic by ``seed``."""
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        colors = rng.randint(0, len(COLORS), NUM_CELLS)
        cell = int(rng.randint(NUM_CELLS))
        answer = COLORS[colors[cell]]
        out.append(Sample(
            f"{prefix}-{seed}-{i}",
            # a loader, not an image: a 5,000-sample run holds no decoded images
            _Grid(colors),
            QUESTION.format(cell=CELL_WORDS[cell]),
            [answer] * 10,
            {"cell": cell, "colors": colors.tolist()},
        ))
    return out


class _Grid:
    def __init__(self, colors):
        self.colors = np.asarray(colors)

    def __call__(self) -> Image.Image:
        return grid_image(self.colors)


def load(root=None, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise",
         n: int | None = None, seed: int | None = None, **_opts):
    """(samples, skipped) of a split; ``root`` is ignored (the data are generated)."""
    return generated_split("organism", SPLITS, make_samples, split, n, seed)


def build_prompt(sample: Sample, **_opts) -> str:
    return sample.question


# ---- tensors for training (no PIL, no processor; equal to what the processor produces) ----

def pixel_tensor(colors: torch.Tensor) -> torch.Tensor:
    """(B, 16) colour indices (-1 = empty) -> (B, 3, 32, 32) normalised pixel values."""
    table = torch.cat([torch.tensor(RGB, dtype=torch.float32), torch.tensor(EMPTY_RGB, dtype=torch.float32)[None]])
    idx = torch.where(colors >= 0, colors, torch.full_like(colors, len(COLORS)))
    rgb = clip_normalise(table[idx])  # (B, 16, 3)
    img = rgb.view(-1, GRID, GRID, 3).permute(0, 3, 1, 2)
    return img.repeat_interleave(CELL_PX, 2).repeat_interleave(CELL_PX, 3).contiguous()


def clip_normalise(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) RGB values 0-255 -> what CLIPImageProcessor gives (rescale 1/255, then mean/std)."""
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    return (rgb.float() / 255.0 - mean) / std


def training_batch(batch: int, gen: torch.Generator, curriculum: bool = True):
    """(pixels, cells, colors) for one batch. With ``curriculum``, half the grids have only
    k ~ U{1..16} coloured cells (the rest empty), which makes the first reads easier to learn;
    the question always asks about a coloured cell."""
    colors = torch.randint(0, len(COLORS), (batch, NUM_CELLS), generator=gen)
    cells = torch.randint(0, NUM_CELLS, (batch,), generator=gen)
    if curriculum:
        k = torch.randint(1, NUM_CELLS + 1, (batch, 1), generator=gen)
        rank = torch.rand(batch, NUM_CELLS, generator=gen).argsort(1).argsort(1)
        keep = rank < k
        keep[torch.arange(batch), cells] = True
        partial = torch.rand(batch, generator=gen) < 0.5
        colors = torch.where(partial[:, None] & ~keep, torch.full_like(colors, -1), colors)
    answers = colors[torch.arange(batch), cells]
    return pixel_tensor(colors), cells, answers


def _register() -> None:
    registry = sys.modules.get("layerprobe.data.registry")
    if registry is None:
        try:
            import layerprobe.data.registry as registry
        except ImportError:
            return
    registry.register_benchmark(sys.modules[__name__])


_register()
