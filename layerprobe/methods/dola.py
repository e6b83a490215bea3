"""DoLa (Chuang et al., ICLR 2024) for multimodal models, written against the public model API and
reproducing the two reference implementations (the authors' code and transformers' former
``_dola_decoding``): contrast the final layer's next-token log-probabilities with those of the
premature layer (from a candidate bucket) that differs most from it, under the adaptive
plausibility constraint, then apply the repetition penalty to the contrasted scores.

    with dola(loaded, layers="low", attention_mask=inputs["attention_mask"]) as proc:
        out = loaded.model.generate(**inputs, **proc.generate_kwargs, do_sample=False)
    proc.chosen[0]     # premature layer of each generated token of sample 0

Numbering. Layer ``l`` (an int) is the output of decoder layer ``l`` (0-based, as everywhere in
layerprobe), i.e. transformers' hidden state ``l + 1``; ``"embeddings"`` is the embedding output,
transformers' hidden state 0 (the input of decoder layer 0, image features merged in). The final
hidden state N is the mature layer and never a candidate. ``layers`` is ``"low"``, ``"high"`` or a
list of ints and/or ``"embeddings"`` (sorted, embeddings first). The buckets are transformers'
``dola_layers`` rule on hidden-state indices for an N-layer decoder:
``low`` = range(s, N // 2, 2) for N <= 40, else range(s, 20, 2), where s = 0, or 2 when the LM head
shares the input embeddings' weight (from there the embedding output would only read its own token
back; s = 1 for a tied 2-layer model), and just [s] when s == N // 2;
``high`` = range(N // 2, N, 2) for N <= 40, else range(N - 20, N, 2).

Defaults follow the references: ``criterion="reference"`` is their layer-selection score,
0.5 * (KL(M || P_final) + KL(M || P_layer)) averaged over the vocabulary, with M the mean of the two
distributions (``F.kl_div(log P, M, reduction="none").mean(-1)``); ``criterion="js"`` is the textbook
Jensen-Shannon divergence. ``apply_norm=False``: the LM head reads the raw hidden state, as both
references did. ``alpha`` is their ``relative_top`` (0.1). ``repetition_penalty=None`` takes the
model's generation config (1.0 when unset), as ``generate(dola_layers=...)`` did; the references
applied it after the contrast, so this processor applies it and ``generate`` must get 1.0
(``proc.generate_kwargs`` does both). One difference: the references chose one premature layer
per step for the whole batch (divergence averaged over it); here each sample chooses its own, which
is the same at batch size 1.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList

from layerprobe.core.generation import generate_answers
from layerprobe.core.layers import layer_list
from layerprobe.errors import ConfigError
from layerprobe.methods.base import Method, answer_records

EMBEDDINGS = "embeddings"
CRITERIA = ("reference", "js")
# Both references give filtered tokens of the premature distribution a finite value so that the
# contrast of a filtered token is exactly -inf (final's -inf minus a finite number).
BASE_FILTER_VALUE = -1e-3


def hidden_state_index(layer) -> int:
    """transformers' ``output_hidden_states`` index of a premature layer label."""
    return 0 if layer == EMBEDDINGS else layer + 1


def _label(index: int):
    return EMBEDDINGS if index == 0 else index - 1


def tied_embeddings(loaded) -> bool:
    """Whether the LM head shares the input embeddings' weight (``tie_word_embeddings`` in effect)."""
    head = loaded.adapter.lm_head(loaded.model)
    embed = loaded.adapter.token_embeddings(loaded.model)
    return embed is not None and head.weight is embed.weight


def candidate_layers(spec, num_layers: int, tied: bool = False) -> list:
    """Premature layer labels of ``spec`` (``"low"``, ``"high"`` or a list) for a ``num_layers``
    decoder; see the module docstring for the rule and the numbering."""
    n = num_layers
    if spec == "low":
        start = 0 if not tied else (2 if n > 2 else (1 if n == 2 else 0))
        if start == n // 2:
            indices = [start]
        else:
            indices = list(range(start, n // 2, 2) if n <= 40 else range(start, 20, 2))
    elif spec == "high":
        indices = list(range(n // 2, n, 2) if n <= 40 else range(n - 20, n, 2))
    elif isinstance(spec, (list, tuple)) and spec:
        embeddings = [EMBEDDINGS] if EMBEDDINGS in spec else []
        # the last layer's output is the mature one: premature layers lie below it
        return embeddings + layer_list("dola layers", [v for v in spec if v != EMBEDDINGS], n, below=n - 1)
    else:
        raise ConfigError(f"dola layers={spec!r}: 'low', 'high' or a non-empty list of layer indices "
                          f"and/or {EMBEDDINGS!r}")
    if not indices:
        raise ConfigError(f"dola layers={spec!r}: no candidate layer in a {n}-layer decoder")
    return [_label(i) for i in indices]


def reference_divergence(final_logits: torch.Tensor, premature_logits: torch.Tensor) -> torch.Tensor:
    """The references' layer-selection score, (L, B): final (B, V), premature (L, B, V) logits.
    Written as they wrote it, so that ties and rounding are theirs."""
    softmax_mature = F.softmax(final_logits, dim=-1)
    softmax_premature = F.softmax(premature_logits, dim=-1)
    avg_dist = 0.5 * (softmax_mature[None, :, :] + softmax_premature)
    log_softmax_mature = F.log_softmax(final_logits, dim=-1)
    log_softmax_premature = F.log_softmax(premature_logits, dim=-1)
    kl1 = F.kl_div(log_softmax_mature[None, :, :], avg_dist, reduction="none").mean(-1)
    kl2 = F.kl_div(log_softmax_premature, avg_dist, reduction="none").mean(-1)
    return 0.5 * (kl1 + kl2)


def js_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence along the last axis, from log-probabilities (nats)."""
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    kl_pm = (logp.exp() * (logp - logm)).sum(-1)
    kl_qm = (logq.exp() * (logq - logm)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def implausible(final_logp: torch.Tensor, alpha: float) -> torch.Tensor:
    """Adaptive plausibility (the references' relative-top filter, keeping at least one token):
    True where the final probability is below alpha * the maximum."""
    top = final_logp.max(-1).values
    thresh = torch.min(top, top + np.log(alpha))  # np.log: the same threshold rounding as theirs
    return final_logp < thresh.unsqueeze(-1)


def contrast(final_logits: torch.Tensor, base_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """log p_final - log p_premature on plausible tokens, -inf elsewhere (B, V)."""
    final = final_logits.log_softmax(dim=-1)
    base = base_logits.log_softmax(dim=-1)
    drop = implausible(final, alpha)
    base = base.masked_fill(drop, BASE_FILTER_VALUE)
    final = final.masked_fill(drop, float("-inf"))
    return final - base


def dola_scores(final_logits: torch.Tensor, premature_logits: torch.Tensor, alpha: float = 0.1,
                criterion: str = "reference"):
    """final (B, V), premature (L, B, V) logits -> (contrasted scores (B, V), chosen index into L (B,)).
    The final logits are taken in float32 and the premature ones in their own dtype, as the
    references did."""
    final = final_logits.float()
    if criterion == "reference":
        divergence = reference_divergence(final, premature_logits)
    elif criterion == "js":
        divergence = js_divergence(torch.log_softmax(final, -1)[None], torch.log_softmax(premature_logits.float(), -1))
    else:
        raise ConfigError(f"dola criterion={criterion!r}: one of {', '.join(CRITERIA)}")
    choice = divergence.argmax(0)  # per sample, not averaged over the batch; first maximum on ties
    chosen = premature_logits[choice, torch.arange(final.shape[0], device=choice.device)]
    return contrast(final, chosen, alpha), choice


def penalize_repeats(input_ids: torch.Tensor, scores: torch.Tensor, penalty: float,
                     pad_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """transformers' repetition penalty (negative scores x penalty, positive / penalty, on every
    token of the sequence so far), skipping each row's left padding as current ``generate`` does."""
    vocab = scores.shape[-1]
    ids = input_ids.clamp(max=vocab)
    if pad_lengths is not None:
        positions = torch.arange(ids.shape[1], device=ids.device)
        ids = ids.masked_fill(positions[None, :] < pad_lengths.to(ids.device)[:, None], vocab)
    wide = F.pad(scores, (0, 1))  # column `vocab` absorbs padding and out-of-head ids
    picked = torch.gather(wide, 1, ids)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return wide.scatter(1, ids, picked)[:, :vocab]


class DoLaProcessor(LogitsProcessor):
    """Contrasts ``generate``'s final-layer scores with the captured premature layers; it must be
    the first processor to see the scores (``generate_kwargs``)."""

    def __init__(self, loaded, layers, alpha: float, apply_norm: bool, criterion: str,
                 repetition_penalty: float, attention_mask=None):
        self.layers, self.alpha, self.criterion = layers, alpha, criterion
        self.repetition_penalty = repetition_penalty
        self.head = loaded.adapter.lm_head(loaded.model)
        self.final_norm = loaded.adapter.final_norm(loaded.model) if apply_norm else None
        self.pad_lengths = None if attention_mask is None else (attention_mask != 0).int().argmax(dim=1)
        self.hidden: dict = {}
        self.chosen: list[list] = []
        self.generate_kwargs = {"logits_processor": LogitsProcessorList([self]), "repetition_penalty": 1.0}

    def capture(self, layer):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            self.hidden[layer] = out[:, -1]
        return hook

    def capture_input(self, module, args, kwargs):
        """The input of decoder layer 0: transformers' hidden state 0."""
        states = args[0] if args else kwargs["hidden_states"]
        self.hidden[EMBEDDINGS] = states[:, -1]

    def premature_logits(self) -> torch.Tensor:
        logits = []
        for layer in self.layers:  # one head call per layer, on (B, H), as the references did
            states = self.hidden[layer]
            if self.final_norm is not None:
                states = self.final_norm(states)
            logits.append(self.head(states.to(self.head.weight.dtype)))
        return torch.stack(logits)

    def __call__(self, input_ids, scores):
        premature = self.premature_logits().to(scores.device)
        contrasted, choice = dola_scores(scores, premature, self.alpha, self.criterion)
        if self.repetition_penalty != 1.0:
            contrasted = penalize_repeats(input_ids, contrasted, self.repetition_penalty, self.pad_lengths)
        if not self.chosen:
            self.chosen = [[] for _ in range(scores.shape[0])]
        for b, c in enumerate(choice.tolist()):
            self.chosen[b].append(self.layers[c])
        return contrasted


def _check_options(alpha, criterion, repetition_penalty) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ConfigError(f"dola alpha={alpha!r}: must be in (0, 1]")
    if criterion not in CRITERIA:
        raise ConfigError(f"dola criterion={criterion!r}: one of {', '.join(CRITERIA)}")
    if repetition_penalty is not None and (
            isinstance(repetition_penalty, bool) or not isinstance(repetition_penalty, (int, float))
            or not repetition_penalty > 0):
        raise ConfigError(f"dola repetition_penalty={repetition_penalty!r}: a number > 0, or null "
                          "for the model's generation config")


def resolve_repetition_penalty(loaded, repetition_penalty) -> float:
    """``None``: what ``generate`` would use, the model's generation config value (1.0 if unset)."""
    if repetition_penalty is None:
        repetition_penalty = getattr(loaded.model.generation_config, "repetition_penalty", None)
    return 1.0 if repetition_penalty is None else float(repetition_penalty)


@contextlib.contextmanager
def dola(loaded, layers="low", alpha: float = 0.1, apply_norm: bool = False, criterion: str = "reference",
         repetition_penalty: float | None = None, attention_mask=None):
    """A DoLa logits processor with its layer hooks installed while the context is active. Pass
    ``proc.generate_kwargs`` to ``generate``, and the batch's ``attention_mask`` here so that the
    repetition penalty skips left padding."""
    _check_options(alpha, criterion, repetition_penalty)
    chosen_layers = candidate_layers(layers, loaded.num_layers, tied_embeddings(loaded))
    penalty = resolve_repetition_penalty(loaded, repetition_penalty)
    proc = DoLaProcessor(loaded, chosen_layers, alpha, apply_norm, criterion, penalty, attention_mask)
    decoder = loaded.decoder_layers
    handles = [decoder[layer].register_forward_hook(proc.capture(layer))
               for layer in chosen_layers if layer != EMBEDDINGS]
    if EMBEDDINGS in chosen_layers:
        handles.append(decoder[0].register_forward_pre_hook(proc.capture_input, with_kwargs=True))
    try:
        yield proc
    finally:
        for h in handles:
            h.remove()


class DoLa(Method):
    name = "dola"

    def __init__(self, layers="low", alpha: float = 0.1, apply_norm: bool = False, criterion: str = "reference",
                 repetition_penalty: float | None = None):
        _check_options(alpha, criterion, repetition_penalty)
        self.layers, self.alpha, self.apply_norm = layers, alpha, apply_norm
        self.criterion, self.repetition_penalty = criterion, repetition_penalty

    def check(self, loaded) -> None:
        candidate_layers(self.layers, loaded.num_layers, tied_embeddings(loaded))

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        inputs = loaded.encode(images, texts)
        with dola(loaded, self.layers, self.alpha, self.apply_norm, self.criterion, self.repetition_penalty,
                  attention_mask=inputs.get("attention_mask")) as proc:
            answers = generate_answers(loaded, inputs, max_new_tokens, **proc.generate_kwargs)
        settings = {"criterion": self.criterion, "repetition_penalty": proc.repetition_penalty,
                    "alpha": self.alpha, "apply_norm": self.apply_norm, "candidates": proc.layers}
        # steps after a sample's end of sequence were computed for the batch, not for its answer
        return [{**r, "premature_layers": layers[:r["n_tokens"]], "dola": dict(settings)}
                for r, layers in zip(answer_records(answers), proc.chosen)]
