"""Evaluate one inference method on one benchmark, and compare every method found under an eval
directory against vanilla, sample by sample.

    method = make_method("contrastive", profile="llava15_7b")
    run_method(loaded, data, method, "runs/eval/llava/textvqa/contrastive")
    table = compare(collect("runs/eval/llava"))     # accuracy, paired delta vs vanilla, CI, p, cost
    flips(collect("runs/eval/llava"))               # per method: samples fixed and broken

Rows: ``benchmark, sample_id, condition`` (= method name), ``layer`` (None), ``prediction, score,
skipped, prefill_s, total_s, n_tokens, batch_size, peak_mem_bytes`` plus the method's own fields.
Peak memory is measured on every batch on CUDA (allocator statistics, free) and, on CPU, in one
extra untimed pass over the first batch (``memory_pass``), since the CPU tracker slows what it
watches. A rerun into the same directory resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from layerprobe.data.batching import chunks, load_images
from layerprobe.data.metrics import score as score_answer
from layerprobe.evaluation.peak_memory import peak_memory
from layerprobe.io.results import ResultsWriter, read_results
from layerprobe.analysis.stats import bootstrap_ci, sign_flip_p

log = logging.getLogger(__name__)
BASELINE = "vanilla"


def _row(bench, sample_id, method, **fields) -> dict:
    return {"benchmark": bench, "sample_id": str(sample_id), "condition": method, "layer": None, **fields}


def run_method(loaded, data, method, run_dir, header: dict | None = None, batch_size: int = 8,
               on_error: str = "raise", memory_pass: bool = True, maps_samples: int = 0,
               progress: bool = True, label: str | None = None) -> Path:
    """Answer every sample of ``data`` with ``method``; rows go to ``run_dir/results.jsonl`` with
    ``condition`` = ``label`` (the method's name unless a variant is being compared)."""
    path = Path(run_dir) / "results.jsonl"
    bench, name = data.name, label or method.name
    on_cuda = loaded.device.type == "cuda"
    with ResultsWriter(path, header) as writer:
        done = writer.done_keys()
        writer.append_many(_row(bench, sid, name, prediction=None, score=None, skipped=reason)
                           for sid, reason in data.skipped)
        todo = [s for s in data.samples if (bench, str(s.sample_id), name, None) not in done]
        bar = tqdm(total=len(todo), desc=f"{name} on {bench}", unit="sample", disable=not progress)
        first = True
        for batch in chunks(todo, batch_size):
            kept, images, failed = load_images(batch, on_error)
            writer.append_many(_row(bench, s.sample_id, name, prediction=None, score=None, skipped=reason)
                               for s, reason in failed)
            if kept:
                texts = [data.prompt(s) for s in kept]
                peak = None
                if first:  # warm-up of this method's own code path, untimed
                    method.answer_batch(loaded, kept, images, texts, data.max_new_tokens)
                    if memory_pass and not on_cuda:
                        with peak_memory(loaded.device, loaded.model) as mem:
                            method.answer_batch(loaded, kept, images, texts, data.max_new_tokens)
                        peak = mem.peak_bytes
                keep_maps = getattr(method, "keep_maps", None)
                if keep_maps is not None:
                    method.keep_maps = maps_samples > 0
                if on_cuda:
                    with peak_memory(loaded.device) as mem:
                        records = method.answer_batch(loaded, kept, images, texts, data.max_new_tokens)
                    peak = mem.peak_bytes
                else:
                    records = method.answer_batch(loaded, kept, images, texts, data.max_new_tokens)
                maps_samples -= len(kept)
                writer.append_many(
                    _row(bench, s.sample_id, name, **rec, score=score_answer(data.metric, rec["prediction"], s.answers),
                         skipped=None, batch_size=len(kept), peak_mem_bytes=peak)
                    for s, rec in zip(kept, records)
                )
                first = False
            bar.update(len(batch))
        bar.close()
    return path


def collect(eval_dir) -> pd.DataFrame:
    """Every results table below ``eval_dir`` (one per benchmark x method), concatenated."""
    tables = [read_results(p) for p in sorted(Path(eval_dir).rglob("results.jsonl"))]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _scored(table: pd.DataFrame) -> pd.DataFrame:
    t = table[table["skipped"].isna()] if "skipped" in table else table
    return t[t["score"].notna()]


def paired(table: pd.DataFrame, bench: str, method: str) -> pd.DataFrame:
    """Samples of ``bench`` scored by both vanilla and ``method``: columns base, other."""
    t = _scored(table)
    t = t[t["benchmark"] == bench]
    base = t[t["condition"] == BASELINE].set_index("sample_id")
    other = t[t["condition"] == method].set_index("sample_id")
    both = base.index.intersection(other.index)
    return pd.DataFrame({"base": base.loc[both, "score"].astype(float),
                         "other": other.loc[both, "score"].astype(float),
                         "base_prediction": base.loc[both, "prediction"],
                         "prediction": other.loc[both, "prediction"]})


def _cost(rows: pd.DataFrame) -> tuple[float, float, float]:
    per_sample = rows["total_s"] / rows["batch_size"] if "batch_size" in rows else rows["total_s"]
    prefill = rows["prefill_s"] / rows["batch_size"] if "batch_size" in rows else rows["prefill_s"]
    peak = rows["peak_mem_bytes"].dropna().max() if "peak_mem_bytes" in rows else np.nan
    return float(per_sample.mean()), float(prefill.mean()), float(peak) if pd.notna(peak) else np.nan


def compare(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per benchmark x method, plus an ``average`` row per method (mean over benchmarks)."""
    t = _scored(table)
    rows = []
    for (bench, method), group in t.groupby(["benchmark", "condition"], sort=True):
        latency, prefill, peak = _cost(group)
        row = {"benchmark": bench, "method": method, "n": len(group), "accuracy": group["score"].astype(float).mean(),
               "latency_s": latency, "prefill_s": prefill, "peak_mem_bytes": peak,
               "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "n_paired": 0}
        if method != BASELINE:
            pairs = paired(t, bench, method)
            diff = (pairs["other"] - pairs["base"]).to_numpy()
            if diff.size:
                row["delta"] = float(diff.mean())
                row["ci_low"], row["ci_high"] = bootstrap_ci(diff, seed=seed)
                row["p"] = sign_flip_p(diff, seed=seed)
                row["n_paired"] = int(diff.size)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    base = out[out["method"] == BASELINE].set_index("benchmark")
    for col, ratio in (("latency_s", "latency_ratio"), ("peak_mem_bytes", "peak_mem_ratio")):
        out[ratio] = out[col] / (out["benchmark"].map(base[col]) if len(base) else np.nan)
    avg = out.groupby("method", sort=False).agg(
        n=("n", "sum"), accuracy=("accuracy", "mean"), delta=("delta", "mean"), latency_s=("latency_s", "mean"),
        prefill_s=("prefill_s", "mean"), peak_mem_bytes=("peak_mem_bytes", "max"),
        latency_ratio=("latency_ratio", "mean"), peak_mem_ratio=("peak_mem_ratio", "mean"),
        n_paired=("n_paired", "sum")).reset_index()
    avg["benchmark"] = "average"
    return pd.concat([out, avg], ignore_index=True)[
        ["benchmark", "method", "n", "accuracy", "delta", "ci_low", "ci_high", "p", "n_paired",
         "latency_s", "prefill_s", "latency_ratio", "peak_mem_bytes", "peak_mem_ratio"]]


def flips(table: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark x method: samples the method fixed (score up vs vanilla), broke (down), kept."""
    t = _scored(table)
    rows = []
    for bench in sorted(t["benchmark"].unique()):
        for method in sorted(set(t[t["benchmark"] == bench]["condition"]) - {BASELINE}):
            pairs = paired(t, bench, method)
            d = pairs["other"] - pairs["base"]
            rows.append({"benchmark": bench, "method": method, "n_paired": len(d), "fixed": int((d > 0).sum()),
                         "broken": int((d < 0).sum()), "unchanged": int((d == 0).sum())})
    return pd.DataFrame(rows, columns=["benchmark", "method", "n_paired", "fixed", "broken", "unchanged"])
