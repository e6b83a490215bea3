"""Sweep run directories read back as one table: the single place that decides which runs may be
merged (shards of a benchmark, benchmarks side by side). ``layerprobe-discover``,
``layerprobe-plot`` and the library functions behind them all merge through ``merge_runs``, so
they accept and refuse exactly the same sets of runs.

    table, provenance = merge_runs(["runs/vqav2_shard0", "runs/vqav2_shard1"])

Refused, each with a one-line ConfigError naming the runs: a run given twice; runs of different
models (config hash, checkpoint name or path, depth), edge sets, mask windows or controls; shards of one
benchmark with different data selections; a sample in several runs; a condition that does not
cover every sample of its benchmark once several runs are merged (different layer lists, or an
unfinished shard). Adaptive sweeps (``adaptive.json`` beside their results) merge when every
shard of a benchmark finished and made the same decisions; a condition an interim look stopped
then covers the samples of the stages it ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import json

import pandas as pd

from layerprobe.errors import ConfigError
from layerprobe.io.results import read_header, read_results

# Data settings that must agree between shards of one benchmark. root and layout may differ
# (node-local copies of the same files); shared samples are caught by the overlap check instead.
SELECTION = ("split", "limit", "seed", "num_shards", "prompt")
ADAPTIVE_FILE = "adaptive.json"   # an adaptive sweep's design, decisions and answer count


def read_adaptive(run_dir: str | Path) -> dict | None:
    """The record an adaptive sweep keeps in its run directory, or None for a full sweep."""
    path = Path(run_dir) / ADAPTIVE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{path}: not valid JSON") from None


def _adaptive_records(run_dirs: Sequence[Path], benchmarks: dict[str, str]) -> dict[str, dict]:
    """benchmark -> the decisions its adaptive shards agree on; {} when no run is adaptive."""
    records: dict[str, dict] = {}
    for run in run_dirs:
        rec = read_adaptive(run)
        if rec is None:
            continue
        if rec.get("status") != "complete":
            raise ConfigError(f"run {run}: its adaptive sweep is not finished ({rec.get('status')}); "
                              "rerun it with the same overrides to resume")
        bench = benchmarks[str(run)]
        decided = {k: rec[k] for k in ("design", "conditions", "total", "ends", "alpha_at", "stopped")}
        if bench in records and records[bench] != decided:
            raise ConfigError(f"benchmark {bench}: the adaptive shards' designs or decisions differ ({run})")
        records[bench] = decided
    return records


def _check_same(what: str, values: dict[str, Any]) -> None:
    """``values``: run dir -> value (None: not recorded); one line naming each value and its runs."""
    groups: dict[str, list[str]] = {}
    for run, value in values.items():
        if value is not None:
            groups.setdefault(value if isinstance(value, str) else repr(value), []).append(run)
    if len(groups) > 1:
        raise ConfigError(f"runs differ in {what}: " + "; ".join(f"{v} in {', '.join(r)}" for v, r in groups.items()))


def _check_no_overlap(table: pd.DataFrame) -> None:
    owners = table.groupby(["benchmark", "sample_id"])["_run"].nunique()
    shared = owners[owners > 1]
    if not shared.empty:
        benchmark, sample_id = shared.index[0]
        runs = sorted(table.loc[(table["benchmark"] == benchmark) & (table["sample_id"] == sample_id), "_run"].unique())
        raise ConfigError(f"benchmark {benchmark}: sample {sample_id} (and {len(shared) - 1} more) "
                          f"appear in several runs ({', '.join(runs)}); shards must not overlap")


def _check_complete(table: pd.DataFrame, adaptive: dict[str, dict] | None = None) -> None:
    """Per benchmark, every condition covers every sample (of the stages it ran, in an adaptive
    sweep): catches shards swept over different layer lists and a shard that was killed and never
    resumed."""
    for bench, part in table.groupby("benchmark"):
        record = (adaptive or {}).get(bench)
        if record is not None and "stage" in part:
            _check_stages(bench, part, record)
            continue
        n = part["sample_id"].nunique()
        counts = part.groupby(["condition", "layer"], dropna=False)["sample_id"].nunique()
        short = counts[counts < n]
        if not short.empty:
            (cond, layer), have = short.index[0], short.iloc[0]
            where = cond if pd.isna(layer) else f"{cond} at layer {layer}"
            raise ConfigError(f"benchmark {bench}: {where} has {have} of {n} samples; the runs swept different "
                              "layers, or one is unfinished (rerun it with the same overrides to resume)")


def _check_stages(bench: str, part: pd.DataFrame, record: dict) -> None:
    last = {int(x["layer"]): int(x["look"]) + 1 for x in record["stopped"]}
    stage = part.groupby("sample_id")["stage"].first()
    for (cond, layer), rows in part.groupby(["condition", "layer"], dropna=False):
        until = len(record["ends"]) if pd.isna(layer) else last.get(int(layer), len(record["ends"]))
        wanted = set(stage.index[stage <= until])
        have = set(rows["sample_id"])
        if not wanted <= have:
            where = cond if pd.isna(layer) else f"{cond} at layer {layer}"
            raise ConfigError(f"benchmark {bench}: {where} has {len(have & wanted)} of the {len(wanted)} samples "
                              "of the stages it ran; one shard is unfinished (rerun it to resume)")


def merge_runs(run_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(results table, provenance) of several runs, or a ConfigError naming the mismatch."""
    resolved = [Path(r).resolve() for r in run_dirs]
    twice = next((r for r, p in zip(run_dirs, resolved) if resolved.count(p) > 1), None)
    if twice is not None:
        raise ConfigError(f"run: {twice} is given twice; its samples would count double")
    tables, headers = [], {}
    for run_dir in map(Path, run_dirs):
        table = read_results(run_dir)
        table["_run"] = str(run_dir)
        tables.append(table)
        headers[str(run_dir)] = read_header(run_dir / "results.jsonl" if run_dir.is_dir() else run_dir)
    model = {r: h.get("model") or {} for r, h in headers.items()}
    _check_same("model config_hash", {r: m.get("config_hash") for r, m in model.items()})
    _check_same("model.num_layers", {r: m.get("num_layers") for r, m in model.items()})
    _check_same("edges", {r: h.get("edges") for r, h in headers.items()})
    _check_same("mask.window", {r: h.get("window") for r, h in headers.items()})
    # a run without a control is one ("none"), so it does not merge with one that has a control
    _check_same("control", {r: h.get("control") or "none" for r, h in headers.items()})
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if len(table):
        # before the selection check: a sharded and a whole run share samples, which says more
        _check_no_overlap(table)
    # two fine-tunes share a config_hash: the checkpoint's name or path tells them apart
    _check_same("model", {r: m.get("name") for r, m in model.items()})
    by_bench: dict[str, dict[str, dict]] = {}
    for run, header in headers.items():
        data = header.get("data") or {}
        by_bench.setdefault(data.get("name"), {})[run] = data
    for bench, runs in by_bench.items():
        for key in SELECTION:
            _check_same(f"data.{key} for {bench}", {r: d.get(key) for r, d in runs.items()})
    adaptive = _adaptive_records([Path(r) for r in run_dirs],
                                 {r: (h.get("data") or {}).get("name") for r, h in headers.items()})
    if len(table) and len(run_dirs) > 1:
        # one run alone may be unfinished (it resumes); merged, a gap would pass for a result
        _check_complete(table, adaptive)
    first = next(iter(headers.values()), {})
    first_model = first.get("model") or {}
    provenance = dict(
        runs=[str(r) for r in run_dirs], model=first_model.get("name"),
        model_config_hash=first_model.get("config_hash"), num_layers=first_model.get("num_layers"),
        edges=first.get("edges"), adaptive=adaptive or None,
    )
    return table.drop(columns="_run", errors="ignore"), provenance
