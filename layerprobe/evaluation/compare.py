"""Compare every method found under an eval directory against vanilla, sample by sample.

    table = collect("runs/eval/llava")   # every results.jsonl below, concatenated
    compare(table)                       # accuracy, paired delta vs vanilla, CI, p, latency and memory
    flips(table)                         # per method: samples fixed and broken

Latencies are seconds per sample; the CI is the paired bootstrap and p the sign-flip test of
``layerprobe.analysis.stats``, on the samples both vanilla and the method scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from layerprobe.analysis.stats import (
    bootstrap_ci, pair_with_baseline, scored_rows, sign_flip_p, stratified_bootstrap_ci, stratified_sign_flip_p,
)
from layerprobe.io.results import per_sample_seconds, read_results

REFERENCE_METHOD = "vanilla"  # every method is compared with it (its run is the "baseline" of layerprobe-eval)


def collect(eval_dir) -> pd.DataFrame:
    """Every results table below ``eval_dir`` (one per benchmark x method), concatenated; ``run_dir``
    says which directory each row came from (its header holds the method's options)."""
    tables = [read_results(p).assign(run_dir=str(p.parent)) for p in sorted(Path(eval_dir).rglob("results.jsonl"))]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def paired(table: pd.DataFrame, bench: str, method: str) -> pd.DataFrame:
    """Samples of ``bench`` scored by both vanilla and ``method``, indexed by sample_id: base,
    other, base_prediction, prediction."""
    pairs = pair_with_baseline(table[table["benchmark"] == bench], REFERENCE_METHOD)
    pairs = pairs[pairs["condition"] == method].set_index("sample_id")
    return pd.DataFrame({"base": pairs["base_score"], "other": pairs["score"],
                         "base_prediction": pairs["base_prediction"], "prediction": pairs["prediction"]})


def _cost(rows: pd.DataFrame) -> tuple[float, float, float]:
    peak = rows["peak_mem_bytes"].dropna().max() if "peak_mem_bytes" in rows else np.nan
    return (float(per_sample_seconds(rows, "total_s").mean()), float(per_sample_seconds(rows, "prefill_s").mean()),
            float(peak) if pd.notna(peak) else np.nan)


def compare(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per benchmark x method, plus an ``average`` row per method: accuracy and delta are
    means over benchmarks (each benchmark counts once), the delta's CI a benchmark-stratified
    paired bootstrap and its p a sign-flip test of that same mean."""
    t = scored_rows(table)
    rows, diffs = [], {}
    for (bench, method), group in t.groupby(["benchmark", "condition"], sort=True):
        latency, prefill, peak = _cost(group)
        row = {"benchmark": bench, "method": method, "n": len(group), "accuracy": group["score"].astype(float).mean(),
               "latency_s": latency, "prefill_s": prefill, "peak_mem_bytes": peak,
               "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n_paired": 0}
        if method != REFERENCE_METHOD:
            pairs = paired(t, bench, method)
            diff = (pairs["other"] - pairs["base"]).to_numpy()
            if diff.size:
                row["delta"] = float(diff.mean())
                row["ci_low"], row["ci_high"] = bootstrap_ci(diff, seed=seed)
                row["p"] = sign_flip_p(diff, seed=seed)
                row["n_paired"] = int(diff.size)
                diffs.setdefault(method, []).append(diff)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    base = out[out["method"] == REFERENCE_METHOD].set_index("benchmark")
    for col, ratio in (("latency_s", "latency_ratio"), ("peak_mem_bytes", "peak_mem_ratio")):
        out[ratio] = out[col] / (out["benchmark"].map(base[col]) if len(base) else np.nan)
    avg = out.groupby("method", sort=False).agg(
        n=("n", "sum"), accuracy=("accuracy", "mean"), delta=("delta", "mean"), latency_s=("latency_s", "mean"),
        prefill_s=("prefill_s", "mean"), peak_mem_bytes=("peak_mem_bytes", "max"),
        latency_ratio=("latency_ratio", "mean"), peak_mem_ratio=("peak_mem_ratio", "mean"),
        n_paired=("n_paired", "sum")).reset_index()
    avg["benchmark"] = "average"
    # the headline delta: benchmarks weigh the same, samples resampled within their benchmark
    for i, method in avg["method"].items():
        if method in diffs:
            avg.loc[i, ["ci_low", "ci_high"]] = stratified_bootstrap_ci(diffs[method], seed=seed)
            avg.loc[i, "p"] = stratified_sign_flip_p(diffs[method], seed=seed)
    return pd.concat([out, avg], ignore_index=True)[
        ["benchmark", "method", "n", "accuracy", "delta", "ci_low", "ci_high", "p", "n_paired",
         "latency_s", "prefill_s", "latency_ratio", "peak_mem_bytes", "peak_mem_ratio"]]


def flips(table: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark x method: samples the method fixed (score up vs vanilla), broke (down), kept."""
    t = scored_rows(table)
    rows = []
    for bench in sorted(t["benchmark"].unique()):
        for method in sorted(set(t[t["benchmark"] == bench]["condition"]) - {REFERENCE_METHOD}):
            pairs = paired(t, bench, method)
            d = pairs["other"] - pairs["base"]
            rows.append({"benchmark": bench, "method": method, "n_paired": len(d), "fixed": int((d > 0).sum()),
                         "broken": int((d < 0).sum()), "unchanged": int((d == 0).sum())})
    return pd.DataFrame(rows, columns=["benchmark", "method", "n_paired", "fixed", "broken", "unchanged"])


def attention_mass(table: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark x method x layer (post, review) x quantity, the distribution over samples of
    where the last prompt token's attention went, from the rows' ``attention_mass`` records
    (contrastive attention): mean, quantiles 10/50/90 and n. Empty when no row has one."""
    columns = ["benchmark", "method", "layer", "quantity", "n", "mean", "p10", "median", "p90"]
    if "attention_mass" not in table:
        return pd.DataFrame(columns=columns)
    rows = scored_rows(table)
    rows = rows[rows["attention_mass"].notna()]
    long = [{"benchmark": r.benchmark, "method": r.condition, "layer": where, "quantity": name, "value": value}
            for r in rows.itertuples() for where, values in r.attention_mass.items() for name, value in values.items()]
    if not long:
        return pd.DataFrame(columns=columns)
    grouped = pd.DataFrame(long).groupby(["benchmark", "method", "layer", "quantity"], sort=True)["value"]
    out = grouped.agg(n="size", mean="mean", p10=lambda v: v.quantile(0.1), median="median",
                      p90=lambda v: v.quantile(0.9)).reset_index()
    return out[columns]
