"""How many layer variants the fast engine stacks into one pass: the largest number whose
memory fits a budget (``variants_per_batch: auto``).

    budget = memory_budget(device, budget_gb=None)   # free device memory; CPU: half the free RAM
    n = variants_that_fit(budget, held=prefill_bytes, cost=variant_cost(config, B, S, P, new, dtype))

The cost of one variant is an upper estimate from the model's sizes: its own keys/values for the
whole answer at every layer (kept until it is decoded) plus the largest transient of one layer of
the suffix pass (the prefix scores, which a fused attention kernel never writes out but SDPA's
math fallback does, in float32 for half precision, dominate).
``tests/test_memory_budget.py`` holds it against the peak that ``peak_memory`` measures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from layerprobe.errors import ConfigError

CPU_FRACTION = 0.5  # of the RAM the OS reports available: the rest is for everything else running


@dataclass(frozen=True)
class VariantCost:
    kept: int  # bytes a stacked variant holds until its answer is decoded
    transient: int  # bytes of one variant's share of the largest per-layer working set

    @property
    def total(self) -> int:
        return self.kept + self.transient


def variant_cost(text_config, num_layers: int, batch: int, suffix: int, prefix: int, max_new_tokens: int,
                 dtype: torch.dtype) -> VariantCost:
    """Bytes one stacked variant costs for a batch of ``batch`` samples: ``suffix`` tokens after
    the shared ``prefix``, answers of ``max_new_tokens``."""
    hidden = text_config.hidden_size
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or hidden // heads
    inter = getattr(text_config, "intermediate_size", None) or 4 * hidden
    e = torch.empty((), dtype=dtype).element_size()
    w = 4 if dtype in (torch.float16, torch.bfloat16) else e  # a math-fallback softmax's working precision
    own = suffix + max_new_tokens - 1
    kept = 2 * num_layers * batch * kv_heads * own * head_dim * e
    rows = batch * suffix
    transient = (
        batch * heads * suffix * (prefix + suffix) * w  # scores over the prefix and the own keys
        + 2 * rows * prefix  # the prefix mask and its complement (bool)
        + 3 * rows * heads * head_dim * w  # query, output and its accumulator in working precision
        + rows * (6 * hidden + 3 * inter) * e  # states, q/k/v/o, the MLP's gate, up and product
    )
    return VariantCost(kept, transient)


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device, budget_gb: float | None = None) -> int | None:
    """Bytes the fast engine may use for a batch beyond the weights: ``budget_gb`` if given,
    else what the device reports free (CPU: ``CPU_FRACTION`` of the available RAM); None when
    nothing can be asked."""
    if budget_gb is not None:
        return int(budget_gb * 2**30)
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    ram = _available_ram()
    return None if ram is None else int(ram * CPU_FRACTION)


def check_budget(budget_gb) -> float | None:
    if budget_gb is None:
        return None
    if isinstance(budget_gb, bool) or not isinstance(budget_gb, (int, float)) or budget_gb <= 0:
        raise ConfigError(f"memory_budget_gb={budget_gb!r}: must be a positive number of GiB or null "
                          "(what the device reports free)")
    return float(budget_gb)


def variants_that_fit(budget: int | None, held: int, cost: VariantCost, variants: int) -> int:
    """The largest number of stacked variants (at most ``variants``, at least 1) whose cost fits
    ``budget`` beside ``held`` bytes already in use; the baseline's rows ride along once."""
    if budget is None or variants <= 1:
        return max(1, variants)
    spare = budget - held - cost.kept
    return int(max(1, min(variants, spare // max(1, cost.total))))
