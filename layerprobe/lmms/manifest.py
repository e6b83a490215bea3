"""The entry point lmms-eval (>= 0.7) reads from the group ``lmms_eval.models``: ``--model layerprobe``."""

from __future__ import annotations


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="layerprobe", simple_class_path="layerprobe.lmms.model.LayerprobeLMM")
