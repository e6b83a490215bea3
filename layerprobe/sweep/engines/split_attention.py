"""Attention over a prefix shared by many variants plus each variant's own keys, without
repeating the prefix per variant: one fused attention call per layer, whose queries are the
variants' stacked queries and whose keys are the prefix once followed by every variant's own
keys, with a mask that lets each variant see the prefix (less what it blocks) and its own keys.

    out = split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling)

``query`` is (n*B, H, q, d), variant-major over a batch of B samples; ``pre_k``/``pre_v`` are the
batch's (B, Hkv, P, d) prefix keys/values, shared by the n variants. The n variants' queries (and
a grouped-query head's query heads) are stacked along the query axis, so one call per batch
covers them all and no key is repeated. ``pre_blocked`` is (B, n*q, P) bool in that stacked order
(see :func:`stacked`): the prefix keys each variant's queries may not see.

Why one fused call rather than two partial softmaxes merged by hand: the prefix scores are the
only large tensor (n*q rows by P keys), and a fused kernel never writes them out, where a
hand-written merge reads and writes them five times (mask, max, exp, sum, product); at 32
variants over a 2,961-token prefix that traffic was most of the suffix pass. The price is that
every variant's queries also meet the other variants' own keys (masked), n*own extra columns
beside P. Precision is the kernel's: half-precision inputs are accumulated in float32 on the
CPU and CUDA kernels, as in the model's own SDPA attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def stacked(masks: list[torch.Tensor]) -> torch.Tensor:
    """(B, n*q, P) from n variants' (B, q, P) prefix masks: the order :func:`split_attention` reads."""
    return torch.cat(masks, dim=1)


def _to_shared(x: torch.Tensor, n: int, b: int, kv_heads: int) -> torch.Tensor:
    """(n*B, H, q, e) variant-major -> (B, Hkv, groups*n*q, e) stacked per sample and key head."""
    _, heads, q, e = x.shape
    groups = heads // kv_heads
    return x.view(n, b, kv_heads, groups, q, e).permute(1, 2, 3, 0, 4, 5).reshape(b, kv_heads, groups * n * q, e)


def _from_shared(x: torch.Tensor, n: int, heads: int, q: int) -> torch.Tensor:
    """Inverse of :func:`_to_shared`."""
    b, kv_heads, _, e = x.shape
    groups = heads // kv_heads
    return x.view(b, kv_heads, groups, n, q, e).permute(3, 0, 1, 2, 4, 5).reshape(n * b, heads, q, e)


def split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling):
    nb, heads, q, d = query.shape
    b, kv_heads, p = pre_k.shape[:3]
    n, groups, own = nb // b, heads // kv_heads, own_k.shape[2]
    # every variant's own keys after the prefix, variant-major: _to_shared with one query head a key head
    keys = torch.cat([pre_k, _to_shared(own_k, n, b, kv_heads)], dim=2)
    values = torch.cat([pre_v, _to_shared(own_v, n, b, kv_heads)], dim=2)
    allowed = torch.zeros(b, n, q, p + n * own, dtype=torch.bool, device=query.device)
    allowed[..., :p] = ~pre_blocked.view(b, n, q, p)
    diagonal = torch.arange(n, device=query.device)
    # variant v's queries see only variant v's own keys: the diagonal blocks of the own part
    allowed[..., p:].view(b, n, q, n, own)[:, diagonal, :, diagonal] = own_mask.view(n, b, q, own)
    mask = allowed[:, None].expand(b, groups, n, q, p + n * own).reshape(b, 1, groups * n * q, p + n * own)
    out = F.scaled_dot_product_attention(_to_shared(query, n, b, kv_heads), keys, values, attn_mask=mask,
                                         scale=scaling)
    return _from_shared(out, n, heads, q).transpose(1, 2).contiguous()
