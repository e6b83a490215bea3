"""Training the organism on CPU: library code (no Hydra); ``experiments/train_organism.py`` drives it.

    spec = TrainSpec(planted=[2, 4, 8, 11, 12, 13, 29], seed=0)
    meta = train_organism(spec, out="/tmp/organism")   # reader -> tied -> untied -> grow -> save
    meta["val_accuracy"], meta["training"]["seconds"]

Recipe (why each step is there: docs/organism.md). A shallow decoder has one layer per planted
layer (shallow layer k becomes decoder layer planted[k]); visual tokens never see each other.
0. Reader: every shallow layer may read the whole image. One layer learns to fetch the queried
   cell within ~200 steps (only the first reader matters, so it is the only one that learns).
1. Tied: the reader's attention weights (q/k/v/o) are copied into every shallow layer and tied,
   and the region mask goes on (layer k reads only region k's cells; text may always read BOS).
   Every sample now trains the one shared reader in both situations it meets: "the queried cell
   is in view: fetch it" (one layer) and "it is not: attend to the BOS sink, write nothing" (all
   the others). Without the second, the non-owning layers write the colours of the wrong cells
   and drown the owner (63% after 1,000 s in an untied attempt; ~95% after ~800 tied steps).
2. Untied: a short low-rate fine-tune lets each reader specialise on its own region.
3. Grow: the other decoder layers are fresh with their output projections (attention and MLP)
   zeroed (an exact identity), so the 32-layer organism computes the shallow model's function
   exactly.
4. Optionally fine-tune the deep model under the same mask (off by default: 4x the cost per step).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from layerprobe.core.dispatch import controller
from layerprobe.core.knockout import knockout
from layerprobe.data import synthetic
from layerprobe.models import fingerprint
from layerprobe.models.base import PROJECTIONS
from layerprobe.models.loading import LoadedModel
from layerprobe.models.planted import ORGANISM_FILE, PlantedEdit
from layerprobe.models.registry import adapter_for
from layerprobe.io.results import write_atomic
from layerprobe.organism.build import DEFAULTS, build_model, build_processor, grow

DEFAULT_PLANTED = [2, 4, 8, 11, 12, 13, 29]


def default_regions(n_planted: int, num_cells: int = synthetic.NUM_CELLS) -> list[list[int]]:
    """Contiguous, as-equal-as-possible cell ranges, larger ones first: 7 -> 3,3,2,2,2,2,2."""
    base, extra = divmod(num_cells, n_planted)
    out, start = [], 0
    for k in range(n_planted):
        size = base + (1 if k < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


@dataclass
class TrainSpec:
    """The recipe's settings. The defaults are the shipped organism's recipe, as recorded under
    ``training`` in its ``layerprobe_organism.json`` (a test keeps the two equal), so that
    ``TrainSpec()`` and ``python experiments/train_organism.py`` without arguments retrain it."""

    planted: list[int] = field(default_factory=lambda: list(DEFAULT_PLANTED))  # the last is the review layer
    regions: list[list[int]] | None = None  # cells each planted layer may read; None: default_regions
    num_layers: int = 32
    seed: int = 0
    hidden: int = DEFAULTS["hidden"]
    heads: int = DEFAULTS["heads"]
    intermediate: int = DEFAULTS["intermediate"]
    batch: int = 64
    reader_steps: int = 300    # every shallow layer may read the whole image: one reader emerges
    tied_steps: int = 1500     # the reader copied into every shallow layer, tied, region mask on
    untied_steps: int = 600    # ties cut, at untied_lr: each reader specialises on its region
    deep_steps: int = 0        # the grown model under the planted mask; 4x the cost per step
    lr: float = 3e-3
    untied_lr: float = 3e-4
    deep_lr: float = 3e-4
    warmup: int = 50
    threads: int = 1           # torch threads; the shipped run shared a 2-core machine with a second training
    eval_every: int = 100
    eval_n: int = 256
    time_limit_s: float = 1800.0  # hard stop for the whole recipe; every stage stops at the deadline

    def resolved_regions(self) -> list[list[int]]:
        return self.regions if self.regions is not None else default_regions(len(self.planted))


class Batches:
    """Token ids of the organism's prompts, built once with the real processor."""

    def __init__(self, processor):
        tok = processor.tokenizer
        prompts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": synthetic.QUESTION.format(cell=c)}]}],
                add_generation_prompt=True, tokenize=False)
            for c in synthetic.CELL_WORDS
        ]
        img = synthetic.grid_image(torch.zeros(synthetic.NUM_CELLS, dtype=torch.long).numpy())
        enc = processor(images=[img] * len(prompts), text=prompts, return_tensors="pt", padding=True)
        if enc["attention_mask"].min() < 1:
            raise RuntimeError("organism prompts differ in length; the training batches assume they do not")
        self.prompt_ids = enc["input_ids"]  # (16, T)
        self.color_ids = torch.tensor(tok.convert_tokens_to_ids(synthetic.COLORS))
        self.eos = tok.eos_token_id

    def ids(self, cells: torch.Tensor, answers: torch.Tensor | None) -> torch.Tensor:
        ids = self.prompt_ids[cells]
        if answers is None:
            return ids
        return torch.cat([ids, self.color_ids[answers][:, None]], dim=1)


def wrap(model, processor, name: str = "organism") -> LoadedModel:
    return LoadedModel(model, processor, adapter_for(model.config), name)


def _loss(model, batches: Batches, pixels, cells, answers):
    ids = batches.ids(cells, answers)
    out = model(input_ids=ids, pixel_values=pixels, logits_to_keep=2)
    logits = out.logits  # (B, 2, V): at the cell code (-> colour) and at the colour (-> </s>)
    target_color = batches.color_ids[answers]
    target_eos = torch.full_like(target_color, batches.eos)
    return F.cross_entropy(logits[:, 0], target_color) + 0.1 * F.cross_entropy(logits[:, 1], target_eos)


@torch.no_grad()
def evaluate(model, batches: Batches, n: int = 512, split: str = "val", chunk: int = 256) -> dict:
    """Greedy next-token accuracy at the cell code over the full vocabulary, overall and per
    cell, on full grids of ``split``."""
    samples, _ = synthetic.load(None, split, n=n)
    colors = torch.tensor([s.extra["colors"] for s in samples])
    cells = torch.tensor([s.extra["cell"] for s in samples])
    answers = colors[torch.arange(len(samples)), cells]
    was_training = model.training
    model.eval()
    hits = []
    for i in range(0, len(samples), chunk):
        sl = slice(i, i + chunk)
        ids = batches.ids(cells[sl], None)
        logits = model(input_ids=ids, pixel_values=synthetic.pixel_tensor(colors[sl]), logits_to_keep=1).logits[:, -1]
        hits.append(logits.argmax(-1) == batches.color_ids[answers[sl]])
    model.train(was_training)
    hits = torch.cat(hits).float()
    per_cell = [hits[cells == c].mean().item() if (cells == c).any() else float("nan") for c in range(synthetic.NUM_CELLS)]
    return {"accuracy": hits.mean().item(), "per_cell": per_cell}


def region_accuracy(per_cell: list[float], regions: list[list[int]]) -> list[float]:
    return [sum(per_cell[c] for c in r) / len(r) for r in regions]


def _reader_params(loaded, layer) -> list:
    """A decoder layer's attention projections (query, key, value, output): what a reader is."""
    attention = loaded.adapter.attention_module(layer)
    return [loaded.adapter.projection(attention, which) for which in PROJECTIONS]


@torch.no_grad()
def find_reader(loaded, batches: Batches, regions, n: int = 256) -> int:
    """The shallow layer whose text->image knockout costs the most: the one that reads."""
    accs = []
    for layer in range(loaded.num_layers):
        with knockout(loaded, [layer]):
            accs.append(evaluate(loaded.model, batches, n)["accuracy"])
    return int(min(range(len(accs)), key=accs.__getitem__))


@torch.no_grad()
def copy_reader(loaded, reader: int) -> None:
    """Every layer gets the reader's attention weights (q/k/v/o)."""
    layers = loaded.decoder_layers
    for i, layer in enumerate(layers):
        if i != reader:
            for dst, src in zip(_reader_params(loaded, layer), _reader_params(loaded, layers[reader])):
                dst.weight.copy_(src.weight)


def tie_readers(loaded) -> None:
    layers = loaded.decoder_layers
    for layer in layers[1:]:
        for dst, src in zip(_reader_params(loaded, layer), _reader_params(loaded, layers[0])):
            dst.weight = src.weight


def untie_readers(loaded) -> None:
    for layer in loaded.decoder_layers:
        for proj in _reader_params(loaded, layer):
            proj.weight = torch.nn.Parameter(proj.weight.detach().clone())


def optimise(model, step_loss: Callable[[int], torch.Tensor], steps: int, lr: float, warmup: int = 50,
             deadline: float = math.inf, eval_every: int = 0, on_eval: Callable[[int], None] | None = None,
             log: list | None = None) -> int:
    """The one optimiser and schedule of every organism: AdamW (0.9, 0.98), wd 0.01, clip 1.0,
    linear warm-up then cosine decay to 10%; ``step_loss(step)`` draws a batch and returns its
    loss. Stops at ``deadline`` (time.time()). Returns the number of steps run."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    model.train()
    done = 0
    for step in range(steps):
        if time.time() > deadline:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step + 1
        if log is not None and step % 50 == 0:
            log.append({"step": step, "loss": round(loss.item(), 4), "t": round(time.time(), 1)})
        if eval_every and (done % eval_every == 0 or done == steps) and on_eval is not None:
            on_eval(done)
            model.train()
    model.eval()
    return done


def run_steps(model, batches: Batches, steps: int, lr: float, gen: torch.Generator, batch: int = 64,
              warmup: int = 50, deadline: float = math.inf, eval_every: int = 0,
              on_eval: Callable[[int, dict], None] | None = None, eval_n: int = 512,
              curriculum: bool = True, log: list | None = None) -> int:
    """``optimise`` on the grid task's batches; ``on_eval(step, evaluate(...))`` every ``eval_every``."""
    def step_loss(_step):
        pixels, cells, answers = synthetic.training_batch(batch, gen, curriculum=curriculum)
        return _loss(model, batches, pixels, cells, answers)

    report = None if on_eval is None else (lambda done: on_eval(done, evaluate(model, batches, eval_n)))
    return optimise(model, step_loss, steps, lr, warmup, deadline, eval_every, report, log)


def train_organism(spec: TrainSpec, out: str | Path | None = None, echo: Callable[[str], None] = print) -> dict:
    """Run the whole recipe; save the organism to ``out`` (if given). Returns the metadata."""
    torch.set_num_threads(spec.threads)
    t0 = time.time()
    deadline = t0 + spec.time_limit_s
    regions = spec.resolved_regions()
    n = len(spec.planted)
    processor = build_processor()
    batches = Batches(processor)
    gen = torch.Generator().manual_seed(spec.seed)
    sizes = dict(hidden=spec.hidden, heads=spec.heads, intermediate=spec.intermediate)
    history: list[dict] = []

    def on_eval(stage):
        def f(step, res):
            row = {"stage": stage, "step": step, "seconds": round(time.time() - t0, 1),
                   "accuracy": round(res["accuracy"], 4),
                   "region_accuracy": [round(a, 3) for a in region_accuracy(res["per_cell"], regions)]}
            history.append(row)
            echo(json.dumps(row))
        return f

    shallow = build_model(processor, n, seed=spec.seed, **sizes)
    shallow_loaded = wrap(shallow, processor)
    ctrl = controller(shallow_loaded)
    everything = [list(range(synthetic.NUM_CELLS))] * n
    ctrl.add_permanent(free := PlantedEdit(list(range(n)), everything))
    s0 = run_steps(shallow, batches, spec.reader_steps, spec.lr, gen, spec.batch, spec.warmup, deadline,
                   spec.eval_every, on_eval("shallow-reader"), spec.eval_n)
    reader = find_reader(shallow_loaded, batches, regions)
    echo(json.dumps({"reader_layer": reader}))
    ctrl.remove_permanent(free)
    ctrl.add_permanent(PlantedEdit(list(range(n)), regions))
    copy_reader(shallow_loaded, reader)
    tie_readers(shallow_loaded)
    s1 = run_steps(shallow, batches, spec.tied_steps, spec.lr, gen, spec.batch, spec.warmup, deadline,
                   spec.eval_every, on_eval("shallow-tied"), spec.eval_n)
    untie_readers(shallow_loaded)
    s2 = run_steps(shallow, batches, spec.untied_steps, spec.untied_lr, gen, spec.batch, spec.warmup, deadline,
                   spec.eval_every, on_eval("shallow-untied"), spec.eval_n)
    deep = grow(shallow, spec.planted, spec.num_layers, seed=spec.seed)
    deep_loaded = wrap(deep, processor)
    controller(deep_loaded).add_permanent(PlantedEdit(spec.planted, regions))
    s3 = 0
    if spec.deep_steps:
        s3 = run_steps(deep, batches, spec.deep_steps, spec.deep_lr, gen, spec.batch, 10, deadline,
                       spec.eval_every, on_eval("deep"), spec.eval_n)
    final = evaluate(deep, batches, spec.eval_n)
    late_start = math.ceil(0.75 * spec.num_layers)
    review = max(spec.planted) if max(spec.planted) >= late_start else None
    meta = {
        "planted": list(spec.planted),
        "regions": regions,
        "num_cells": synthetic.NUM_CELLS,
        # as discovery names them with its defaults: the last quarter of the decoder is "late"
        "review_layer": review,
        "fusion_layers": sorted(p for p in spec.planted if p != review),
        "training": {**asdict(spec), "regions": regions, "steps_run": {"shallow_reader": s0, "shallow_tied": s1, "shallow_untied": s2, "deep": s3},
                     "seconds": round(time.time() - t0, 1), "torch_threads": spec.threads,
                     "history": history},
        "val_accuracy": round(final["accuracy"], 4),
        "val_region_accuracy": [round(a, 4) for a in region_accuracy(final["per_cell"], regions)],
    }
    echo(json.dumps({"final_val_accuracy": meta["val_accuracy"], "seconds": meta["training"]["seconds"]}))
    meta["fingerprint"] = fingerprint.record(deep_loaded)
    if out is not None:
        save(deep, processor, meta, out)
    return meta


def save(model, processor, meta: dict, out: str | Path, meta_file: str = ORGANISM_FILE) -> Path:
    """Weights, tokenizer and processor as a checkpoint directory, with ``meta`` in ``meta_file``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_atomic(out / meta_file, json.dumps(meta, indent=1) + "\n")   # a kill leaves the old file or the new
    return out


@torch.no_grad()
def knockout_profile(loaded, n: int = 512, split: str = "test", chunk: int = 256, layers=None) -> dict:
    """Accuracy of the first answer token on ``split`` at baseline and with text->image knocked
    out at each single layer (through ``layerprobe.knockout``, so the permanent planted mask is
    in force too). ``drops[l]`` = baseline - knocked-out accuracy, in points."""
    batches = Batches(loaded.processor)
    samples, _ = synthetic.load(None, split, n=n)
    colors = torch.tensor([s.extra["colors"] for s in samples])
    cells = torch.tensor([s.extra["cell"] for s in samples])
    target = batches.color_ids[colors[torch.arange(len(samples)), cells]]
    model = loaded.model

    def accuracy() -> float:
        hits = 0
        for i in range(0, len(samples), chunk):
            sl = slice(i, i + chunk)
            logits = model(input_ids=batches.ids(cells[sl], None).to(loaded.device),
                           pixel_values=synthetic.pixel_tensor(colors[sl]).to(loaded.device, model.dtype),
                           logits_to_keep=1).logits[:, -1]
            hits += (logits.argmax(-1).cpu() == target[sl]).sum().item()
        return hits / len(samples)

    base = accuracy()
    wanted = set(range(loaded.num_layers) if layers is None else layers)
    per_layer = []
    for layer in range(loaded.num_layers):
        if layer not in wanted:
            per_layer.append(None)
            continue
        with knockout(loaded, [layer]):
            per_layer.append(accuracy())
    return {"n": len(samples), "baseline": base, "per_layer": per_layer,
            "drops": [None if a is None else round(100 * (base - a), 2) for a in per_layer]}
