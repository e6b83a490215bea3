"""Specificity controls: for a knockout's edge set, an edge set that edits the same queries at the
same layers but blocks keys that carry no image, as many as the image holds. A knockout that
hurts no more than its control hurts because its queries meet an attention pattern they never
saw, not because the layer reads the image.

    control = control_edges("image->text", "text_keys")     # an EdgeSet, registered on first use
    control.name                                            # "image->text|control=text_keys"
    sweep_conditions(32, control=control)                   # a control beside every knockout

``text_keys``: per sample, as many of the prompt's text keys before the edge set's queries as the
image has visual tokens, drawn uniformly without replacement from the valid non-visual positions
before the sample's first query, capped at how many there are (then every one of them). Every
query sees those keys (causal attention), so every query loses exactly that many, never its own.
For ``image->text`` the pool is the text before the image: any system prompt and the chat
template's opening. The sample's first token is left out of the pool: a trained model's heads
park their attention on it (the attention sink, Xiao et al. 2023, "Efficient Streaming Language
Models with Attention Sinks"), a knockout never blocks it, and blocking it disturbs every head
whatever the layer reads, so a control that did would measure the sink, not specificity.
``text_keys_and_sink`` puts it in the pool (docs/discovery.md, "Specificity control", measures
what that does on the organism, whose only text before the image is the sink: there
``text_keys`` blocks nothing).
The draw comes from the sample's own generator
(``edges.sample_generator(layout, b, seed)``), so it is the same in any batch, at any padding,
in prefill and in every decode step, in both sweep engines. The control is one ``EdgeSet``
whose ``keys`` are that draw, ``needs`` the knockout's plus ``SAMPLE``; it is built for each
knockout edge set (its queries are the knockout's) and registered under its name on first use,
so ``knockout(loaded, layers, edges=control.name)`` finds it like any edge set. The fast
engine runs it as any other edge set: its queries follow the image, and of its keys those before
the first post-image text token are prefix keys, which ``split_attention`` masks per variant as it
masks a knockout's visual keys, and the others are the variant's own keys, masked with them.
"""

from __future__ import annotations

from functools import partial

import torch

from layerprobe.core.edges import (SAMPLE, EdgeSet, edge_set, register, registered_edge_set, sample_generator,
                                   unregister)
from layerprobe.core.layout import TokenLayout
from layerprobe.errors import ConfigError


def text_keys_before_queries(queries, seed: int, layout: TokenLayout, sink: bool = False) -> torch.Tensor:
    """(B, T) bool: per sample, min(#visual, #pool) keys drawn uniformly from its pool, the valid
    non-visual positions before its first query; the sample's first valid position (the attention
    sink) only where ``sink``."""
    pos = layout.positions
    first_query = torch.where(queries(layout), pos[None], layout.length).min(dim=1).values
    pool = layout.valid & ~layout.visual & (pos[None] < first_query[:, None])
    if not sink:
        first_valid = layout.valid.int().argmax(dim=1)
        pool &= pos[None] != first_valid[:, None]
    count = torch.minimum(layout.visual.sum(1), pool.sum(1)).tolist()
    keys = torch.zeros_like(pool)
    for b in range(pool.shape[0]):
        where = pool[b].nonzero().flatten()
        # a permutation of the pool in position order: the same draw whatever the padding
        pick = torch.randperm(where.numel(), generator=sample_generator(layout, b, seed))[:count[b]]
        keys[b, where[pick.to(where.device)]] = True
    return keys


CONTROLS = {
    "text_keys": ("as many of the prompt's text keys before the queries as the image holds, drawn per sample "
                  "(the attention sink kept)", text_keys_before_queries),
    "text_keys_and_sink": ("as many of the prompt's text keys before the queries as the image holds, drawn per "
                           "sample, the attention sink among them", partial(text_keys_before_queries, sink=True)),
}


def _build(edges: EdgeSet, name: str, seed: int) -> EdgeSet:
    full = f"{edges.name}|control={name}" + (f",seed={seed}" if seed else "")
    registered = registered_edge_set(full)
    if registered is not None and registered.queries is edges.queries:
        return registered
    doc, keys = CONTROLS[name]
    needs = tuple(dict.fromkeys((*edges.needs, SAMPLE)))
    if registered is not None:   # a knockout re-registered under its name: its control follows it
        unregister(full)
    return register(EdgeSet(full, f"Control of {edges.name}: its queries lose {doc}.", queries=edges.queries,
                            keys=partial(keys, edges.queries, seed), fast=edges.fast, needs=needs))


def control_edges(edges: str | EdgeSet, name: str, seed: int = 0) -> EdgeSet:
    """The control ``name`` (one of ``CONTROLS``) of the knockout edge set ``edges``; the same
    object for the same arguments."""
    edges = edge_set(edges)
    if name not in CONTROLS:
        raise ConfigError(f"control={name!r}: unknown control; choose one of {', '.join(CONTROLS)} (or null: none)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"control_seed={seed!r}: must be an integer")
    if edges.weight:
        raise ConfigError(f"control={name}: edges={edges.name!r} is a soft edit; a control blocks keys, so it "
                          "matches only a knockout that blocks them")
    return _build(edges, name, seed)
