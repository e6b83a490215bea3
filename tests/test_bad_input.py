"""The bad-input catalogue: every mistake a user can make on the command line or in their files,
each answered by exactly one line that names the problem (exit code 2, no traceback), and with
``data.on_error=skip`` per-sample problems recorded as skipped rows while the run goes on.

Sweep cases run in-process through ``run_cli`` (the CLI's own error path) on Hydra-composed configs
with a 4-layer tiny model; the cases that need the real process (Hydra creating the run
directory, the console script's exit code) run as subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from layerprobe.cli.plot import run_plot
from layerprobe.cli.sweep import sweep
from layerprobe.io.results import SCHEMA_VERSION, read_results
from bad_input_testing import (QUESTIONS, ROOT, TINY, VQAV2, compose_sweep, data, one_line_error, sweep_error,  # noqa: F401
                               vqav2_copy)   # vqav2_copy: a fixture

# -- model ---------------------------------------------------------------------------------------

def test_unknown_model_path(capsys, tmp_path):
    err = sweep_error(capsys, tmp_path, *data(VQAV2), f"model.path={tmp_path}/no/such/ckpt")
    assert f"{tmp_path}/no/such/ckpt: model path does not exist" in err


def test_model_folder_without_config(capsys, tmp_path):
    (tmp_path / "ckpt").mkdir()
    err = sweep_error(capsys, tmp_path, *data(VQAV2), f"model.path={tmp_path}/ckpt")
    assert "not a checkpoint directory (no config.json)" in err


def test_hub_id_not_in_cache(capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # the tests run offline
    err = sweep_error(capsys, tmp_path, *data(VQAV2), "model.path=nobody-here/no-such-model")
    assert "model nobody-here/no-such-model is not in the Hugging Face cache" in err and "HF_HUB_OFFLINE=1" in err


def test_download_option_must_be_a_bool(capsys, tmp_path):
    err = sweep_error(capsys, tmp_path, *data(VQAV2), "data.download=sometimes")
    assert "data.download='sometimes': must be true or false" in err


def test_unsupported_architecture(capsys, tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    err = sweep_error(capsys, tmp_path, *data(VQAV2), f"model.path={tmp_path}/bert")
    assert "architecture ['BertModel'] is not supported; supported: " in err
    assert "LlavaForConditionalGeneration" in err


# -- layers, mask, engine ------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (("layers=[1,4]",), "layers[1]=4: out of range for a 4-layer decoder (0..3)"),
    (("layers=[-1]",), "layers[0]=-1: out of range for a 4-layer decoder"),
    (("layers=[]",), "layers=[]: the sweep needs at least one layer"),
    (("mask.window=2",), "mask.window=2: must be an odd number"),
    (("layers=[0]", "engine=turbo"), "engine='turbo': choose one of fast, naive"),
    (("layers=[0]", "batch_size=0"), "batch_size=0: must be a positive integer"),
    (("control=shuffle",), "control='shuffle': unknown control; choose one of text_keys, text_keys_and_sink (or null: none)"),
    (("control=text_keys", "control_seed=abc"), "control_seed='abc': must be an integer"),
], ids=["layer-out-of-range", "negative-layer", "empty-layer-list", "even-window", "unknown-engine", "zero-batch",
        "unknown-control", "bad-control-seed"])
def test_bad_sweep_option(capsys, tmp_path, overrides, message):
    assert message in sweep_error(capsys, tmp_path, *data(VQAV2), "data.limit=1", *overrides)


# -- contrastive attention options and profiles (what layerprobe-eval passes on) -----------------

def _contrastive(**options):
    from layerprobe.methods.registry import make_method
    from layerprobe.analysis.profiles import load_profile

    return make_method("contrastive", profile=load_profile("llava15_7b").to_dict(), **options)


@pytest.mark.parametrize("percentile", [0, 100, -5, 150])
def test_percentile_outside_open_interval(capsys, percentile):
    err = one_line_error(capsys, lambda: _contrastive(percentile=percentile))
    assert f"percentile={percentile!r}: must be in (0, 100)" in err


@pytest.mark.parametrize("scale", [-0.1, 1.5])
def test_scale_outside_unit_interval(capsys, scale):
    err = one_line_error(capsys, lambda: _contrastive(scale=scale))
    assert f"scale={scale!r}: must be in [0, 1]" in err


def test_profile_for_another_depth(capsys):
    from layerprobe import load_model
    from layerprobe.analysis.profiles import load_profile

    loaded = load_model("tiny:llava:4", device="cpu")
    # what layerprobe-eval does with profile=llava15_7b on a 4-layer model
    err = one_line_error(capsys, lambda: load_profile("llava15_7b", num_layers=loaded.num_layers))
    assert "num_layers=32 but the model has 4 decoder layers" in err
    # and the library refuses it too, for a notebook user who skips load_profile's check
    err = one_line_error(capsys, lambda: _contrastive().check(loaded))
    assert "num_layers=32 but the model has 4 decoder layers" in err


def test_profile_file_missing_and_malformed(capsys, tmp_path):
    from layerprobe.analysis.profiles import load_profile

    err = one_line_error(capsys, lambda: load_profile(str(tmp_path / "nope.yaml")))
    assert "nope.yaml: file not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nnum_layers: [unclosed\n")
    err = one_line_error(capsys, lambda: load_profile(str(bad)))
    assert "not valid YAML" in err


# -- data selection and files --------------------------------------------------------------------

def test_data_root_not_set_and_mirror_not_cached_offline(capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # the tests run offline
    err = sweep_error(capsys, tmp_path, "data=vqav2")
    assert "vqav2: mirror lmms-lab-encoder/VQAv2 (data/validation-*.parquet) is not in the Hugging Face cache" in err
    assert "HF_HUB_OFFLINE=1" in err


def test_data_root_missing(capsys, tmp_path):
    err = sweep_error(capsys, tmp_path, "data=vqav2", f"data.root={tmp_path}/nowhere")
    assert f"{tmp_path}/nowhere: no such folder (data.root for vqav2" in err


@pytest.mark.parametrize("overrides, message", [
    (("data.num_shards=2", "data.shard=2"), "data.shard=2: must be in 0..1 (num_shards=2)"),
    (("data.num_shards=0",), "data.num_shards=0: must be a positive integer"),
    (("data.limit=0",), "data.limit=0: must be a positive integer or null"),
    (("data.on_error=ignore",), "data.on_error='ignore': choose one of raise, skip"),
])
def test_bad_data_selection(capsys, tmp_path, overrides, message):
    assert message in sweep_error(capsys, tmp_path, *data(VQAV2), *overrides)


def test_malformed_annotation_json(capsys, tmp_path, vqav2_copy):
    path = vqav2_copy / QUESTIONS
    path.write_text(path.read_text()[:200])   # cut off mid-file
    err = sweep_error(capsys, tmp_path, *data(vqav2_copy))
    assert f"{path}: malformed JSON at line" in err


def test_annotation_file_missing(capsys, tmp_path, vqav2_copy):
    (vqav2_copy / "v2_mscoco_val2014_annotations.json").unlink()
    err = sweep_error(capsys, tmp_path, *data(vqav2_copy))
    assert "v2_mscoco_val2014_annotations.json" in err and "not found" in err


def _drop_key(root: Path, index: int, key: str) -> str:
    path = root / QUESTIONS
    doc = json.loads(path.read_text())
    del doc["questions"][index][key]
    path.write_text(json.dumps(doc))
    return str(doc["questions"][index]["question_id"])


def test_record_missing_a_key(capsys, tmp_path, vqav2_copy):
    sample_id = _drop_key(vqav2_copy, 2, "question")
    err = sweep_error(capsys, tmp_path, *data(vqav2_copy))
    assert f"{QUESTIONS}: questions[2] (sample {sample_id}): missing key 'question'" in err


def _break_images(root: Path) -> tuple[str, str]:
    """One image replaced by garbage bytes, one deleted; returns their file names."""
    images = sorted((root / "val2014").iterdir())
    images[1].write_bytes(b"definitely not a jpeg")
    images[2].unlink()
    return images[1].name, images[2].name


def test_corrupt_image_stops_the_run(capsys, tmp_path, vqav2_copy):
    corrupt, _ = _break_images(vqav2_copy)
    err = sweep_error(capsys, tmp_path, *data(vqav2_copy), "layers=[0]")
    assert corrupt in err and ("cannot decode image" in err or "image file not found" in err)


def test_on_error_skip_records_problems_and_continues(tmp_path, vqav2_copy):
    corrupt, missing = _break_images(vqav2_copy)
    bad_id = _drop_key(vqav2_copy, 0, "question")
    run_dir = tmp_path / "run"
    sweep(compose_sweep(run_dir, *data(vqav2_copy), "layers=[0]", "data.on_error=skip"))
    table = read_results(run_dir)
    n_samples = 8
    assert len(table) == n_samples * 2   # baseline + one knockout per sample, skipped or not
    skipped = table[table["skipped"].notna()]
    reasons = " | ".join(skipped["skipped"].unique())
    print(reasons)
    assert corrupt in reasons and "cannot decode image" in reasons
    assert missing in reasons and "image file not found" in reasons
    assert "missing key 'question'" in reasons
    assert bad_id in set(skipped["sample_id"])
    answered = table[table["skipped"].isna()]
    assert len(answered) > 0 and answered["prediction"].notna().all()
    summary = (run_dir / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("benchmark,condition,layer,n,n_skipped")
    n_skipped = len(skipped) // 2
    assert all(line.split(",")[4] == str(n_skipped) for line in summary[1:])


# -- output and results files --------------------------------------------------------------------

def test_unwritable_run_dir_through_the_console_script(tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    proc = subprocess.run(
        [sys.executable, "-m", "layerprobe.cli.sweep", f"run_dir={tmp_path}/afile/sub", *TINY, *data(VQAV2)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    print(proc.stderr)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"layerprobe: error: {tmp_path}/afile/sub: cannot create output directory: Not a directory"


def test_results_file_unwritable_in_process(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    err = sweep_error(capsys, tmp_path, *data(VQAV2), "data.limit=1", "layers=[0]", run_dir=tmp_path / "afile" / "sub")
    assert f"{tmp_path}/afile/sub: cannot create output directory: Not a directory" in err


def test_plot_refuses_corrupt_results(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text('{"_header": {"schema": 1}}\n{"benchmark": "x", oops\n{"benchmark": "x"}\n')
    err = one_line_error(capsys, run_plot, {"run": str(run)})
    assert "results.jsonl: line 2: not valid JSON" in err


def test_plot_refuses_a_folder_without_results(capsys, tmp_path):
    err = one_line_error(capsys, run_plot, {"run": str(tmp_path)})
    assert f"run: no results.jsonl in {tmp_path}" in err


def test_results_from_a_newer_schema_are_refused(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text('{"_header": {"schema": 99, "config_hash": "x"}}\n')
    err = sweep_error(capsys, tmp_path, *data(VQAV2), "data.limit=1", "layers=[0]", run_dir=run)
    assert (f"results schema 99 != {SCHEMA_VERSION}; give run_dir=<a new folder> (a multirun: "
            "hydra.sweep.dir=<a new folder>) for a new run") in err
