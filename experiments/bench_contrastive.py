"""Cost of each inference method against vanilla generation, side by side in one run, on the same
prompts: the model organism and a LLaVA-shaped random model (32 layers, 576 visual tokens).

    python experiments/bench_contrastive.py                     # CPU: ~2-4 minutes
    python experiments/bench_contrastive.py --rounds 9 --hidden 512 --batch 4 --device cuda
    python experiments/bench_contrastive.py --skip-organism --methods vanilla,contrastive --device cuda \
        --dtype bfloat16 --real-shapes llava15_7b,llava16_vicuna7b    # random weights of the real 7B shapes

Methods run interleaved (the order rotates every round) after one untimed warm-up each; a method's
latency is the median over rounds of the batch's wall time (prefill + decode, synchronised on
CUDA), its ratio the median over rounds of its time / vanilla generation's time in the same round. EOS is disabled so every method decodes exactly ``--max-new-tokens`` tokens. Peak memory is
measured in one separate pass per method (``layerprobe.evaluation.peak_memory``: CUDA allocator statistics,
or live tensor storage on CPU): ``peak`` includes the weights, ``extra`` is what the generation
adds on top (activations and KV cache). The last line is JSON: contrastive attention against vanilla
generation on the LLaVA-shaped model: its latency ratio from a dedicated ABBA alternation of the
two alone (2 x rounds pairs), its memory ratio from the table.

``--real-shapes`` replaces the LLaVA-shaped model by random weights of real checkpoints' shapes
(``layerprobe.models.real_shape``: LLaVA-1.5-7B on a 336-px image, 576 visual tokens; LLaVA-1.6
Vicuna-7B on a 672-px image, 2,928), one after the other, in ``--dtype``; the JSON line then also
lists per shape both methods' latency and peak memory (``shapes``). ``--smoke`` builds them at
tiny sizes for a CPU run of the same code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np
import torch
import transformers
from PIL import Image

from layerprobe.data.sample import Sample
from layerprobe.methods.registry import make_method
from layerprobe.models.loading import LoadedModel, load_model
from layerprobe.models.real_shape import build_real_shape
from layerprobe.models.registry import adapter_for
from layerprobe.models.tiny import build_tiny
from layerprobe.evaluation.peak_memory import peak_memory

QUESTIONS = [
    "what color is the cat on the left of the table in this picture and is it holding a cup of coffee ? "
    "answer the question using a single word or phrase .",
    "how many people are there in the image and what are they wearing on the top of the picture ? "
    "answer the question using a single word or phrase .",
    "is the sky blue or gray and is there a tree on the right of the bus in the middle ? "
    "answer the question using a single word or phrase .",
    "what is the number on the page at the bottom of the image near the clock and the coins ? "
    "answer the question using a single word or phrase .",
]


VIEWS = {"llava15_7b": 1, "llava16_vicuna7b": 2}  # image side in views: one 336-px view; 672 px = base + 4 tiles


def llava_shaped(hidden: int, device: str) -> LoadedModel:
    heads = max(hidden // 64, 1)
    model, processor = build_tiny("llava", num_layers=32, hidden=hidden, heads=heads, kv_heads=heads,
                                  image_size=336, patch=14)
    model.to(device)
    return LoadedModel(model, processor, adapter_for(model.config), f"llava-shaped-{hidden}")


def organism_case(device: str, batch: int, path: str):
    from layerprobe.data.registry import load_benchmark

    loaded = load_model(path, device=device)
    data = load_benchmark("organism", limit=batch)
    spec = loaded.extra.get("organism", {})
    planted = sorted(spec.get("planted", []))
    profile = {"fusion_layers": planted[:-1], "review_layer": planted[-1], "post_integrated_layer": planted[-1] - 1}
    batch = data.samples, [s.load_image() for s in data.samples], [data.prompt(s) for s in data.samples]
    return loaded, batch, profile


def random_images(n: int, size: int = 336) -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def bench(loaded, batch, profile, methods, rounds, max_new_tokens) -> dict:
    """``batch``: (samples, images, prompts), as a method answers them."""
    loaded.model.generation_config.eos_token_id = -1  # never produced: equal decode lengths
    runners = {name: make_method(name, profile=profile, **opts) for name, opts in methods.items()}
    for m in runners.values():
        m.answer_batch(loaded, *batch, max_new_tokens)  # warm-up, untimed
    times = {name: [] for name in runners}
    prefill = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rec = runners[name].answer_batch(loaded, *batch, max_new_tokens)
            times[name].append(rec[0]["total_s"])
            prefill[name].append(rec[0]["prefill_s"])
    out = {}
    for name, m in runners.items():
        with peak_memory(loaded.device, loaded.model) as mem:
            m.answer_batch(loaded, *batch, max_new_tokens)
        out[name] = {"latency_s": statistics.median(times[name]), "prefill_s": statistics.median(prefill[name]),
                     "peak_bytes": mem.peak_bytes, "extra_bytes": mem.extra_bytes}
    base = out["vanilla"]
    for name, row in out.items():
        # per-round ratios to the same round's vanilla run cancel slow drifts of a shared machine
        row["latency_ratio"] = statistics.median(a / b for a, b in zip(times[name], times["vanilla"]))
        row["prefill_ratio"] = statistics.median(a / b for a, b in zip(prefill[name], prefill["vanilla"]))
        row["memory_ratio"] = row["peak_bytes"] / base["peak_bytes"]
        row["extra_memory_ratio"] = row["extra_bytes"] / base["extra_bytes"]
    return out


def headline(loaded, batch, profile, rounds, max_new_tokens) -> float:
    """Contrastive attention / vanilla generation alone, alternated ABBA so neither always runs
    after the other (or after a slow method): the median of the per-pair latency ratios."""
    vanilla, contrastive = make_method("vanilla"), make_method("contrastive", profile=profile)
    ratios = []
    for r in range(rounds):
        order = (vanilla, contrastive) if r % 2 == 0 else (contrastive, vanilla)
        t = {m.name: m.answer_batch(loaded, *batch, max_new_tokens)[0]["total_s"] for m in order}
        ratios.append(t["contrastive"] / t["vanilla"])
    return statistics.median(ratios)


def show(title: str, results: dict) -> None:
    print(f"\n{title}")
    print(f"{'method':<12} {'latency s':>10} {'x vanilla':>8} {'prefill s':>10} {'x vanilla':>8} "
          f"{'peak MiB':>9} {'x vanilla':>8} {'extra MiB':>10} {'x vanilla':>8}")
    for name, r in results.items():
        print(f"{name:<12} {r['latency_s']:>10.4f} {r['latency_ratio']:>8.3f} {r['prefill_s']:>10.4f} "
              f"{r['prefill_ratio']:>8.3f} {r['peak_bytes'] / 2**20:>9.1f} {r['memory_ratio']:>8.3f} "
              f"{r['extra_bytes'] / 2**20:>10.2f} {r['extra_memory_ratio']:>8.3f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: steadier timings on a shared machine)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-organism", action="store_true")
    p.add_argument("--organism", default="organism", help="the shipped organism, or a retrained one's directory")
    p.add_argument("--methods", default="vanilla,contrastive,dola,vicrop")
    p.add_argument("--real-shapes", default="", help="comma-separated, of llava15_7b, llava16_vicuna7b")
    p.add_argument("--dtype", default=None, help="of the real shapes (default bfloat16)")
    p.add_argument("--smoke", action="store_true", help="the real shapes at tiny sizes, for a CPU check")
    args = p.parse_args(argv)
    transformers.logging.set_verbosity_error()  # the disabled EOS warns at every call
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    methods = {name: {} for name in args.methods.split(",")}
    methods.setdefault("vanilla", {})
    methods.setdefault("contrastive", {})
    print(f"device {args.device}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.max_new_tokens} new tokens, {args.rounds} rounds")
    if not args.skip_organism:
        try:
            loaded, batch, profile = organism_case(args.device, args.batch, args.organism)
        except Exception as err:  # the organism ships separately; the LLaVA-shaped case still runs
            print(f"\norganism: skipped ({type(err).__name__}: {str(err).splitlines()[0]})")
        else:
            organism_methods = {**methods, "vicrop": {"layer": None}} if "vicrop" in methods else methods
            show(f"organism ({loaded.num_layers} layers), profile {profile}",
                 bench(loaded, batch, profile, organism_methods, args.rounds, args.max_new_tokens))
    if args.real_shapes:
        shapes = [real_shape_case(name, args, methods) for name in args.real_shapes.split(",")]
        first = shapes[0]
        print(json.dumps({"latency_ratio": first["latency_ratio"], "memory_ratio": first["memory_ratio"],
                          "shapes": shapes}))
        return
    loaded = llava_shaped(args.hidden, args.device)
    images, texts = random_images(args.batch), (QUESTIONS * args.batch)[: args.batch]
    n_visual = int((loaded.encode(images[:1], texts[:1])["input_ids"] == loaded.model.config.image_token_id).sum())
    batch = [Sample(str(i), image, text, []) for i, (image, text) in enumerate(zip(images, texts))], images, texts
    results = bench(loaded, batch, "llava15_7b", methods, args.rounds, args.max_new_tokens)
    show(f"LLaVA-shaped random model (32 layers, hidden {args.hidden}, {n_visual} visual tokens), "
         "profile llava15_7b", results)
    ratio = headline(loaded, batch, "llava15_7b", 2 * args.rounds, args.max_new_tokens)
    print(f"\ncontrastive vs vanilla alone, ABBA over {2 * args.rounds} pairs: latency x{ratio:.4f}")
    c = results["contrastive"]
    print(json.dumps({"latency_ratio": round(ratio, 4), "memory_ratio": round(c["memory_ratio"], 4)}))
    sys.stdout.flush()


def real_shape_case(name: str, args, methods: dict) -> dict:
    """Every method against plain generation on one real checkpoint shape, then the ABBA headline;
    the model is freed before the next shape is built."""
    loaded = build_real_shape(name, device=args.device, dtype=args.dtype or "bfloat16", smoke=args.smoke)
    side = VIEWS[name] * loaded.adapter.vision_input_size(loaded.model)
    images, texts = random_images(args.batch, side), (QUESTIONS * args.batch)[: args.batch]
    n_visual = int(loaded.adapter.visual_token_mask(loaded.model, loaded.encode(images[:1], texts[:1])["input_ids"]).sum())
    batch = [Sample(str(i), image, text, []) for i, (image, text) in enumerate(zip(images, texts))], images, texts
    results = bench(loaded, batch, "llava15_7b", methods, args.rounds, args.max_new_tokens)
    show(f"{loaded.name} ({loaded.model.dtype}, {n_visual} visual tokens), profile llava15_7b", results)
    ratio = headline(loaded, batch, "llava15_7b", 2 * args.rounds, args.max_new_tokens)
    print(f"contrastive vs plain alone, ABBA over {2 * args.rounds} pairs: latency x{ratio:.4f}")
    plain, c = results["vanilla"], results["contrastive"]
    del loaded
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"shape": name, "visual_tokens": n_visual, "device": args.device, "dtype": args.dtype or "bfloat16",
            "vanilla_latency_s": plain["latency_s"], "contrastive_latency_s": c["latency_s"],
            "latency_ratio": round(ratio, 4), "vanilla_peak_mib": round(plain["peak_bytes"] / 2**20, 1),
            "contrastive_peak_mib": round(c["peak_bytes"] / 2**20, 1), "memory_ratio": round(c["memory_ratio"], 4),
            "extra_memory_ratio": round(c["extra_memory_ratio"], 4)}


if __name__ == "__main__":
    main()
