"""layerprobe inside lmms-eval: ``python -m lmms_eval --model layerprobe`` (the real package, its own
CLI, task loading, prompts, ``process_results`` and metrics) on local tasks over the real-image
parquet fixtures and the organism's exported task, checked sample by sample against
``layerprobe-eval`` on the same samples, method, model and batch size."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from layerprobe.data.metrics import score
from layerprobe.data.registry import load_benchmark
from layerprobe.errors import ConfigError
from layerprobe.lmms.generation_kwargs import cut_at, decoding
from layerprobe.lmms.options import ModelArgs

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"
needs_lmms_eval = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None,
    reason="lmms-eval is not installed: pip install --no-deps 'lmms-eval>=0.7,<0.8' && pip install -e '.[lmms-cli]' "
           "(.ci/run installs it)")


def test_model_args_reach_the_method_as_its_yaml_keys():
    args = ModelArgs.parse({"pretrained": "organism", "method": "knockout", "layers": "[8,9]", "edges": "image->last",
                            "batch_size": "4", "max_batch_size": None, "profile": "null"})
    assert (args.pretrained, args.method, args.profile, args.batch_size) == ("organism", "knockout", None, 4)
    assert args.method_options == {"layers": [8, 9], "edges": "image->last"}
    assert ModelArgs.parse({"layers": "8;9", "scale": 0.25}).method_options == {"layers": [8, 9], "scale": 0.25}
    with pytest.raises(ConfigError, match=r"^batch_size='auto': must be a positive integer"):
        ModelArgs.parse({"batch_size": "auto"})
    with pytest.raises(ConfigError, match=r"^model_args layers='\[8,': not a valid list"):
        ModelArgs.parse({"layers": "[8,"})


def test_task_generation_kwargs_give_a_greedy_budget_and_stop_strings():
    assert decoding("textvqa_val", {"until": ["ASSISTANT:"]}, 16) == (16, ["ASSISTANT:"])
    assert decoding("docvqa_val", {"max_new_tokens": 32, "temperature": 0, "do_sample": False}, 16) == (32, [])
    assert decoding("t", {"until": "\n\n", "top_p": 1.0, "num_beams": 1}, 8) == (8, ["\n\n"])
    with pytest.raises(ConfigError, match=r"^task mmmu: generation_kwargs temperature=0.7; .* greedily"):
        decoding("mmmu", {"temperature": 0.7}, 16)
    with pytest.raises(ConfigError, match="sampling or beam search"):
        decoding("t", {"num_beams": 4}, 16)
    assert cut_at("red\nASSISTANT: blue", ["ASSISTANT:"]) == "red\n"
    assert cut_at("red\n\nblue", ["\n\n", "zzz"]) == "red" and cut_at("red", []) == "red"


def _lmms_eval(tmp_path, model_args: str, include: Path, tasks: list[str], batch_size: int):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf"),
           "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "layerprobe", "--model_args", model_args,
                          "--include_path", str(include), "--tasks", ",".join(tasks), "--batch_size", str(batch_size),
                          "--log_samples", "--output_path", str(tmp_path / "logs")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    results = json.loads(next((tmp_path / "logs").rglob("*_results.json")).read_text())
    samples = {}
    for task in tasks:
        path = next((tmp_path / "logs").rglob(f"*_samples_{task}.jsonl"))
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])
    return out.stdout, results, samples


def _layerprobe_eval(tmp_path, *overrides, multirun: bool = False) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    out = subprocess.run([sys.executable, "-m", "layerprobe.cli.eval", *(["-m"] if multirun else []),
                          f"eval_dir={tmp_path / 'lp'}", "progress=false",
                          "memory_pass=false", "heatmaps=0", "baseline=none", "label=${method.name}", *overrides],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]


def _rows(path: Path) -> pd.DataFrame:
    rows = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    return pd.DataFrame(rows).astype({"sample_id": str}).set_index("sample_id")


def _check_equal(lmms_samples: list[dict], rows: pd.DataFrame, data, until: list[str], metric_key: str,
                 record_keys=("pre_layer", "n_suppressed")) -> int:
    """Sample by sample: lmms-eval's answer is layerprobe-eval's (cut at the task's stop strings), its
    score is layerprobe's metric of that answer, and the method's record is the results row's."""
    assert len(lmms_samples) == len(data.samples) == len(rows)
    for logged, sample in zip(lmms_samples, data.samples):
        row = rows.loc[str(sample.sample_id)]
        assert sample.question.lower() in logged["input"].lower()  # the same document, in the same order
        answer = cut_at(row["prediction"], until)
        assert logged["filtered_resps"] == answer, (sample.sample_id, logged["filtered_resps"], row["prediction"])
        ours = score(data.metric, answer, sample.answers)
        if answer == row["prediction"]:
            assert ours == pytest.approx(row["score"])
        assert logged[metric_key] == pytest.approx(ours), (sample.sample_id, answer, sample.answers)
        record = logged["token_counts"][0]["layerprobe"]
        assert record["method"] == row["condition"]
        assert [record[k] for k in record_keys] == [row[k] for k in record_keys]
    return len(lmms_samples)


@pytest.mark.lmms
@needs_lmms_eval
@pytest.mark.parametrize("model_args, message", [
    ("pretrained=organism,method=contrastive,scale=7", "scale=7: must be in [0, 1] (1 = no suppression)"),
    ("pretrained=organism,method=contrastiv", "method='contrastiv': unknown; choose one of vanilla, contrastive,"),
    ("pretrained=organism,method=dola,layerz=[2]", "method dola: unknown option 'layerz'; valid: "),
], ids=["out-of-range", "unknown-method", "unknown-option"])
def test_lmms_eval_bad_model_args_end_in_one_line_and_exit_2(tmp_path, model_args, message):
    """lmms-eval catches a model's exception, prints its traceback and exits 0; the plugin exits 2
    with the one line itself, so that a script or CI notices."""
    from layerprobe.lmms.tasks import export_task

    task = export_task(tmp_path / "tasks", load_benchmark("organism", limit=2))
    out = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "layerprobe", "--model_args", model_args,
                          "--include_path", str(tmp_path / "tasks"), "--tasks", task, "--output_path",
                          str(tmp_path / "logs")], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2, (out.stdout + out.stderr)[-3000:]
    said = [line for line in out.stderr.splitlines() if line.startswith("layerprobe: error: ")]
    assert len(said) == 1 and said[0].removeprefix("layerprobe: error: ").startswith(message), out.stderr[-3000:]
    assert "Traceback" not in out.stderr


@pytest.mark.lmms
@needs_lmms_eval
def test_lmms_eval_contrastive_on_the_organism_equals_layerprobe_eval(tmp_path):
    from layerprobe.lmms.tasks import export_task

    data = load_benchmark("organism", limit=24)
    task = export_task(tmp_path / "tasks", data)
    stdout, results, samples = _lmms_eval(tmp_path, "pretrained=organism,method=contrastive,scale=0.5",
                                          tmp_path / "tasks", [task], batch_size=8)
    assert "|layerprobe_organism|" in stdout and "exact_match" in stdout  # lmms-eval's results table
    _layerprobe_eval(tmp_path, "method=contrastive", "method.scale=0.5", "data.limit=24", "batch_size=8")
    rows = _rows(tmp_path / "lp" / "organism" / "contrastive" / "results.jsonl")
    until = results["configs"][task]["generation_kwargs"]["until"]
    assert _check_equal(samples[task], rows, data, until, "exact_match") == 24
    accuracy = results["results"][task]["exact_match,none"]
    assert accuracy == pytest.approx(rows["score"].mean())


@pytest.mark.lmms
@needs_lmms_eval
def test_lmms_eval_knockout_scores_each_organism_sample_as_layerprobe_eval(tmp_path):
    """A knockout of early layers breaks some answers, so the per-sample scores compared are a mix
    of right and wrong, not a column of ones."""
    from layerprobe.lmms.tasks import export_task

    data = load_benchmark("organism", limit=24)
    task = export_task(tmp_path / "tasks", data)
    _, results, samples = _lmms_eval(tmp_path, "pretrained=organism,method=knockout,layers=[0,1,2,3,4,5,6,7]",
                                     tmp_path / "tasks", [task], batch_size=8)
    _layerprobe_eval(tmp_path, "method=knockout", "method.layers=[0,1,2,3,4,5,6,7]", "data.limit=24", "batch_size=8")
    rows = _rows(tmp_path / "lp" / "organism" / "knockout" / "results.jsonl")
    assert 0 < rows["score"].mean() < 1
    until = results["configs"][task]["generation_kwargs"]["until"]
    _check_equal(samples[task], rows, data, until, "exact_match", record_keys=("knockout_layers", "edges"))


@pytest.mark.lmms
@needs_lmms_eval
def test_lmms_eval_own_vqav2_textvqa_docvqa_tasks_equal_layerprobe_eval_on_tiny_llava(tmp_path):
    from layerprobe.lmms.tasks import benchmark_task

    names = ["vqav2", "textvqa", "docvqa"]
    tasks = [benchmark_task(tmp_path / "tasks", n, FIXTURES / n / "parquet") for n in names]
    _, results, samples = _lmms_eval(tmp_path, "pretrained=tiny:llava,method=contrastive,profile=llava15_7b",
                                     tmp_path / "tasks", tasks, batch_size=4)
    _layerprobe_eval(tmp_path, "model=tiny_llava15", "method=contrastive", "profile=llava15_7b", "batch_size=4",
                     "data=vqav2,textvqa,docvqa", "data.layout=parquet", f"data.root={FIXTURES}/${{data.name}}/parquet",
                     multirun=True)
    for name, task in zip(names, tasks):
        data = load_benchmark(name, root=FIXTURES / name / "parquet", layout="parquet")
        config = results["configs"][task]
        assert config["generation_kwargs"].get("max_new_tokens", 16) == data.max_new_tokens
        metric = config["metric_list"][0]["metric"]  # lmms-eval's own: exact_match (VQA accuracy) or anls
        rows = _rows(tmp_path / "lp" / name / "contrastive" / "results.jsonl")
        _check_equal(samples[task], rows, data, config["generation_kwargs"]["until"], metric)
