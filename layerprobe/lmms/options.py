"""lmms-eval model args, as layerprobe reads them.

    args = ModelArgs.parse({"pretrained": "organism", "method": "knockout", "layers": "[8,9]"})
    args.pretrained, args.method, args.method_options        # "organism", "knockout", {"layers": [8, 9]}

lmms-eval splits ``--model_args`` at commas outside brackets and quotes and turns ``true``,
``false`` and numbers into Python values; everything else arrives as text. Here ``null``/``none``
become None and ``[...]`` a list (``layers=[8,9]``; ``layers=8;9`` also works). Every key that is
not an argument of the model itself is an option of the method, checked by the method's
constructor, so ``scale=0.25`` or ``criterion=js`` reach the method as in ``conf/method/*.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from layerprobe.errors import ConfigError

# the greedy budget when a task's generation_kwargs give none (layerprobe's benchmarks use 16 or 32)
DEFAULT_MAX_NEW_TOKENS = 16


def parse_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("null", "none", ""):
        return None
    if text.startswith(("[", "{")) or ";" in text:
        source = text if text.startswith(("[", "{")) else "[" + text.replace(";", ",") + "]"
        try:
            return yaml.safe_load(source)
        except yaml.YAMLError:
            raise ConfigError(f"model_args {key}={value!r}: not a valid list or mapping") from None
    return value


def _positive_int(key: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1 or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{key}={value!r}: must be a positive integer (layerprobe does not search batch sizes)")
    return number


@dataclass
class ModelArgs:
    pretrained: str = "organism"
    method: str = "vanilla"
    profile: Any = None
    device: str | None = None
    dtype: str | None = None
    attn_implementation: str = "sdpa"
    check_keys: bool = True       # refuse a checkpoint whose weights do not fit its class
    profile_check: bool = True    # refuse a profile discovered on another architecture
    batch_size: int = 1
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    method_options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict) -> "ModelArgs":
        values = {k: parse_value(k, v) for k, v in raw.items()}
        values.pop("max_batch_size", None)  # lmms-eval passes it to every model; only for batch-size search
        own = {k: values.pop(k) for k in list(values) if k in cls.__dataclass_fields__ and k != "method_options"}
        args = cls(**{k: v for k, v in own.items() if v is not None}, method_options=values)
        args.pretrained = str(args.pretrained)
        args.batch_size = _positive_int("batch_size", args.batch_size)
        args.max_new_tokens = _positive_int("max_new_tokens", args.max_new_tokens)
        for key in ("check_keys", "profile_check"):
            if not isinstance(getattr(args, key), bool):
                raise ConfigError(f"{key}={getattr(args, key)!r}: must be true or false")
        return args
