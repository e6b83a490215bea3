"""Power of layer discovery per effect: how often a random subsample of n samples recovers the
discovery that all samples make, read from finished sweep runs (no model is run).

    python experiments/power_table.py runs/sweep/organism/organism/image_text --n 32 64 128 256
    python experiments/power_table.py RUN [RUN ...] --effects accuracy logprob --seeds 40 --json power.json

For each effect (with its default floor, test and every other discovery default), the full-data
discovery is the fusion layers and the review layer that ``discover`` names on every sample; for
each n and seed a subsample of n samples per benchmark (drawn without replacement, seeded) is
discovered the same way, and it *recovers* when both its fusion layers and its review layer are
the full data's. Discovery runs with ``n_resamples=0`` (the CI plays no part in the decision).
With ``--adaptive`` each row also says what the adaptive sweep's design (its defaults, that
effect) decides on the same rows (``layerprobe.analysis.sequential.replay``: the looks an adaptive
sweep makes, without running the model): the share of the full sweep's answers it computes and
whether its discovery equals the full data's. ``--positions`` names the benchmark whose sample
order defines the stages (default: the run's own, loaded with ``load_benchmark``).
Prints one markdown row per effect: the recovery rate at each n (hits / seeds), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from layerprobe.analysis.discovery import discover
from layerprobe.analysis.effects import EFFECTS
from layerprobe.analysis.sequential import Design, record, replay
from layerprobe.data.registry import load_benchmark
from layerprobe.io.results import read_header
from layerprobe.io.runs import merge_runs


def subsample(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keep = []
    for _, part in table.groupby("benchmark"):
        ids = np.sort(part["sample_id"].unique())
        keep.append(part[part["sample_id"].isin(rng.choice(ids, size=min(n, len(ids)), replace=False))])
    return pd.concat(keep, ignore_index=True)


def layers_found(table: pd.DataFrame, num_layers: int, effect: str) -> tuple[tuple[int, ...], int | None]:
    found = discover(table, num_layers=num_layers, effect=effect, n_resamples=0)
    return tuple(found.fusion_layers), found.review_layer


def adaptive_replay(table: pd.DataFrame, run: str, num_layers: int, effect: str) -> tuple[float, tuple]:
    """(share of the answers the adaptive design computes, its discovery) on ``table``."""
    data = read_header(f"{run}/results.jsonl")["data"]
    keys = ("name", "root", "split", "limit", "seed")
    positions = load_benchmark(**{k: data[k] for k in keys if data.get(k) is not None}).positions
    layers = table.loc[table["condition"] == "knockout", "layer"].nunique()
    plan = Design(effect=effect).plan(len(positions), layers)
    as_run, stopped = replay(table, plan, positions)
    found = discover(as_run, num_layers=num_layers, effect=effect, n_resamples=0,
                     adaptive=record(plan, stopped, layers, len(positions)))
    return len(as_run) / len(table), (tuple(found.fusion_layers), found.review_layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="sweep run directories (merged like layerprobe-discover)")
    parser.add_argument("--n", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--effects", nargs="+", default=list(EFFECTS), choices=list(EFFECTS))
    parser.add_argument("--json", help="also write the JSON line to this file")
    parser.add_argument("--adaptive", action="store_true", help="also replay the adaptive design per effect")
    args = parser.parse_args()
    table, provenance = merge_runs(args.runs)
    num_layers = provenance["num_layers"]
    start = time.time()
    rows = []
    extra = " adaptive: answers | adaptive = full |" if args.adaptive else ""
    print("| effect | full-data discovery (fusion; review) | " + " | ".join(f"n={n}" for n in args.n) + " |" + extra)
    print("|---|---|" + "---|" * (len(args.n) + (2 if args.adaptive else 0)))
    for effect in args.effects:
        full = layers_found(table, num_layers, effect)
        rates = {}
        for n in args.n:
            hits = sum(layers_found(subsample(table, n, seed), num_layers, effect) == full for seed in range(args.seeds))
            rates[n] = hits
        row = {"effect": effect, "fusion": list(full[0]), "review": full[1], "seeds": args.seeds,
               "recovered": {str(n): h for n, h in rates.items()}}
        cells = [f"{h / args.seeds:.2f} ({h}/{args.seeds})" for h in rates.values()]
        if args.adaptive:
            share, found = adaptive_replay(table, args.runs[0], num_layers, effect)
            row.update(adaptive_share=round(share, 4), adaptive_same=found == full)
            cells += [f"{share:.3f}", "yes" if found == full else f"no: {list(found[0])}; {found[1]}"]
        rows.append(row)
        print(f"| {effect} | {list(full[0])}; {full[1]} | " + " | ".join(cells) + " |", flush=True)
    record = {"runs": args.runs, "n": args.n, "seeds": args.seeds, "rows": rows,
              "seconds": round(time.time() - start, 1)}
    print(json.dumps(record))
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
