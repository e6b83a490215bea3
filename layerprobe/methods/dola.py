"""DoLa (Chuang et al., ICLR 2024) for multimodal models, written against the public model API:
contrast the final layer's next-token log-probabilities with those of the premature layer (from a
candidate bucket) that differs most from it in Jensen-Shannon divergence, chosen per sample and
per token, under the adaptive plausibility constraint.

    with dola(loaded, layers="low") as proc:
        out = loaded.model.generate(**inputs, logits_processor=LogitsProcessorList([proc]), do_sample=False)
    proc.chosen[0]     # premature layer of each generated token of sample 0

Premature layer ``l`` is the output of decoder layer ``l`` (0-based), read by a forward hook that
keeps only the last position, passed through the final norm (``apply_norm``) and the LM head.
Buckets follow transformers' removed ``dola_layers``: ``low`` = outputs of layers 1, 3, ..., N/2-1,
``high`` = N/2-1, ..., N-3 (their even hidden-state indices, without the embedding output).
transformers applied the head without the final norm; ``apply_norm=False`` reproduces that.
"""

from __future__ import annotations

import contextlib
import math

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from layerprobe.core.generation import generate_answers
from layerprobe.core.layers import layer_list
from layerprobe.errors import ConfigError, ModelError
from layerprobe.methods.base import Method, answer_records


def candidate_layers(spec, num_layers: int) -> list[int]:
    if spec == "low":
        return list(range(1, num_layers // 2, 2))
    if spec == "high":
        return list(range(num_layers // 2 - 1, num_layers - 1, 2))
    if isinstance(spec, (list, tuple)) and spec:
        # the last layer's output is the mature one: premature layers lie below it
        return layer_list("dola layers", spec, num_layers, below=num_layers - 1)
    raise ConfigError(f"dola layers={spec!r}: 'low', 'high' or a non-empty list of layer indices")


def js_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence along the last axis, from log-probabilities (nats)."""
    logm = torch.logaddexp(logp, logq) - math.log(2.0)
    kl_pm = (logp.exp() * (logp - logm)).sum(-1)
    kl_qm = (logq.exp() * (logq - logm)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def plausible(final_logp: torch.Tensor, alpha: float) -> torch.Tensor:
    """Adaptive plausibility: tokens whose final probability is at least alpha * the maximum."""
    return final_logp >= final_logp.max(-1, keepdim=True).values + math.log(alpha)


def dola_scores(final_logits: torch.Tensor, premature_logits: torch.Tensor, alpha: float = 0.1):
    """final (B, V), premature (L, B, V) -> (contrasted scores (B, V), chosen index into L (B,))."""
    final = torch.log_softmax(final_logits.float(), -1)
    early = torch.log_softmax(premature_logits.float(), -1)
    choice = js_divergence(final[None], early).argmax(0)  # per sample, not averaged over the batch
    chosen = early[choice, torch.arange(final.shape[0])]
    keep = plausible(final, alpha)
    return torch.where(keep, final - chosen, torch.full_like(final, float("-inf"))), choice


class DoLaProcessor(LogitsProcessor):
    def __init__(self, loaded, layers, alpha: float, apply_norm: bool):
        self.layers, self.alpha = layers, alpha
        model = loaded.model
        self.head = model.get_output_embeddings()
        self.norm = getattr(loaded.adapter.language_model(model), "norm", None) if apply_norm else None
        if self.head is None or (apply_norm and self.norm is None):
            raise ModelError(f"{type(model).__name__}: DoLa needs an LM head and a final norm")
        self.hidden: dict[int, torch.Tensor] = {}
        self.chosen: list[list[int]] = []

    def capture(self, layer):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            self.hidden[layer] = out[:, -1]
        return hook

    def __call__(self, input_ids, scores):
        states = torch.stack([self.hidden[layer] for layer in self.layers])
        if self.norm is not None:
            states = self.norm(states)
        premature = self.head(states.to(self.head.weight.dtype))
        contrasted, choice = dola_scores(scores, premature, self.alpha)
        if not self.chosen:
            self.chosen = [[] for _ in range(scores.shape[0])]
        for b, c in enumerate(choice.tolist()):
            self.chosen[b].append(self.layers[c])
        return contrasted.to(scores.dtype)


@contextlib.contextmanager
def dola(loaded, layers="low", alpha: float = 0.1, apply_norm: bool = True):
    """A DoLa logits processor with its layer hooks installed while the context is active."""
    if not 0 < alpha <= 1:
        raise ConfigError(f"dola alpha={alpha!r}: must be in (0, 1]")
    chosen_layers = candidate_layers(layers, loaded.num_layers)
    proc = DoLaProcessor(loaded, chosen_layers, alpha, apply_norm)
    handles = [loaded.decoder_layers[layer].register_forward_hook(proc.capture(layer)) for layer in chosen_layers]
    try:
        yield proc
    finally:
        for h in handles:
            h.remove()


class DoLa(Method):
    name = "dola"

    def __init__(self, layers="low", alpha: float = 0.1, apply_norm: bool = True, profile=None):
        self.layers, self.alpha, self.apply_norm = layers, alpha, apply_norm

    def check(self, loaded) -> None:
        candidate_layers(self.layers, loaded.num_layers)

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
        inputs = loaded.encode(images, texts)
        with dola(loaded, self.layers, self.alpha, self.apply_norm) as proc:
            answers = generate_answers(loaded, inputs, max_new_tokens, logits_processor=LogitsProcessorList([proc]))
        return [{**r, "premature_layers": layers} for r, layers in zip(answer_records(answers), proc.chosen)]
