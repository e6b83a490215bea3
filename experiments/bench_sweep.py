"""Naive vs fast sweep engine, side by side in one run, on the same samples.

    python experiments/bench_sweep.py                      # LLaVA-shaped model (+ organism if shipped)
    python experiments/bench_sweep.py --samples 4 --hidden 512 --batch-size 1

The LLaVA-shaped model is random (32 layers, hidden 512, CLIP at 336 px / patch 14 = 576 visual
tokens) with LLaVA-1.5's evaluation prompt shape: ~35 system tokens, the image, ~30 question
tokens, max_new_tokens=3. Prints both times, the ratio, the token-layer limit for the shape and
whether every (sample, layer) answer agrees; the last line is JSON for the LLaVA-shaped model.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image

from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.models.loading import LoadedModel
from layerprobe.models.registry import adapter_for
from layerprobe.models.tiny import build_tiny
from layerprobe.core.generation import warm_up

QUESTION = "what is the color of the cup on the table in the middle of the picture"
SUFFIX = "\nAnswer the question using a single word or phrase ."


def token_layer_limit(system: int, visual: int, text: int, new: int, layers: int) -> dict:
    """Token-layer passes of the naive sweep vs the ideal shared-prefix sweep."""
    prompt = system + visual + text
    naive = (layers + 1) * (prompt + new - 1) * layers
    ideal = prompt * layers + text * sum(layers - l for l in range(layers)) + (layers + 1) * (new - 1) * layers
    return {"naive": naive, "ideal": ideal, "limit": naive / ideal}


def llava_shaped(hidden: int) -> LoadedModel:
    model, processor = build_tiny("llava", num_layers=32, hidden=hidden, heads=8, kv_heads=8,
                                  image_size=336, patch=14, seed=0)
    processor.chat_template = None  # use LLaVA-1.5's documented template with its system prompt
    return LoadedModel(model, processor, adapter_for(model.config), f"llava-shaped-h{hidden}")


def time_engine(engine, loaded, batches, conds, new):
    answers = []
    start = time.perf_counter()
    for inputs in batches:
        answers.append(engine.run_batch(loaded, inputs, conds, new))
    return time.perf_counter() - start, answers


def compare(loaded, batches, new, label):
    conds = sweep_conditions(loaded.num_layers)
    warm_up(loaded, batches[0])
    t_naive, a_naive = time_engine(NaiveEngine(), loaded, batches, conds, new)
    t_fast, a_fast = time_engine(FastEngine(), loaded, batches, conds, new)
    agree = all(
        [x.text for x in an[c.key]] == [y.text for y in af[c.key]]
        for an, af in zip(a_naive, a_fast) for c in conds
    )
    print(f"[{label}] naive {t_naive:.2f} s  fast {t_fast:.2f} s  speedup {t_naive / t_fast:.2f}x  "
          f"answers agree: {agree}")
    return t_naive / t_fast, agree


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-organism", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")

    if not args.skip_organism:
        try:
            from layerprobe.data.registry import load_benchmark
            from layerprobe.organism import load as load_organism

            org = load_organism()
            data = load_benchmark("organism", limit=16)
            batches = [org.encode([s.load_image() for s in data.samples[i:i + 8]],
                                  [data.prompt(s) for s in data.samples[i:i + 8]])
                       for i in range(0, len(data.samples), 8)]
            compare(org, batches, data.max_new_tokens, "organism, 16 samples, batch 8")
        except (ImportError, FileNotFoundError, OSError) as err:
            print(f"[organism] skipped: {err}")

    loaded = llava_shaped(args.hidden)
    rng = np.random.RandomState(0)
    batches = []
    for i in range(0, args.samples, args.batch_size):
        n = min(args.batch_size, args.samples - i)
        images = [Image.fromarray(rng.randint(0, 255, (336, 336, 3), dtype=np.uint8)) for _ in range(n)]
        batches.append(loaded.encode(images, [QUESTION + SUFFIX] * n))
    ids = batches[0]["input_ids"][0]
    visual = int((ids == loaded.model.config.image_token_id).sum())
    first_visual = int((ids == loaded.model.config.image_token_id).nonzero()[0])
    text = len(ids) - first_visual - visual
    new = 3
    limit = token_layer_limit(first_visual, visual, text, new, loaded.num_layers)
    print(f"[llava-shaped] hidden {args.hidden}, 32 layers, {first_visual} system + {visual} visual + "
          f"{text} text tokens, max_new_tokens={new}; token-layer limit {limit['limit']:.1f}x")
    speedup, agree = compare(loaded, batches, new, f"llava-shaped, {args.samples} samples, batch {args.batch_size}")
    print(json.dumps({"speedup": round(speedup, 2), "limit": round(limit["limit"], 2), "agree": agree}))


if __name__ == "__main__":
    main()
