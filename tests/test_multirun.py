"""Scaling out: a joblib multirun over two benchmarks x two shards (``hydra/launcher=local``), merged
by ``layerprobe-plot``, equals unsharded runs row for row (bar latencies); merges of runs that
do not belong together are refused with one line naming the difference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from layerprobe.sweep.report import replot
from layerprobe.analysis.discovery import discover_runs
from layerprobe.errors import ConfigError
from layerprobe.io.results import read_results
from layerprobe.io.runs import merge_runs

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"
BENCHMARKS = ("vqav2", "gqa")
N_SAMPLES = 5            # odd: the two shards get 3 and 2 samples
LATENCY = ["prefill_s", "total_s"]
KEY = ["benchmark", "sample_id", "condition", "layer"]
# batch_size=1: each answer is computed alone, so the shards' batches cannot change it
ARGS = ("model=tiny_llava15", "model.path=tiny:llava:4", "data=" + ",".join(BENCHMARKS),
        f"data.root={FIXTURES}/${{data.name}}/official", f"data.limit={N_SAMPLES}", "data.max_new_tokens=3",
        "layers=[0,2]", "batch_size=1", "timing_samples=0", "progress=false", "hydra/launcher=local")


@pytest.mark.parametrize("launcher, target, defaults", [
    ("local", "joblib_launcher.JoblibLauncher", {"n_jobs": 2}),
    ("slurm", "submitit_launcher.SlurmLauncher", {"gpus_per_node": 1, "timeout_min": 240}),
])
def test_launcher_presets_compose_with_the_plugins_schema(launcher, target, defaults):
    from hydra import compose, initialize_config_dir

    from layerprobe.io.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_.endswith(target)
        assert {k: cfg.hydra.launcher[k] for k in defaults} == defaults
        with pytest.raises(Exception) as typo:   # a misspelt key fails at composition, not on the cluster
            compose("sweep", overrides=[f"hydra/launcher={launcher}", "hydra.launcher.n_jobz=3"],
                    return_hydra_config=True)
        assert "n_jobz" in str(typo.value)


def multirun(sweep_dir: Path, *overrides) -> None:
    cmd = [sys.executable, "-m", "layerprobe.cli.sweep", "-m", f"hydra.sweep.dir={sweep_dir}", *ARGS, *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Joblib.Parallel(" in proc.stdout + proc.stderr   # the local launcher ran the jobs


def run_dirs(sweep_dir: Path, shards: int) -> list[Path]:
    return [sweep_dir / "tiny_llava15" / b / "image_text" / f"shard{i}of{shards}"
            for b in BENCHMARKS for i in range(shards)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multirun")
    multirun(base / "sharded", "data.num_shards=2", "data.shard=0,1")
    multirun(base / "whole")
    return base, run_dirs(base / "sharded", 2), run_dirs(base / "whole", 1)


def _rows(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=LATENCY).sort_values(KEY).reset_index(drop=True)


def test_sharded_multirun_merges_to_the_unsharded_table(runs):
    base, sharded, whole = runs
    for run in sharded + whole:
        assert (run / "results.jsonl").is_file(), run
    sizes = [len(read_results(r)) for r in sharded]
    assert sizes == [3 * 3, 2 * 3] * 2, sizes        # baseline + 2 knockouts per sample
    (merged, _), (reference, _) = merge_runs(sharded), merge_runs(whole)
    assert len(reference) == len(BENCHMARKS) * N_SAMPLES * 3
    assert not merged.duplicated(KEY).any()
    pd.testing.assert_frame_equal(_rows(merged), _rows(reference))
    print(_rows(merged)[KEY + ["prediction", "score"]].head(6).to_string())


def test_layerprobe_plot_merges_shards_into_the_unsharded_summary(runs):
    base, sharded, whole = runs
    out_sharded, out_whole = base / "merged_sharded", base / "merged_whole"
    for out, dirs in ((out_sharded, sharded), (out_whole, whole)):
        proc = subprocess.run([sys.executable, "-m", "layerprobe.cli.plot", f"run=[{','.join(map(str, dirs))}]",
                               f"out={out}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("summary.csv", "masking_curves.png", "masking_curves.pdf"):
        assert (out_sharded / name).stat().st_size > 500, name
    cols = ["benchmark", "condition", "layer", "n", "n_skipped", "accuracy", "ci_low", "ci_high"]
    a, b = pd.read_csv(out_sharded / "summary.csv")[cols], pd.read_csv(out_whole / "summary.csv")[cols]
    print(a.to_string())
    assert list(a["n"]) == [N_SAMPLES] * 6
    pd.testing.assert_frame_equal(a, b)


def test_default_out_is_the_common_parent(runs):
    base, sharded, _ = runs
    vqav2 = [r for r in sharded if "vqav2" in r.parts]
    written = replot(vqav2)
    assert vqav2[0].parent / "summary.csv" in written
    assert (vqav2[0].parent / "masking_curves.pdf").is_file()


def test_overlapping_shards_are_refused(runs):
    _, sharded, whole = runs
    with pytest.raises(ConfigError, match="appear in several runs .* shards must not overlap"):
        replot([sharded[0], whole[0]])


def _copy_with_header(run: Path, dest: Path, **changes) -> Path:
    """A copy of ``run`` whose results header says something else, as another config would."""
    shutil.copytree(run, dest)
    path = dest / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    for dotted, value in changes.items():
        node = header["_header"]
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    return dest


@pytest.mark.parametrize("change, message", [
    ({"model__config_hash": "0123456789abcdef"}, "runs differ in model config_hash: "),
    ({"model__name": "/ckpt/a-finetune"}, "runs differ in model: "),
    ({"edges": "image->last"}, "runs differ in edges: "),
    ({"window": 3}, "runs differ in mask.window: "),
    ({"data__limit": 7}, "runs differ in data.limit for vqav2: "),
])
@pytest.mark.parametrize("command", [replot, discover_runs], ids=["plot", "discover"])
def test_mixed_configs_are_refused(runs, tmp_path, change, message, command):
    _, sharded, _ = runs
    other = _copy_with_header(sharded[1], tmp_path / "other", **change)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as err:
        command([sharded[0], other])
    print(err.value)
    assert "\n" not in str(err.value) and str(other) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]   # refused before writing anything


@pytest.mark.parametrize("command", [merge_runs, replot, discover_runs], ids=["library", "plot", "discover"])
def test_unfinished_shard_is_refused(runs, tmp_path, command):
    _, sharded, _ = runs
    short = tmp_path / "short"
    shutil.copytree(sharded[1], short)
    path = short / "results.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))   # last row never written
    with pytest.raises(ConfigError, match="has 4 of 5 samples; .* unfinished"):
        command([sharded[0], short])
