"""Results tables with planted ground truth, for the discovery and profile tests: known drops at
chosen layers, noise elsewhere, several benchmarks, written as a sweep run directory if asked.

    table = planted_table(32, {2: 0.4, 29: 0.3}, n=300, seed=1)   # baseline + a knockout per layer
    write_run(tmp_path, table, num_layers=32)                     # results.jsonl with its header
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from layerprobe.io.results import ResultsWriter

CORRECT_SCORES, CORRECT_P = [1.0, 0.9, 0.6], [0.8, 0.1, 0.1]     # VQA accuracy levels
WRONG_SCORES, WRONG_P = [0.0, 0.3], [0.85, 0.15]


def _scores(rng, correct: np.ndarray) -> np.ndarray:
    high = rng.choice(CORRECT_SCORES, size=correct.shape, p=CORRECT_P)
    low = rng.choice(WRONG_SCORES, size=correct.shape, p=WRONG_P)
    return np.where(correct, high, low)


# per-sample probability of a correct answer: mostly easy or hard, a few coin flips; a knockout
# without effect then changes ~3.5% of the answers (both ways), which is the noise to beat
ABILITY, ABILITY_P = [0.99, 0.01, 0.5], [0.62, 0.35, 0.03]
# a much noisier model (~24% of answers change between any two conditions), so that null p-values
# spread down to small values and an uncorrected procedure would make many false discoveries
NOISY = ([0.9, 0.1, 0.5], [0.5, 0.3, 0.2])


def planted_table(num_layers: int, planted: dict[int, float], benchmarks=("vqav2", "gqa"), n: int = 1000,
                  seed: int = 0, layers=None, ability=(ABILITY, ABILITY_P)) -> pd.DataFrame:
    """Per-sample results: sample i answers correctly with its own probability, independently in
    every condition, so a knockout with no effect is exchangeable with the baseline; at a planted
    layer it also loses that fraction of its correct answers."""
    rng = np.random.default_rng(seed)
    layers = np.arange(num_layers) if layers is None else np.asarray(layers)
    loss = np.array([0.0] + [planted.get(int(x), 0.0) for x in layers])[:, None]   # row 0: baseline
    frames = []
    for benchmark in benchmarks:
        sample_ability = rng.choice(ability[0], size=n, p=ability[1])
        shape = (len(layers) + 1, n)
        correct = (rng.random(shape) < sample_ability) & (rng.random(shape) >= loss)
        frames.append(pd.DataFrame({
            "benchmark": benchmark,
            "sample_id": np.tile([f"{benchmark}-{i}" for i in range(n)], shape[0]),
            "condition": np.repeat(["baseline"] + ["knockout"] * len(layers), n),
            "layer": pd.array(np.repeat(np.r_[-1, layers], n), dtype="Int64"),
            "score": _scores(rng, correct).ravel(),
        }))
    table = pd.concat(frames, ignore_index=True)
    table.loc[table["condition"] == "baseline", "layer"] = pd.NA
    table["edges"] = "image->text"
    table["skipped"] = None
    return table


def write_run(run_dir, table: pd.DataFrame, num_layers: int | None, config_hash="cfg-1", edges="image->text"):
    model = {"name": "toy/llava", "config_hash": config_hash, "architecture": "LlavaForConditionalGeneration"}
    if num_layers is not None:
        model["num_layers"] = num_layers
    header = {"config_hash": "run", "model": model, "data": {"name": "toy"}, "edges": edges,
              "metric": "vqa_accuracy", "layerprobe_version": "0.1.0"}
    rows = [{**r, "layer": None if pd.isna(r["layer"]) else int(r["layer"]), "prediction": "x",
             "prefill_s": 0.01, "total_s": 0.02, "n_tokens": 1} for r in table.to_dict("records")]
    with ResultsWriter(run_dir / "results.jsonl", header=header) as out:
        out.append_many(rows)
    return run_dir


def shard(table: pd.DataFrame, k: int, parts: int) -> pd.DataFrame:
    ids = sorted(table["sample_id"].unique())
    mine = set(ids[k::parts])
    return table[table["sample_id"].isin(mine)]
