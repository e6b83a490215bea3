"""Load a checkpoint (local path, a Hugging Face Hub id, or a built-in tiny model) with its
processor and family adapter.

    loaded = load_model("llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16")
    loaded = load_model("/ckpt/llava-v1.6-vicuna-7b-hf")
    loaded = load_model("tiny:llava_next")               # random, built from real configs
    loaded = load_model("organism")                      # shipped planted checkpoint (models.planted)
    loaded = load_model("natural_organism")              # shipped, trained without planted layers
    inputs = loaded.encode([image], ["What is shown?"])  # chat template + processor, on device

A hub id not in the Hugging Face cache is downloaded there first (``layerprobe.models.hub``);
``download=False`` or ``HF_HUB_OFFLINE=1`` reads the cache only. The model then loads from that
local folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerprobe.core.dispatch import controller
from layerprobe.core.edges import sample_key
from layerprobe.errors import ModelError
from layerprobe.io.paths import SHIPPED_MODELS
from layerprobe.models.base import ModelAdapter
from layerprobe.models.identity import model_config_hash
from layerprobe.models.planted import install_from_checkpoint
from layerprobe.models.registry import adapter_for
from layerprobe.models.weights_check import load_checked


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    adapter: ModelAdapter
    name: str
    extra: dict = field(default_factory=dict)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def decoder_layers(self):
        return self.adapter.decoder_layers(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def config_hash(self) -> str:
        return model_config_hash(self.model.config)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "architecture": type(self.model).__name__,
            "family": self.adapter.family,
            "num_layers": self.num_layers,
            "config_hash": self.config_hash(),
        }

    def encode(self, images: list, texts: list[str], n_images: int = 1, questions: list[str] | None = None,
               sample_ids: list[str] | None = None):
        """Chat-templated, left-padded inputs for one batch, on the model's device. With
        ``questions`` (each one's text inside its prompt), the batch's token layout knows the
        question's own tokens, which the ``image->question`` knockout needs; with ``sample_ids``,
        each sample's key, for edge sets that choose keys per sample (``EdgeSet.encode`` passes
        what its edge set needs)."""
        prompts = [self.adapter.format_prompt(self.processor, t, n_images) for t in texts]
        enc = self.adapter.processor_inputs(self.processor, images, prompts)
        dtype = self.model.dtype
        inputs = {
            k: (v.to(self.device, dtype=dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in enc.items()
        }
        if questions is not None or sample_ids is not None:
            question = None if questions is None else self.adapter.question_tokens(
                self.processor, prompts, questions, enc["input_ids"]).to(self.device)
            keys = None if sample_ids is None else torch.tensor([sample_key(i) for i in sample_ids])
            controller(self).annotate(inputs["input_ids"], question=question, sample_keys=keys)
        return inputs


def _resolve_dtype(dtype, device: str):
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):   # torch.nn is an attribute too
            raise ModelError(f"dtype={dtype!r}: not a torch dtype (float32, bfloat16, float16)")
        return getattr(torch, dtype)
    return dtype


def _resolve_path(name_or_path: str, download: bool = True) -> str:
    if name_or_path in SHIPPED_MODELS:
        shipped = SHIPPED_MODELS[name_or_path]
        if not (shipped / "config.json").is_file():
            raise ModelError(f"model {name_or_path!r}: no weights at {shipped}; train them "
                             f"(docs/natural-organism.md) and give model.path=<their directory>")
        name_or_path = str(shipped)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a checkpoint directory (no config.json)")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise ModelError(f"{name_or_path}: model path does not exist")
    from layerprobe.models.hub import fetch_model

    return fetch_model(name_or_path, download=download)


def checkpoint_folder(name_or_path: str, download: bool = True) -> str | None:
    """The local folder ``load_model(name_or_path)`` reads, fetched from the Hub if need be (to
    download once before many jobs start); None for a built-in tiny model."""
    return None if name_or_path.startswith("tiny:") else _resolve_path(name_or_path, download)


def load_model(name_or_path: str, device: str | None = None, dtype=None,
               attn_implementation: str = "sdpa", download: bool = True, check_keys: bool = True) -> LoadedModel:
    """Model, processor and adapter for a checkpoint; see the module docstring. A checkpoint whose
    weights do not fit its class is refused unless ``check_keys`` is False (models.weights_check)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _resolve_dtype(dtype, device)
    if name_or_path.startswith("tiny:"):
        from layerprobe.models.tiny import build_tiny

        family, *rest = name_or_path[len("tiny:"):].split(":")
        model, processor = build_tiny(family, num_layers=int(rest[0]) if rest else 32)
        model.set_attn_implementation(attn_implementation)
        model.to(device=device, dtype=torch_dtype)
        return LoadedModel(model, processor, adapter_for(model.config), name_or_path)

    from transformers import AutoConfig, AutoProcessor
    import transformers

    path = _resolve_path(name_or_path, download)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise ModelError(f"{path}: cannot read config.json: {err}".splitlines()[0]) from None
    adapter = adapter_for(config)
    arch = next(a for a in config.architectures if hasattr(transformers, a))
    placement = {"device_map": "auto"} if device == "auto" else {}
    model = load_checked(getattr(transformers, arch), path, check_keys, dtype=torch_dtype,
                         attn_implementation=attn_implementation, local_files_only=True, **placement)
    if not placement:
        model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = "left"  # batched greedy decoding appends on the right
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    loaded = LoadedModel(model, processor, adapter, name_or_path, {"checkpoint": path})
    install_from_checkpoint(loaded, path)  # planted checkpoints: their mask, then their fingerprint
    return loaded
