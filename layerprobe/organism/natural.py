"""The natural organism: a tiny LLaVA (CLIP tower, projector, 16-layer Llama decoder) trained from
scratch on the scenes task (``layerprobe.data.scenes``) with no constraint on any layer: every
text token may read every visual token at every layer, as in a real VLM. Whether a few layers
end up doing the reading (fusion) and a late one looks again (review) is what a sweep of it asks.

    spec = NaturalSpec()                                   # the shipped recipe
    meta = train_natural(spec, out="/tmp/natural")         # then load_model("/tmp/natural")
    loaded = load()                                        # the shipped weights = load_model("natural_organism")

The parts are the planted organism's (``layerprobe.organism.build``: tokenizer, processor, LLaVA
config with a one-layer CLIP tower whose features are the patch embeddings) and so is the
optimiser (``layerprobe.organism.train.optimise``); only the task and the absence of a mask
differ. docs/natural-organism.md has the recipe's numbers and what the pipeline found.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from layerprobe.data import scenes
from layerprobe.data.synthetic import clip_normalise
from layerprobe.io.paths import SHIPPED_MODELS
from layerprobe.models.loading import load_model
from layerprobe.models.planted import read_metadata
from layerprobe.models.registry import adapter_for
from layerprobe.models.tiny_llava import clip_embeddings
from layerprobe.organism.build import build_model, build_processor, residual_writers
from layerprobe.organism.train import optimise, save

WEIGHTS_DIR = SHIPPED_MODELS["natural_organism"]
RECIPE_FILE = "natural_organism.json"  # the recipe and its measured numbers, beside the weights


@dataclass
class NaturalSpec:
    """The recipe. The defaults are the shipped natural organism's, as recorded under ``training``
    in its ``natural_organism.json`` (a test keeps the two equal)."""

    num_layers: int = 16
    seed: int = 0
    hidden: int = 128
    heads: int = 4
    intermediate: int = 256
    batch: int = 48
    easy: float = 0.5          # share of each batch drawn from the curriculum scenes (scenes.EASY)
    steps: int = 4000
    lr: float = 1e-3
    scaled_init: bool = False  # GPT-2's init: each layer's output projections x 1/sqrt(2 x num_layers)
    patch_init_std: float | None = None  # the patch embedding's init std; None: CLIP's (0.02)
    warmup: int = 200
    threads: int = 1           # the machine is shared; one thread is as fast there and reproducible
    eval_every: int = 250
    eval_n: int = 300          # the first 300 of the validation split, scored during training
    time_limit_s: float = 1500.0  # 25 minutes; the final evaluation and saving come after it


class Encoder:
    """Token ids of the task's prompts, built once per distinct question with the real processor
    and left-padded per batch as the processor pads them."""

    def __init__(self, processor):
        self.processor = processor
        tok = processor.tokenizer
        self.pad, self.eos = tok.pad_token_id, tok.eos_token_id
        self._blank = Image.new("RGB", (scenes.IMAGE_PX, scenes.IMAGE_PX))  # ids do not depend on it
        self._ids: dict[str, list[int]] = {}

    def prompt_ids(self, question: str) -> list[int]:
        if question not in self._ids:
            prompt = self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
                add_generation_prompt=True, tokenize=False)
            self._ids[question] = self.processor(images=[self._blank], text=[prompt])["input_ids"][0]
        return list(self._ids[question])

    def answer_id(self, answer: str) -> int:
        return self.processor.tokenizer.convert_tokens_to_ids(answer)

    def batch(self, questions: list[str], answers: list[str] | None = None) -> dict:
        """input_ids, attention_mask and position_ids (as generate() derives them from the mask),
        with each answer and ``</s>`` appended when ``answers`` are given."""
        rows = [self.prompt_ids(q) + ([] if answers is None else [self.answer_id(a), self.eos])
                for q, a in zip(questions, answers or [None] * len(questions))]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids}


def pixel_values(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 scenes -> the processor's pixel values (B, 3, H, W)."""
    return clip_normalise(torch.from_numpy(images)).permute(0, 3, 1, 2).contiguous()


def loss(model, enc: Encoder, images, questions, answers) -> torch.Tensor:
    """Cross-entropy of the answer word plus 0.1 x that of the ``</s>`` after it."""
    inputs = enc.batch(questions, answers)
    logits = model(**inputs, pixel_values=pixel_values(images), logits_to_keep=3).logits
    # logits[:, 0] predicts the answer, logits[:, 1] the </s> after it
    ids = inputs["input_ids"]
    return F.cross_entropy(logits[:, 0], ids[:, -2]) + 0.1 * F.cross_entropy(logits[:, 1], ids[:, -1])


@torch.no_grad()
def evaluate(model, enc: Encoder, split: str = "val", n: int | None = None, chunk: int = 200) -> dict:
    """Greedy first-token accuracy over the full vocabulary on ``split``, overall and per
    question type."""
    samples, _ = scenes.load(None, split, n=n)
    was_training = model.training
    model.eval()
    hits = []
    for i in range(0, len(samples), chunk):
        part = samples[i:i + chunk]
        images = np.stack([scenes.render(s.extra["objects"], s.extra["distractors"]) for s in part])
        inputs = enc.batch([s.question for s in part])
        logits = model(**inputs, pixel_values=pixel_values(images), logits_to_keep=1).logits[:, -1]
        hits += (logits.argmax(-1) == torch.tensor([enc.answer_id(s.answers[0]) for s in part])).tolist()
    model.train(was_training)
    per_type = {t: float(np.mean([h for h, s in zip(hits, samples) if s.extra["qtype"] == t])) for t in scenes.QTYPES}
    return {"accuracy": float(np.mean(hits)), "per_type": per_type}


def build(spec: NaturalSpec):
    """(model, processor) of ``spec`` before training, its initialisation options applied."""
    processor = build_processor(scenes.WORDS, scenes.IMAGE_PX, scenes.CELL_PX)
    model = build_model(processor, spec.num_layers, seed=spec.seed, hidden=spec.hidden, heads=spec.heads,
                        kv_heads=spec.heads, intermediate=spec.intermediate, max_positions=128)
    if spec.scaled_init:
        # every residual branch starts small, so the deep model starts close to a shallow one
        adapter = adapter_for(model.config)
        with torch.no_grad():
            for layer in adapter.decoder_layers(model):
                for proj in residual_writers(adapter, layer):
                    proj.weight.mul_((2 * spec.num_layers) ** -0.5)
    if spec.patch_init_std is not None:
        # CLIP's 0.02 leaves a patch's content (a few coloured pixels) small beside the position
        # embedding (std 0.2, build_model) before the tower's layer norm
        with torch.no_grad():
            torch.manual_seed(spec.seed)
            clip_embeddings(model)[0].weight.normal_(0.0, spec.patch_init_std)
    return model, processor


def train_natural(spec: NaturalSpec, out: str | Path | None = None, echo: Callable[[str], None] = print) -> dict:
    """Train from scratch, save to ``out`` (if given) with the recipe file. Returns the metadata."""
    torch.set_num_threads(spec.threads)
    t0 = time.time()
    model, processor = build(spec)
    enc = Encoder(processor)
    rng = np.random.RandomState(spec.seed)
    history: list[dict] = []
    losses: list[dict] = []

    def step_loss(_step):
        return loss(model, enc, *scenes.training_batch(spec.batch, rng, spec.easy))

    def on_eval(step):
        res = evaluate(model, enc, "val", spec.eval_n)
        row = {"step": step, "seconds": round(time.time() - t0, 1),
               "train_loss": losses[-1]["loss"] if losses else None, "val_accuracy": round(res["accuracy"], 4),
               "val_per_type": {k: round(v, 4) for k, v in res["per_type"].items()}}
        history.append(row)
        echo(json.dumps(row))

    done = optimise(model, step_loss, spec.steps, spec.lr, spec.warmup, t0 + spec.time_limit_s,
                    spec.eval_every, on_eval, losses)
    final = evaluate(model, enc, "val", spec.eval_n)
    meta = {
        "task": "layerprobe.data.scenes",
        "training": {**asdict(spec), "steps_run": done, "seconds": round(time.time() - t0, 1),
                     "history": history, "loss": [{k: v for k, v in r.items() if k != "t"} for r in losses]},
        "val_accuracy": round(final["accuracy"], 4),
        "val_per_type": {k: round(v, 4) for k, v in final["per_type"].items()},
    }
    echo(json.dumps({"final_val_accuracy": meta["val_accuracy"], "seconds": meta["training"]["seconds"]}))
    if out is not None:
        save(model, processor, meta, out, RECIPE_FILE)
    return meta


def recipe(path: str | Path | None = None) -> dict:
    """The ``natural_organism.json`` beside the weights: recipe, history, measured accuracies."""
    return read_metadata(Path(path or WEIGHTS_DIR) / RECIPE_FILE)


def load(device: str | None = None, dtype=None, path: str | Path | None = None, attn_implementation: str = "sdpa"):
    """The shipped natural organism (or a retrained one at ``path``), on the CPU unless told otherwise."""
    loaded = load_model(str(path or WEIGHTS_DIR), device=device or "cpu", dtype=dtype,
                        attn_implementation=attn_implementation)
    loaded.name = "natural_organism" if path is None else str(path)
    return loaded


@torch.no_grad()
def decoded_accuracy(loaded, split: str, batch: int = 100) -> dict:
    """Accuracy of greedy answers generated through the user path (processor, chat template,
    ``generate``), scored with the task's metric, overall and per question type."""
    from layerprobe.core.generation import generate_answers
    from layerprobe.data.metrics import score

    samples, _ = scenes.load(None, split)
    scores = []
    for i in range(0, len(samples), batch):
        part = samples[i:i + batch]
        inputs = loaded.encode([s.load_image() for s in part], [scenes.build_prompt(s) for s in part])
        answers = generate_answers(loaded, inputs, scenes.MAX_NEW_TOKENS)
        scores += [score(scenes.METRIC, a.text, s.answers) for a, s in zip(answers, part)]
    per_type = {t: round(float(np.mean([x for x, s in zip(scores, samples) if s.extra["qtype"] == t])), 4)
                for t in scenes.QTYPES}
    return {"n": len(samples), "accuracy": round(float(np.mean(scores)), 4), "per_type": per_type}
