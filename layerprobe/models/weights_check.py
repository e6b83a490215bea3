"""A checkpoint whose weights do not fit its model class is refused at load time, in one line: a
missing or mismatched tensor is initialised at random by transformers, and the model then answers
at chance with nothing but a printed load report to show for it (transformers before 5.6 did
this to CLIP towers saved by later releases).

    model = load_checked(LlavaForConditionalGeneration, path, check_keys=True, dtype=torch.float32)
    # ModelError: /ckpt: the checkpoint's weights do not fit LlavaForConditionalGeneration: 1 missing
    #   (model.language_model.layers.0.mlp.up_proj.weight), 0 unexpected, 0 mismatched keys; ...

``check_keys=False`` (``model.check_keys=false``) loads such a checkpoint anyway, with a warning.
"""

from __future__ import annotations

import logging

from layerprobe.errors import ModelError

log = logging.getLogger(__name__)


def _shape(size) -> str:
    return "[" + ", ".join(str(int(d)) for d in size) + "]"


def key_problems(info: dict) -> str | None:
    """One phrase for transformers' loading info (missing, unexpected, mismatched keys); None if clean."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: m[0])
    if not (missing or unexpected or mismatched):
        return None

    def first(keys, show=lambda k: k) -> str:
        return f" ({show(keys[0])}{', ...' if len(keys) > 1 else ''})" if keys else ""
    return (f"{len(missing)} missing{first(missing)}, {len(unexpected)} unexpected{first(unexpected)}, "
            f"{len(mismatched)} mismatched{first(mismatched, lambda m: f'{m[0]}: checkpoint {_shape(m[1])} vs model {_shape(m[2])}')} keys")


def load_checked(model_class, path: str, check_keys: bool = True, **kwargs):
    """``model_class.from_pretrained(path, **kwargs)``, refused (ModelError) when its weights do not
    fit the class, unless ``check_keys`` is False."""
    try:
        model, info = model_class.from_pretrained(path, output_loading_info=True, ignore_mismatched_sizes=True,
                                                  **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{path}: cannot load the weights: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                         ) from None
    problems = key_problems(info)
    if problems is None:
        return model
    message = f"{path}: the checkpoint's weights do not fit {model_class.__name__}: {problems}"
    if check_keys:
        raise ModelError(f"{message}; those weights would be random: check model.path and the transformers version "
                         "(README, Supported versions), or model.check_keys=false to load it anyway")
    log.warning("%s; loading anyway (check_keys=false): those weights are random", message)
    return model
