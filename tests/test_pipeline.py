"""The whole pipeline on the shipped organism: the default sweep (fast engine) agrees with the
naive reference on every (sample, layer) of every fourth sample (128 of 512, all 33
conditions), and discovery recovers exactly the planted layers from the full default sweep."""

from __future__ import annotations

import pytest

import layerprobe.organism as organism
from layerprobe.data.registry import load_benchmark
from layerprobe.analysis.discovery import discover_runs, late_start_for
from layerprobe.analysis.profiles import load_profile
from layerprobe.io.results import read_results
from layerprobe.sweep.loop import run_sweep


@pytest.fixture(scope="module")
def organism_runs(tmp_path_factory):
    loaded = organism.load()
    # the naive reference runs one generation per layer: a quarter of the samples keeps it cheap
    data = {"fast": load_benchmark("organism"), "naive": load_benchmark("organism", num_shards=4, shard=0)}
    base = tmp_path_factory.mktemp("organism")
    header = {"config_hash": "organism-test", "model": loaded.describe(), "edges": "image->text"}
    runs = {}
    for engine in ("fast", "naive"):
        runs[engine] = base / engine
        run_sweep(loaded, data[engine], runs[engine], engine=engine, batch_size=64, header=header,
                  progress=False, timing_samples=4 if engine == "fast" else 0)
    return loaded, runs


def test_fast_and_naive_sweeps_agree_on_every_answer(organism_runs):
    _, runs = organism_runs
    fast, naive = read_results(runs["fast"]), read_results(runs["naive"])
    assert len(fast) == 512 * 33 and len(naive) == 128 * 33
    merged = fast.merge(naive, on=["sample_id", "condition", "layer"], suffixes=("_fast", "_naive"))
    assert len(merged) == len(naive)
    assert (merged["prediction_fast"] == merged["prediction_naive"]).all()
    assert (merged["score_fast"] == merged["score_naive"]).all()
    # the knockouts that matter change answers on this quarter too: the agreement is not vacuous
    planted = organism.spec()["planted"]
    knocked = merged[(merged["condition"] == "knockout") & merged["layer"].isin(planted)]
    assert (knocked["score_naive"] < 1).sum() > 0


def test_discovery_recovers_the_planted_layers(organism_runs, tmp_path):
    loaded, runs = organism_runs
    planted = organism.spec()["planted"]
    assert planted == [2, 4, 8, 11, 12, 13, 29]  # the shipped organism: the paper's layers
    result = discover_runs([runs["fast"]], out=tmp_path / "profile.yaml")
    profile = load_profile(tmp_path / "profile.yaml", num_layers=loaded.num_layers)
    late = late_start_for(loaded.num_layers, 0.25)
    assert profile.fusion_layers == [l for l in planted if l < late]
    assert profile.review_layer == max(planted)
    assert profile.post_integrated_layer == max(planted) - 1
    assert (runs["fast"] / "discovery.png").is_file()   # the figure stays with the run
    assert result is not None
