"""layerprobe-sweep end to end: every benchmark's fixture on a tiny model (one multirun, so the
imports are paid once), the run directory's files, and resuming after SIGKILL with exactly one
row per (sample, condition)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from layerprobe.io.results import read_results
from layerprobe_testing import FIXTURES, ROOT, check_two_layer_run, run_multirun, run_sweep_cli, sweep_cmd

pytestmark = pytest.mark.core  # also run on the oldest and newest supported transformers

BENCHMARKS = ["vqav2", "gqa", "textvqa", "okvqa", "vizwiz", "docvqa"]


@pytest.fixture(scope="module")
def benchmark_sweeps(tmp_path_factory):
    """Every benchmark fixture in its own layout (GQA and DocVQA as the lmms-lab parquet mirror)."""
    roots = tmp_path_factory.mktemp("roots")
    for bench in BENCHMARKS:
        (roots / bench).symlink_to(FIXTURES / bench / ("parquet" if bench in ("gqa", "docvqa") else "official"))
    out = tmp_path_factory.mktemp("sweeps")
    run_multirun(out, "model=tiny_llava15", "model.path=tiny:llava:4", f"data={','.join(BENCHMARKS)}", f"data.root={roots}/${{data.name}}",
                 "data.limit=3", "layers=[0,1]", "batch_size=2", "engine=naive")
    return out


@pytest.mark.parametrize("bench", BENCHMARKS)
def test_sweep_runs_every_benchmark_fixture(benchmark_sweeps, bench):
    run = benchmark_sweeps / "tiny_llava15" / bench / "image_text" / "shard0of1"
    check_two_layer_run(run, 3)
    table = read_results(run)
    assert set(table["benchmark"]) == {bench}
    for ext in ("png", "pdf"):
        assert (run / f"masking_curves.{ext}").stat().st_size > 1000


def test_sweep_resumes_after_sigkill_with_one_row_per_condition(tmp_path):
    args = ("model=tiny_llava15", "model.path=tiny:llava:4", "data=vqav2", f"data.root={FIXTURES / 'vqav2' / 'official'}",
            "data.limit=8", "layers=[0,1,2,3]", "batch_size=1", "engine=naive")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(sweep_cmd(killed, *args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = killed / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if results.exists() and results.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_results(killed)
    assert 0 < len(partial) < 8 * 5, "the kill should land mid-run"
    run_sweep_cli(killed, *args)
    table = read_results(killed)
    keys = {(s, c, str(l)) for s, c, l in zip(table["sample_id"], table["condition"], table["layer"])}
    assert len(table) == 8 * 5 and len(keys) == len(table)
    fresh = tmp_path / "fresh"
    run_sweep_cli(fresh, *args)
    cols = ["condition", "layer", "n", "accuracy", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(pd.read_csv(killed / "summary.csv")[cols], pd.read_csv(fresh / "summary.csv")[cols])
    merged = table.merge(read_results(fresh), on=["sample_id", "condition", "layer"])
    assert len(merged) == len(table)
    assert (merged["prediction_x"] == merged["prediction_y"]).all()


def test_rerun_with_another_config_is_refused(tmp_path):
    args = ("model=tiny_llava15", "model.path=tiny:llava:4", "data=vqav2", f"data.root={FIXTURES / 'vqav2' / 'official'}",
            "data.limit=2", "layers=[0]", "engine=naive")
    run_sweep_cli(tmp_path, *args)
    proc = run_sweep_cli(tmp_path, *args[:-2], "layers=[1]", "engine=naive", check=False)
    assert proc.returncode == 2
    assert "was written with another config" in proc.stderr
    assert len(read_results(tmp_path)) == 4  # nothing already computed is lost
