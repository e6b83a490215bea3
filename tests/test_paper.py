"""layerprobe-paper: the table beside the paper's (numbers against a direct computation, only the
article's numbers in the presets), its option checks, and (marked slow and paper, run by
.ci/run) the whole command on a tiny model through the loopback Hub: six benchmarks, discovery,
four methods, the table; sharded, resumed offline from the cache, and stopping in one line when
discovery finds no profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from layerprobe.cli.paper import _stage_limits, check, hydra_value
from layerprobe.errors import ConfigError
from layerprobe.evaluation.paper import paper_table, stated_cells, to_markdown, write_paper_table
from layerprobe.io.paths import CONF_DIR
from layerprobe.io.results import read_results
from layerprobe.models.tiny import save_tiny
from mock_hub import MockHub, serve_benchmarks

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"source": "test", "accuracy": {"average": {"vanilla": 55.19, "contrastive": 58.25}},
             "delta": {"b": {"contrastive": 2.3}}}


def _rows(bench: str, scores: dict[str, list[float]]) -> list[dict]:
    return [{"benchmark": bench, "sample_id": str(i), "condition": method, "layer": None, "prediction": "x",
             "score": float(v), "skipped": None, "prefill_s": 0.1, "total_s": 0.4, "batch_size": 1}
            for method, values in scores.items() for i, v in enumerate(values)]


def test_table_numbers_match_a_direct_computation():
    b = {"vanilla": [1, 0, 0, 1, 0, 1, 0, 0, 1, 0], "contrastive": [1, 1, 1, 1, 0, 0, 1, 0, 1, 1]}
    c = {"vanilla": [1, 1, 0, 1, 1, 0], "contrastive": [1, 0, 0, 1, 1, 1]}
    table = pd.DataFrame(_rows("b", b) + _rows("c", c))
    rows = paper_table(table, REFERENCE, ["b", "c"], ["vanilla", "contrastive"]).set_index(["benchmark", "method"])
    assert list(rows.index) == [("b", "vanilla"), ("b", "contrastive"), ("c", "vanilla"), ("c", "contrastive"),
                                ("average", "vanilla"), ("average", "contrastive")]
    acc = {(k, m): 100 * np.mean(v[m]) for k, v in (("b", b), ("c", c)) for m in v}
    for (bench, method), value in acc.items():
        assert rows.loc[(bench, method), "accuracy"] == pytest.approx(value)
    avg = (acc[("b", "contrastive")] + acc[("c", "contrastive")]) / 2
    assert rows.loc[("average", "contrastive"), "accuracy"] == pytest.approx(avg)
    assert rows.loc[("b", "contrastive"), "delta"] == pytest.approx(acc[("b", "contrastive")] - acc[("b", "vanilla")])
    assert rows.loc[("average", "contrastive"), "accuracy_minus_paper"] == pytest.approx(avg - 58.25)
    assert rows.loc[("b", "contrastive"), "delta_minus_paper"] == pytest.approx(rows.loc[("b", "contrastive"), "delta"] - 2.3)
    assert np.isnan(rows.loc[("c", "contrastive"), "paper_delta"]) and np.isnan(rows.loc[("b", "vanilla"), "delta"])
    # the accuracy CI is the bootstrap of the benchmark's scores: against index resampling
    scores = np.array(b["contrastive"], dtype=float)
    means = scores[np.random.default_rng(3).integers(0, 10, (40000, 10))].mean(1)
    low, high = 100 * np.quantile(means, [0.025, 0.975])
    assert rows.loc[("b", "contrastive"), "accuracy_ci_low"] == pytest.approx(low, abs=3)
    assert rows.loc[("b", "contrastive"), "accuracy_ci_high"] == pytest.approx(high, abs=3)
    markdown = to_markdown(rows.reset_index(), REFERENCE, "T")
    assert "| average | vanilla | 16 | " in markdown and "| 55.19 |" in markdown
    # averages over other benchmarks than the paper's are not set beside its averages
    elsewhere = {**REFERENCE, "average_over": ["b", "c", "d"]}
    other = paper_table(table, elsewhere, ["b", "c"], ["vanilla", "contrastive"]).set_index(["benchmark", "method"])
    assert np.isnan(other.loc[("average", "vanilla"), "paper_accuracy"]) and other.loc[("b", "contrastive"), "paper_delta"] == 2.3
    assert "The paper's averages are over b, c, d; this table's over b, c" in to_markdown(other.reset_index(), elsewhere)
    assert "The paper states: accuracy average/vanilla = 55.19; accuracy average/contrastive = 58.25; " \
           "delta b/contrastive = 2.3." in markdown


def test_table_files_are_written(tmp_path):
    table = pd.DataFrame(_rows("b", {"vanilla": [1, 0], "contrastive": [1, 1]}))
    rows = paper_table(table, REFERENCE)
    csv_path, md_path, markdown = write_paper_table(rows, tmp_path, REFERENCE, title="T")
    back = pd.read_csv(csv_path)
    assert list(back["method"]) == ["vanilla", "contrastive", "vanilla", "contrastive"]
    assert back["accuracy"].tolist() == pytest.approx([50.0, 100.0, 50.0, 100.0])
    assert md_path.read_text() == markdown


@pytest.mark.parametrize("preset, stated", [
    ("llava15", ["accuracy average/vanilla = 55.19", "accuracy average/contrastive = 58.25",
                 "accuracy average/dola = 55.04", "accuracy average/vicrop = 56.52",
                 "delta average/contrastive = 3.06", "delta vqav2/contrastive = 2.3", "delta okvqa/contrastive = 3.8"]),
    ("llava16", ["accuracy average/contrastive = 69.18", "delta average/contrastive = 2.66"]),
])
def test_presets_hold_only_the_numbers_the_article_states(preset, stated):
    reference = yaml.safe_load((CONF_DIR / "paper" / f"{preset}.yaml").read_text())["paper"]
    assert stated_cells(reference) == stated   # as the article words them, nothing derived


@pytest.mark.parametrize("value", [None, True, 3, 2.5, "tiny:llava:4", "/a b/c.yaml", "it's", "${data.name}",
                                   ["x y", 1, None], {"vqav2": 10, "gqa": None}])
def test_values_reach_a_stage_unchanged(value):
    override = OverridesParser.create().parse_override(f"key={hydra_value(value)}")
    assert override.value() == value


def _paper_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("paper", overrides=list(overrides))


@pytest.mark.parametrize("overrides, message", [
    (["methods=[contrastive,dola]"], "include vanilla, the baseline of every delta"),
    (["methods=[vanilla,beam]"], "methods: 'beam' is unknown"),
    (["benchmarks=[vqav2,vqa3]"], "benchmark 'vqa3' is unknown"),
    (["sweep.limit=0"], "sweep.limit.vqav2=0: must be a positive integer"),
    (["sweep.limit={vqa2: 5}"], "sweep.limit: ['vqa2'] are not benchmarks; known: "),
    (["num_shards=0"], "num_shards=0: must be a positive integer"),
    (["launcher=pbs"], "launcher='pbs': choose one of basic, local, slurm"),
    (["sweep.mask=image_everything"], "sweep.mask='image_everything': not a knockout in conf/mask/"),
    (["method_profile=/nowhere/p.yaml"], "method_profile=/nowhere/p.yaml: no such profile file"),
    (["method_profile=no_such_preset"], "not 'discovered', a preset in conf/profile/ or a YAML file"),
])
def test_bad_paper_options_fail_before_any_stage(overrides, message):
    with pytest.raises(ConfigError) as err:
        check(_paper_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stage_limits_are_capped_by_data_limit():
    assert _stage_limits("eval", {"vqav2": 10000}, None, ["vqav2", "gqa"]) == {"vqav2": 10000, "gqa": None}
    assert _stage_limits("eval", {"vqav2": 10000}, 3, ["vqav2", "gqa"]) == {"vqav2": 3, "gqa": 3}
    assert _stage_limits("sweep", 1000, None, ["vqav2", "gqa"]) == {"vqav2": 1000, "gqa": 1000}


# -- the whole command, through the loopback Hub (slow: .ci/run runs it as its own step) -----------

MODEL = "mock-org/tiny-llava"
PROFILE = "model: mock-org/tiny-llava\nnum_layers: 16\nfusion_layers: [2, 4]\npost_integrated_layer: 14\nreview_layer: 15\n"
# no standalone timing runs, per-sample figures or memory pass: the plumbing, not the measurements
# a random tiny model answers no sample correctly, so the default effect (prob_change, read on the
# samples the baseline gets right) has nothing to read: discovery reads log p of every sample
FAST = ("+sweep.options.timing_samples=0", "+eval.options.timing_samples=0", "+eval.options.heatmaps=0",
        "+eval.options.gallery_examples=0", "+eval.options.memory_pass=false", "progress=false",
        "+discovery.effect=logprob")


@pytest.fixture(scope="module")
def paper_hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    (tmp / "profile.yaml").write_text(PROFILE)
    with MockHub() as hub:
        hub.add("model", MODEL, save_tiny("llava", tmp / "checkpoint", num_layers=16))
        serve_benchmarks(hub)
        hub.tmp = tmp
        yield hub


def run_paper(hub, out: Path, *overrides: str, offline: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "layerprobe.cli.paper", "model=tiny_llava15", f"model.path={MODEL}", f"out={out}",
           *FAST, *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=hub.env(hub.tmp / "hf", offline=offline),
                          timeout=1800)


@pytest.mark.slow
@pytest.mark.paper
def test_paper_runs_end_to_end_on_six_benchmarks(paper_hub):
    out = paper_hub.tmp / "six"
    proc = run_paper(paper_hub, out, "data.limit=2", f"method_profile={paper_hub.tmp / 'profile.yaml'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benchmarks = ["vqav2", "gqa", "textvqa", "okvqa", "vizwiz", "docvqa"]
    methods = ["vanilla", "contrastive", "dola", "vicrop"]
    evidence = pd.read_csv(out / "discovery" / "discovery.csv")
    assert sorted(evidence["benchmark"].unique()) == sorted(benchmarks) and sorted(evidence["layer"].unique()) == list(range(16))
    rows = pd.read_csv(out / "paper_table.csv")
    assert list(zip(rows["benchmark"], rows["method"])) == [(b, m) for b in [*benchmarks, "average"] for m in methods]
    per_bench = {}
    for bench in benchmarks:
        for method in methods:
            table = read_results(out / "eval" / bench / method / "shard0of1")
            assert len(table) == 2 and set(table["condition"]) == {method}
            per_bench[(bench, method)] = 100 * table["score"].mean()
    avg = rows.set_index(["benchmark", "method"]).loc[("average", "vanilla")]
    assert avg["accuracy"] == pytest.approx(np.mean([per_bench[(b, "vanilla")] for b in benchmarks]), abs=1e-3)
    assert avg["paper_accuracy"] == 55.19
    assert avg["accuracy_minus_paper"] == pytest.approx(avg["accuracy"] - 55.19, abs=1e-3)
    markdown = (out / "paper_table.md").read_text()
    assert "accuracy average/dola = 55.04" in markdown and "| vizwiz | vicrop | 2 |" in markdown


@pytest.mark.slow
@pytest.mark.paper
def test_paper_shards_resume_offline_and_stop_in_one_line_without_a_profile(paper_hub):
    out = paper_hub.tmp / "sharded"
    args = ("benchmarks=[gqa]", "methods=[vanilla,contrastive]", "num_shards=2", "data.limit=4")
    proc = run_paper(paper_hub, out, *args, f"method_profile={paper_hub.tmp / 'profile.yaml'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for method in ("vanilla", "contrastive"):
        shards = [read_results(out / "eval" / "gqa" / method / f"shard{k}of2") for k in (0, 1)]
        assert [len(s) for s in shards] == [2, 2] and not set(shards[0]["sample_id"]) & set(shards[1]["sample_id"])
    first = (out / "paper_table.csv").read_text()
    assert pd.read_csv(out / "paper_table.csv").set_index(["benchmark", "method"]).loc[("gqa", "contrastive"), "n"] == 4
    before = len(paper_hub.requests)
    again = run_paper(paper_hub, out, *args, f"method_profile={paper_hub.tmp / 'profile.yaml'}", offline=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert paper_hub.requests[before:] == []
    assert (out / "paper_table.csv").read_text() == first
    for k in (0, 1):
        assert len(read_results(out / "sweep" / "tiny_llava15" / "gqa" / "image_text" / f"shard{k}of2")) == 2 * 17
    stop = run_paper(paper_hub, out, *args, offline=True)   # method_profile=discovered: a random model has none
    lines = [line for line in stop.stderr.splitlines() if line.startswith("layerprobe: error: ")]
    assert stop.returncode == 2 and len(lines) == 1 and "Traceback" not in stop.stderr, stop.stderr[-3000:]
    assert "method_profile=<preset or YAML>" in lines[0] and (out / "discovery" / "discovery.csv").is_file()
