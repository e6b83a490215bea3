"""Attention over a prefix shared by many variants plus each variant's own keys, without
copying the prefix per variant: one softmax over both parts, computed as two partial sums
merged exactly (each part's maximum, exponentials and sums; accumulated in float32 for half
precision, as SDPA does).

    out = split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling)

``query`` is (n*B, H, q, d), variant-major over a batch of B samples; ``pre_k``/``pre_v`` are the
batch's (B, Hkv, P, d) prefix keys/values, shared by the n variants. The n variants' queries (and
a grouped-query head's query heads) are stacked along the query axis, so one matmul per sample
and key head covers them all and no key is repeated. ``pre_blocked`` is (B, n*q, P) bool in that
stacked order (see :func:`stacked`): the prefix keys each variant's queries may not see.
The prefix scores, the only large tensor, are written once and then edited in place.
"""

from __future__ import annotations

import torch


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


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling):
    nb, heads, q, d = query.shape
    b, kv_heads = pre_k.shape[0], pre_k.shape[1]
    n, groups = nb // b, heads // kv_heads
    work = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    neg = torch.finfo(work).min
    qf = query.to(work) * scaling
    # prefix part: (B, Hkv, groups*n*q, P), written once, then edited in place
    s_pre = torch.matmul(_to_shared(qf, n, b, kv_heads), pre_k.to(work).transpose(-1, -2))
    p = s_pre.shape[-1]
    s_pre.view(b, kv_heads, groups, n * q, p).masked_fill_(pre_blocked[:, None, None], neg)
    # own part: small, (n*B, H, q, own)
    s_own = torch.matmul(qf, _repeat_kv(own_k, groups).to(work).transpose(-1, -2))
    s_own.masked_fill_(~own_mask, neg)
    top = torch.maximum(_to_shared(s_own.amax(-1, keepdim=True), n, b, kv_heads), s_pre.amax(-1, keepdim=True))
    s_pre.sub_(top).exp_()
    s_own.sub_(_from_shared(top, n, heads, q)).exp_()
    total = _from_shared(s_pre.sum(-1, keepdim=True), n, heads, q) + s_own.sum(-1, keepdim=True)
    out = _from_shared(torch.matmul(s_pre, pre_v.to(work)), n, heads, q)
    out = out.add_(torch.matmul(s_own, _repeat_kv(own_v, groups).to(work))).div_(total)
    return out.to(query.dtype).transpose(1, 2).contiguous()
