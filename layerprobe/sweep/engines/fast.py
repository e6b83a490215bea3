"""The fast sweep engine: one baseline prefill per batch, whose prefix key/value cache every
layer variant shares read-only; each variant recomputes only the text suffix, from its first
knocked-out layer on, stacked (as many per pass as ``variants_per_batch`` says or, with
``"auto"``, as fit the memory budget), and each stack decodes together with the baseline.

    engine = FastEngine("image->text", variants_per_batch="auto")   # as many as fit the free memory
    answers = engine.run_batch(loaded, inputs, sweep_conditions(32), max_new_tokens=3)

Why it is exact: an edge set registered as fast edits only queries after the image (whatever keys
it blocks), so every position before the first post-image text token is unchanged at every layer,
and nothing below the first knocked-out layer changes at all. Variant l therefore starts at layer
l from the baseline's suffix hidden states, over the baseline's prefix keys and values. The
decoder layers are the model's own modules (found, like its norm, head and rotary embeddings,
through its adapter), called with their own rotary embeddings and a 4D mask built here (causal,
padding, the model's permanent structure and the knockout), so no layer code is duplicated.
The same holds while decoding: as long as a variant's tokens are the baseline's, its states below
its first knocked-out layer are the baseline's, so it joins the decode batch only there.

A condition may bring its own edge set (a specificity control, ``layerprobe.core.controls``): the
same argument holds for any fast edge set, so a stack mixes knockouts and controls, each row
masked by its own edge set's pairs (built once per pass). The first answer step's probabilities
(``layerprobe.core.first_step``) come from the baseline prefill's last logits and each variant's
suffix-pass logits: no forward pass beyond the answers'.
"""

from __future__ import annotations

import logging
import time

import torch

from layerprobe.compat import call_decoder_layer, captured_kwargs, output_cache
from layerprobe.core.dispatch import controller
from layerprobe.core.edges import EdgeSet, edge_set
from layerprobe.core.generation import Answer, decode_new_tokens, greedy_kwargs, sync
from layerprobe.core.finite_logits import LogitsWatch
from layerprobe.core.first_step import choose_reference, first_step_fields
from layerprobe.core.layout import TokenLayout
from layerprobe.errors import ConfigError
from layerprobe.sweep.conditions import BASELINE, Condition, edge_sets_of
from layerprobe.sweep.engines.memory import check_budget, memory_budget, variant_cost, variants_that_fit
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.sweep.engines.row_store import NewKeysValues, RowStore
from layerprobe.sweep.engines.split_attention import split_attention

log = logging.getLogger(__name__)


def fast_engine_reason(edges: str | EdgeSet, adapter=None) -> str | None:
    """None when the fast engine is exact for ``edges`` (and the model family); otherwise why not."""
    edges = edge_set(edges)
    if not edges.fast:
        return (f"edges={edges.name!r}: its definition says the fast engine is not exact for it (it edits "
                "a position before the first post-image text token, or weights keys softly)")
    if adapter is not None and adapter.fast_sweep_reason:
        return f"{adapter.family}: {adapter.fast_sweep_reason}"
    return None


class _SharedPrefix:
    """The attention of every decoder-layer call the engine makes (``Controller.replacing``): over
    the baseline's prefix keys/values of the layer being run, shared read-only by every row, plus
    the keys the call is given; ``at`` names the layer and what each variant may not see of the
    prefix before the call."""

    def __init__(self, adapter, kv: list, P: int):
        self.adapter, self.kv, self.P = adapter, kv, P
        self.layer, self.pre_blocked = 0, []

    def at(self, layer: int, pre_blocked: list) -> None:
        self.layer, self.pre_blocked = layer, pre_blocked

    def __call__(self, module, query, key, value, own_mask, **kwargs):
        keys, values = self.kv[self.layer]
        out = split_attention(query, key, value, own_mask, keys[:, :, :self.P], values[:, :, :self.P],
                              self.pre_blocked, self.adapter.attention_scaling(module))
        return out, None


class FastEngine:
    name = "fast"

    def __init__(self, edges: str | EdgeSet = "image->text", variants_per_batch: int | str | None = None,
                 memory_budget_gb: float | None = None, **_):
        if variants_per_batch is not None and variants_per_batch != "auto" and (
                isinstance(variants_per_batch, bool) or not isinstance(variants_per_batch, int) or variants_per_batch < 1):
            raise ConfigError(f"variants_per_batch={variants_per_batch!r}: must be a positive integer, 'auto' "
                              "(as many as fit sweep.memory_budget_gb) or null (all)")
        self.edges = edge_set(edges)
        self.variants_per_batch = variants_per_batch
        self.memory_budget_gb = check_budget(memory_budget_gb)
        self.last_group_size: int | None = None  # variants stacked in the last batch's passes

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run_batch(self, loaded, inputs: dict, conditions: list[Condition], max_new_tokens: int,
                  references=None, scores: bool = True) -> dict[tuple, list[Answer]]:
        """As ``NaiveEngine.run_batch``: the first step's probabilities come from the baseline
        prefill's last logits and each variant's suffix-pass logits (no extra forward pass)."""
        reasons = (fast_engine_reason(e, loaded.adapter) for e in edge_sets_of(conditions, self.edges))
        reason = next(filter(None, reasons), None)
        if reason is not None:
            if getattr(self, "_warned", None) != reason:
                log.warning("engine=fast falls back to naive: %s", reason)
                self._warned = reason
            return NaiveEngine(self.edges).run_batch(loaded, inputs, conditions, max_new_tokens, references, scores)
        return self._run(loaded, controller(loaded), inputs, conditions, max_new_tokens, references, scores)

    def _run(self, loaded, ctrl, inputs, conditions, max_new_tokens, references, scores):
        model, adapter, device = loaded.model, loaded.adapter, loaded.device
        sync(device)
        start = time.perf_counter()
        with captured_kwargs(adapter.text_model(model), "position_ids") as captured:
            out = model(**inputs, use_cache=True, output_hidden_states=True, return_dict=True, logits_to_keep=1)
        B, T = inputs["input_ids"].shape
        layout = ctrl.layout_of(inputs["input_ids"], inputs.get("attention_mask"))
        hidden, kv = out.hidden_states, adapter.cached_keys_values(output_cache(out))
        pos = captured["position_ids"]
        if pos is None:
            pos = torch.arange(T, device=device)[None].expand(B, T)
        P = int(layout.first_text.min())
        for edges in edge_sets_of(conditions, self.edges):
            if bool(edges.queries(layout)[:, :P].any()):
                raise ConfigError(f"edges={edges.name!r} is registered as fast, but it edits a position before "
                                  "the first post-image text token: register it with fast=False")
        watch = LogitsWatch()   # NaN/inf logits, per condition and sample
        base_first = watch.pick(out.logits[:, -1], [BASELINE.key])
        ref_ids = choose_reference(out.logits[:, -1], references) if scores else None
        first_step = {BASELINE.key: first_step_fields(out.logits[:, -1], base_first, ref_ids)} if scores else {}
        sync(device)
        prefill_s = time.perf_counter() - start

        run = _Run(self, loaded, ctrl, layout, hidden, kv, pos, P, max_new_tokens, watch)
        variants = [c for c in conditions if c.name != "baseline"]
        size = self._group_size(loaded, layout, P, len(variants), max_new_tokens, hidden, kv)
        tokens = {}
        with ctrl.replacing(run.shared):
            # each group decodes with the baseline's rows: below a variant's first knocked-out
            # layer its states are the baseline's while its tokens are (see _Run.decode)
            for group in self._groups(variants, size) or [[]]:
                rows = [BASELINE, *group]
                store = RowStore.for_rows(kv, len(rows), P, max_new_tokens)
                logits = run.suffix_pass(group, store) if group else []
                if scores:
                    first_step.update({c.key: first_step_fields(lg, base_first, ref_ids) for c, lg in zip(group, logits)})
                firsts = [lg.argmax(-1) for lg in logits]
                tokens.update({c.key: t for c, t in zip(rows, run.decode(rows, [base_first, *firsts], store))})
                del store  # before the next group's is allocated
        sync(device)
        total = time.perf_counter() - start
        answers = {}
        for c in conditions:
            texts, counts = decode_new_tokens(loaded, tokens[c.key])
            # Shared work has no per-variant time: honest per-layer latency is measured apart.
            fields = first_step.get(c.key, [None] * len(texts))
            bad = watch.flags(c.key, len(texts))
            answers[c.key] = [Answer(t, prefill_s, total, n, b, f) for t, n, b, f in zip(texts, counts, bad, fields)]
        return answers

    def _group_size(self, loaded, layout, P, variants, max_new_tokens, hidden, kv) -> int:
        if self.variants_per_batch != "auto":
            size = self.variants_per_batch or max(1, variants)
        else:
            B, T = layout.valid.shape
            cost = variant_cost(loaded.adapter.text_config(loaded.model), len(loaded.decoder_layers), B, T - P, P,
                                max_new_tokens, kv[0][0].dtype)
            # an explicit budget covers the baseline's prefill too; free memory is asked after it
            held = 0 if self.memory_budget_gb is None else (
                sum(t.nbytes for t in hidden) + sum(k.nbytes + v.nbytes for k, v in kv))
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


class _Run:
    """One batch of the fast engine after the baseline's prefill: its layout, hidden states and
    key/value cache (per layer), positions and prefix length ``P``."""

    def __init__(self, engine: FastEngine, loaded, ctrl, layout: TokenLayout, hidden, kv, pos, P: int,
                 max_new_tokens: int, watch: LogitsWatch):
        self.edges, self.loaded, self.ctrl, self.layout = engine.edges, loaded, ctrl, layout
        self.hidden, self.pos, self.P, self.max_new_tokens = hidden, pos, P, max_new_tokens
        self.watch = watch
        adapter, model = loaded.adapter, loaded.model
        self.layers = loaded.decoder_layers
        self.final_norm, self.lm_head = adapter.final_norm(model), adapter.lm_head(model)
        self.shared = _SharedPrefix(adapter, kv, P)

    def masks(self, layout: TokenLayout, q_pos, conditions):
        """Per layer ``j``, for rows ``conds``: (per variant, None or the prefix keys it may not
        see (B, q, P); own allowed (n*B, 1, q, kv-P)). Causal, padding and each edge set's blocks
        (the knockout's, a control's) are built once per pass for every edge set of
        ``conditions``; only the model's permanent structure (if any) is asked per layer."""
        P = self.P
        allowed = layout.allowed(q_pos)
        edited = {e.name: allowed & ~e.blocked(layout, q_pos) for e in edge_sets_of(conditions, self.edges)}

        def prefix_blocked(rows):
            return None if bool(rows[..., :P].all()) else ~rows[..., :P]
        fixed = {None: prefix_blocked(allowed), **{name: prefix_blocked(rows) for name, rows in edited.items()}}

        def at(j, conds):
            # per row: None (unedited at j) or the name of the edge set it applies at j
            hit = [(c.edges or self.edges).name if j in c.knocked_out else None for c in conds]
            rows, prefix = {None: allowed, **edited}, fixed
            permanent = self.ctrl.blocked(j, layout, q_pos)
            if permanent is not None:
                rows = {name: r & ~permanent for name, r in rows.items() if name is None or name in hit}
                prefix = {name: prefix_blocked(r) for name, r in rows.items()}
            return [prefix[h] for h in hit], torch.cat([rows[h][..., P:] for h in hit], dim=0)[:, None]
        return at

    def layer(self, j, x, positions, masks, own):
        """Decoder layer ``j`` on variant-major rows ``x``, attending over the shared prefix plus
        the rows' own keys/values, which ``own`` (a cache-like object) holds."""
        pe = self.loaded.adapter.position_embeddings(self.loaded.model, x, positions, j)
        pre_blocked, own_mask = masks
        self.shared.at(j, pre_blocked)
        return call_decoder_layer(self.layers[j], x, attention_mask=own_mask, position_embeddings=pe,
                                  position_ids=positions, cache=own)

    def logits(self, x) -> torch.Tensor:
        return self.lm_head(self.final_norm(x[:, -1]))

    def next_tokens(self, x, keys, live=None) -> torch.Tensor:
        """Greedy next tokens of rows ``x`` (``keys``: their conditions, variant-major), NaN/inf
        logits noted per condition and sample (``live``: the samples still decoding)."""
        return self.watch.pick(self.logits(x), keys, live)

    def suffix_pass(self, group, store: RowStore):
        """Run each variant's suffix from its first knocked-out layer to the top, batched; their
        keys/values go into ``store`` (blocks 1..); returns their first-step logits (variants, B, V)."""
        B, T = self.layout.valid.shape
        P, hidden = self.P, self.hidden
        starts = [min(c.knocked_out) for c in group]  # ascending: the active variants are a prefix
        masks = self.masks(self.layout, torch.arange(P, T, device=hidden[0].device), group)
        x = hidden[0][:0, P:]
        for j in range(starts[0], len(self.layers)):
            entering = sum(1 for s in starts if s == j)
            if entering:
                x = torch.cat([x] + [hidden[j][:, P:]] * entering, dim=0)
            n = x.shape[0] // B
            own = NewKeysValues()
            x = self.layer(j, x, _stack_positions(self.pos[..., P:], n), masks(j, group[:n]), own)
            store.write_suffix(j, slice(B, (n + 1) * B), *own.new)
        logits = self.logits(x).view(len(group), B, -1)
        self.watch.note(logits, [c.key for c in group])
        return logits

    def decode(self, rows, firsts, store: RowStore):
        """Greedy decode of ``rows`` (the baseline first) at once over the shared prefix; returns
        each row's tokens (B, steps)."""
        loaded, B = self.loaded, self.layout.valid.shape[0]
        eos = greedy_kwargs(loaded, 1)["eos_token_id"]
        eos = torch.tensor(eos if isinstance(eos, list) else [eos], device=self.pos.device)
        pad = greedy_kwargs(loaded, 1)["pad_token_id"]
        tokens = [torch.stack(firsts)]  # (n, B)
        done = torch.isin(tokens[0], eos)
        starts = torch.tensor([min(c.knocked_out, default=0) for c in rows])
        embed = loaded.adapter.token_embeddings(loaded.model)
        layout = self.layout
        for step in range(1, self.max_new_tokens):
            if bool(done.all()):
                break
            history = torch.stack(tokens, dim=-1)  # (n, B, steps)
            same = (history == history[:1]).flatten(1).all(1).cpu()
            layout = layout.extend(1)
            h = self.step(rows, embed(tokens[-1].reshape(-1))[:, None], torch.where(same, starts, 0).tolist(),
                          layout, step, store)
            nxt = self.next_tokens(h, [c.key for c in rows], live=~done).reshape(len(rows), B)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            tokens.append(nxt)
            done = done | torch.isin(nxt, eos)
        return list(torch.stack(tokens, dim=-1))  # n x (B, steps)

    def step(self, rows, h, begin: list[int], layout: TokenLayout, step: int, store: RowStore):
        """One decode step of every row through every layer. A variant whose tokens so far are the
        baseline's (for every sample) has the baseline's states below its first knocked-out layer:
        it joins the batch only there (``begin``), its keys below copied from the baseline's row."""
        n, B, T = len(rows), *self.layout.valid.shape
        sample = torch.arange(B, device=h.device)
        masks = self.masks(layout, torch.tensor([T + step - 1], device=h.device), rows)
        step_pos = self.pos[..., -1:] + step
        for j in range(len(self.layers)):
            active = [v for v in range(n) if begin[v] <= j]
            k = len(active)
            # the usual case, the first k blocks, is a slice: the store is read and written through views
            sel = slice(0, k * B) if active[-1] == k - 1 else (
                torch.tensor(active, device=h.device)[:, None] * B + sample).reshape(-1)
            y = self.layer(j, h if k == n else h[sel], _stack_positions(step_pos, k),
                           masks(j, [rows[v] for v in active]), store.cache(j, sel))
            if k == n:
                h = y
                continue
            h = y[:B].repeat(n, 1, 1)
            h[sel] = y
            idle = slice(k * B, n * B) if isinstance(sel, slice) else (torch.tensor(
                [v for v in range(n) if begin[v] > j], device=h.device)[:, None] * B + sample).reshape(-1)
            store.copy_baseline(j, idle, B)
        return h


def _stack_positions(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Positions of n variant-major blocks: the batch axis is 0 for (B, t) positions, 1 for
    M-RoPE's (3, B, t)."""
    return torch.cat([pos] * n, dim=-2)
