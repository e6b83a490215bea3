"""The natural organism's task: drawn scenes of a few coloured shapes on a 4x4 grid of places,
plus salient distractor patches, with three kinds of question that need the image differently.
Deterministic by seed; the benchmark ``data=scenes``.

    samples, skipped = load(None, "test")           # 600 fixed scenes and questions
    samples[0].question, samples[0].answers[0]       # "is the circle left of the cross", "yes"
    samples[0].extra["qtype"]                        # attribute | relation | count
    images, questions, answers = training_batch(64, numpy.random.RandomState(0))

Question types (one third each):
- ``attribute``: "what color is the circle", about a shape drawn exactly once;
- ``relation``: "is the circle left of the cross" / "is the circle above the cross", two shapes
  drawn once each, never in the same column (left) or row (above), so yes/no is well defined;
- ``count``: "how many red shapes are there", zero to four.

Why this shape: a 32x32 px image with 8 px patches gives one visual token per place (16), so a
shape is exactly one token and the tokens that answer a question are known. Distractors are
black-and-white checkerboards, the most extreme pixel values in the scene, that never count as a
shape: they draw attention (high-norm tokens) without answering anything.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from layerprobe.data._grid import CELL_PX, GRID, IMAGE_PX, NUM_CELLS
from layerprobe.data._io import generated_split
from layerprobe.data.sample import Sample

NAME = "scenes"
METRIC = "exact_match"
MAX_NEW_TOKENS = 2  # the answer word, then </s>
DEFAULT_SPLIT = "test"

SHAPES = ["circle", "square", "triangle", "cross"]
COLORS = ["red", "green", "blue", "yellow", "orange", "purple"]
RGB = np.array([[220, 30, 30], [30, 180, 40], [30, 60, 220], [240, 220, 30], [250, 140, 20], [140, 40, 170]],
               dtype=np.uint8)
# Dark, so every colour is brighter than the ground: a shape's outline then shows the same way
# whatever its colour (on mid-grey a blue shape is about as bright as the ground around it).
BACKGROUND = np.array([16, 16, 16], dtype=np.uint8)
QTYPES = ("attribute", "relation", "count")
RELATIONS = {"left of": 1, "above": 0}  # the relation word and the coordinate (row 0, column 1) it compares
NUMBERS = ["zero", "one", "two", "three", "four"]
OBJECTS = (2, 4)        # shapes per scene, inclusive
DISTRACTORS = (1, 2)    # checkerboard patches per scene, inclusive
# the words the task's questions and answers use (the tokenizer must know each as one token)
WORDS = SHAPES + COLORS + NUMBERS + ["yes", "no", "what", "color", "is", "the", "left", "of", "above", "how",
                                     "many", "shapes", "are", "there"]
# Split seeds far apart, so no split's scenes come from another's stream.
SPLITS = {"test": (110_000, 600), "val": (120_000, 600), "train": (130_000, 8192)}


def _masks() -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:CELL_PX, 0:CELL_PX] + 0.5
    c = CELL_PX / 2
    return {
        "circle": (x - c) ** 2 + (y - c) ** 2 <= 3.2 ** 2,
        "square": (abs(x - c) <= 3) & (abs(y - c) <= 3),
        "triangle": (y >= 1) & (y <= 7) & (abs(x - c) <= (y - 1) / 2 + 0.5),
        "cross": ((abs(x - c) <= 1) | (abs(y - c) <= 1)) & (abs(x - c) <= 3.5) & (abs(y - c) <= 3.5),
    }


def _interior(mask: np.ndarray) -> np.ndarray:
    """``mask`` less its one-pixel border (4-neighbourhood erosion)."""
    m = np.pad(mask, 1)
    return mask & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


MASKS = _masks()
# A shape is its colour inside a white outline: the outline says which shape it is the same way
# for every colour (a shape in plain colour is, to a linear patch embedding, a different pattern
# per colour: same-shape features of two colours come out nearly orthogonal).
INTERIORS = {k: _interior(m) for k, m in MASKS.items()}
OUTLINE_RGB = np.array([255, 255, 255], dtype=np.uint8)
CHECKER = ((np.add.outer(np.arange(CELL_PX), np.arange(CELL_PX)) // 2) % 2).astype(bool)


def render(objects, distractors) -> np.ndarray:
    """(32, 32, 3) uint8: ``objects`` as (cell, shape, colour index), ``distractors`` as cells."""
    img = np.broadcast_to(BACKGROUND, (IMAGE_PX, IMAGE_PX, 3)).copy()
    for cell in distractors:
        r, c = divmod(cell, GRID)
        img[r * CELL_PX:(r + 1) * CELL_PX, c * CELL_PX:(c + 1) * CELL_PX] = np.where(CHECKER[..., None], 255, 0)
    for cell, shape, color in objects:
        r, c = divmod(cell, GRID)
        patch = img[r * CELL_PX:(r + 1) * CELL_PX, c * CELL_PX:(c + 1) * CELL_PX]
        patch[MASKS[shape]] = OUTLINE_RGB
        patch[INTERIORS[shape]] = RGB[color]
    return img


def _scene(rng: np.random.RandomState, objects=OBJECTS, distractors=DISTRACTORS):
    n_obj = rng.randint(objects[0], objects[1] + 1)
    n_dis = rng.randint(distractors[0], distractors[1] + 1)
    cells = rng.permutation(NUM_CELLS)[:n_obj + n_dis]
    objects = [(int(c), SHAPES[rng.randint(len(SHAPES))], int(rng.randint(len(COLORS)))) for c in cells[:n_obj]]
    return objects, sorted(int(c) for c in cells[n_obj:])


def _question(objects, qtype: str, rng: np.random.RandomState):
    """(question, answer) of ``qtype`` about ``objects``, or None when the scene cannot pose it."""
    shapes = [s for _, s, _ in objects]
    unique = [o for o in objects if shapes.count(o[1]) == 1]
    if qtype == "attribute":
        if not unique:
            return None
        cell, shape, color = unique[rng.randint(len(unique))]
        return f"what color is the {shape}", COLORS[color]
    if qtype == "relation":
        word = list(RELATIONS)[rng.randint(len(RELATIONS))]
        axis = RELATIONS[word]
        pairs = [(a, b) for a in unique for b in unique
                 if a is not b and divmod(a[0], GRID)[axis] != divmod(b[0], GRID)[axis]]
        if not pairs:
            return None
        a, b = pairs[rng.randint(len(pairs))]
        yes = divmod(a[0], GRID)[axis] < divmod(b[0], GRID)[axis]
        return f"is the {a[1]} {word} the {b[1]}", "yes" if yes else "no"
    # half the time a colour that is present, so "zero" is not most answers
    present = sorted({c for _, _, c in objects})
    color = present[rng.randint(len(present))] if rng.rand() < 0.5 else rng.randint(len(COLORS))
    return f"how many {COLORS[color]} shapes are there", NUMBERS[sum(c == color for _, _, c in objects)]


def draw_item(rng: np.random.RandomState, n_objects=OBJECTS, n_distractors=DISTRACTORS) -> dict:
    """One scene and question: the question type is drawn first (uniform), then scenes (with
    ``n_objects`` and ``n_distractors`` in these ranges) are drawn until one can pose it."""
    qtype = QTYPES[rng.randint(len(QTYPES))]
    while True:
        objects, distractors = _scene(rng, n_objects, n_distractors)
        qa = _question(objects, qtype, rng)
        if qa is not None:
            return {"qtype": qtype, "question": qa[0], "answer": qa[1],
                    "objects": [list(o) for o in objects], "distractors": distractors}


def make_samples(n: int, seed: int, prefix: str = "scenes") -> list[Sample]:
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        item = draw_item(rng)
        out.append(Sample(f"{prefix}-{seed}-{i}", _Scene(item["objects"], item["distractors"]), item["question"],
                          [item["answer"]] * 10,
                          {k: item[k] for k in ("qtype", "objects", "distractors")}))
    return out


class _Scene:
    """A loader, not an image: a long run holds no decoded images."""

    def __init__(self, objects, distractors):
        self.objects, self.distractors = objects, distractors

    def __call__(self) -> Image.Image:
        return Image.fromarray(render(self.objects, self.distractors))


def load(root=None, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise",
         n: int | None = None, seed: int | None = None, **_opts):
    """(samples, skipped) of a split; ``root`` is ignored (the data are generated)."""
    return generated_split("scenes", SPLITS, make_samples, split, n, seed)


def build_prompt(sample: Sample, **_opts) -> str:
    return sample.question


# Curriculum scenes: one or two shapes and no distractor. With one shape, "what color is the
# circle" is answered by any attention that reaches the image, so the colour read-out is learned
# before the search for the named shape (a 16-layer model from scratch on full scenes only was
# still answering from the question alone after 800 steps).
EASY = {"n_objects": (1, 2), "n_distractors": (0, 0)}


def training_batch(batch: int, rng: np.random.RandomState, easy: float = 0.0):
    """(images (B, 32, 32, 3) uint8, questions, answers) of ``batch`` fresh items from ``rng``;
    the first ``round(easy * batch)`` are curriculum scenes (``EASY``)."""
    n_easy = round(easy * batch)
    items = [draw_item(rng, **EASY) if i < n_easy else draw_item(rng) for i in range(batch)]
    images = np.stack([render(it["objects"], it["distractors"]) for it in items])
    return images, [it["question"] for it in items], [it["answer"] for it in items]
