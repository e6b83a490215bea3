"""The adaptive sweep: every condition on the first stage's samples, then further stages only
for the layers an interim look has not decided (``layerprobe.analysis.sequential``), the baseline
on every stage some layer still needs. A layer's control condition (if the sweep runs one) runs
and stops with its layer. Resumable and shardable like the full sweep.

    record = run_stages(data, run_dir, conditions, answer_stage, Design(), shard_runs=None, wait_s=0)
    record["answers"]    # {"computed": 5120, "full_sweep": 16896, "share": 0.303}
    record["complete"]   # False while a look waits for other shards (rerun to resume)

Stages are cut in the unsharded subset of ``data.total`` samples (positions 0..total-1), so a
shard runs its own positions of each stage. A look needs every shard's rows of the stages so far:
each shard, after a stage, records ``stage_done`` in its ``adaptive.json``, reads the other shards'
results (``shard_runs``: their run directories in shard order; by default the siblings of its own
run directory named ``shard<i>of<n>``, as ``layerprobe-sweep -m`` names them), and when all have
finished the stage it decides from the pooled rows. Every shard decides alike: the decision is a
function of those rows alone (seeded bootstraps, order-free). If a shard is still missing after
``wait_s`` seconds, this one records that it waits and returns; rerunning it resumes at the look.
The rows carry their ``stage``; ``adaptive.json`` holds the design, the decisions of every look,
the stops, and the answers computed against the full sweep's.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from layerprobe.analysis.sequential import RUNNING, Design, look, record, stage_rows
from layerprobe.errors import ConfigError
from layerprobe.io.results import read_results, write_atomic
from layerprobe.io.runs import ADAPTIVE_FILE, read_adaptive
from layerprobe.sweep.conditions import BASELINE

log = logging.getLogger(__name__)
SHARD_DIR = re.compile(r"^(.*)shard(\d+)of(\d+)$")


def shard_directories(run_dir: Path, shard: int, num_shards: int, given=None) -> list[Path]:
    """Every shard's run directory, in shard order (``given``, or the siblings of ``run_dir``)."""
    if given:
        dirs = [Path(d) for d in given]
        if len(dirs) != num_shards or dirs[shard].resolve() != run_dir.resolve():
            raise ConfigError(f"design.shard_runs: expected {num_shards} run directories in shard order, "
                              f"with {run_dir} at position {shard}")
        return dirs
    if num_shards == 1:
        return [run_dir]
    match = SHARD_DIR.match(run_dir.name)
    if not match or (int(match[2]), int(match[3])) != (shard, num_shards):
        raise ConfigError(f"adaptive sweep with data.num_shards={num_shards}: a look pools every shard; name the "
                          f"run directories shard<i>of<n> (as layerprobe-sweep -m does) or give design.shard_runs")
    return [run_dir.with_name(f"{match[1]}shard{i}of{num_shards}") for i in range(num_shards)]


def _save(run_dir: Path, state: dict) -> None:
    write_atomic(run_dir / ADAPTIVE_FILE, json.dumps(state, indent=1) + "\n")


def _pooled(dirs: list[Path], stage: int, design_record: dict) -> tuple[pd.DataFrame | None, list[str]]:
    """Every shard's rows of stages <= ``stage``, or (None, what is missing)."""
    missing, tables = [], []
    for d in dirs:
        state = read_adaptive(d)
        if state is not None and state["design"] != design_record:
            raise ConfigError(f"{d}: its adaptive sweep has another design; the shards must share one")
        if state is None or state.get("stage_done", 0) < stage:
            missing.append(f"{d} (stage {stage} not finished)")
        else:
            tables.append(read_results(d / "results.jsonl"))
    if missing:
        return None, missing
    return stage_rows(pd.concat(tables, ignore_index=True), stage), []


def _wait_for_shards(dirs, stage, design_record, wait_s: float):
    deadline = time.monotonic() + wait_s
    while True:
        table, missing = _pooled(dirs, stage, design_record)
        if table is not None or time.monotonic() >= deadline:
            return table, missing
        time.sleep(min(5.0, max(deadline - time.monotonic(), 0.0)))


def _answers(run_dir: Path, data, conditions) -> dict:
    table = read_results(run_dir / "results.jsonl")
    computed = int(table["skipped"].isna().sum()) if "skipped" in table else len(table)
    full = len(data.samples) * len(conditions)
    return {"computed": computed, "full_sweep": full, "share": round(computed / full, 4) if full else None}


def run_stages(data, run_dir, conditions, answer_stage, design: Design, shard_runs=None, wait_s: float = 0.0) -> dict:
    """Run the stages; ``answer_stage(stage_data, conditions, fields)`` answers one stage's
    samples (the sweep loop). Returns the record written to ``adaptive.json``, with ``complete``."""
    run_dir = Path(run_dir)
    # a layer's control (if any) follows its knockout: it runs while the layer runs and stops with
    # it, and the design's alpha is split over the layers, whose knockouts the looks test
    variants = [c for c in conditions if c.key != BASELINE.key]
    layers = sorted({c.layer for c in variants})
    plan = design.plan(int(data.total or len(data.samples)), len(layers))
    dirs = shard_directories(run_dir, data.shard, data.num_shards, shard_runs)
    design_record = record(plan, {}, len(layers), plan.ends[-1])["design"]
    state = read_adaptive(run_dir) or {}
    if state and state.get("design") != design_record:
        raise ConfigError(f"{run_dir}: holds an adaptive sweep with another design; use a new run directory")
    state = {**record(plan, {}, len(layers), plan.ends[-1]), "looks": state.get("looks", []),
             "stage_done": state.get("stage_done", 0), "status": "running"}
    stopped = {(s["benchmark"], int(s["layer"])): (s["decision"], lk["look"] - 1)
               for lk in state["looks"] for s in lk["decisions"] if s["decision"] != RUNNING}
    # data built by hand (not load_benchmark) has no positions: its own order, unsharded
    positions = data.positions or {str(s.sample_id): i for i, s in enumerate(data.samples)}
    stage_of = {sid: plan.stage_of(pos) for sid, pos in positions.items()}
    for k in range(1, len(plan.ends) + 1):
        running = [c for c in variants if (data.name, c.layer) not in stopped]
        if not running:
            break
        samples = [s for s in data.samples if stage_of[str(s.sample_id)] == k]
        stage_data = replace(data, samples=samples, skipped=data.skipped if k == 1 else [])
        log.info("adaptive sweep, stage %d of %d: %d samples here, baseline + %d of %d layers", k,
                 len(plan.ends), len(samples), len({c.layer for c in running}), len(layers))
        answer_stage(stage_data, [BASELINE, *running], {"stage": k})
        state["stage_done"] = max(state["stage_done"], k)
        _save(run_dir, {**state, "stopped": record(plan, stopped, 0, 0)["stopped"]})
        if k == len(plan.ends) or any(lk["look"] == k for lk in state["looks"]):
            continue
        pooled, missing = _wait_for_shards(dirs, k, design_record, wait_s)
        if pooled is None:
            state["status"] = "waiting for shards: " + "; ".join(missing)
            log.warning("adaptive sweep: the look after stage %d needs every shard: %s; rerun this command once "
                        "they finish (it resumes there)", k, "; ".join(missing))
            _save(run_dir, {**state, "stopped": record(plan, stopped, 0, 0)["stopped"], "complete": False})
            return {**state, "complete": False}
        decisions = look(pooled, plan, k - 1, {(data.name, c.layer) for c in running})
        state["looks"].append({"look": k, "n": plan.ends[k - 1],
                               "decisions": json.loads(decisions.to_json(orient="records"))})
        stopped.update({(b, int(l)): (d, k - 1) for b, l, d in
                        zip(decisions["benchmark"], decisions["layer"], decisions["decision"]) if d != RUNNING})
        log.info("look %d (n=%d): %s", k, plan.ends[k - 1], ", ".join(
            f"layer {l} {d}" for l, d in zip(decisions["layer"], decisions["decision"]) if d != RUNNING) or "nothing decided")
    answers = _answers(run_dir, data, conditions)
    done = {**state, "stopped": record(plan, stopped, 0, 0)["stopped"], "answers": answers, "status": "complete"}
    _save(run_dir, done)
    log.info("adaptive sweep: %d answers computed, %d in the full sweep (%.1f%%)", answers["computed"],
             answers["full_sweep"], 100 * (answers["share"] or 0))
    return {**done, "complete": True}
