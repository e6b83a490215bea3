"""The fast engine's shared-prefix attention (a prefix shared by n variants, plus each variant's
own keys, in one fused call) equals plain attention over each variant's concatenated keys,
computed independently in float64; in bfloat16 it is that reference rounded once (the kernel
accumulates in float32)."""

from __future__ import annotations

import pytest
import torch

from layerprobe.sweep.engines.split_attention import split_attention, stacked

pytestmark = pytest.mark.core


def _reference(query, own_k, own_v, own_mask, pre_k, pre_v, pre_allowed, scaling):
    """Row by row: repeat the prefix per variant and the key heads per query head, one softmax."""
    nb, heads, q, d = query.shape
    b, kv_heads = pre_k.shape[:2]
    groups = heads // kv_heads
    out = torch.empty(nb, heads, q, d, dtype=torch.float64)
    for row in range(nb):
        variant, sample = divmod(row, b)
        keys = torch.cat([pre_k[sample], own_k[row]], dim=1).double().repeat_interleave(groups, dim=0)
        values = torch.cat([pre_v[sample], own_v[row]], dim=1).double().repeat_interleave(groups, dim=0)
        allowed = torch.cat([pre_allowed[variant][sample], own_mask[row, 0]], dim=-1)
        scores = (query[row].double() @ keys.transpose(-1, -2)) * scaling
        scores = scores.masked_fill(~allowed, float("-inf"))
        out[row] = torch.softmax(scores, dim=-1) @ values
    return out.transpose(1, 2)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2 ** -7)])
def test_split_softmax_equals_attention_over_all_keys(dtype, tol):
    g = torch.Generator().manual_seed(0)
    n, b, heads, kv_heads, q, own, p, d = 3, 2, 4, 2, 5, 6, 7, 8

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 2).to(dtype)

    query, own_k, own_v = rand(n * b, heads, q, d), rand(n * b, kv_heads, own, d), rand(n * b, kv_heads, own, d)
    pre_k, pre_v = rand(b, kv_heads, p, d), rand(b, kv_heads, p, d)
    # each variant blocks its own prefix keys; own keys causal (the last q of own are the queries)
    pre_allowed = [torch.rand(b, q, p, generator=g) > 0.3 * v for v in range(n)]
    causal = torch.arange(own)[None, :] <= torch.arange(own - q, own)[:, None]
    own_mask = (causal & (torch.rand(n * b, q, own, generator=g) > 0.2)) | torch.eye(own, dtype=torch.bool)[-q:]
    own_mask = own_mask[:, None]
    got = split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, ~stacked(pre_allowed), 0.35)
    want = _reference(query, own_k, own_v, own_mask, pre_k, pre_v, pre_allowed, 0.35)
    assert got.dtype == dtype and got.shape == want.shape
    # bf16: the float64 result rounded once to bf16 (relative step 2^-8), up to one more step
    assert torch.allclose(got.double(), want, rtol=tol, atol=tol), (got.double() - want).abs().max()
