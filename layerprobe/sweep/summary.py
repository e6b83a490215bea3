"""Per-condition summary of a results table: accuracy with a 95% bootstrap CI and latencies.

    summary = summarise(read_results(run_dir))   # one row per (benchmark, condition, layer)
"""

from __future__ import annotations

import pandas as pd

from layerprobe.analysis.stats import bootstrap_ci
from layerprobe.io.results import per_sample_seconds

SUMMARY_COLUMNS = [
    "benchmark", "condition", "layer", "n", "n_skipped", "accuracy", "ci_low", "ci_high",
    "latency_s", "prefill_s", "n_tokens",
]


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
        low, high = bootstrap_ci(scores, seed=seed)
        out.append({
            "benchmark": bench, "condition": cond, "layer": layer,
            "n": len(ok), "n_skipped": int(len(group) - len(ok)),
            "accuracy": float(scores.mean()) if len(scores) else float("nan"),
            "ci_low": low, "ci_high": high,
            "latency_s": float(per_sample_seconds(ok, "total_s").mean()) if len(ok) else float("nan"),
            "prefill_s": float(per_sample_seconds(ok, "prefill_s").mean()) if len(ok) else float("nan"),
            "n_tokens": float(ok["n_tokens"].mean()) if len(ok) else float("nan"),
        })
    summary = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    summary["layer"] = summary["layer"].astype("Int64")
    order = summary["condition"].ne("baseline")
    return summary.assign(_o=order).sort_values(["benchmark", "_o", "layer"]).drop(columns="_o").reset_index(drop=True)
