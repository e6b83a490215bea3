"""Naive vs fast sweep engine, side by side in one run, on the same samples, at three prompt
shapes of growing visual-token count.

    python experiments/bench_sweep.py                        # all shapes (+ organism if shipped)
    python experiments/bench_sweep.py --shapes llava-1.5 --samples 1 --skip-organism
    python experiments/bench_sweep.py --out bench.json       # also write the JSON line to a file
    python experiments/bench_sweep.py --table bench.json     # the README's rows from that JSON
    python experiments/bench_sweep.py --shapes llava-1.5-7b,llava-1.6-7b --skip-organism --device cuda --dtype bfloat16
    python experiments/bench_sweep.py --control              # control=text_keys vs knockout, fast engine

Models are random, 32 layers, hidden 512, 8 heads, CLIP at 336 px / patch 14:

* ``llava-1.5``: LLaVA-1.5 (576 visual tokens) with its evaluation prompt (~35 system tokens, the
  image, ~30 question tokens);
* ``llava-1.6-2tiles``: LLaVA-1.6 on a 336x336 image: the base view plus one anyres tile with its
  newline tokens (1,176 visual tokens);
* ``llava-1.6-5tiles``: LLaVA-1.6 on a 672x672 image: the base view plus four tiles with newline
  tokens (2,928 visual tokens).

``llava-1.5-7b`` and ``llava-1.6-7b`` are the same two prompts (one 336-px view; a 672-px image
as base view plus four tiles) on random weights of the real 7B checkpoints' shape
(``layerprobe.models.real_shape``: Vicuna-7B decoder, CLIP ViT-L/14-336), built on ``--device``
in ``--dtype``: 576 and 2,928 visual tokens (2,880 patch tokens and 48 newline tokens). With
``--smoke`` they keep their structure at tiny sizes and 56-px views, for a CPU run of the same
code (``experiments/gpu_check.sh --cpu-smoke``).

Answers are 3 tokens. Per shape it prints both times (the naive sweep is timed 8 conditions at
a time with a whole fast sweep before and after each chunk; the fast engine's time is the mean of
those 6 runs, so a change of the machine's pace affects both engines alike), the
speedup (wall clock; and in CPU time, which a busy machine blurs less), the token-layer limit
for the shape and their ratio, each engine's peak memory (measured
in separate, untimed runs: ``layerprobe.evaluation.peak_memory``) and whether every (sample, layer)
answer agrees. The last line is one JSON object: ``speedup``/``limit``/``agree`` of ``llava-1.5``
and ``shapes``, one record per shape; ``--table`` turns it into the README's rows and
``--figure`` draws speedup and limit against visual tokens.

``--control`` measures instead what a specificity control costs the fast engine
(``control=text_keys``, ``layerprobe.core.controls``): per shape, a sweep of the baseline alone, of
the baseline and a knockout at every layer, and of the baseline and a control at every layer,
alternated 7 times (the knockout's and the control's back to back, their order alternating);
it prints per condition the whole sweep's time and the time beyond the baseline's own sweep,
each for the knockouts and the controls, and their ratio (medians, wall clock and CPU time), and
the median over repeats of the control's sweep time over the knockout's of the same repeat.

Allocator: the script first keeps freed memory in the process's heap, as ``layerprobe-sweep``
does on CPU (``layerprobe.sweep.heap``; ``--malloc default`` leaves glibc's defaults). Both engines
free and re-allocate tensors of several MiB per layer; with glibc's defaults each comes back as
fresh, page-faulting memory, which on the 2-core VM this was measured on slowed the fast engine
more than the naive one and caused most of the run-to-run spread (README, Performance).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from layerprobe.core.controls import control_edges
from layerprobe.core.dispatch import controller
from layerprobe.core.generation import warm_up
from layerprobe.evaluation.peak_memory import peak_memory
from layerprobe.models.loading import LoadedModel
from layerprobe.models.real_shape import build_real_shape
from layerprobe.models.registry import adapter_for
from layerprobe.models.tiny import build_tiny
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.heap import keep_freed_memory
from layerprobe.sweep.engines.fast import FastEngine
from layerprobe.sweep.engines.naive import NaiveEngine

QUESTION = "what is the color of the cup on the table in the middle of the picture"
SUFFIX = "\nAnswer the question using a single word or phrase ."
NEW_TOKENS = 3
NAIVE_CHUNK = 8  # naive conditions timed between two fast sweeps
# name: (tiny family, or "real:<checkpoint shape>", image side in views of the model, default number of samples)
SHAPES = {
    "llava-1.5": ("llava", 1, 2),
    "llava-1.6-2tiles": ("llava_next", 1, 1),
    "llava-1.6-5tiles": ("llava_next", 2, 1),
    "llava-1.5-7b": ("real:llava15_7b", 1, 2),
    "llava-1.6-7b": ("real:llava16_vicuna7b", 2, 1),
}
DEFAULT_SHAPES = ("llava-1.5", "llava-1.6-2tiles", "llava-1.6-5tiles")


def token_layer_limit(system: int, visual: int, text: int, new: int, layers: int) -> dict:
    """Token-layer passes of the naive sweep vs the ideal shared-prefix sweep."""
    prompt = system + visual + text
    naive = (layers + 1) * (prompt + new - 1) * layers
    ideal = prompt * layers + text * sum(layers - l for l in range(layers)) + (layers + 1) * (new - 1) * layers
    return {"naive": naive, "ideal": ideal, "limit": naive / ideal}


def random_model(source: str, hidden: int, device: str = "cpu", dtype: str = "float32",
                 smoke: bool = False) -> LoadedModel:
    """A tiny family's random model (``source`` a family) or a real checkpoint's shape
    (``real:<name>``, built on ``device`` in ``dtype``)."""
    if source.startswith("real:"):
        loaded = build_real_shape(source[len("real:"):], device=device, dtype=dtype, smoke=smoke)
    else:
        model, processor = build_tiny(source, num_layers=32, hidden=hidden, heads=8, kv_heads=8,
                                      image_size=336, patch=14, seed=0)
        loaded = LoadedModel(model.to(device=device, dtype=getattr(torch, dtype)), processor,
                             adapter_for(model.config), f"{source}-shaped-h{hidden}")
    loaded.processor.chat_template = None  # the family's documented template (LLaVA-1.5: with its system prompt)
    return loaded


def view_size(loaded) -> int:
    return loaded.model.config.vision_config.image_size


def time_engine(engine, loaded, batches, conds, new):
    """(wall seconds, CPU seconds of this process, answers); on CUDA the queued work is waited for."""
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
    answers = []
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    for inputs in batches:
        answers.append(engine.run_batch(loaded, inputs, conds, new))
    sync()
    return time.perf_counter() - start, time.process_time() - cpu, answers


def peak_mb(engine, loaded, inputs, conds, new) -> float:
    with peak_memory(loaded.device, loaded.model) as mem:
        engine.run_batch(loaded, inputs, conds, new)
    return round(mem.peak_bytes / 2**20, 1)


def compare(loaded, batches, new, label, memory: bool = True, chunk: int = NAIVE_CHUNK) -> dict:
    """The naive sweep timed ``chunk`` conditions at a time, with a whole fast sweep before the
    first chunk and after each: the fast engine's time is the mean of those runs, so both engines
    are measured under the same drift of the machine's speed (a fast sweep lasts seconds, the
    naive one minutes, and a shared or throttled CPU changes pace within that)."""
    conds = sweep_conditions(loaded.num_layers)
    warm_up(loaded, batches[0])
    fast = FastEngine()
    fast.run_batch(loaded, batches[0], conds, new)  # warm-up
    t_f, c_f, a_fast = time_engine(fast, loaded, batches, conds, new)
    fast_runs, fast_cpu = [t_f], [c_f]
    t_naive = c_naive = 0.0
    a_naive = [{} for _ in batches]
    for i in range(0, len(conds), chunk):
        t, c, part = time_engine(NaiveEngine(), loaded, batches, conds[i:i + chunk], new)
        t_naive, c_naive = t_naive + t, c_naive + c
        for whole, got in zip(a_naive, part):
            whole.update(got)
        t_f, c_f, _ = time_engine(fast, loaded, batches, conds, new)
        fast_runs.append(t_f)
        fast_cpu.append(c_f)
    t_fast, c_fast = float(np.mean(fast_runs)), float(np.mean(fast_cpu))
    agree = all(
        [x.text for x in an[c.key]] == [y.text for y in af[c.key]]
        for an, af in zip(a_naive, a_fast) for c in conds
    )
    out = {"naive_s": round(t_naive, 2), "fast_s": round(t_fast, 2), "speedup": round(t_naive / t_fast, 2),
           # CPU time: what a busy machine's wall clock blurs (other processes' share of the cores)
           "cpu_speedup": round(c_naive / c_fast, 2), "agree": agree, "fast_runs": len(fast_runs),
           "fast_min_s": round(min(fast_runs), 2), "fast_max_s": round(max(fast_runs), 2)}
    if memory:
        # every naive condition is a separate generation: its peak is one condition's
        out["naive_peak_mb"] = peak_mb(NaiveEngine(), loaded, batches[0], conds[:2], new)
        out["fast_peak_mb"] = peak_mb(fast, loaded, batches[0], conds, new)
    print(f"[{label}] naive {t_naive:.2f} s  fast {t_fast:.2f} s (mean of {len(fast_runs)} runs between the "
          f"naive chunks, {min(fast_runs):.2f}-{max(fast_runs):.2f})  "
          f"speedup {out['speedup']:.2f}x (CPU time {out['cpu_speedup']:.2f}x)  answers agree: {agree}"
          + (f"  peak memory naive {out['naive_peak_mb']} MiB, fast {out['fast_peak_mb']} MiB" if memory else ""))
    return out


def compare_control(loaded, batches, new, label, repeats: int = 7) -> dict:
    """The fast engine's cost per condition, knockouts against their controls (``control=text_keys``):
    a sweep of the baseline alone, of the baseline and a knockout at every layer, and of the
    baseline and a control at every layer, alternated ``repeats`` times (knockout and control back
    to back, in alternating order) so that the machine's drift falls on all three alike. Per condition: the whole sweep's time over
    its conditions, and the time beyond the baseline's own sweep (prefill and the baseline's
    decoding) over them; wall clock and CPU time of this process, medians."""
    control = control_edges("image->text", "text_keys")
    every = sweep_conditions(loaded.num_layers, control=control)
    sets = {"baseline": every[:1], "knockout": [c for c in every if c.name != "control"],
            "control": [c for c in every if c.name != "knockout"]}
    warm_up(loaded, batches[0])
    fast = FastEngine()
    for conds in sets.values():
        fast.run_batch(loaded, batches[0], conds, new)  # warm-up
    wall, cpu = {name: [] for name in sets}, {name: [] for name in sets}
    names = list(sets)
    for r in range(repeats):
        # the knockout and the control back to back, in alternating order, the baseline around them
        for name in (names if r % 2 else names[::-1]):
            seconds, cpu_seconds, _ = time_engine(fast, loaded, batches, sets[name], new)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    n = loaded.num_layers
    out = {"repeats": repeats}
    for clock, runs in (("wall", wall), ("cpu", cpu)):
        t = {name: float(np.median(v)) for name, v in runs.items()}
        per = {name: t[name] / (n + 1) for name in ("knockout", "control")}
        beyond = {name: (t[name] - t["baseline"]) / n for name in ("knockout", "control")}
        out[clock] = {"sweep_s": {k: round(v, 3) for k, v in t.items()},
                      "per_condition_ms": {k: round(v * 1e3, 2) for k, v in per.items()},
                      "beyond_baseline_ms": {k: round(v * 1e3, 2) for k, v in beyond.items()},
                      "ratio": round(per["control"] / per["knockout"], 3),
                      "ratio_beyond_baseline": round(beyond["control"] / beyond["knockout"], 3),
                      # per repeat, the control's sweep over the knockout's run next to it: the
                      # machine's drift between repeats cancels
                      "paired_ratio": round(float(np.median(np.divide(runs["control"], runs["knockout"]))), 3)}
        print(f"[{label}] {clock}: per condition knockout {out[clock]['per_condition_ms']['knockout']} ms, control "
              f"{out[clock]['per_condition_ms']['control']} ms, control/knockout {out[clock]['ratio']:.3f}; beyond the "
              f"baseline's own sweep knockout {out[clock]['beyond_baseline_ms']['knockout']} ms, control "
              f"{out[clock]['beyond_baseline_ms']['control']} ms, control/knockout "
              f"{out[clock]['ratio_beyond_baseline']:.3f} (medians of {repeats}); paired per repeat, control/knockout "
              f"{out[clock]['paired_ratio']:.3f}")
    layouts = [controller(loaded).layout_of(b["input_ids"], b.get("attention_mask")) for b in batches]
    out["control_keys_blocked"] = sorted({int(k) for layout in layouts for k in control.keys(layout).sum(1)})
    out["ratio"], out["ratio_beyond_baseline"] = out["wall"]["ratio"], out["wall"]["ratio_beyond_baseline"]
    print(f"[{label}] a control blocks {out['control_keys_blocked']} text keys per sample")
    return out


def run_shape(name: str, hidden: int, samples: int, cache: dict, device: str = "cpu", dtype: str = "float32",
              smoke: bool = False, control: bool = False) -> dict:
    family, views, _ = SHAPES[name]
    if family not in cache:
        cache.clear()  # one model at a time: two 7B models need not share the device
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        cache[family] = random_model(family, hidden, device, dtype, smoke)
    loaded = cache[family]
    side = views * view_size(loaded)
    rng = np.random.RandomState(0)
    # sample ids: the control draws its keys per sample
    batches = [loaded.encode([Image.fromarray(rng.randint(0, 255, (side, side, 3), dtype=np.uint8))],
                             [QUESTION + SUFFIX], sample_ids=[str(i)]) for i in range(samples)]
    ids = batches[0]["input_ids"]
    visual_mask = loaded.adapter.visual_token_mask(loaded.model, ids)[0]
    visual = int(visual_mask.sum())
    system = int(visual_mask.nonzero()[0])
    text = ids.shape[1] - system - visual
    limit = token_layer_limit(system, visual, text, NEW_TOKENS, loaded.num_layers)["limit"]
    hidden = loaded.model.config.text_config.hidden_size
    print(f"[{name}] {loaded.name}, hidden {hidden}, {loaded.num_layers} layers, {system} system + {visual} visual + "
          f"{text} text tokens, max_new_tokens={NEW_TOKENS}; token-layer limit {limit:.1f}x")
    about = {"shape": name, "visual_tokens": visual, "prompt_tokens": ids.shape[1], "samples": samples,
             "hidden": hidden, "device": str(loaded.device), "dtype": str(loaded.model.dtype).removeprefix("torch.")}
    if control:
        return {**about, **compare_control(loaded, batches, NEW_TOKENS, f"{name}, {samples} sample(s), batch 1")}
    result = compare(loaded, batches, NEW_TOKENS, f"{name}, {samples} sample(s), batch 1")
    return {**about, **result, "limit": round(limit, 2), "of_limit": round(result["speedup"] / limit, 3)}


def table(record: dict) -> str:
    """The README's performance rows for one benchmark JSON line."""
    rows = ["| shape | visual tokens | naive | fast | speedup | token-layer limit | of limit | CPU-time speedup (of limit) "
            "| peak memory naive / fast | answers agree |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for s in record["shapes"]:
        rows.append(f"| {s['shape']} | {s['visual_tokens']:,} | {s['naive_s']:.1f} s | {s['fast_s']:.2f} s | "
                    f"**{s['speedup']:.1f}x** | {s['limit']:.1f}x | {s['of_limit']:.2f} | "
                    f"{s['cpu_speedup']:.1f}x ({s['cpu_speedup'] / s['limit']:.2f}) | "
                    f"{s['naive_peak_mb']:,.0f} / {s['fast_peak_mb']:,.0f} MiB | {'yes' if s['agree'] else 'NO'} |")
    return "\n".join(rows)


def figure(record: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from layerprobe.plots.save import save_figure

    shapes = record["shapes"]
    x = [s["visual_tokens"] for s in shapes]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(x, [s["limit"] for s in shapes], "o--", color="grey", label="token-layer limit")
    ax.plot(x, [s["speedup"] for s in shapes], "o-", color="C0", label="fast / naive, wall clock")
    ax.plot(x, [s["cpu_speedup"] for s in shapes], "s:", color="C1", label="fast / naive, CPU time")
    for s in shapes:
        ax.annotate(f"{s['of_limit']:.2f}", (s["visual_tokens"], s["speedup"]), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=8)
    ax.set_xlabel("visual tokens")
    ax.set_ylabel("speedup over the naive sweep")
    ax.set_title(f"Fast sweep engine, 32 layers, {NEW_TOKENS}-token answers", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    save_figure(fig, Path(path).with_suffix(""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--samples", type=int, default=None, help="per shape (default: 2, 1, 1)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU (times then wait for the device)")
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    ap.add_argument("--smoke", action="store_true", help="the real shapes (*-7b) at tiny sizes, for a CPU check")
    ap.add_argument("--skip-organism", action="store_true")
    ap.add_argument("--control", action="store_true",
                    help="the fast engine's cost per condition of control=text_keys against the knockout's, "
                         "instead of naive vs fast")
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="keep: glibc keeps freed memory in the heap (fewer page faults, less noise); default: as is")
    ap.add_argument("--out", help="also write the JSON line to this file")
    ap.add_argument("--table", metavar="JSON", help="print the README's rows from a JSON file and exit")
    ap.add_argument("--figure", nargs="?", const="figures/sweep_scaling.png", metavar="PNG",
                    help="draw speedup and limit against visual tokens (with --table: from that file)")
    args = ap.parse_args()
    if args.table:
        record = json.loads(Path(args.table).read_text().strip().splitlines()[-1])
        print(table(record))
        if args.figure:
            figure(record, args.figure)
        return
    names = [n.strip() for n in args.shapes.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        ap.error(f"--shapes: unknown {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    malloc = "kept heap" if args.malloc == "keep" and keep_freed_memory() else "default"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.dtype}, "
          f"malloc {malloc}, load average {load}")

    if not args.skip_organism:
        try:
            from layerprobe.data.registry import load_benchmark
            from layerprobe.organism import load as load_organism

            org = load_organism()
            data = load_benchmark("organism", limit=16)
            batches = [org.encode([s.load_image() for s in data.samples[i:i + 8]],
                                  [data.prompt(s) for s in data.samples[i:i + 8]],
                                  sample_ids=[str(s.sample_id) for s in data.samples[i:i + 8]])
                       for i in range(0, len(data.samples), 8)]
            if args.control:
                compare_control(org, batches, data.max_new_tokens, "organism, 16 samples, batch 8")
            else:
                compare(org, batches, data.max_new_tokens, "organism, 16 samples, batch 8", memory=False)
        except (ImportError, FileNotFoundError, OSError) as err:
            print(f"[organism] skipped: {err}")

    models: dict = {}
    shapes = [run_shape(n, args.hidden, args.samples or SHAPES[n][2], models, args.device, args.dtype, args.smoke,
                        args.control) for n in names]
    first = shapes[0]
    headline = ("ratio", "ratio_beyond_baseline") if args.control else ("speedup", "limit", "agree")
    record = {**{k: first[k] for k in headline}, "control": args.control,
              "shape": first["shape"], "threads": torch.get_num_threads(), "malloc": malloc,
              "load_before": load, "load_after": os.getloadavg()[0] if load is not None else None,
              "shapes": shapes}
    line = json.dumps(record)
    if args.out:
        Path(args.out).write_text(line + "\n")
    if args.figure:
        figure(record, args.figure)
    print(line)


if __name__ == "__main__":
    main()
