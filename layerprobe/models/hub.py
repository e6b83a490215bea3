"""Checkpoints from the Hugging Face Hub: the files a model and its processor need, fetched into
the hub cache on first use (``layerprobe.io.hub.fetch``), then loaded from that local folder.

    path = fetch_model("llava-hf/llava-1.5-7b-hf")                  # downloads what is missing
    path = fetch_model("llava-hf/llava-1.5-7b-hf", download=False)  # the cache only

Only configs, tokenizer and processor files and safetensors weights are fetched; a repository
without safetensors weights gets its ``*.bin`` weights instead, as transformers falls back to them.
"""

from __future__ import annotations

from layerprobe.errors import ModelError
from layerprobe.io.hub import fetch

# what AutoConfig, AutoProcessor and from_pretrained read: configs, chat templates, tokenizer files
MODEL_FILES = ("*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "*.safetensors")
LEGACY_WEIGHTS = ("*.bin",)
HINT = "or give model.path=<a local checkpoint folder>"


def fetch_model(repo: str, download: bool = True, revision: str | None = None) -> str:
    """The local snapshot folder of ``repo`` with the files the model and its processor need."""
    if not isinstance(download, bool):
        raise ModelError(f"model.download={download!r}: must be true or false")
    options = dict(what="model", error=ModelError, revision=revision, download=download, hint=HINT)
    folder = fetch(repo, MODEL_FILES, required=["config.json"], **options)
    if not any(folder.glob("*.safetensors")):
        folder = fetch(repo, MODEL_FILES + LEGACY_WEIGHTS, required=["config.json", "*.bin"], **options)
    return str(folder)
