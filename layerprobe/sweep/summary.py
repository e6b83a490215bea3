"""Per-condition summary of a results table: accuracy with a 95% bootstrap CI and latencies.

    summary = summarise(read_results(run_dir))   # one row per (benchmark, condition, layer)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY_COLUMNS = [
    "benchmark", "condition", "layer", "n", "n_skipped", "accuracy", "ci_low", "ci_high",
    "latency_s", "prefill_s", "n_tokens",
]


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap CI of the mean (seeded, so summaries are reproducible)."""
    # Sorted: the CI must not depend on the order rows were written (shards merged, resumed runs).
    values = np.sort(np.asarray(values, dtype=float))
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_resamples, len(values)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarise(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = table.copy()
    if "skipped" not in table:
        table["skipped"] = None
    skipped = table["skipped"].notna()
    out = []
    keys = ["benchmark", "condition", "layer"]
    for (bench, cond, layer), group in table.groupby(keys, dropna=False, sort=False):
        ok = group[~skipped.loc[group.index]]
        scores = ok["score"].astype(float).to_numpy()
        low, high = bootstrap_mean_ci(scores, seed=seed)
        out.append({
            "benchmark": bench, "condition": cond, "layer": layer,
            "n": len(ok), "n_skipped": int(len(group) - len(ok)),
            "accuracy": float(scores.mean()) if len(scores) else float("nan"),
            "ci_low": low, "ci_high": high,
            "latency_s": float(ok["total_s"].mean()) if len(ok) else float("nan"),
            "prefill_s": float(ok["prefill_s"].mean()) if len(ok) else float("nan"),
            "n_tokens": float(ok["n_tokens"].mean()) if len(ok) else float("nan"),
        })
    summary = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    summary["layer"] = summary["layer"].astype("Int64")
    order = summary["condition"].ne("baseline")
    return summary.assign(_o=order).sort_values(["benchmark", "_o", "layer"]).drop(columns="_o").reset_index(drop=True)
