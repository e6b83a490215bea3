"""Do the fast and naive sweep engines give the same answers in bfloat16? Both engines run every
condition of the default sweep (baseline + a knockout at every layer, image->text) on the same
batches, in bf16 on the CPU (or ``--device``), and every (sample, condition) answer is compared.

    python experiments/bf16_agreement.py                     # organism (all 512 samples) + tiny LLaVA-1.5/1.6
    python experiments/bf16_agreement.py --organism-samples 64 --tiny-samples 8 --threads 1
    python experiments/bf16_agreement.py --device cuda      # the GPU's kernels (one fused SDPA call per layer)

The fast engine attends over the shared prefix and over each stacked variant's own keys in two
kernel calls per layer merged by their log-sum-exp
(``layerprobe/sweep/engines/split_attention.py``), and its stacked rows and suffix-only passes sum
in another order than the naive engine's full forward calls; the question is whether that ever
changes a greedy answer. Prints one line per model and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import layerprobe
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.engines.fast import FastEngine
from layerprobe.sweep.engines.naive import NaiveEngine

QUESTIONS = ["what color is the cat ?", "how many people are there ?", "is the sky blue ?", "what is on the table ?"]


def agreement(loaded, batches, max_new_tokens: int) -> dict:
    conds = sweep_conditions(loaded.num_layers)
    total = differ = 0
    examples = []
    for inputs in batches:
        naive = NaiveEngine().run_batch(loaded, inputs, conds, max_new_tokens)
        fast = FastEngine().run_batch(loaded, inputs, conds, max_new_tokens)
        for c in conds:
            for a, b in zip(naive[c.key], fast[c.key]):
                total += 1
                if a.text != b.text:
                    differ += 1
                    examples.append({"condition": c.key, "naive": a.text, "fast": b.text})
    return {"answers": total, "differ": differ, "rate": differ / max(1, total), "examples": examples[:5]}


def organism_batches(samples: int, batch_size: int, device: str = "cpu"):
    import layerprobe.organism as organism
    from layerprobe.data.registry import load_benchmark

    loaded = organism.load(device=device, dtype="bfloat16")
    data = load_benchmark("organism", limit=samples)
    items = data.samples
    return loaded, [loaded.encode([s.load_image() for s in items[i:i + batch_size]],
                                  [data.prompt(s) for s in items[i:i + batch_size]])
                    for i in range(0, len(items), batch_size)], data.max_new_tokens


def tiny_batches(family: str, samples: int, batch_size: int, device: str = "cpu"):
    import numpy as np
    from PIL import Image

    loaded = layerprobe.load_model(f"tiny:{family}:32", device=device, dtype="bfloat16")
    rng = np.random.RandomState(0)
    sizes = [(60, 80), (90, 40), (56, 56), (40, 100), (70, 70), (100, 50)]
    images = [Image.fromarray(rng.randint(0, 255, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(samples)]
    texts = [QUESTIONS[i % len(QUESTIONS)] + "\nAnswer with one word." for i in range(samples)]
    return loaded, [loaded.encode(images[i:i + batch_size], texts[i:i + batch_size])
                    for i in range(0, samples, batch_size)], 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--organism-samples", type=int, default=512, help="the organism's default sweep: all 512")
    ap.add_argument("--tiny-samples", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, bfloat16 on {args.device}")
    record = {}
    runs = [("organism", lambda: organism_batches(args.organism_samples, args.batch_size, args.device))]
    runs += [(f"tiny_{f}", lambda f=f: tiny_batches(f, args.tiny_samples, 4, args.device)) for f in ("llava", "llava_next")]
    for name, make in runs:
        start = time.perf_counter()
        loaded, batches, new = make()
        assert loaded.model.dtype == torch.bfloat16
        result = agreement(loaded, batches, new)
        record[name] = result
        print(f"[{name}] {result['answers']} answers (sample x condition), {result['differ']} differ "
              f"({100 * result['rate']:.2f}%), {time.perf_counter() - start:.0f} s"
              + (f"; e.g. {result['examples'][:2]}" if result["differ"] else ""))
    print(json.dumps({k: {f: v[f] for f in ("answers", "differ", "rate")} for k, v in record.items()}))


if __name__ == "__main__":
    main()
