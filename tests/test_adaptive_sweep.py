"""The adaptive sweep on the planted organism: the planted layers from at most half of the full
sweep's answers, shards that decide together and merge into the unsharded run, and a run killed
mid-stage that resumes into the uninterrupted one; through the Python API and the commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import layerprobe
from layerprobe.analysis.discovery import discover
from layerprobe.analysis.sequential import Design
from layerprobe.data.registry import load_benchmark
from layerprobe.errors import ConfigError
from layerprobe.io.results import read_results
from layerprobe.io.runs import merge_runs, read_adaptive
from layerprobe.sweep.adaptive import shard_directories
from layerprobe.sweep.loop import run_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def organism():
    return layerprobe.load_model("organism")


def _sweep(loaded, run_dir, control=None, **data_args):
    data = load_benchmark("organism", **data_args)
    header = {"config_hash": "adaptive-test", "model": loaded.describe(), "data": {"name": "organism", **data_args}}
    return run_sweep(loaded, data, run_dir, adaptive=Design(), progress=False, timing_samples=0, header=header,
                     control=control)


def test_finds_the_planted_layers_from_at_most_half_the_answers(organism, tmp_path):
    assert _sweep(organism, tmp_path) is not None
    record = read_adaptive(tmp_path)
    answers = record["answers"]
    print(answers, record["ends"])
    assert answers["full_sweep"] == 512 * 33 and answers["computed"] <= answers["full_sweep"] / 2
    assert answers["computed"] == len(read_results(tmp_path))
    found = discover(tmp_path)
    planted = organism.extra["organism"]["planted"]
    assert (found.fusion_layers, found.review_layer) == (planted[:-1], planted[-1])
    assert found.settings["adaptive"] and found.settings["effect"] == "prob_change"
    stopped = {s["layer"]: s["decision"] for s in record["stopped"]}
    assert all(stopped.get(layer) == "irrelevant" for layer in range(32) if layer not in planted)


def test_with_a_control_finds_the_planted_specific_layers_from_at_most_half_the_answers(organism, tmp_path):
    # a layer's control runs and stops with it: the answers count both, the full sweep's too
    assert _sweep(organism, tmp_path, control="text_keys") is not None
    record = read_adaptive(tmp_path)
    answers = record["answers"]
    print(answers, record["ends"])
    assert answers["full_sweep"] == 512 * (1 + 2 * 32) and answers["computed"] <= answers["full_sweep"] / 2
    table = read_results(tmp_path)
    assert answers["computed"] == len(table)
    per_layer = table[table["condition"] != "baseline"].groupby(["layer", "condition"]).size().unstack()
    assert (per_layer["control"] == per_layer["knockout"]).all()
    found = discover(tmp_path, require_specific=True)
    planted = organism.extra["organism"]["planted"]
    assert (found.fusion_layers, found.review_layer) == (planted[:-1], planted[-1])
    assert not (found.evidence["control_q"] <= found.settings["alpha"]).any()


def test_shards_decide_together_and_merge_into_the_unsharded_run(organism, tmp_path):
    # one machine: the shards take turns; each stops at a look the other has not reached, and a
    # rerun resumes it there
    statuses = []
    for shard in (0, 1, 0, 1):
        out = _sweep(organism, tmp_path / f"shard{shard}of2", limit=192, num_shards=2, shard=shard)
        statuses.append((shard, read_adaptive(tmp_path / f"shard{shard}of2")["status"].split(":")[0], out is None))
    assert statuses[0] == (0, "waiting for shards", True) and statuses[-1] == (1, "complete", False)
    _sweep(organism, tmp_path / "whole", limit=192)
    shards = [tmp_path / "shard0of2", tmp_path / "shard1of2"]
    records = [read_adaptive(r) for r in shards + [tmp_path / "whole"]]
    assert records[0]["stopped"] == records[1]["stopped"] == records[2]["stopped"]
    assert records[0]["answers"]["computed"] + records[1]["answers"]["computed"] == records[2]["answers"]["computed"]
    merged, provenance = merge_runs(shards)
    assert provenance["adaptive"]["organism"]["stopped"] == records[2]["stopped"]
    cols = ["sample_id", "condition", "layer", "stage", "prediction"]
    key = ["sample_id", "condition", "layer"]
    whole = read_results(tmp_path / "whole")[cols].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(merged[cols].sort_values(key).reset_index(drop=True), whole)
    a, b = discover(shards), discover(tmp_path / "whole")
    assert (a.fusion_layers, a.review_layer) == (b.fusion_layers, b.review_layer)
    pd.testing.assert_frame_equal(a.evidence, b.evidence, check_exact=False, atol=1e-9)


def test_an_unfinished_shard_is_refused_and_shard_directories_are_found(tmp_path, organism):
    _sweep(organism, tmp_path / "shard0of2", limit=64, num_shards=2, shard=0)
    with pytest.raises(ConfigError, match="adaptive sweep is not finished"):
        merge_runs([tmp_path / "shard0of2"])
    assert shard_directories(tmp_path / "x_shard1of3", 1, 3)[2] == tmp_path / "x_shard2of3"
    with pytest.raises(ConfigError, match="name the run directories shard<i>of<n>"):
        shard_directories(tmp_path / "run", 0, 2)


def _cli(run_dir, *extra):
    return [sys.executable, "-m", "layerprobe.cli.sweep", f"run_dir={run_dir}", "progress=false", "timing_samples=0",
            "adaptive=true", "data.limit=96", "batch_size=4", *extra]


def test_cli_adaptive_sweep_resumes_after_sigkill_then_discovers_and_plots(tmp_path):
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    proc = subprocess.Popen(_cli(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results, deadline = killed / "results.jsonl", time.time() + 300
    while time.time() < deadline and not (results.exists() and results.read_text().count("\n") > 300):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_adaptive(killed)
    assert len(read_results(killed)) > 0 and (partial is None or partial["status"] != "complete")
    for run in (killed, fresh):
        done = subprocess.run(_cli(run), cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "answers computed, 3168 in the full sweep" in (fresh / "sweep.log").read_text()
    a, b = read_adaptive(killed), read_adaptive(fresh)
    assert a["stopped"] == b["stopped"] and a["answers"] == b["answers"]
    key = ["sample_id", "condition", "layer"]
    ta, tb = read_results(killed), read_results(fresh)
    assert len(ta) == len(tb) == a["answers"]["computed"] and not ta.duplicated(key).any()
    merged = ta.merge(tb, on=key)
    assert len(merged) == len(ta) and (merged["prediction_x"] == merged["prediction_y"]).all()
    header = json.loads(results.read_text().splitlines()[0])["_header"]
    assert header["adaptive"]["effect"] == "prob_change"
    for command in (["layerprobe.cli.discover", f"run={killed}", "late_fraction=0.25"],
                    ["layerprobe.cli.plot", f"run={killed}", "effect=prob_change"]):
        done = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode in (0, 2), done.stderr[-2000:]
        assert "wrote" in done.stdout
    assert (killed / "discovery.csv").is_file() and (killed / "masking_curves.png").is_file()
