"""The last prompt token's attention over the visual tokens, recomputed at a few layers from the
query/key states the attention function already receives: no ``output_attentions``, any backend.

    with controller(loaded).observe(LastRowRecorder({14})) as rec:
        loaded.model(**inputs)
    dist = visual_distribution(rec.scores[14], rec.layout.visual, heads="mean")   # (B, T), rows sum to 1
    allowed = controller(loaded).last_row_allowed(14, rec.layout)  # the model's mask of that row

``last_row_scores`` are the raw (pre-mask) logits ``q_last . k * scaling`` of every head (the scale
the model's adapter names, ``1 / sqrt(d)`` for most). Two views:

- ``last_row_probs(scores, allowed)`` applies the mask the model used: it equals eager
  ``output_attentions[layer][:, :, -1]``;
- ``visual_distribution`` is a softmax of the raw scores restricted to the visual keys. Where those
  keys are visible this *is* the attention renormalised over the visual tokens (a softmax restricted
  to a subset equals the renormalised full softmax); where the mask hides them (the organism's
  non-planted layers, a knocked-out layer) renormalising would be 0/0, and this stays defined: it is
  what the query would read if it could see the image there.
"""

from __future__ import annotations

import torch

from layerprobe.errors import ConfigError
from layerprobe.core.layout import TokenLayout

HEAD_AGGREGATIONS = ("mean", "max", "mass")


def last_row_scores(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """(B, H, kv) float32 logits of the last query row, GQA keys repeated to the query heads."""
    groups = query.shape[1] // key.shape[1]
    k = key.float()
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)  # same order as transformers' repeat_kv
    q = query[:, :, -1:].float()
    return (q @ k.transpose(-1, -2))[:, :, 0] * scaling


def last_row_probs(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(B, H, kv) attention probabilities of the last row under ``allowed`` (B, kv) bool."""
    return torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1)


def visual_distribution(scores: torch.Tensor, visual: torch.Tensor, heads: str = "mean",
                        allowed: torch.Tensor | None = None) -> torch.Tensor:
    """(B, kv) distribution over the visual keys (zero elsewhere), aggregated over heads.

    ``mean``: each head's visual distribution, averaged (every head counts the same);
    ``max``: the per-key maximum over heads, renormalised;
    ``mass``: heads weighted by the attention mass they give the image under ``allowed`` (the
    model's mask), i.e. the head-mean of the full attention row renormalised over the visual keys,
    as ViCrop computes it; falls back to ``mean`` for a sample whose visual keys are all masked.
    """
    if heads not in HEAD_AGGREGATIONS:
        raise ConfigError(f"heads={heads!r}: choose one of {', '.join(HEAD_AGGREGATIONS)}")
    per_head = torch.softmax(scores.masked_fill(~visual[:, None], float("-inf")), dim=-1)
    per_head = torch.nan_to_num(per_head, nan=0.0)  # a row without visual keys: all zero
    if heads == "mean":
        return per_head.mean(dim=1)
    if heads == "max":
        agg = per_head.amax(dim=1)
        return agg / agg.sum(-1, keepdim=True).clamp_min(torch.finfo(agg.dtype).tiny)
    if allowed is None:
        allowed = torch.ones_like(visual)
    mass = (last_row_probs(scores, allowed) * visual[:, None]).sum(-1)  # (B, H)
    total = mass.sum(-1, keepdim=True)
    weights = torch.where(total > 0, mass / total.clamp_min(torch.finfo(mass.dtype).tiny),
                          torch.full_like(mass, 1.0 / mass.shape[1]))
    return (per_head * weights[..., None]).sum(dim=1)


def is_prefill(layout: TokenLayout, q_pos: torch.Tensor) -> bool:
    """True for the call that computes the last prompt token (generation's prefill)."""
    return bool((q_pos == layout.prompt_len - 1).any())


class LastRowRecorder:
    """Observer keeping the raw last-row scores of the prefill call at ``layers``."""

    def __init__(self, layers):
        self._layers = set(layers)
        self.scores: dict[int, torch.Tensor] = {}
        self.layout: TokenLayout | None = None

    def layers(self) -> set[int]:
        return self._layers

    def observe(self, layer, query, key, scaling, layout, q_pos) -> None:
        if is_prefill(layout, q_pos):
            self.scores[layer] = last_row_scores(query, key, scaling)
            self.layout = layout
