"""The bad-input catalogue, continued: models and profiles. A checkpoint whose weights do not fit
its class is refused at load (every family), unless the user says ``check_keys=false``; a profile
discovered on another architecture is refused unless the user says ``profile_check=false``, and
the transfer is recorded in the run's header.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import layerprobe
from layerprobe.analysis.profiles import LayerProfile, save_profile
from layerprobe.errors import ModelError
from layerprobe.models.tiny import BUILDERS, build_tiny
from bad_input_testing import VQAV2, data, sweep_error

ROOT = Path(__file__).resolve().parents[1]


def _broken_checkpoint(family: str, path: Path) -> tuple[str, str]:
    """A tiny model saved, then one decoder tensor dropped, one reshaped, one foreign added."""
    model, _ = build_tiny(family, num_layers=1)
    model.save_pretrained(path)
    weights = load_file(path / "model.safetensors")
    dropped, reshaped = [k for k in sorted(weights) if ".layers.0." in k and k.endswith(".weight")][:2]
    del weights[dropped]
    weights[reshaped] = torch.zeros(3)
    weights["extra.weight"] = torch.zeros(2)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return dropped, reshaped


@pytest.mark.core   # what transformers reports about keys is a release's: checked on the oldest and newest
@pytest.mark.parametrize("family", list(BUILDERS))
def test_a_checkpoint_whose_weights_do_not_fit_is_refused(tmp_path, family):
    dropped, reshaped = _broken_checkpoint(family, tmp_path / family)
    with pytest.raises(ModelError) as err:
        layerprobe.load_model(str(tmp_path / family), device="cpu")
    message = str(err.value)
    print(message)
    assert "\n" not in message
    assert f"{tmp_path / family}: the checkpoint's weights do not fit " in message
    assert ": 1 missing (" in message and dropped.split(".layers.0.")[1] in message
    assert ", 1 unexpected (extra.weight), 1 mismatched (" in message and "checkpoint [3] vs model [" in message
    assert message.endswith("those weights would be random: check model.path and the transformers version "
                             "(README, Supported versions), or model.check_keys=false to load it anyway")


def test_check_keys_false_loads_it_anyway_with_a_warning(capsys, tmp_path, caplog):
    from layerprobe.cli.sweep import sweep
    from bad_input_testing import compose_sweep

    path = tmp_path / "ckpt"
    _broken_checkpoint("llava", path)
    build_tiny("llava", num_layers=1)[1].save_pretrained(path)   # its processor, so that the load can go on
    err = sweep_error(capsys, tmp_path, *data(VQAV2), "data.limit=1", "model=tiny_llava15", f"model.path={path}")
    assert "the checkpoint's weights do not fit LlavaForConditionalGeneration: 1 missing" in err
    with caplog.at_level(logging.WARNING):
        sweep(compose_sweep(tmp_path / "run", *data(VQAV2), "data.limit=1", "layers=[0]", "model=tiny_llava15",
                            f"model.path={path}", "model.check_keys=false"))
    assert "loading anyway (check_keys=false): those weights are random" in caplog.text


@pytest.mark.core   # the hash must not move with the release, or profile=organism would be refused
def test_model_config_hash_is_the_architecture_not_dtype_path_or_depth_twins(tmp_path):
    from layerprobe.organism import WEIGHTS_DIR

    organism = layerprobe.load_model("organism", device="cpu")
    shutil.copytree(WEIGHTS_DIR, tmp_path / "copy")
    same = [layerprobe.load_model("organism", device="cpu", dtype="bfloat16"),
            layerprobe.load_model(str(tmp_path / "copy"), device="cpu")]
    assert {m.config_hash() for m in same} == {organism.config_hash()}
    # the shipped preset was made on the organism, so profile=organism passes the check
    assert layerprobe.analysis.profiles.load_profile("organism").model_config_hash == organism.config_hash()
    twins = [layerprobe.load_model(f"tiny:{f}:4", device="cpu") for f in ("llava", "llava_next")]
    assert twins[0].num_layers == twins[1].num_layers and twins[0].config_hash() != twins[1].config_hash()


def test_a_profile_made_for_another_model_is_refused_unless_the_transfer_is_explicit(tmp_path):
    other = layerprobe.load_model("tiny:llava_next:4", device="cpu")
    profile = tmp_path / "next.yaml"
    save_profile(LayerProfile(model="tiny:llava_next:4", num_layers=4, fusion_layers=[0, 1], review_layer=3,
                              model_config_hash=other.config_hash()), profile)
    args = [sys.executable, "-m", "layerprobe.cli.eval", "model=tiny_llava15", "model.path=tiny:llava:4",
            *data(VQAV2), "data.limit=2", "data.max_new_tokens=2", f"profile_file={profile}", f"eval_dir={tmp_path}/e",
            "progress=false", "timing_samples=0", "heatmaps=0", "baseline=none", "memory_pass=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    refused = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert lines[0] == (f"layerprobe: error: profile {profile}: made for tiny:llava_next:4 (model_config_hash "
                        f"{other.config_hash()}), but tiny:llava:4 has model_config_hash "
                        f"{layerprobe.load_model('tiny:llava:4', device='cpu').config_hash()}; to use it on another "
                        "model anyway (a transfer, recorded in the run's header) give profile_check=false")
    done = subprocess.run([*args, "profile_check=false"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    header = json.loads(next((tmp_path / "e").rglob("results.jsonl")).read_text().splitlines()[0])["_header"]
    assert header["profile_check"] is False and header["profile"]["model"] == "tiny:llava_next:4"
