"""Attention over a prefix shared by many variants plus each variant's own keys, without
copying the prefix per variant: softmax over the concatenated scores, computed in two parts.

    out = split_attention(module, query, own_k, own_v, own_mask, pre_k, pre_v, pre_mask, scaling)

``query`` is (n*B, H, q, d), variant-major over a batch of B samples; ``pre_k``/``pre_v`` are the
batch's (B, Hkv, P, d) prefix keys/values, shared by the n variants. The n variants' queries are
stacked along the query axis so one matmul per sample covers them all.
"""

from __future__ import annotations

import torch


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def split_attention(module, query, own_k, own_v, own_mask, pre_k, pre_v, pre_mask, scaling):
    nb, heads, q, d = query.shape
    b, p = pre_k.shape[0], pre_k.shape[2]
    n = nb // b
    groups = heads // pre_k.shape[1]
    work = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    qf = query.to(work)
    # prefix scores: (B, H, n*q, P), one matmul per sample for all variants
    q_shared = qf.view(n, b, heads, q, d).permute(1, 2, 0, 3, 4).reshape(b, heads, n * q, d)
    s_pre = torch.matmul(q_shared, _repeat_kv(pre_k, groups).to(work).transpose(-1, -2)) * scaling
    s_pre = s_pre.view(b, heads, n, q, p).permute(2, 0, 1, 3, 4).reshape(nb, heads, q, p)
    s_own = torch.matmul(qf, _repeat_kv(own_k, groups).to(work).transpose(-1, -2)) * scaling
    neg = torch.finfo(work).min
    s_pre = s_pre.masked_fill(~pre_mask, neg)
    s_own = s_own.masked_fill(~own_mask, neg)
    probs = torch.softmax(torch.cat([s_pre, s_own], dim=-1), dim=-1)
    p_pre, p_own = probs[..., :p], probs[..., p:]
    p_pre = p_pre.reshape(n, b, heads, q, p).permute(1, 2, 0, 3, 4).reshape(b, heads, n * q, p)
    out_pre = torch.matmul(p_pre, _repeat_kv(pre_v, groups).to(work))
    out_pre = out_pre.view(b, heads, n, q, d).permute(2, 0, 1, 3, 4).reshape(nb, heads, q, d)
    out = out_pre + torch.matmul(p_own, _repeat_kv(own_v, groups).to(work))
    return out.to(query.dtype).transpose(1, 2).contiguous(), None
