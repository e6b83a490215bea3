"""transformers internals stay behind layerprobe.compat, and a release that loads the organism
differently is refused at load time instead of producing chance-level sweeps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import layerprobe
import layerprobe.organism as organism
from layerprobe import compat
from layerprobe.errors import ModelError

pytestmark = pytest.mark.core

PACKAGE = Path(layerprobe.__file__).parent
# names of transformers internals that changed (or may change) between releases
INTERNALS = re.compile(r"past_key_values|_global_mapping|(?<!set)_attn_implementation|\.rotary_emb\(|get_attributes|"
                       r"\._tokenizer\b|from transformers\.\w|eager_attention_forward|\.layers\[\w+\]\.keys")


def test_transformers_internals_are_touched_only_in_compat():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in PACKAGE.rglob("*.py") if path.name != "compat.py"
        for n, line in enumerate(path.read_text().splitlines(), 1) if INTERNALS.search(line)
    ]
    assert offenders == []


def test_cache_keyword_is_read_off_the_installed_signature(tiny_models):
    loaded = tiny_models("llava")
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    expected = "cache" if (major, minor) >= (5, 24) else "past_key_values"
    assert compat.cache_keyword(loaded.decoder_layers[0]) == expected
    assert compat.cache_keyword(loaded.model) == expected


def test_output_cache_holds_every_layer(tiny_models):
    loaded = tiny_models("llava")
    ids = torch.tensor([[1, 5, 6, 7]])
    out = loaded.model(input_ids=ids, use_cache=True)
    keys, values = compat.cache_layer(compat.output_cache(out), loaded.num_layers - 1)
    assert keys.shape[2] == 4 and values.shape == keys.shape


def test_organism_refuses_a_corrupted_weight(tmp_path):
    copy = tmp_path / "organism"
    shutil.copytree(organism.WEIGHTS_DIR, copy)
    weights = load_file(copy / "model.safetensors")
    name = next(k for k in weights if k.endswith("layers.29.mlp.down_proj.weight"))
    weights[name] = -weights[name]
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError) as err:
        organism.load(path=copy)
    message = str(err.value)
    assert "\n" not in message
    assert "fingerprint" in message and f"transformers {transformers.__version__}" in message
    assert str(copy) in message


def test_shipped_organism_reproduces_its_fingerprint():
    loaded = organism.load()  # verify() runs inside; a mismatch raises
    spec = organism.spec()
    assert len(spec["fingerprint"]["answers"]) == 8
    assert loaded.extra["organism"]["planted"] == spec["planted"]
