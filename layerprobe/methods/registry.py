"""The inference methods ``layerprobe-eval`` compares, registered in one place.

    method = make_method("contrastive", profile="llava15_7b", scale=0.5)
    records = method.answer_batch(loaded, samples, images, questions, max_new_tokens=16)
    records[0]["prediction"], records[0]["total_s"], records[0]["pre_layer"]

Each method answers a batch greedily and returns one dict per sample: ``prediction, prefill_s,
total_s, n_tokens`` plus its own fields (contrastive: ``pre_layer, hellinger, n_suppressed``;
dola: ``premature_layers`` and its settings under ``dola``; vicrop: ``crop_box``;
knockout: ``knockout_layers, edges``). Timings cover everything the method does for
the batch (ViCrop's two attention passes included); ``prefill_s`` is the time to the first token.
A new method is a ``layerprobe.methods.base.Method`` subclass in its own module, listed here.
"""

from __future__ import annotations

import inspect

from layerprobe.errors import ConfigError
from layerprobe.methods.contrastive import Contrastive
from layerprobe.methods.dola import DoLa
from layerprobe.methods.knockout import Knockout
from layerprobe.methods.vanilla import Vanilla
from layerprobe.methods.vicrop import ViCrop

METHODS = {cls.name: cls for cls in (Vanilla, Contrastive, DoLa, ViCrop, Knockout)}


def make_method(name: str, profile=None, **options):
    """The method ``name`` configured by ``options`` (its YAML keys); ``profile`` for those using one."""
    accepted = inspect.signature(_method_class(name)).parameters
    if "profile" in accepted:
        options["profile"] = profile
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ConfigError(f"method {name}: unknown option {unknown[0]!r}; valid: {', '.join(accepted)}")
    return METHODS[name](**options)


def takes_profile(name: str) -> bool:
    """Whether method ``name`` reads a layer profile (a run of one that does not is the same run
    whatever profile is given)."""
    return "profile" in inspect.signature(_method_class(name)).parameters


def _method_class(name: str):
    cls = METHODS.get(name)
    if cls is None:
        raise ConfigError(f"method={name!r}: unknown; choose one of {', '.join(METHODS)}")
    return cls
