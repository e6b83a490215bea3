"""The fast sweep engine: one baseline prefill per batch, whose prefix key/value cache every
layer variant shares read-only; each variant recomputes only the text suffix, from its first
knocked-out layer on, stacked (as many per pass as ``variants_per_batch`` says or, with
``"auto"``, as fit the memory budget), and each stack decodes together with the baseline.

    engine = FastEngine("image->text", variants_per_batch="auto")   # as many as fit the free memory
    answers = engine.run_batch(loaded, inputs, sweep_conditions(32), max_new_tokens=3)

Why it is exact: a text->image knockout blocks only queries after the image, so every position
before the first post-image text token is unchanged at every layer, and nothing below the first
knocked-out layer changes at all. Variant l therefore starts at layer l from the baseline's
suffix hidden states, over the baseline's prefix keys and values. The decoder layers are the
model's own modules, called with their own rotary embeddings and a 4D mask built here (causal,
padding, the model's permanent structure and the knockout), so no layer code is duplicated.
The same holds while decoding: as long as a variant's tokens are the baseline's, its states below
its first knocked-out layer are the baseline's, so it joins the decode batch only there.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from layerprobe.compat import cache_layer, call_decoder_layer, captured_kwargs, output_cache
from layerprobe.sweep.conditions import BASELINE, Condition
from layerprobe.core.dispatch import controller
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.sweep.engines.memory import check_budget, memory_budget, variant_cost, variants_that_fit
from layerprobe.sweep.engines.split_attention import split_attention
from layerprobe.core.layout import TokenLayout
from layerprobe.errors import ConfigError
from layerprobe.core.generation import Answer, sync, decode_new_tokens, greedy_kwargs
from layerprobe.core.finite_logits import LogitsWatch

log = logging.getLogger(__name__)
FAST_EDGES = ("image->text", "image->last", "image->question", "image->prompt")


def fast_engine_reason(edges: str, adapter=None) -> str | None:
    """None when the fast engine is exact for ``edges`` (and the model family); otherwise why not."""
    if edges not in FAST_EDGES:
        return f"edges={edges!r} may change positions before the first post-image text token"
    if adapter is not None and adapter.fast_sweep_reason:
        return f"{adapter.family}: {adapter.fast_sweep_reason}"
    return None


class _NewKV:
    """What a decoder layer's attention sees as its cache when the rows have no keys of their own
    yet (the suffix pass): it keeps the new keys/values (the shared prefix reaches the attention
    function through the controller)."""

    new = None

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.new = (key, value)
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class _RowStore:
    """Per decoder layer, each decoded row's own keys/values (its suffix, then its generated
    tokens) in one buffer sized for the whole answer, written in place: no per-step copies.
    Rows are variant-major blocks of B samples; block 0 is the baseline."""

    def __init__(self, keys: list, values: list, length: int):
        self.keys, self.values = keys, values
        self.length = [length] * len(keys)

    @classmethod
    def for_rows(cls, cache, n: int, P: int, max_new_tokens: int) -> "_RowStore":
        """Every block starts as the baseline's suffix: a variant's keys below its first
        knocked-out layer are the baseline's (the suffix pass overwrites the rest)."""
        keys, values = [], []
        for j in range(len(cache.layers)):
            for src, out in zip(cache_layer(cache, j), (keys, values)):
                b, h, t, d = src.shape
                buf = src.new_empty(n, b, h, t - P + max_new_tokens - 1, d)
                buf[:, :, :, :t - P] = src[None, :, :, P:]
                out.append(buf.view(n * b, h, -1, d))
        return cls(keys, values, keys[0].shape[2] - max_new_tokens + 1 if keys else 0)

    def write_suffix(self, j: int, rows: slice, key, value) -> None:
        self.keys[j][rows, :, :key.shape[2]] = key
        self.values[j][rows, :, :value.shape[2]] = value

    def cache(self, j: int, rows) -> "_RowCache":
        return _RowCache(self, j, rows)

    def copy_baseline(self, j: int, rows, batch: int) -> None:
        """The last written position of ``rows`` (a slice of whole blocks, or row indices; not
        computed at layer ``j``) from the baseline's row of the same sample: equal while their
        tokens are the baseline's."""
        t = self.length[j] - 1
        for buf in (self.keys[j], self.values[j]):
            if isinstance(rows, slice):
                block = buf[rows, :, t]
                block.view(-1, batch, *block.shape[1:]).copy_(buf[:batch, :, t][None])
            else:
                buf[rows, :, t] = buf[rows % batch, :, t]


class _RowCache:
    """A decoder layer's cache during decoding: the new token's key/value goes into the store at
    the next position of ``rows`` (a slice: views, no copies; or row indices), and the layer sees
    the rows' keys so far."""

    def __init__(self, store: _RowStore, j: int, rows):
        self.store, self.j, self.rows = store, j, rows

    def update(self, key, value, layer_idx, *args, **kwargs):
        store, j, rows = self.store, self.j, self.rows
        t = store.length[j]
        store.length[j] += 1
        keys, values = store.keys[j], store.values[j]
        keys[rows, :, t:t + 1] = key
        values[rows, :, t:t + 1] = value
        return keys[rows, :, :t + 1], values[rows, :, :t + 1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class FastEngine:
    name = "fast"

    def __init__(self, edges: str = "image->text", variants_per_batch: int | str | None = None,
                 memory_budget_gb: float | None = None, **_):
        if variants_per_batch is not None and variants_per_batch != "auto" and (
                isinstance(variants_per_batch, bool) or not isinstance(variants_per_batch, int) or variants_per_batch < 1):
            raise ConfigError(f"variants_per_batch={variants_per_batch!r}: must be a positive integer, 'auto' "
                              "(as many as fit sweep.memory_budget_gb) or null (all)")
        self.edges = edges
        self.variants_per_batch = variants_per_batch
        self.memory_budget_gb = check_budget(memory_budget_gb)
        self.last_group_size: int | None = None  # variants stacked in the last batch's passes

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run_batch(self, loaded, inputs: dict, conditions: list[Condition], max_new_tokens: int
                  ) -> dict[tuple, list[Answer]]:
        reason = fast_engine_reason(self.edges, loaded.adapter)
        if reason is not None:
            if getattr(self, "_warned", None) != reason:
                log.warning("engine=fast falls back to naive: %s", reason)
                self._warned = reason
            return NaiveEngine(self.edges).run_batch(loaded, inputs, conditions, max_new_tokens)
        ctrl = controller(loaded)
        # The edit keeps layerprobe's attention function installed (it serves the shared
        # prefix) and the layout tracked; it blocks nothing itself.
        with ctrl.edit(_NoEdit()):
            return self._run(loaded, ctrl, inputs, conditions, max_new_tokens)

    def _run(self, loaded, ctrl, inputs, conditions, max_new_tokens):
        model = loaded.model
        lm = loaded.adapter.language_model(model)
        device = loaded.device
        sync(device)
        start = time.perf_counter()
        with captured_kwargs(lm, "position_ids") as captured:
            out = model(**inputs, use_cache=True, output_hidden_states=True, return_dict=True, logits_to_keep=1)
        layout = ctrl.layout_for(inputs["input_ids"].shape[1])
        hidden, cache = out.hidden_states, output_cache(out)
        T = inputs["input_ids"].shape[1]
        pos = captured["position_ids"]
        if pos is None:
            pos = torch.arange(T, device=device)[None].expand(inputs["input_ids"].shape[0], T)
        P = int(layout.first_text.min())
        self._watch = LogitsWatch()   # NaN/inf logits, per condition and sample
        base_first = self._watch.pick(out.logits[:, -1], [BASELINE.key])
        sync(device)
        prefill_s = time.perf_counter() - start

        variants = [c for c in conditions if c.name != "baseline"]
        answers, tokens = {}, {}
        size = self._group_size(loaded, layout, P, len(variants), max_new_tokens, hidden, cache)
        for group in self._groups(variants, size):
            # each group decodes with the baseline's rows: below a variant's first knocked-out
            # layer its states are the baseline's while its tokens are (see _decode)
            rows = [BASELINE, *group]
            store = _RowStore.for_rows(cache, len(rows), P, max_new_tokens)
            firsts = self._suffix_pass(loaded, lm, ctrl, group, hidden, cache, layout, pos, P, store)
            out = self._decode(loaded, lm, ctrl, rows, [base_first, *firsts], cache, store, layout, pos, P,
                               max_new_tokens)
            tokens.update({c.key: t for c, t in zip(rows, out)})
            del store  # before the next group's is allocated
        if not variants:
            store = _RowStore.for_rows(cache, 1, P, max_new_tokens)
            out = self._decode(loaded, lm, ctrl, [BASELINE], [base_first], cache, store, layout, pos, P,
                               max_new_tokens)
            tokens[BASELINE.key] = out[0]
        sync(device)
        total = time.perf_counter() - start
        for c in conditions:
            texts, counts = decode_new_tokens(loaded, tokens[c.key])
            # Shared work has no per-variant time: honest per-layer latency is measured apart.
            bad = self._watch.flags(c.key, len(texts))
            answers[c.key] = [Answer(t, prefill_s, total, n, b) for t, n, b in zip(texts, counts, bad)]
        return answers

    def _group_size(self, loaded, layout, P, variants, max_new_tokens, hidden, cache) -> int:
        if self.variants_per_batch != "auto":
            size = self.variants_per_batch or max(1, variants)
        else:
            B, T = layout.valid.shape
            keys = cache_layer(cache, 0)[0]
            cost = variant_cost(loaded.adapter.text_config(loaded.model), len(loaded.decoder_layers), B, T - P, P,
                                max_new_tokens, keys.dtype)
            # an explicit budget covers the baseline's prefill too; free memory is asked after it
            held = 0 if self.memory_budget_gb is None else (
                sum(t.nbytes for t in hidden) + sum(a.nbytes + b.nbytes for a, b in
                                                    (cache_layer(cache, j) for j in range(len(cache.layers)))))
            size = variants_that_fit(memory_budget(loaded.device, self.memory_budget_gb), held, cost, variants)
            if size < variants and size != self.last_group_size:
                log.info("variants_per_batch=auto: %d of %d layer variants per pass fit the memory budget",
                         size, variants)
        self.last_group_size = size
        return size

    @staticmethod
    def _groups(variants, size):
        ordered = sorted(variants, key=lambda c: min(c.knocked_out))
        return [ordered[i:i + size] for i in range(0, len(ordered), size)]

    # ------------------------------------------------------------------------------------
    def _masks(self, ctrl, layout: TokenLayout, q_pos, P: int):
        """Per layer ``j``, for rows ``conds``: (per variant, None or the prefix keys it may not
        see (B, q, P); own allowed (n*B, 1, q, kv-P)). Causal, padding and the knockout are built
        once per pass; only the model's permanent structure (if any) is asked per layer."""
        allowed = layout.allowed(q_pos)
        knocked = allowed & ~layout.blocked_by(self.edges, q_pos)

        def prefix_blocked(rows):
            return None if bool(rows[..., :P].all()) else ~rows[..., :P]
        fixed = prefix_blocked(allowed), prefix_blocked(knocked)

        def at(j, conds):
            plain, knock = allowed, knocked
            pre_plain, pre_knock = fixed
            permanent = ctrl.blocked(j, layout, q_pos)
            if permanent is not None:
                plain, knock = plain & ~permanent, knock & ~permanent
                pre_plain, pre_knock = prefix_blocked(plain), prefix_blocked(knock)
            hit = [j in c.knocked_out for c in conds]
            return ([pre_knock if h else pre_plain for h in hit],
                    torch.cat([(knock if h else plain)[..., P:] for h in hit], dim=0)[:, None])
        return at

    @contextlib.contextmanager
    def _shared(self, ctrl, cache, layer, P, pre_blocked):
        """Layer ``layer`` attends over the baseline's prefix (shared) plus what it is given."""
        keys, values = cache_layer(cache, layer)
        pre_k, pre_v = keys[:, :, :P], values[:, :, :P]

        def attention(module, query, key, value, own_mask, **kwargs):
            return split_attention(query, key, value, own_mask, pre_k, pre_v, pre_blocked,
                                   kwargs.get("scaling", module.scaling)), None

        with ctrl.overriding(attention):
            yield

    def _layer(self, loaded, lm, ctrl, cache, j, P, x, positions, masks, own):
        """Decoder layer ``j`` on variant-major rows ``x``, attending over the shared prefix plus
        the rows' own keys/values, which ``own`` (a cache-like object) holds."""
        pe = loaded.adapter.rotary_embeddings(lm, x, positions, j)
        pre_blocked, own_mask = masks
        with self._shared(ctrl, cache, j, P, pre_blocked):
            return call_decoder_layer(loaded.decoder_layers[j], x, attention_mask=own_mask, position_embeddings=pe,
                                      position_ids=positions, cache=own)

    def _suffix_pass(self, loaded, lm, ctrl, group, hidden, cache, layout, pos, P, store):
        """Run each variant's suffix from its first knocked-out layer to the top, batched; their
        keys/values go into ``store`` (blocks 1..), their first answer tokens are returned."""
        B, T = layout.valid.shape
        starts = [min(c.knocked_out) for c in group]  # ascending: the active variants are a prefix
        L = len(loaded.decoder_layers)
        q_pos = torch.arange(P, T, device=hidden[0].device)
        masks = self._masks(ctrl, layout, q_pos, P)
        x = hidden[0][:0, P:]
        with ctrl.passthrough():
            for j in range(starts[0], L):
                entering = sum(1 for s in starts if s == j)
                if entering:
                    x = torch.cat([x] + [hidden[j][:, P:]] * entering, dim=0)
                n = x.shape[0] // B
                own = _NewKV()
                x = self._layer(loaded, lm, ctrl, cache, j, P, x, _stack_positions(pos[..., P:], n),
                                masks(j, group[:n]), own)
                store.write_suffix(j, slice(B, (n + 1) * B), *own.new)
        logits = loaded.model.get_output_embeddings()(lm.norm(x[:, -1]))
        return list(self._watch.pick(logits, [c.key for c in group]).view(len(group), B))

    def _decode(self, loaded, lm, ctrl, rows, firsts, cache, store, layout, pos, P, max_new_tokens):
        """Greedy decode of ``rows`` (the baseline first) at once over the shared prefix. A variant
        whose tokens so far are the baseline's (for every sample) has the baseline's states below
        its first knocked-out layer: it joins the batch only there."""
        n, (B, T) = len(rows), layout.valid.shape
        L = len(loaded.decoder_layers)
        eos = greedy_kwargs(loaded, 1)["eos_token_id"]
        eos = torch.tensor(eos if isinstance(eos, list) else [eos], device=pos.device)
        pad = greedy_kwargs(loaded, 1)["pad_token_id"]
        tokens = [torch.stack(firsts)]  # (n, B)
        done = torch.isin(tokens[0], eos)
        starts = torch.tensor([min(c.knocked_out, default=0) for c in rows])
        embed = loaded.model.get_input_embeddings()
        full_layout = layout
        sample = torch.arange(B, device=pos.device)
        with ctrl.passthrough():
            for step in range(1, max_new_tokens):
                if bool(done.all()):
                    break
                history = torch.stack(tokens, dim=-1)  # (n, B, steps)
                same = (history == history[:1]).flatten(1).all(1).cpu()
                begin = torch.where(same, starts, 0).tolist()
                h = embed(tokens[-1].reshape(n * B))[:, None]
                full_layout = full_layout.extend(1)
                q_pos = torch.tensor([T + step - 1], device=h.device)
                masks = self._masks(ctrl, full_layout, q_pos, P)
                step_pos = pos[..., -1:] + step
                for j in range(L):
                    active = [v for v in range(n) if begin[v] <= j]
                    k = len(active)
                    # the usual case, the first k blocks, is a slice: the store is read and
                    # written through views
                    sel = slice(0, k * B) if active[-1] == k - 1 else (
                        torch.tensor(active, device=h.device)[:, None] * B + sample).reshape(-1)
                    y = self._layer(loaded, lm, ctrl, cache, j, P, h if k == n else h[sel],
                                    _stack_positions(step_pos, k), masks(j, [rows[v] for v in active]),
                                    store.cache(j, sel))
                    if k == n:
                        h = y
                        continue
                    h = y[:B].repeat(n, 1, 1)
                    h[sel] = y
                    idle = slice(k * B, n * B) if isinstance(sel, slice) else (torch.tensor(
                        [v for v in range(n) if begin[v] > j], device=h.device)[:, None] * B + sample).reshape(-1)
                    store.copy_baseline(j, idle, B)
                logits = loaded.model.get_output_embeddings()(lm.norm(h[:, -1]))
                nxt = self._watch.pick(logits, [c.key for c in rows], live=~done).reshape(n, B)
                nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                tokens.append(nxt)
                done = done | torch.isin(nxt, eos)
        return [t for t in torch.stack(tokens, dim=-1)]  # n x (B, steps)


def _stack_positions(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Positions of n variant-major blocks: the batch axis is 0 for (B, t) positions, 1 for
    M-RoPE's (3, B, t)."""
    return torch.cat([pos] * n, dim=-2)


class _NoEdit:
    def layers(self):
        return set()

    def blocked(self, layer, layout, q_pos):
        return None
