"""load_model: local checkpoints round-trip, the adapter comes from config.architectures, and
bad names fail in one line without touching the network."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import layerprobe
from layerprobe.errors import ModelError
from layerprobe.models.tiny import BUILDERS, build_tiny, save_tiny
from layerprobe_testing import make_images


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_saved_checkpoint_loads_with_its_adapter_and_template(tmp_path, family):
    path = save_tiny(family, tmp_path / family, num_layers=3)
    loaded = layerprobe.load_model(str(path), device="cpu")
    assert loaded.adapter.family == family
    assert loaded.num_layers == 3
    assert loaded.tokenizer.padding_side == "left"
    prompt = loaded.adapter.format_prompt(loaded.processor, "what is it ?")
    assert prompt.startswith("USER:") and prompt.endswith("ASSISTANT:") and "<image>" in prompt
    inputs = loaded.encode(make_images(2), ["what is it ?", "how many"])
    with torch.no_grad():
        assert loaded.model(**inputs).logits.shape[0] == 2


def test_unsupported_architecture_lists_supported(tmp_path):
    path = save_tiny("llava", tmp_path / "m", num_layers=2)
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = ["FancyVLMForEverything"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"FancyVLMForEverything.*not supported; supported: .*LlavaForConditionalGeneration"):
        layerprobe.load_model(str(path))


def test_missing_path_and_uncached_hub_id_fail_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError, match="model path does not exist"):
        layerprobe.load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="someone/not-a-cached-model is not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        layerprobe.load_model("someone/not-a-cached-model")
    with pytest.raises(ModelError, match="no config.json"):
        layerprobe.load_model(str(tmp_path))


def _imports(package: str) -> dict[str, set[str]]:
    """Module file -> every module it imports, at top level or inside a function."""
    root = Path(layerprobe.__file__).resolve().parent
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        out[str(path.relative_to(root.parent))] = names
    return out


def _offending(package: str, forbidden: str) -> dict[str, list[str]]:
    hits = {f: sorted(n for n in names if n == forbidden or n.startswith(forbidden + "."))
            for f, names in _imports(package).items()}
    return {f: n for f, n in hits.items() if n}


def test_layers_import_one_way():
    """organism builds on models and models on core, never the reverse: loading a planted
    checkpoint is a model feature, so the models layer needs nothing from the organism's training."""
    assert _offending("models", "layerprobe.organism") == {}
    assert _offending("core", "layerprobe.models") == {}
    assert _offending("core", "layerprobe.organism") == {}


def test_unknown_tiny_family_names_the_known_ones():
    with pytest.raises(ValueError, match="tiny models exist for llava, llava_next, qwen2_vl"):
        build_tiny("nonesuch", num_layers=2)
    assert {"llava", "llava_next", "gemma3"} <= set(BUILDERS)
