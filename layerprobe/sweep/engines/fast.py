"""The fast sweep engine: one baseline prefill per batch, whose prefix key/value cache every
layer variant shares read-only; each variant recomputes only the text suffix, from its first
knocked-out layer on, and all variants decode together.

    engine = FastEngine("image->text", variants_per_batch=16)
    answers = engine.run_batch(loaded, inputs, sweep_conditions(32), max_new_tokens=3)

Why it is exact: a text->image knockout blocks only queries after the image, so every position
before the first post-image text token is unchanged at every layer, and nothing below the first
knocked-out layer changes at all. Variant l therefore starts at layer l from the baseline's
suffix hidden states, over the baseline's prefix keys and values. The decoder layers are the
model's own modules, called with their own rotary embeddings and a 4D mask built here (causal,
padding, the model's permanent structure and the knockout), so no layer code is duplicated.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from layerprobe.compat import cache_layer, call_decoder_layer, captured_kwargs, output_cache
from layerprobe.sweep.conditions import Condition
from layerprobe.core.dispatch import controller
from layerprobe.sweep.engines.naive import NaiveEngine
from layerprobe.sweep.engines.split_attention import split_attention
from layerprobe.core.layout import TokenLayout
from layerprobe.errors import ConfigError
from layerprobe.core.generation import Answer, sync, decode_new_tokens, greedy_kwargs

log = logging.getLogger(__name__)
FAST_EDGES = ("image->text", "image->last", "image->question", "image->prompt")


def fast_engine_reason(edges: str, adapter=None) -> str | None:
    """None when the fast engine is exact for ``edges`` (and the model family); otherwise why not."""
    if edges not in FAST_EDGES:
        return f"edges={edges!r} may change positions before the first post-image text token"
    if adapter is not None and adapter.fast_sweep_reason:
        return f"{adapter.family}: {adapter.fast_sweep_reason}"
    return None


class _SplitCache:
    """What a decoder layer's attention sees as its cache: each variant's own suffix and generated
    keys/values (the shared prefix reaches the attention function through the controller)."""

    def __init__(self, parts=()):
        self.parts = list(parts)
        self.new = None

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.new = (key, value)
        if not self.parts:
            return key, value
        return (torch.cat([p[0] for p in self.parts] + [key], dim=2),
                torch.cat([p[1] for p in self.parts] + [value], dim=2))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class FastEngine:
    name = "fast"

    def __init__(self, edges: str = "image->text", variants_per_batch: int | None = None, **_):
        if variants_per_batch is not None and (isinstance(variants_per_batch, bool)
                                               or not isinstance(variants_per_batch, int) or variants_per_batch < 1):
            raise ConfigError(f"variants_per_batch={variants_per_batch!r}: must be a positive integer or null (all)")
        self.edges = edges
        self.variants_per_batch = variants_per_batch

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
        base_first = out.logits[:, -1].argmax(-1)
        sync(device)
        prefill_s = time.perf_counter() - start

        variants = [c for c in conditions if c.name != "baseline"]
        first_tokens, suffix_kv = {}, {}
        for group in self._groups(variants):
            toks, kv = self._suffix_pass(loaded, lm, ctrl, group, hidden, cache, layout, pos, P)
            first_tokens.update({c.key: t for c, t in zip(group, toks)})
            suffix_kv.update(kv)

        firsts = [base_first if c.name == "baseline" else first_tokens[c.key] for c in conditions]
        tokens = self._decode(loaded, lm, ctrl, conditions, firsts, cache, suffix_kv, layout, pos, P, max_new_tokens)
        sync(device)
        total = time.perf_counter() - start
        answers = {}
        for c, toks in zip(conditions, tokens):
            texts, counts = decode_new_tokens(loaded, toks)
            # Shared work has no per-variant time: honest per-layer latency is measured apart.
            answers[c.key] = [Answer(t, prefill_s, total, n) for t, n in zip(texts, counts)]
        return answers

    def _groups(self, variants):
        size = self.variants_per_batch or max(1, len(variants))
        ordered = sorted(variants, key=lambda c: min(c.knocked_out))
        return [ordered[i:i + size] for i in range(0, len(ordered), size)]

    # ------------------------------------------------------------------------------------
    def _mask(self, ctrl, layout: TokenLayout, q_pos, conds, layer: int):
        """(V*B, 1, q, kv) bool mask: causal & padding & permanent structure & each variant's knockout."""
        allowed = layout.allowed(q_pos)
        permanent = ctrl.blocked(layer, layout, q_pos)
        if permanent is not None:
            allowed = allowed & ~permanent
        knocked = allowed & ~layout.blocked_by(self.edges, q_pos)
        masks = [knocked if layer in c.knocked_out else allowed for c in conds]
        return torch.cat(masks, dim=0)[:, None]

    @contextlib.contextmanager
    def _shared(self, ctrl, cache, layer, P, mask):
        """Layer ``layer`` attends over the baseline's prefix (shared) plus what it is given."""
        keys, values = cache_layer(cache, layer)
        pre_k, pre_v, pre_mask = keys[:, :, :P], values[:, :, :P], mask[..., :P]

        def attention(module, query, key, value, own_mask, **kwargs):
            return split_attention(module, query, key, value, own_mask, pre_k, pre_v, pre_mask,
                                   kwargs.get("scaling", module.scaling))

        with ctrl.overriding(attention):
            yield mask[..., P:]

    def _layer(self, loaded, lm, ctrl, cache, j, P, x, positions, mask, own_parts):
        """Decoder layer ``j`` on variant-major rows ``x``, attending over the shared prefix plus
        each row's ``own_parts``; returns its output and the rows' new keys/values."""
        split = _SplitCache(own_parts)
        pe = loaded.adapter.rotary_embeddings(lm, x, positions, j)
        with self._shared(ctrl, cache, j, P, mask) as own_mask:
            y = call_decoder_layer(loaded.decoder_layers[j], x, attention_mask=own_mask, position_embeddings=pe,
                                   position_ids=positions, cache=split)
        return y, split.new

    def _suffix_pass(self, loaded, lm, ctrl, group, hidden, cache, layout, pos, P):
        """Run each variant's suffix from its first knocked-out layer to the top, batched."""
        B, T = layout.valid.shape
        starts = [min(c.knocked_out) for c in group]
        L = len(loaded.decoder_layers)
        q_pos = torch.arange(P, T, device=hidden[0].device)
        suffix_pos = pos[..., P:]
        states: dict[tuple, torch.Tensor] = {}
        kv_out: dict[tuple, dict[int, tuple]] = {c.key: {} for c in group}
        with ctrl.passthrough():
            for j in range(min(starts), L):
                for c, s in zip(group, starts):
                    if s == j:
                        states[c.key] = hidden[j][:, P:]
                active = [c for c, s in zip(group, starts) if s <= j]
                n = len(active)
                x = torch.cat([states[c.key] for c in active], dim=0)
                # the batch axis: 0 for (B, T) positions, 1 for M-RoPE's (3, B, T)
                layer_pos = torch.cat([suffix_pos] * n, dim=-2)
                mask = self._mask(ctrl, layout, q_pos, active, j)
                y, (k_new, v_new) = self._layer(loaded, lm, ctrl, cache, j, P, x, layer_pos, mask, ())
                for i, c in enumerate(active):
                    states[c.key] = y[i * B:(i + 1) * B]
                    kv_out[c.key][j] = (k_new[i * B:(i + 1) * B], v_new[i * B:(i + 1) * B])
        last = torch.stack([states[c.key][:, -1] for c in group])  # (V, B, H)
        logits = loaded.model.get_output_embeddings()(lm.norm(last))
        return list(logits.argmax(-1)), kv_out

    def _decode(self, loaded, lm, ctrl, conds, firsts, cache, suffix_kv, layout, pos, P, max_new_tokens):
        """Greedy decode of every condition at once over the shared prefix."""
        n, (B, T) = len(conds), layout.valid.shape
        L = len(loaded.decoder_layers)
        eos = greedy_kwargs(loaded, 1)["eos_token_id"]
        eos = torch.tensor(eos if isinstance(eos, list) else [eos], device=pos.device)
        pad = greedy_kwargs(loaded, 1)["pad_token_id"]
        tokens = [torch.stack(firsts)]  # (n, B)
        done = torch.isin(tokens[0], eos)
        gen_kv: dict[int, tuple] = {}
        embed = loaded.model.get_input_embeddings()
        full_layout = layout
        suffix_parts = {}
        for j in range(L):
            ks, vs = [], []
            for c in conds:
                own = suffix_kv.get(c.key, {}).get(j)
                if own is None:
                    keys, values = cache_layer(cache, j)
                    own = (keys[:, :, P:], values[:, :, P:])
                ks.append(own[0])
                vs.append(own[1])
            suffix_parts[j] = (torch.cat(ks, 0), torch.cat(vs, 0))
        with ctrl.passthrough():
            for step in range(1, max_new_tokens):
                if bool(done.all()):
                    break
                cur = tokens[-1].reshape(n * B)
                x = embed(cur)[:, None]
                step_pos = (pos[..., -1:] + step).repeat(n, *([1] * (pos.dim() - 1)))
                if pos.dim() == 3:
                    step_pos = (pos[..., -1:] + step).repeat(1, n, 1)
                full_layout = full_layout.extend(1)
                q_pos = torch.tensor([T + step - 1], device=x.device)
                for j in range(L):
                    mask = self._mask(ctrl, full_layout, q_pos, conds, j)
                    own = [suffix_parts[j]] + ([gen_kv[j]] if j in gen_kv else [])
                    x, (k_new, v_new) = self._layer(loaded, lm, ctrl, cache, j, P, x, step_pos, mask, own)
                    gen_kv[j] = (k_new, v_new) if j not in gen_kv else (
                        torch.cat([gen_kv[j][0], k_new], 2), torch.cat([gen_kv[j][1], v_new], 2))
                logits = loaded.model.get_output_embeddings()(lm.norm(x[:, -1]))
                nxt = logits.argmax(-1).reshape(n, B)
                nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                tokens.append(nxt)
                done = done | torch.isin(nxt, eos)
        return [t for t in torch.stack(tokens, dim=-1)]  # n x (B, steps)


class _NoEdit:
    def layers(self):
        return set()

    def blocked(self, layer, layout, q_pos):
        return None
