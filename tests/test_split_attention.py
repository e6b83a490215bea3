"""The fast engine's shared-prefix attention (a prefix shared by n variants, plus each variant's
own keys) equals plain attention over each variant's concatenated keys, computed independently in
float64; in bfloat16 it is that reference rounded once (both paths accumulate in float32). Both
paths are checked: the log-sum-exp merge of per-run prefix calls (CPU) and the single fused call
(the fallback elsewhere)."""

from __future__ import annotations

import pytest
import torch

from layerprobe.sweep.engines.split_attention import split_attention

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


@pytest.mark.parametrize("merged", [True, False], ids=["lse-merge", "fused"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2 ** -7)])
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (3, 3)])
def test_split_softmax_equals_attention_over_all_keys(dtype, tol, merged, heads, kv_heads):
    g = torch.Generator().manual_seed(0)
    n, b, q, own, p, d = 5, 2, 5, 6, 7, 8

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 2).to(dtype)

    query, own_k, own_v = rand(n * b, heads, q, d), rand(n * b, kv_heads, own, d), rand(n * b, kv_heads, own, d)
    pre_k, pre_v = rand(b, kv_heads, p, d), rand(b, kv_heads, p, d)
    # variants 0, 1 and 4 see the whole prefix (given as None), 2 and 3 block some of it: three
    # runs; one row of variant 3 sees no prefix key at all
    pre_allowed = [torch.ones(b, q, p, dtype=torch.bool) for _ in range(n)]
    pre_allowed[2] = torch.rand(b, q, p, generator=g) > 0.3
    pre_allowed[3] = torch.rand(b, q, p, generator=g) > 0.6
    pre_allowed[3][1, 2] = False
    pre_blocked = [None if bool(a.all()) else ~a for a in pre_allowed]
    assert [x is None for x in pre_blocked] == [True, True, False, False, True]
    # own keys causal (the last q of own are the queries), some blocked, never the query itself
    causal = torch.arange(own)[None, :] <= torch.arange(own - q, own)[:, None]
    own_mask = (causal & (torch.rand(n * b, q, own, generator=g) > 0.2)) | torch.eye(own, dtype=torch.bool)[-q:]
    own_mask = own_mask[:, None]
    got = split_attention(query, own_k, own_v, own_mask, pre_k, pre_v, pre_blocked, 0.35, merged=merged)
    want = _reference(query, own_k, own_v, own_mask, pre_k, pre_v, pre_allowed, 0.35)
    assert got.dtype == dtype and got.shape == want.shape
    # bf16: the float64 result rounded once to bf16 (relative step 2^-8), up to one more step
    assert torch.allclose(got.double(), want, rtol=tol, atol=tol), (got.double() - want).abs().max()


def test_merge_rounds_half_precision_once():
    """In bfloat16 the merged result is the float32 result rounded once: the prefix part is not
    rounded to bfloat16 before the merge."""
    g = torch.Generator().manual_seed(1)
    n, b, heads, q, own, p, d = 3, 1, 2, 4, 4, 64, 16

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 3).to(torch.bfloat16)

    query, own_k, own_v = rand(n * b, heads, q, d), rand(n * b, heads, own, d), rand(n * b, heads, own, d)
    pre_k, pre_v = rand(b, heads, p, d), rand(b, heads, p, d)
    own_mask = (torch.arange(own)[None, :] <= torch.arange(q)[:, None]).expand(n * b, 1, q, own)
    args = (query, own_k, own_v, own_mask, pre_k, pre_v, [None] * n, 0.25)
    got = split_attention(*args)
    in_float = split_attention(*[a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args])
    assert torch.equal(got, in_float.to(torch.bfloat16))
