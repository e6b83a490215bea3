"""Attention over a prefix shared by many variants plus each variant's own keys, without
repeating the prefix per variant.

    out = split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling)

``query`` is (n*B, H, q, d), variant-major over a batch of B samples; ``pre_k``/``pre_v`` are the
batch's (B, Hkv, P, d) prefix keys/values, shared by the n variants. ``pre_blocked`` has one entry
per variant: None where its queries see the whole prefix, else the (B, q, P) bool of the prefix
keys they may not see. ``own_mask`` (n*B, 1, q, own) is what each row may see of its own keys.

Two partial softmaxes, merged by their log-sum-exp. The prefix part is a fused attention call whose
queries are the variants' (and a grouped-query head's query heads) stacked along the query axis, so
no prefix key is repeated and the large score matrix (n*q rows by P keys) is never written out;
consecutive variants that see the whole prefix share one call without a mask, and only variants
that block something get one (at a knocked-out layer, typically one variant). The own part (q by
own keys per row) is one more call of the same kernel, on rows of its own. Where no kernel returns
the log-sum-exp (``compat.attention_with_lse``: CPU only), one fused call covers both parts
instead: its keys are the prefix followed by every variant's own keys, each variant masked to its
own, which costs n*own masked columns beside P. Precision: half-precision inputs are accumulated in
float32 and the result rounded once, as in the model's own SDPA attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layerprobe.compat import attention_with_lse


def _to_shared(x: torch.Tensor, n: int, b: int, kv_heads: int) -> torch.Tensor:
    """(n*B, H, q, e) variant-major -> (B, Hkv, n*groups*q, e): per sample and key head, every
    variant's query heads stacked, variant by variant."""
    _, heads, q, e = x.shape
    groups = heads // kv_heads
    return x.view(n, b, kv_heads, groups, q, e).permute(1, 2, 0, 3, 4, 5).reshape(b, kv_heads, n * groups * q, e)


def _from_shared(x: torch.Tensor, n: int, heads: int, q: int) -> torch.Tensor:
    """Inverse of :func:`_to_shared`."""
    b, kv_heads, _, e = x.shape
    groups = heads // kv_heads
    return x.reshape(b, kv_heads, n, groups, q, e).permute(2, 0, 1, 3, 4, 5).reshape(n * b, heads, q, e)


def _runs(pre_blocked: list) -> list[tuple[int, int]]:
    """[start, stop) of consecutive variants that are all unmasked or all masked."""
    bounds = [0] + [v for v in range(1, len(pre_blocked))
                    if (pre_blocked[v] is None) != (pre_blocked[v - 1] is None)] + [len(pre_blocked)]
    return list(zip(bounds[:-1], bounds[1:]))


def _attend(query, key, value, blocked, scaling):
    """``compat.attention_with_lse`` with a bool ``blocked`` mask (None: nothing blocked), float32
    inputs; a row that sees no key gets lse -inf (the kernel writes 0 there), so the merge gives it
    no weight. None where no kernel gives the log-sum-exp."""
    mask = None if blocked is None else torch.zeros(blocked.shape, device=query.device).masked_fill_(
        blocked, float("-inf"))
    got = attention_with_lse(query, key, value, mask, scaling)
    if got is None or blocked is None:
        return got
    out, lse = got
    return out, lse.masked_fill(blocked.all(-1), float("-inf"))


def split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling, merged: bool = True):
    """(n*B, q, H, d): the layout a transformers attention function returns. ``merged=False``
    forces the single fused call (the fallback where no kernel returns the log-sum-exp)."""
    parts = _prefix_parts(query, pre_k, pre_v, pre_blocked, scaling) if merged else None
    if parts is None:
        return _fused(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling)
    return _merge(query, own_k, own_v, own_mask, parts, pre_k.shape[1], scaling)


def _prefix_parts(query, pre_k, pre_v, pre_blocked, scaling):
    """Per run of variants, (start, stop, output (B, Hkv, run*groups*q, d), log-sum-exp) of their
    attention over the prefix; None where no kernel gives the log-sum-exp."""
    nb, heads, q, d = query.shape
    b, kv_heads, p = pre_k.shape[:3]
    n, groups = nb // b, heads // kv_heads
    # in float32 whatever the model's dtype, so that the merged result is rounded once, as the
    # model's own kernel rounds it (the inputs are exact in float32)
    shared_q, pre_k, pre_v = _to_shared(query, n, b, kv_heads).float(), pre_k.float(), pre_v.float()
    rows = groups * q  # stacked query rows per variant
    parts = []
    for start, stop in _runs(pre_blocked):
        blocked = None
        if pre_blocked[start] is not None:
            blocked = torch.stack(pre_blocked[start:stop], dim=1)[:, :, None]  # (B, run, 1, q, P)
            blocked = blocked.expand(b, stop - start, groups, q, p).reshape(b, 1, (stop - start) * rows, p)
        got = _attend(shared_q[:, :, start * rows:stop * rows], pre_k, pre_v, blocked, scaling)
        if got is None:
            return None
        parts.append((start, stop, *got))
    return parts


def _merge(query, own_k, own_v, own_mask, parts, kv_heads, scaling):
    """The prefix parts (per run of variants) and the own part, weighted by their log-sum-exp."""
    nb, heads, q, d = query.shape
    n, groups = parts[-1][1], heads // kv_heads
    b = nb // n
    # the own part: per row, its query heads stacked per key head (as the prefix part stacks them)
    own_q = query.float().reshape(nb, kv_heads, groups * q, d)
    blocked = ~own_mask[:, :, None].expand(nb, 1, groups, q, own_mask.shape[-1]).reshape(nb, 1, groups * q, -1)
    own_out, own_lse = _attend(own_q, own_k.float(), own_v.float(), blocked, scaling)
    own_lse = own_lse.view(n, b, kv_heads, groups, q, 1)
    # (B, Hkv, n, groups, q, 1), the prefix kernel's order
    pre_lse = torch.cat([lse for *_, lse in parts], dim=-1).view(b, kv_heads, n, groups, q, 1)
    own_lse = own_lse.permute(1, 2, 0, 3, 4, 5)
    top = torch.maximum(pre_lse, own_lse)
    top = top.masked_fill_(top == float("-inf"), 0.0)  # a row that sees nothing: 0/0, as in one softmax
    w_pre, w_own = (pre_lse - top).exp_(), (own_lse - top).exp_()
    total = w_pre + w_own
    w_pre, w_own = w_pre.div_(total), w_own.div_(total)
    # out = own_out * w_own + prefix_out * w_pre, written straight into the (n*B, q, H, d) layout
    # the caller takes; every operand is a view in the (B, Hkv, n, groups, q, d) order
    out = torch.empty(nb, q, heads, d, dtype=query.dtype, device=query.device)
    out6 = out.view(n, b, q, kv_heads, groups, d).permute(1, 3, 0, 4, 2, 5)
    own6 = own_out.view(n, b, kv_heads, groups, q, d).permute(1, 2, 0, 3, 4, 5)
    for start, stop, pre_out, _ in parts:
        pre6 = pre_out.view(b, kv_heads, stop - start, groups, q, d)
        if query.dtype == torch.float32:
            torch.mul(own6[:, :, start:stop], w_own[:, :, start:stop], out=out6[:, :, start:stop])
            out6[:, :, start:stop].addcmul_(pre6, w_pre[:, :, start:stop])
        else:  # one rounding to the model's dtype, after the sum
            merged = torch.addcmul(own6[:, :, start:stop] * w_own[:, :, start:stop], pre6, w_pre[:, :, start:stop])
            out6[:, :, start:stop] = merged
    return out


def _fused(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, scaling):
    nb, heads, q, d = query.shape
    b, kv_heads, p = pre_k.shape[:3]
    n, groups, own = nb // b, heads // kv_heads, own_k.shape[2]
    # every variant's own keys after the prefix, variant-major: _to_shared with one query head a key head
    keys = torch.cat([pre_k, _to_shared(own_k, n, b, kv_heads)], dim=2)
    values = torch.cat([pre_v, _to_shared(own_v, n, b, kv_heads)], dim=2)
    allowed = torch.zeros(b, n, q, p + n * own, dtype=torch.bool, device=query.device)
    for v, blocked in enumerate(pre_blocked):
        allowed[:, v, :, :p] = True if blocked is None else ~blocked
    diagonal = torch.arange(n, device=query.device)
    # variant v's queries see only variant v's own keys: the diagonal blocks of the own part
    allowed[..., p:].view(b, n, q, n, own)[:, diagonal, :, diagonal] = own_mask.view(n, b, q, own)
    mask = allowed[:, :, None].expand(b, n, groups, q, p + n * own).reshape(b, 1, n * groups * q, p + n * own)
    out = F.scaled_dot_product_attention(_to_shared(query, n, b, kv_heads), keys, values, attn_mask=mask,
                                         scale=scaling)
    return _from_shared(out, n, heads, q).transpose(1, 2).contiguous()
